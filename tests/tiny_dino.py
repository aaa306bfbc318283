"""Tiny random DINO backbones in transformers folder format (config.json + model.safetensors).

`tiny-dino-vit8`: DINO v1's recipe (ViTModel, 8-px patches, 224² → 28×28) at hidden 32.
`tiny-dinov2-reg`: Dinov2WithRegistersModel, 8-px patches, 4 registers, learnt for 56² (7×7 grid).
`stub-dino-vit8`: the golden script's stand-in DINO: only the 8×8 patch projection (`stub_patch_proj`
[192, 768], rows in (dy, dx, rgb) order), no class/position offsets, no blocks — then the final layernorm.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

LAYER_NORM_EPS = 1e-6


def _spread(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    # Default init gives near-identity blocks; spread every weight so the grid carries structure.
    torch.manual_seed(seed)
    with torch.no_grad():
        for key, parameter in model.named_parameters():
            if "norm" in key and key.endswith("weight"):
                parameter.copy_(1 + 0.1 * torch.randn_like(parameter))
            else:
                parameter.normal_(0, 0.2)
    return model.eval()


def tiny_vit():
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=224, patch_size=8, layer_norm_eps=LAYER_NORM_EPS)
    return _spread(ViTModel(config, add_pooling_layer=False), 1)


def tiny_dinov2_registers():
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=56,
                                       patch_size=8, num_register_tokens=4, layer_norm_eps=LAYER_NORM_EPS)
    return _spread(Dinov2WithRegistersModel(config), 2)


def stub_vit(projection: np.ndarray):
    """A ViTModel that computes LayerNorm(patch · P): no blocks, zero class token and positions."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=768, num_hidden_layers=0, num_attention_heads=12, intermediate_size=64,
                       image_size=224, patch_size=8, layer_norm_eps=LAYER_NORM_EPS)
    model = ViTModel(config, add_pooling_layer=False).eval()
    # P's row (dy·8 + dx)·3 + rgb → conv weight [out, rgb, dy, dx].
    weight = torch.from_numpy(projection).reshape(8, 8, 3, 768).permute(3, 2, 0, 1)
    with torch.no_grad():
        model.embeddings.patch_embeddings.projection.weight.copy_(weight)
        for parameter in (model.embeddings.patch_embeddings.projection.bias, model.embeddings.cls_token,
                          model.embeddings.position_embeddings, model.layernorm.bias):
            parameter.zero_()
        model.layernorm.weight.fill_(1.0)
    return model


def write_dino_models(folder: Path, stub_projection: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tiny_vit().save_pretrained(folder / "tiny-dino-vit8")
    tiny_dinov2_registers().save_pretrained(folder / "tiny-dinov2-reg")
    stub_vit(stub_projection).save_pretrained(folder / "stub-dino-vit8")
    return folder
