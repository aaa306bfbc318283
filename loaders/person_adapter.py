"""Person insertion adapters: safetensors files holding the image and pose projections.

Metadata (all strings):

    diorama_format          "person_insertion_adapter"
    diorama_format_version  "1"
    image_encoder           "clip_vision" (CLIP image_embeds) | "dinov2" (final-norm class token)
    image_size              side of the square reference crop the encoder sees (e.g. "224")
    image_dim               pooled image embedding width (768 for CLIP ViT-L/14's image_embeds)
    token_dim               the UNet's cross-attention width (768 for SD1.x, 1024 for SD2.x)
    image_tokens            m, tokens the image projection makes
    pose_tokens             k, tokens the pose projection makes
    pose_inputs             "target" (17·3 numbers) | "target+reference" (2·17·3: target, then the
                            reference person's own skeleton)
    keypoints               "coco17" (x, y as fractions of the sampled image, visibility; (0,0,0) unlabelled)

Tensors: image_projection.weight [m·D, image_dim], image_projection.bias [m·D], image_null [m, D],
pose_projection.weight [k·D, pose_dim], pose_projection.bias [k·D], pose_null [k, D].
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import comfy.model_management
import comfy.model_patcher
import safetensors.torch
import torch

from ..ops.person_tokens import PersonAdapter, PersonAdapterConfig
from .patching import model_patcher
from .model_folders import read_safetensors

log = logging.getLogger(__name__)

FORMAT = "person_insertion_adapter"
VERSION = "1"
KEYPOINT_LAYOUT = "coco17"
INT_FIELDS = ("image_size", "image_dim", "token_dim", "image_tokens", "pose_tokens")
STR_FIELDS = ("image_encoder", "pose_inputs")


@dataclass(frozen=True)
class LoadedPersonAdapter:
    patcher: comfy.model_patcher.ModelPatcher
    config: PersonAdapterConfig
    name: str

    @property
    def module(self) -> PersonAdapter:
        return self.patcher.model.network


def expected_shapes(config: PersonAdapterConfig) -> dict[str, tuple[int, ...]]:
    c = config
    return {
        "image_projection.weight": (c.image_tokens * c.token_dim, c.image_dim),
        "image_projection.bias": (c.image_tokens * c.token_dim,),
        "image_null": (c.image_tokens, c.token_dim),
        "pose_projection.weight": (c.pose_tokens * c.token_dim, c.pose_dim),
        "pose_projection.bias": (c.pose_tokens * c.token_dim,),
        "pose_null": (c.pose_tokens, c.token_dim),
    }


def config_from_metadata(metadata: dict[str, str] | None, name: str) -> PersonAdapterConfig:
    metadata = metadata or {}
    if metadata.get("diorama_format") != FORMAT:
        raise ValueError(f"{name} is not a Diorama person insertion adapter: its safetensors metadata has "
                         f"diorama_format={metadata.get('diorama_format')!r}, expected {FORMAT!r}")
    if metadata.get("diorama_format_version") != VERSION:
        raise ValueError(f"{name}: person insertion adapter format version "
                         f"{metadata.get('diorama_format_version')!r} is not supported by this Diorama; "
                         f"supported: {VERSION!r}")
    if metadata.get("keypoints", KEYPOINT_LAYOUT) != KEYPOINT_LAYOUT:
        raise ValueError(f"{name}: metadata keypoints={metadata.get('keypoints')!r}, expected {KEYPOINT_LAYOUT!r}")
    values: dict = {}
    for field in INT_FIELDS:
        try:
            values[field] = int(metadata[field])
        except (KeyError, ValueError):
            raise ValueError(f"{name}: metadata {field}={metadata.get(field)!r}, expected a positive integer") from None
    for field in STR_FIELDS:
        if field not in metadata:
            raise ValueError(f"{name}: metadata {field} is missing")
        values[field] = metadata[field]
    try:
        return PersonAdapterConfig(**values)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def metadata_for(config: PersonAdapterConfig) -> dict[str, str]:
    return {"diorama_format": FORMAT, "diorama_format_version": VERSION, "keypoints": KEYPOINT_LAYOUT,
            **{k: str(v) for k, v in asdict(config).items()}}


def person_adapter_from_state_dict(state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None,
                                   name: str = "person adapter") -> PersonAdapter:
    """Validate metadata and tensor shapes, then build the module (eval mode, float32)."""
    config = config_from_metadata(metadata, name)
    shapes = expected_shapes(config)
    if set(state_dict) != set(shapes):
        missing, extra = sorted(set(shapes) - set(state_dict)), sorted(set(state_dict) - set(shapes))
        raise ValueError(f"{name}: tensors do not match a person insertion adapter (missing {missing}, "
                         f"unexpected {extra}); expected exactly {sorted(shapes)}")
    for key, shape in shapes.items():
        if tuple(state_dict[key].shape) != shape:
            raise ValueError(f"{name}: {key} has shape {list(state_dict[key].shape)}, expected {list(shape)} for "
                             f"image_dim {config.image_dim}, token_dim {config.token_dim}, {config.image_tokens} image "
                             f"tokens, {config.pose_tokens} pose tokens, pose inputs {config.pose_inputs!r}")
    module = PersonAdapter(config)
    module.load_state_dict({k: v.float() for k, v in state_dict.items()})
    return module.eval()


def load_person_adapter(path: str) -> LoadedPersonAdapter:
    name = os.path.basename(path)
    state_dict, metadata = read_safetensors(path)
    module = person_adapter_from_state_dict(state_dict, metadata, name)
    c = module.config
    log.info("loaded person adapter %s: %s %d → %d image tokens, pose (%s) → %d tokens, width %d", name,
             c.image_encoder, c.image_dim, c.image_tokens, c.pose_inputs, c.pose_tokens, c.token_dim)
    return LoadedPersonAdapter(model_patcher(module), c, name)


def save_person_adapter(path: str, module: PersonAdapter) -> None:
    """Write an adapter in format version 1 (checked by the loader's own rules before writing)."""
    state_dict = {k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()}
    metadata = metadata_for(module.config)
    person_adapter_from_state_dict(state_dict, metadata, os.path.basename(path))
    safetensors.torch.save_file(state_dict, path, metadata=metadata)


def run_adapter(adapter: LoadedPersonAdapter, part: str, values: torch.Tensor) -> torch.Tensor:
    """The image or pose projection (part 'image' | 'pose'), on ComfyUI's device, back on the intermediate device."""
    comfy.model_management.load_model_gpu(adapter.patcher)
    module = adapter.module
    device = adapter.patcher.load_device
    with torch.no_grad():
        out = getattr(module, part)(values.to(device, torch.float32))
    return out.to(comfy.model_management.intermediate_device())


def null_tokens(adapter: LoadedPersonAdapter, part: str) -> torch.Tensor:
    """The learnt null tokens [1, n, D] of part 'image' | 'pose'."""
    tensor = getattr(adapter.module, f"{part}_null")
    return tensor.detach().float()[None].to(comfy.model_management.intermediate_device())
