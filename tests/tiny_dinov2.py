"""Tiny random DINOv2 models in ComfyUI's CLIP-vision layout (transformers' Dinov2Model keys).

`swiglu`: the ViT-g recipe (SwiGLU, 14-px patches, 37² positions) at hidden 64, one head.
`mlp`: the ViT-S/B/L recipe (GELU MLP) at hidden 128, two heads, with 8-px patches and a 10²
position grid, so config inference and position resizing are exercised away from 14/37.
"""
from __future__ import annotations

from pathlib import Path

import torch

SPECS = {
    "tiny-dinov2-swiglu": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, patch_size=14,
                               image_size=518, use_swiglu_ffn=True),
    "tiny-dinov2-mlp": dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=2, patch_size=8,
                            image_size=80, use_swiglu_ffn=False),
}


def transformers_dinov2(name: str, seed: int = 0):
    """A transformers Dinov2Model with spread random weights (default init gives near-identity blocks)."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(mlp_ratio=4, layer_norm_eps=1e-6, layerscale_value=1.0, **SPECS[name])
    model = Dinov2Model(config).eval()
    with torch.no_grad():
        for key, parameter in model.named_parameters():
            if key.endswith("norm1.weight") or key.endswith("norm2.weight") or key == "layernorm.weight":
                parameter.copy_(1 + 0.1 * torch.randn_like(parameter))
            else:
                parameter.normal_(0, 0.2)
    return model


# transformers 5 renamed DINOv2's weights; ComfyUI reads the older names (the released checkpoints'
# layout). The pairs and the SwiGLU split (weights_in = [gate; up] along dim 0) are the ones in
# transformers' own conversion_mapping.py for Dinov2Model.
RENAMES = (("attention.q_proj.", "attention.attention.query."), ("attention.k_proj.", "attention.attention.key."),
           ("attention.v_proj.", "attention.attention.value."), ("attention.o_proj.", "attention.output.dense."),
           ("mlp.down_proj.", "mlp.weights_out."))


def to_comfy_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        if ".mlp.up_proj." in key:
            continue
        if ".mlp.gate_proj." in key:
            up = state_dict[key.replace("gate_proj", "up_proj")]
            key, value = key.replace("gate_proj", "weights_in"), torch.cat([value, up])
        for new, old in RENAMES:
            key = key.replace(new, old)
        out[key] = value.contiguous()
    return out


def from_comfy_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        if ".mlp.weights_in." in key:
            gate, up = value.chunk(2)
            out[key.replace("weights_in", "gate_proj")] = gate
            out[key.replace("weights_in", "up_proj")] = up
            continue
        for new, old in RENAMES:
            key = key.replace(old, new)
        out[key] = value
    return out


def write_dinov2_models(folder: Path) -> Path:
    """Save every tiny model as `<name>.safetensors` (ComfyUI's CLIP-vision layout) under `folder`."""
    import safetensors.torch

    folder.mkdir(parents=True, exist_ok=True)
    for name in SPECS:
        state_dict = to_comfy_layout(transformers_dinov2(name).state_dict())
        safetensors.torch.save_file(state_dict, str(folder / f"{name}.safetensors"))
    return folder
