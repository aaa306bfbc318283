"""Tiny person-insertion models: a random person adapter for SD1.5's 768-wide context (DINOv2 or CLIP
image embeddings) and a tiny CLIP vision model built from a config, as ComfyUI's CLIP_VISION."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

# The names the example workflow loads (tiny DINOv2-g-recipe weights under a DINOv2 file name).
DINOV2 = "dinov2_vitl14_person.safetensors"
ADAPTER = "person_insert_sd15_dinov2.safetensors"
DINOV2_DIM = 64  # tiny_dinov2's "tiny-dinov2-swiglu" hidden size
CLIP_DIM = 24  # the tiny CLIP vision model's projection width


def adapter_module(image_encoder: str = "dinov2", image_dim: int = DINOV2_DIM, image_tokens: int = 4,
                   pose_tokens: int = 3, pose_inputs: str = "target", token_dim: int = 768, seed: int = 0):
    """A person adapter with spread random weights (nulls too, so the negative differs from zeros)."""
    from diorama.ops.person_tokens import PersonAdapter, PersonAdapterConfig

    module = PersonAdapter(PersonAdapterConfig(image_encoder, image_dim, token_dim, image_tokens, pose_tokens,
                                               pose_inputs))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return module


def write_adapter(path: Path, **kwargs) -> Path:
    from diorama.loaders.person_adapter import save_person_adapter

    path.parent.mkdir(parents=True, exist_ok=True)
    save_person_adapter(str(path), adapter_module(**kwargs))
    return path


def tiny_clip_vision(seed: int = 0):
    """ComfyUI's ClipVisionModel (CLIP ViT recipe) at hidden 32, 2 layers, 16-px patches, 64² input."""
    import comfy.clip_vision

    config = {"hidden_act": "quick_gelu", "hidden_size": 32, "image_size": 64, "intermediate_size": 64,
              "layer_norm_eps": 1e-5, "model_type": "clip_vision_model", "num_attention_heads": 2,
              "num_channels": 3, "num_hidden_layers": 2, "patch_size": 16, "projection_dim": CLIP_DIM}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.json"
        path.write_text(json.dumps(config))
        clip_vision = comfy.clip_vision.ClipVisionModel(str(path))
    generator = torch.Generator().manual_seed(seed)
    state = {k: (torch.ones_like(v) if k.endswith("norm.weight") or "layer_norm" in k and k.endswith("weight")
                 else torch.randn(v.shape, generator=generator) * 0.2)
             for k, v in clip_vision.get_sd().items()}
    clip_vision.load_sd(state)
    return clip_vision


def write_example_models(models_dir: Path) -> list[Path]:
    """The person_insert example's DINOv2 and adapter (the inpainting checkpoint is tiny_sd's)."""
    import safetensors.torch
    from tiny_dinov2 import to_comfy_layout, transformers_dinov2

    dinov2 = models_dir / "clip_vision" / DINOV2
    dinov2.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(to_comfy_layout(transformers_dinov2("tiny-dinov2-swiglu", seed=5).state_dict()),
                                str(dinov2))
    return [dinov2, write_adapter(models_dir / "person_adapters" / ADAPTER, seed=6)]
