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

Version 1 of architecture "imprint_content_adapter" (IMPRINT's content adapter, ops.imprint_adapter)
has the same `diorama_format`, `encoder`, `tokens` and `image_size` keys and, all as decimal text:

    input_dim, input_tokens   DINOv2 token width and count it reads (1 + (image_size / patch)²)
    width, depth, heads, mlp_dim, norm_eps    the pre-LN transformer; activation "gelu" (erf)
    token_mode, num_tokens    "queries" (num_tokens learned query tokens) or "passthrough"
                              (num_tokens = input_tokens: one output token per DINOv2 token)
    context_dim               conditioning token width (768 for SD1.x)
    negative                  "null_tokens" (the adapter on all-zero DINOv2 tokens) or "zero_image"
    reference_background      "black" (IMPRINT's masked object I ⊗ M) or "white" (BIFRÖST's crop)

with the tensors `input_projection.*`, `queries` (queries mode only), `blocks.N.norm1.*`,
`blocks.N.attention.qkv.*` ([3·width, width], q then k then v), `blocks.N.attention.out_proj.*`,
`blocks.N.norm2.*`, `blocks.N.mlp.fc1.*`, `blocks.N.mlp.fc2.*`, `output_norm.*`, `output_projection.*`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import comfy.model_management
import comfy.model_patcher
import safetensors.torch
import torch

from ..ops.imprint_adapter import TOKEN_MODES, ImprintAdapterConfig, ImprintContentAdapter
from .patching import model_patcher
from .state_layout import layout_differences
from .model_folders import read_safetensors

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
    negative: str  # "zero_image": the tokens of an all-zero image; "null_tokens": the adapter on zero tokens
    metadata: dict[str, str]
    input_tokens: int | None = None  # DINOv2 tokens it needs (None: any count, one output token each)
    reference_background: str = "white"  # what replaces everything outside the object in the crop


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


IMPRINT = "imprint_content_adapter"
NEGATIVES = ("null_tokens", "zero_image")
REFERENCE_BACKGROUNDS = ("black", "white")
IMPRINT_V1_FIXED = {"encoder": "dinov2", "tokens": "cls+patch", "activation": "gelu"}
IMPRINT_V1_INTEGERS = ("image_size", "input_dim", "input_tokens", "width", "depth", "heads", "mlp_dim",
                       "num_tokens", "context_dim")


def _metadata_choice(metadata: dict[str, str], key: str, choices: tuple[str, ...], name: str) -> str:
    if metadata.get(key) not in choices:
        raise ValueError(f"{name}: metadata {key}={metadata.get(key)!r}, expected one of {choices}")
    return metadata[key]


def imprint_config_from_metadata(metadata: dict[str, str], name: str) -> ImprintAdapterConfig:
    """The adapter's sizes from version-1 imprint_content_adapter metadata, or a ValueError naming the key."""
    for key, expected in IMPRINT_V1_FIXED.items():
        if metadata.get(key) != expected:
            raise ValueError(f"{name}: metadata {key}={metadata.get(key)!r}, expected {expected!r} "
                             f"for a version-1 {IMPRINT}")
    numbers = {}
    for key in IMPRINT_V1_INTEGERS:
        text = metadata.get(key)
        if text is None or not text.isdigit() or int(text) < 1:
            raise ValueError(f"{name}: metadata {key}={text!r}, expected a positive integer")
        numbers[key] = int(text)
    try:
        norm_eps = float(metadata.get("norm_eps", ""))
    except ValueError:
        norm_eps = float("nan")
    if not norm_eps > 0:
        raise ValueError(f"{name}: metadata norm_eps={metadata.get('norm_eps')!r}, expected a positive number")
    mode = _metadata_choice(metadata, "token_mode", TOKEN_MODES, name)
    if mode == "passthrough" and numbers["num_tokens"] != numbers["input_tokens"]:
        raise ValueError(f"{name}: token_mode 'passthrough' gives one token per DINOv2 token, so num_tokens "
                         f"({numbers['num_tokens']}) must equal input_tokens ({numbers['input_tokens']})")
    if numbers["width"] % numbers["heads"]:
        raise ValueError(f"{name}: metadata width {numbers['width']} is not divisible by heads {numbers['heads']}")
    return ImprintAdapterConfig(
        input_dim=numbers["input_dim"], input_tokens=numbers["input_tokens"], width=numbers["width"],
        depth=numbers["depth"], heads=numbers["heads"], mlp_dim=numbers["mlp_dim"],
        context_dim=numbers["context_dim"], num_queries=numbers["num_tokens"] if mode == "queries" else 0,
        norm_eps=norm_eps)


def imprint_metadata(config: ImprintAdapterConfig, image_size: int, negative: str,
                     reference_background: str) -> dict[str, str]:
    return {"diorama_format": FORMAT, "diorama_format_version": "1", "architecture": IMPRINT,
            **IMPRINT_V1_FIXED, "image_size": str(image_size), "input_dim": str(config.input_dim),
            "input_tokens": str(config.input_tokens), "width": str(config.width), "depth": str(config.depth),
            "heads": str(config.heads), "mlp_dim": str(config.mlp_dim), "norm_eps": repr(config.norm_eps),
            "token_mode": config.token_mode, "num_tokens": str(config.num_tokens),
            "context_dim": str(config.context_dim), "negative": negative,
            "reference_background": reference_background}


def imprint_module_from_state_dict(state_dict: dict[str, torch.Tensor], metadata: dict[str, str],
                                   name: str) -> ImprintContentAdapter:
    """Check every tensor name and shape against the metadata's sizes; the float32 module in eval mode."""
    config = imprint_config_from_metadata(metadata, name)
    module = ImprintContentAdapter(config)
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    differences = layout_differences(expected, {key: tuple(value.shape) for key, value in state_dict.items()})
    missing, unknown, wrong = differences.missing, differences.unknown, differences.wrong
    if missing or unknown:
        raise ValueError(f"{name}: {IMPRINT} tensors missing {missing[:8]}{' …' if len(missing) > 8 else ''}, "
                         f"unknown {unknown[:8]}{' …' if len(unknown) > 8 else ''}; the metadata (depth "
                         f"{config.depth}, token_mode {config.token_mode!r}) asks for {len(expected)} tensors")
    if wrong:
        raise ValueError(f"{name}: tensor shapes disagree with the metadata (input_dim {config.input_dim}, width "
                         f"{config.width}, mlp_dim {config.mlp_dim}, num_tokens {config.num_tokens}, context_dim "
                         f"{config.context_dim}): {', '.join(wrong[:5])}")
    module.load_state_dict({key: value.to(torch.float32) for key, value in state_dict.items()})
    return module.eval()


def _imprint_v1(state_dict: dict[str, torch.Tensor], metadata: dict[str, str], name: str) -> IdentityAdapter:
    module = imprint_module_from_state_dict(state_dict, metadata, name)
    negative = _metadata_choice(metadata, "negative", NEGATIVES, name)
    background = _metadata_choice(metadata, "reference_background", REFERENCE_BACKGROUNDS, name)
    c = module.config
    return IdentityAdapter(model_patcher(module), IMPRINT, c.input_dim, c.context_dim, int(metadata["image_size"]),
                           negative, dict(metadata), input_tokens=c.input_tokens, reference_background=background)


# (architecture, format version) → builder. A new architecture or version adds a row here.
ARCHITECTURES: dict[tuple[str, str], Callable[[dict[str, torch.Tensor], dict[str, str], str], IdentityAdapter]] = {
    ("linear", "1"): _linear_v1,
    (IMPRINT, "1"): _imprint_v1,
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
    state_dict, metadata = read_safetensors(path)
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


def save_imprint_content_adapter(path: str, module: ImprintContentAdapter, image_size: int = 224,
                                 negative: str = "null_tokens", reference_background: str = "black",
                                 overwrite: bool = False) -> None:
    """Write a version-1 imprint_content_adapter file; checked with the loader's rules before writing."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite to replace it)")
    metadata = imprint_metadata(module.config, image_size, negative, reference_background)
    state_dict = {key: value.detach().to(torch.float32).contiguous().cpu() for key, value in module.state_dict().items()}
    identity_adapter_from_state_dict(state_dict, metadata, os.path.basename(path))
    safetensors.torch.save_file(state_dict, path, metadata=metadata)


def apply_identity_adapter(adapter: IdentityAdapter, tokens: torch.Tensor) -> torch.Tensor:
    """Encoder tokens [B,N,in] → conditioning tokens [B,N or num_tokens,out] on the intermediate device."""
    if tokens.shape[-1] != adapter.input_dim:
        raise ValueError(f"the identity adapter expects {adapter.input_dim}-wide encoder tokens, got {tokens.shape[-1]}")
    if adapter.input_tokens is not None and tokens.shape[-2] != adapter.input_tokens:
        raise ValueError(f"the identity adapter expects {adapter.input_tokens} encoder tokens, got {tokens.shape[-2]}")
    comfy.model_management.load_model_gpu(adapter.patcher)
    with torch.no_grad():
        out = adapter.patcher.model(tokens.to(adapter.patcher.load_device, torch.float32))
    return out.to(comfy.model_management.intermediate_device())


def null_tokens(adapter: IdentityAdapter) -> torch.Tensor:
    """The "null_tokens" negative [1, num_tokens, out]: the adapter on an all-zero encoder token sequence."""
    if adapter.input_tokens is None:
        raise ValueError(f"the {adapter.architecture} identity adapter has no fixed token count, so it has no "
                         "null-token negative; its metadata negative must be 'zero_image'")
    return apply_identity_adapter(adapter, torch.zeros(1, adapter.input_tokens, adapter.input_dim))
