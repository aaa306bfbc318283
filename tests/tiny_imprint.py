"""The models the IMPRINT example workflow loads, tiny and random, under its file names: a DINOv2 of
the ViT-L/14 recipe (GELU MLP, 14-px patches, 37² positions) at hidden 64, and an IMPRINT content
adapter reading its 257 tokens at 224² into SD1.5's 768-wide cross-attention. The inpainting
checkpoint `sd-v1-5-inpainting.safetensors` comes from tiny_sd.write_example_models."""
from __future__ import annotations

from pathlib import Path

import torch

DINOV2 = "dinov2_vitl14.safetensors"
ADAPTER = "imprint_content_adapter.safetensors"
DINOV2_SPEC = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, patch_size=14, image_size=518,
                   use_swiglu_ffn=False)
CONTEXT_DIM = 768  # the tiny SD1.5 checkpoints' cross-attention width


def adapter_config(num_queries: int = 16, input_dim: int = 64):
    from diorama.ops.imprint_adapter import ImprintAdapterConfig

    # 1 + (224 / 14)² DINOv2 tokens.
    return ImprintAdapterConfig(input_dim=input_dim, input_tokens=257, width=64, depth=2, heads=2, mlp_dim=128,
                                context_dim=CONTEXT_DIM, num_queries=num_queries)


def random_adapter(config, seed: int):
    """An adapter with every parameter random (query tokens start at zero otherwise)."""
    from diorama.ops.imprint_adapter import ImprintContentAdapter

    module = ImprintContentAdapter(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, parameter in module.named_parameters():
            if "norm" in key and key.endswith("weight"):
                parameter.copy_(1 + 0.1 * torch.randn(parameter.shape, generator=generator))
            elif parameter.ndim == 2 and key != "queries":
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter.shape[1] ** 0.5)
            else:
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return module.eval()


def write_dinov2(path: Path, seed: int = 31) -> Path:
    import safetensors.torch
    from tiny_dinov2 import to_comfy_layout
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(mlp_ratio=4, layer_norm_eps=1e-6, layerscale_value=1.0, **DINOV2_SPEC)).eval()
    with torch.no_grad():
        # Spread weights: transformers' default init gives near-identity blocks.
        for key, parameter in model.named_parameters():
            if key.endswith(("norm1.weight", "norm2.weight")) or key == "layernorm.weight":
                parameter.copy_(1 + 0.1 * torch.randn_like(parameter))
            else:
                parameter.normal_(0, 0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(to_comfy_layout(model.state_dict()), str(path))
    return path


def write_example_models(models_dir: Path) -> list[Path]:
    from diorama.loaders.identity_adapter import save_imprint_content_adapter

    dinov2 = write_dinov2(models_dir / "clip_vision" / DINOV2)
    adapter = models_dir / "identity_adapters" / ADAPTER
    adapter.parent.mkdir(parents=True, exist_ok=True)
    save_imprint_content_adapter(str(adapter), random_adapter(adapter_config(), seed=32), overwrite=True)
    return [dinov2, adapter]
