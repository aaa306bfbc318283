"""DINOv2 as ComfyUI's CLIP_VISION, loaded from any size, and run at 224² with resized positions.

The file layout is the one ComfyUI's CLIPVisionLoader reads for DINOv2 (transformers' Dinov2Model
keys: `embeddings.*`, `encoder.layer.N.*`, `layernorm.*`). ComfyUI only recognises ViT-L and ViT-g
by their layer count and always builds a 14-px patch, 37²-position model; here the architecture is
read from the weights, so every DINOv2 size (and tiny test models) load into the same class.

ComfyUI's own forward adds the learnt 37² positions unchanged, so it only runs at 518². Tokens for
other sizes are computed here with the model's own modules and weights: patch embedding, class
token and positions resized as DINOv2 resizes them (ops.identity_tokens), then the model's encoder
and final norm. ComfyUI's code is not patched and the model object is not changed, so a DINOv2
loaded by ComfyUI's CLIPVisionLoader works the same.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass

import comfy.clip_vision
import comfy.image_encoders.dino2
import comfy.model_management
import comfy.ops
import torch

from ..ops.identity_tokens import DINO_MEAN, DINO_STD, interpolate_position_embeddings
from .model_folders import read_safetensors, read_safetensors_layout

log = logging.getLogger(__name__)

PATCH_KEY = "embeddings.patch_embeddings.projection.weight"
POSITION_KEY = "embeddings.position_embeddings"
LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.norm1\.weight$")
HEAD_DIM = 64  # every DINOv2 size (S/B/L/g) uses 64 channels per attention head
# The ViT-L/g geometry ComfyUI builds whatever the weights say.
COMFY_PATCH, COMFY_GRID = 14, 37


@dataclass(frozen=True)
class DinoV2Config:
    hidden_size: int
    num_layers: int
    patch_size: int
    grid: int  # side of the learnt square position grid (37 for the released models: 518 / 14)
    swiglu: bool

    @property
    def num_heads(self) -> int:
        return self.hidden_size // HEAD_DIM

    @property
    def image_size(self) -> int:
        return self.patch_size * self.grid


def comfy_ffn_width(hidden: int, swiglu: bool) -> int:
    """The feed-forward width ComfyUI builds (mlp_ratio 4; SwiGLU takes 2/3 of it, rounded up to 8)."""
    return (int(hidden * 4 * 2 / 3) + 7) // 8 * 8 if swiglu else hidden * 4


def infer_dinov2_config(state_dict: dict[str, torch.Tensor], name: str = "model") -> DinoV2Config:
    """The architecture of a DINOv2 state dict in ComfyUI's CLIP-vision layout, or a ValueError."""
    if PATCH_KEY not in state_dict or POSITION_KEY not in state_dict:
        if any(k.startswith("vision_model.") or k.startswith("visual.") for k in state_dict):
            kind = "a CLIP/SigLIP vision model"
        elif any(k.startswith("blocks.") or ".blocks." in k for k in state_dict):
            kind = "DINOv2 in its original (facebookresearch) layout; convert it to ComfyUI's layout first"
        else:
            kind = "not a DINOv2 model"
        raise ValueError(f"{name} is {kind}: expected DINOv2 weights in ComfyUI's CLIP-vision layout "
                         f"({PATCH_KEY!r}, {POSITION_KEY!r}, 'encoder.layer.N.*', 'layernorm.*')")
    if any(k.startswith("embeddings.register_tokens") for k in state_dict):
        raise ValueError(f"{name} is DINOv2 with registers, which ComfyUI's DINOv2 model does not run; "
                         "expected DINOv2 without registers (as BIFRÖST/AnyDoor use)")
    patch = state_dict[PATCH_KEY]
    if patch.ndim != 4 or patch.shape[1] != 3 or patch.shape[2] != patch.shape[3]:
        raise ValueError(f"{name}: {PATCH_KEY} has shape {tuple(patch.shape)}, expected [hidden, 3, patch, patch]")
    hidden, patch_size = patch.shape[0], patch.shape[2]
    positions = state_dict[POSITION_KEY].shape
    grid = math.isqrt(positions[1] - 1) if len(positions) == 3 else 0
    if len(positions) != 3 or grid * grid + 1 != positions[1] or positions[2] != hidden:
        raise ValueError(f"{name}: {POSITION_KEY} has shape {tuple(positions)}, expected [1, 1 + grid², {hidden}]")
    layers = sorted(int(m.group(1)) for k in state_dict if (m := LAYER_KEY.match(k)))
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"{name}: transformer layers 'encoder.layer.N.*' are missing or not numbered 0..N-1")
    swiglu = "encoder.layer.0.mlp.weights_in.weight" in state_dict
    ffn_key = "encoder.layer.0.mlp.weights_in.weight" if swiglu else "encoder.layer.0.mlp.fc1.weight"
    if ffn_key not in state_dict:
        raise ValueError(f"{name}: no feed-forward weights (expected 'mlp.weights_in' for SwiGLU or 'mlp.fc1')")
    width = state_dict[ffn_key].shape[0] // (2 if swiglu else 1)
    if width != comfy_ffn_width(hidden, swiglu):
        raise ValueError(f"{name}: feed-forward width {width} is not DINOv2's mlp_ratio 4 "
                         f"({comfy_ffn_width(hidden, swiglu)} for hidden size {hidden}), which ComfyUI's model builds")
    if hidden % HEAD_DIM:
        raise ValueError(f"{name}: hidden size {hidden} is not a multiple of {HEAD_DIM} (DINOv2's head size)")
    return DinoV2Config(hidden, len(layers), patch_size, grid, swiglu)


def comfy_dinov2_config(config: DinoV2Config) -> dict:
    """The configuration ComfyUI's ClipVisionModel / Dinov2Model read (as in its dino2_*.json)."""
    return {
        "model_type": "dinov2",
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "layer_norm_eps": 1e-6,
        "use_swiglu_ffn": config.swiglu,
        "patch_size": config.patch_size,
        "image_size": config.image_size,
        "image_mean": list(DINO_MEAN),
        "image_std": list(DINO_STD),
    }


def build_clip_vision(config: DinoV2Config) -> comfy.clip_vision.ClipVisionModel:
    """An empty ComfyUI ClipVisionModel of this DINOv2 architecture (ComfyUI's dtype and devices)."""
    # ClipVisionModel only takes its configuration as a JSON file path.
    with tempfile.TemporaryDirectory(prefix="diorama-dinov2-") as folder:
        path = os.path.join(folder, "config.json")
        with open(path, "w") as f:
            json.dump(comfy_dinov2_config(config), f)
        clip_vision = comfy.clip_vision.ClipVisionModel(path)
    if (config.patch_size, config.grid) != (COMFY_PATCH, COMFY_GRID):
        # ComfyUI's embeddings are fixed at 14-px patches and a 37² grid; give them the file's geometry.
        embeddings = clip_vision.model.embeddings
        reference = embeddings.position_embeddings
        embeddings.patch_embeddings.projection = comfy.ops.manual_cast.Conv2d(
            3, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size, bias=True,
            dtype=reference.dtype, device=reference.device)
        embeddings.position_embeddings = torch.nn.Parameter(
            torch.empty(1, config.grid ** 2 + 1, config.hidden_size, dtype=reference.dtype, device=reference.device))
    return clip_vision


def load_dinov2(path: str) -> comfy.clip_vision.ClipVisionModel:
    """A DINOv2 safetensors file (ComfyUI's CLIP-vision layout) → ComfyUI's CLIP_VISION object."""
    name = os.path.basename(path)
    config = infer_dinov2_config(read_safetensors_layout(path), name)
    state_dict, _ = read_safetensors(path)
    clip_vision = build_clip_vision(config)
    missing, unexpected = clip_vision.load_sd(state_dict)
    # The mask token is only used for masked-image training, never at inference.
    missing = [k for k in missing if k != "embeddings.mask_token"]
    if missing:
        raise ValueError(f"{name}: DINOv2 weights are incomplete; missing {len(missing)} tensors, e.g. {missing[:5]}")
    if unexpected:
        log.warning("%s: ignored %d tensors that are not part of DINOv2, e.g. %s", name, len(unexpected), unexpected[:5])
    log.info("loaded DINOv2 from %s: hidden %d, %d layers, %d heads, patch %d, %s, position grid %d²",
             name, config.hidden_size, config.num_layers, config.num_heads, config.patch_size,
             "SwiGLU" if config.swiglu else "MLP", config.grid)
    return clip_vision


def require_dinov2(clip_vision, name: str = "clip_vision") -> comfy.image_encoders.dino2.Dinov2Model:
    """The DINOv2 network inside a CLIP_VISION object, or a ValueError saying what it is instead."""
    model = getattr(clip_vision, "model", None)
    if not isinstance(model, comfy.image_encoders.dino2.Dinov2Model):
        raise ValueError(f"{name} holds a {type(model).__name__}, not DINOv2; load a DINOv2 model (e.g. the "
                         "BIFRÖST/AnyDoor DINOv2-g) with Diorama DINOv2 Loader or ComfyUI's Load CLIP Vision")
    return model


def dinov2_geometry(clip_vision) -> tuple[int, int]:
    """(hidden size, patch size) of a CLIP_VISION DINOv2, read from its weights."""
    projection = require_dinov2(clip_vision).embeddings.patch_embeddings.projection.weight
    return projection.shape[0], projection.shape[-1]


def dinov2_tokens(clip_vision, pixels: torch.Tensor) -> torch.Tensor:
    """Normalised pixels [B,3,H,W] → final-norm class + patch tokens [B, 1 + (H/p)(W/p), C] (float32).

    Equivalent to DINOv2's `forward_features` (x_norm_clstoken, x_norm_patchtokens) at any input
    size that is a multiple of the patch size, on the intermediate device.
    """
    require_dinov2(clip_vision)
    comfy.model_management.load_model_gpu(clip_vision.patcher)
    with torch.no_grad():
        tokens = dinov2_forward(clip_vision.model, pixels.to(clip_vision.load_device))
    return tokens.to(comfy.model_management.intermediate_device())


def dinov2_forward(model: comfy.image_encoders.dino2.Dinov2Model, pixels: torch.Tensor) -> torch.Tensor:
    """dinov2_tokens' maths on the model's own device, with autograd (training fine-tunes DINOv2 through it)."""
    patch_size = model.embeddings.patch_embeddings.projection.weight.shape[-1]
    if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[2] % patch_size or pixels.shape[3] % patch_size:
        raise ValueError(f"expected normalised pixels [batch, 3, H, W] with H and W multiples of the patch size "
                         f"{patch_size}, got {tuple(pixels.shape)}")
    # As ComfyUI's own encode_image: float32 activations, weights cast by its manual-cast layers.
    x = pixels.to(dtype=torch.float32)
    embeddings = model.embeddings
    patches = embeddings.patch_embeddings(x)
    cls = comfy.model_management.cast_to_device(embeddings.cls_token, x.device, x.dtype)
    positions = interpolate_position_embeddings(embeddings.position_embeddings,
                                                x.shape[2] // patch_size, x.shape[3] // patch_size)
    tokens = torch.cat((cls.expand(x.shape[0], -1, -1), patches), dim=1)
    tokens = tokens + comfy.model_management.cast_to_device(positions, x.device, x.dtype)
    tokens, _ = model.encoder(tokens)
    return model.layernorm(tokens)
