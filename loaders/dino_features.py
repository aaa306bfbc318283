"""DINO backbones for Neural Assets: patch-feature grids from transformers folders or a CLIP_VISION DINOv2.

The reference runs DINO v1 ViT-B/8 on a 224² resize of the 256² source (ops.neural_assets_tokens.
dino_input) and keeps the final-layernorm patch tokens as a [B, 28, 28, 768] grid (class token
dropped). Here the same is done for

- transformers folders (config.json + model.safetensors): ViTModel (facebook/dino-vitb8, dino-vitb16,
  dino-vits8 ...), Dinov2Model (facebook/dinov2-*) and Dinov2WithRegistersModel (registers dropped
  with the class token). DINOv2 at 224² uses transformers' own position-embedding resize.
- ComfyUI's CLIP_VISION DINOv2 (loaders.identity_encoder.dinov2_tokens, DINOv2's own resize), e.g.
  14-px patches at 224² → 16×16.

Patch tokens come out of the transformers in row-major patch order (row, then column), so the grid
is a plain reshape.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import comfy.model_management
import comfy.model_patcher
import torch

from ..ops.neural_assets_tokens import DINO_SIZE, dino_input
from .identity_encoder import dinov2_geometry, dinov2_tokens
from .patching import model_patcher

log = logging.getLogger(__name__)

# model_type in config.json → (transformers class, name stem). No remote code: only these classes.
SUPPORTED = {
    "vit": ("ViTModel", "dino"),
    "dinov2": ("Dinov2Model", "dinov2"),
    "dinov2_with_registers": ("Dinov2WithRegistersModel", "dinov2reg"),
}
SIZE_LETTERS = {384: "s", 768: "b", 1024: "l", 1536: "g"}  # ViT-S/B/L/g widths


def backbone_name(stem: str, hidden_size: int, patch_size: int) -> str:
    """The name adapters record for the backbone they were trained with, e.g. 'dino_vitb8', 'dinov2_vitl14'."""
    return f"{stem}_vit{SIZE_LETTERS.get(hidden_size, str(hidden_size))}{patch_size}"


@dataclass(frozen=True)
class DinoBackbone:
    """A loaded DINO (socket DIORAMA_DINO)."""

    patcher: comfy.model_patcher.ModelPatcher
    name: str  # e.g. "dino_vitb8": compare with the adapter's metadata 'dino'
    model_type: str
    hidden_size: int
    patch_size: int
    prefix_tokens: int  # class token + registers, dropped from the output


def load_dino(folder: str) -> DinoBackbone:
    """A transformers DINO folder → DinoBackbone; safetensors weights only, architecture from config.json."""
    import transformers

    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{folder}: no config.json; expected a transformers model folder "
                                "(config.json + model.safetensors), e.g. a copy of facebook/dino-vitb8")
    with open(config_path) as f:
        config = json.load(f)
    model_type = config.get("model_type")
    if model_type not in SUPPORTED:
        raise ValueError(f"{folder}: model_type {model_type!r} is not a supported DINO backbone; expected one of "
                         f"{sorted(SUPPORTED)} (ViTModel for DINO v1, Dinov2Model, Dinov2WithRegistersModel)")
    if not any(name.endswith(".safetensors") for name in os.listdir(folder)):
        raise FileNotFoundError(f"{folder}: no .safetensors weights found (pickled .bin/.pt weights are not loaded)")
    class_name, stem = SUPPORTED[model_type]
    kwargs = {"add_pooling_layer": False} if model_type == "vit" else {}  # the pooler is never used here
    model = getattr(transformers, class_name).from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                              torch_dtype=torch.float32, **kwargs)
    model.eval()
    patch = model.config.patch_size
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    registers = int(getattr(model.config, "num_register_tokens", 0)) if model_type == "dinov2_with_registers" else 0
    name = backbone_name(stem, model.config.hidden_size, patch)
    log.info("loaded %s (%s) from %s: hidden %d, patch %d, %d layers", name, class_name, folder,
             model.config.hidden_size, patch, model.config.num_hidden_layers)
    return DinoBackbone(model_patcher(model), name, model_type, model.config.hidden_size, patch, 1 + registers)


def _grid(tokens: torch.Tensor, prefix: int, height: int, width: int) -> torch.Tensor:
    """[B, prefix + h·w, C] final-norm tokens → [B, h, w, C] patch grid (row-major patch order)."""
    if tokens.shape[1] != prefix + height * width:
        raise RuntimeError(f"the backbone returned {tokens.shape[1]} tokens, expected {prefix} + {height}x{width}")
    return tokens[:, prefix:].reshape(tokens.shape[0], height, width, tokens.shape[-1])


def dino_patch_grid(dino: DinoBackbone, network: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Final-norm patch grid [B, h, w, C] (float32) of `dino_input` pixels in NCHW, through `network`
    (the patcher's model, or a copy being fine-tuned), with autograd as the caller has it."""
    kwargs = {"interpolate_pos_encoding": True} if dino.model_type == "vit" else {}
    hidden = network(pixel_values=pixels, **kwargs).last_hidden_state
    grid = pixels.shape[-1] // dino.patch_size
    return _grid(hidden.float(), dino.prefix_tokens, grid, grid)


def patch_features(dino: DinoBackbone, images: torch.Tensor, size: int = DINO_SIZE) -> torch.Tensor:
    """Images [B,H,W,3] in [0,1] → final-norm patch features [B, size/p, size/p, C] (float32, on the
    intermediate device): the reference's resize + normalisation (dino_input), then the model."""
    if size % dino.patch_size:
        raise ValueError(f"input size {size} is not a multiple of {dino.name}'s patch size {dino.patch_size}")
    pixels = dino_input(images, size).permute(0, 3, 1, 2)
    comfy.model_management.load_model_gpu(dino.patcher)
    with torch.no_grad():
        features = dino_patch_grid(dino, dino.patcher.model.network, pixels.to(dino.patcher.load_device))
    return features.to(comfy.model_management.intermediate_device())


def clip_vision_patch_features(clip_vision, images: torch.Tensor, size: int = DINO_SIZE) -> torch.Tensor:
    """As patch_features, for ComfyUI's CLIP_VISION DINOv2 (position embeddings resized as DINOv2
    resizes them): 14-px patches at 224² give a 16×16 grid."""
    _, patch_size = dinov2_geometry(clip_vision)
    if size % patch_size:
        raise ValueError(f"input size {size} is not a multiple of the DINOv2 patch size {patch_size}")
    tokens = dinov2_tokens(clip_vision, dino_input(images, size).permute(0, 3, 1, 2))
    grid = size // patch_size
    return _grid(tokens.float(), 1, grid, grid)


def clip_vision_backbone_name(clip_vision) -> str:
    """The backbone name of a CLIP_VISION DINOv2 (e.g. 'dinov2_vitg14'), to compare with an adapter's 'dino'."""
    hidden, patch_size = dinov2_geometry(clip_vision)
    return backbone_name("dinov2", hidden, patch_size)
