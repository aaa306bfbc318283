"""Identity adapters: what turns DINOv2 tokens into the conditioning tokens a generator attends to.

A Diorama identity adapter is a safetensors file whose metadata says what it is:

    diorama_format          "identity_adapter"
    diorama_format_version  "1"
    architecture            "linear"  (BIFRÖST/AnyDoor's `cond_stage_model.projector`)
    encoder                 "dinov2"
    tokens                  "cls+patch"   final-norm class token, then the patch tokens
    image_size              "224"         the reference crop side fed to the encoder
    negative                "zero_image"  the unconditional tokens encode an all-zero image
    source                  "bifrost" | "anydoor"

with the tensors `projection.weight` [out, in] and `projection.bias` [out] ([1024, 1536] for the
released models). Loading dispatches on (architecture, version), so later architectures add an
entry to ARCHITECTURES without touching the files already written.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import comfy.model_management
import comfy.model_patcher
import comfy.utils
import safetensors.torch
import torch

from .patching import model_patcher

log = logging.getLogger(__name__)

FORMAT = "identity_adapter"
SOURCES = ("bifrost", "anydoor")
# Version 1 fixes these for the linear architecture: the reference encoder's exact input and negative.
LINEAR_V1_METADATA = {
    "encoder": "dinov2",
    "tokens": "cls+patch",
    "image_size": "224",
    "negative": "zero_image",
}


@dataclass(frozen=True)
class IdentityAdapter:
    patcher: comfy.model_patcher.ModelPatcher
    architecture: str
    input_dim: int  # encoder token width it expects (1536 for DINOv2-g)
    output_dim: int  # conditioning token width it produces (1024 for SD2.1's cross-attention)
    image_size: int
    negative: str
    metadata: dict[str, str]


class LinearAdapter(torch.nn.Module):
    """One linear map applied to every token (BIFRÖST/AnyDoor's projector)."""

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.projection = torch.nn.Linear(input_dim, output_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.projection(tokens)


def _linear_v1(state_dict: dict[str, torch.Tensor], metadata: dict[str, str], name: str) -> IdentityAdapter:
    for key, expected in LINEAR_V1_METADATA.items():
        if metadata.get(key) != expected:
            raise ValueError(f"{name}: metadata {key}={metadata.get(key)!r}, expected {expected!r} "
                             "for a version-1 linear identity adapter")
    if metadata.get("source") not in SOURCES:
        raise ValueError(f"{name}: metadata source={metadata.get('source')!r}, expected one of {SOURCES}")
    expected_keys = {"projection.weight", "projection.bias"}
    if set(state_dict) != expected_keys:
        raise ValueError(f"{name}: tensors {sorted(state_dict)}, expected exactly {sorted(expected_keys)}")
    weight, bias = state_dict["projection.weight"], state_dict["projection.bias"]
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise ValueError(f"{name}: projection.weight {tuple(weight.shape)} and projection.bias {tuple(bias.shape)}; "
                         "expected [out, in] and [out] (e.g. [1024, 1536] and [1024])")
    module = LinearAdapter(weight.shape[1], weight.shape[0])
    module.load_state_dict({k: v.float() for k, v in state_dict.items()})
    module.eval()
    return IdentityAdapter(model_patcher(module), "linear", weight.shape[1], weight.shape[0],
                           int(metadata["image_size"]), metadata["negative"], dict(metadata))


# (architecture, format version) → builder. A new architecture or version adds a row here.
ARCHITECTURES: dict[tuple[str, str], Callable[[dict[str, torch.Tensor], dict[str, str], str], IdentityAdapter]] = {
    ("linear", "1"): _linear_v1,
}


def identity_adapter_from_state_dict(state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None,
                                     name: str = "identity adapter") -> IdentityAdapter:
    """Validate the metadata, then build the adapter its architecture names."""
    metadata = metadata or {}
    if metadata.get("diorama_format") != FORMAT:
        raise ValueError(f"{name} is not a Diorama identity adapter: its safetensors metadata has "
                         f"diorama_format={metadata.get('diorama_format')!r}, expected {FORMAT!r} "
                         "(convert a BIFRÖST/AnyDoor checkpoint with Diorama's converter)")
    version = metadata.get("diorama_format_version")
    architecture = metadata.get("architecture")
    builder = ARCHITECTURES.get((architecture, version))
    if builder is None:
        known = ", ".join(f"{a} v{v}" for a, v in ARCHITECTURES)
        raise ValueError(f"{name}: identity adapter architecture {architecture!r} format version {version!r} "
                         f"is not supported by this Diorama; supported: {known}")
    return builder(state_dict, metadata, name)


def load_identity_adapter(path: str) -> IdentityAdapter:
    name = os.path.basename(path)
    state_dict, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    adapter = identity_adapter_from_state_dict(state_dict, metadata, name)
    log.info("loaded %s identity adapter %s (%d → %d, source %s)", adapter.architecture, name,
             adapter.input_dim, adapter.output_dim, adapter.metadata.get("source"))
    return adapter


def save_identity_adapter(path: str, weight: torch.Tensor, bias: torch.Tensor, source: str) -> None:
    """Write a version-1 linear identity adapter (the projector of a BIFRÖST/AnyDoor checkpoint)."""
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is unknown; expected one of {SOURCES}")
    metadata = {"diorama_format": FORMAT, "diorama_format_version": "1", "architecture": "linear",
                **LINEAR_V1_METADATA, "source": source}
    state_dict = {"projection.weight": weight.detach().contiguous().cpu(),
                  "projection.bias": bias.detach().contiguous().cpu()}
    # Check before writing, so a converter never leaves a file this loader refuses.
    identity_adapter_from_state_dict(state_dict, metadata, os.path.basename(path))
    safetensors.torch.save_file(state_dict, path, metadata=metadata)


def apply_identity_adapter(adapter: IdentityAdapter, tokens: torch.Tensor) -> torch.Tensor:
    """Encoder tokens [B,N,in] → conditioning tokens [B,N,out] on the intermediate device."""
    if tokens.shape[-1] != adapter.input_dim:
        raise ValueError(f"the identity adapter expects {adapter.input_dim}-wide encoder tokens, got {tokens.shape[-1]}")
    comfy.model_management.load_model_gpu(adapter.patcher)
    with torch.no_grad():
        out = adapter.patcher.model(tokens.to(adapter.patcher.load_device, torch.float32))
    return out.to(comfy.model_management.intermediate_device())
