"""Neural Assets adapters: the trained head that turns DINO features and 3D poses into SD2.1 tokens.

A Diorama Neural Assets adapter (format version 1) is a safetensors file with the metadata

    diorama_format          "neural_assets_adapter"
    diorama_format_version  "1"
    slots                   N        object slots (the background slot comes on top): 4(N+1) tokens
    feature_dim             C        DINO feature width it reads (768 for ViT-B)
    dino                    e.g. "dino_vitb8", the backbone it was trained with (see loaders.dino_features)
    token_dim               "512"    appearance and pose token width
    context_dim             "1024"   conditioning token width (SD2.1's cross-attention)
    gelu                    "tanh"   Flax's default approximation, as the reference computes it

and the tensors of ops.neural_assets_tokens.NeuralAssetsAdapter in torch layout (weight [out, in]):
`appearance.{weight,bias}`, `pose.{0,2}.{weight,bias}`, `background.{0,2}.{weight,bias}`,
`neck.{weight,bias}`. `convert_flax_params` writes one from the reference's Flax parameter tree
(params.npz: '/'-joined module paths, Dense kernels [in, out]).
"""
from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass

import comfy.model_management
import comfy.model_patcher
import numpy as np
import safetensors.torch
import torch

from ..ops.neural_assets_tokens import NeuralAssetsAdapter, NeuralAssetsConfig
from .patching import model_patcher
from .state_layout import layout_differences
from .model_folders import read_safetensors

log = logging.getLogger(__name__)

FORMAT = "neural_assets_adapter"
VERSION = "1"
DEFAULT_DINO = "dino_vitb8"  # the reference's configuration: DINO v1 ViT-B/8, fine-tuned

# The reference's Flax module paths (flax.traverse_util.flatten_dict(params, sep='/')) → torch modules.
FLAX_MODULES = {
    "conditioning_encoder/appearance_encoder/Dense_0": "appearance",
    "conditioning_encoder/object_pose_encoder/mlp_module/Dense_0": "pose.0",
    "conditioning_encoder/object_pose_encoder/mlp_module/Dense_1": "pose.2",
    "conditioning_encoder/MLP_0/Dense_0": "background.0",  # _prepare_bg_pos_enc's MLP (camera row)
    "conditioning_encoder/MLP_0/Dense_1": "background.2",
    "conditioning_neck/feed_forward_module": "neck",
}
# Flax names a trained checkpoint may hold that this adapter does not: the fine-tuned DINO and the UNet.
NOT_ADAPTER_PREFIXES = {
    "conditioning_encoder/appearance_encoder/image_backbone/": "the fine-tuned DINO backbone",
    "generator/": "the diffusion UNet",
}


class AdapterFormatError(ValueError):
    """A file or parameter tree that is not a valid Neural Assets adapter; the message says why."""


def config_from_metadata(metadata: dict[str, str] | None, name: str) -> NeuralAssetsConfig:
    metadata = metadata or {}
    if metadata.get("diorama_format") != FORMAT:
        raise AdapterFormatError(
            f"{name} is not a Diorama Neural Assets adapter: its safetensors metadata has diorama_format="
            f"{metadata.get('diorama_format')!r}, expected {FORMAT!r} (convert the reference's Flax parameters with "
            "`python -m diorama.convert neural-assets params.npz --slots N`)")
    if metadata.get("diorama_format_version") != VERSION:
        raise AdapterFormatError(f"{name}: Neural Assets adapter format version "
                                 f"{metadata.get('diorama_format_version')!r} is not supported; expected {VERSION!r}")
    numbers = {}
    for key in ("slots", "feature_dim", "token_dim", "context_dim"):
        try:
            numbers[key] = int(metadata[key])
        except (KeyError, ValueError):
            raise AdapterFormatError(f"{name}: metadata {key}={metadata.get(key)!r}, expected a positive integer") from None
        if numbers[key] < 1:
            raise AdapterFormatError(f"{name}: metadata {key}={numbers[key]}, expected a positive integer")
    if metadata.get("gelu") != "tanh":
        raise AdapterFormatError(f"{name}: metadata gelu={metadata.get('gelu')!r}, expected 'tanh' (version 1)")
    if not metadata.get("dino"):
        raise AdapterFormatError(f"{name}: metadata 'dino' (the backbone it was trained with, e.g. "
                                 f"{DEFAULT_DINO!r}) is missing")
    return NeuralAssetsConfig(dino=metadata["dino"], **numbers)


def config_metadata(config: NeuralAssetsConfig) -> dict[str, str]:
    return {"diorama_format": FORMAT, "diorama_format_version": VERSION, "slots": str(config.slots),
            "feature_dim": str(config.feature_dim), "dino": config.dino, "token_dim": str(config.token_dim),
            "context_dim": str(config.context_dim), "gelu": config.gelu}


def adapter_from_state_dict(state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None,
                            name: str = "Neural Assets adapter") -> NeuralAssetsAdapter:
    """Validate metadata, tensor names and shapes; the float32 module in eval mode."""
    config = config_from_metadata(metadata, name)
    module = NeuralAssetsAdapter(config)
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    differences = layout_differences(expected, {key: tuple(value.shape) for key, value in state_dict.items()})
    if differences.missing or differences.unknown:
        raise AdapterFormatError(f"{name}: tensors missing {differences.missing}, unknown {differences.unknown}; "
                                 f"expected exactly {sorted(expected)}")
    wrong = differences.wrong
    if wrong:
        raise AdapterFormatError(f"{name}: shapes disagree with the metadata (feature_dim {config.feature_dim}, "
                                 f"token_dim {config.token_dim}, context_dim {config.context_dim}): {', '.join(wrong)}")
    module.load_state_dict({key: value.to(torch.float32) for key, value in state_dict.items()})
    return module.eval()


@dataclass(frozen=True)
class NeuralAssetsAdapterModel:
    """A loaded adapter (socket DIORAMA_NEURAL_ASSETS_ADAPTER), run through ComfyUI's model management."""

    patcher: comfy.model_patcher.ModelPatcher
    config: NeuralAssetsConfig
    metadata: dict[str, str]

    @property
    def module(self) -> NeuralAssetsAdapter:
        return self.patcher.model.network

    def tokens(self, appearance: torch.Tensor, pose_rows: torch.Tensor) -> torch.Tensor:
        """Appearance features [B, 4(N+1), C] and pose rows [B, N+1, 12] → tokens [B, 4(N+1), context_dim]
        (float32, on the intermediate device); see NeuralAssetsAdapter.tokens."""
        comfy.model_management.load_model_gpu(self.patcher)
        device = self.patcher.load_device
        with torch.no_grad():
            out = self.module.tokens(appearance.to(device, torch.float32), pose_rows.to(device, torch.float32))
        return out.to(comfy.model_management.intermediate_device())

    def null_tokens(self, batch: int = 1) -> torch.Tensor:
        """The CFG negative [batch, 4(N+1), context_dim]: the network on all-zero boxes and pose rows."""
        comfy.model_management.load_model_gpu(self.patcher)
        with torch.no_grad():
            out = self.module.null_tokens(batch)
        return out.to(comfy.model_management.intermediate_device())


def load_neural_assets_adapter(path: str) -> NeuralAssetsAdapterModel:
    name = os.path.basename(path)
    state_dict, metadata = read_safetensors(path)
    module = adapter_from_state_dict(state_dict, metadata, name)
    c = module.config
    log.info("loaded Neural Assets adapter %s: %d slots (%d tokens), %s features %d → tokens %d → context %d",
             name, c.slots, c.num_tokens, c.dino, c.feature_dim, c.token_dim, c.context_dim)
    return NeuralAssetsAdapterModel(model_patcher(module), c, dict(metadata))


def save_neural_assets_adapter(path: str, module: NeuralAssetsAdapter, overwrite: bool = False) -> None:
    """Write a version-1 adapter file; checked with the loader's rules before anything is written."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite to replace it)")
    metadata = config_metadata(module.config)
    state_dict = {key: value.detach().to(torch.float32).contiguous().cpu() for key, value in module.state_dict().items()}
    adapter_from_state_dict(state_dict, metadata, os.path.basename(path))
    safetensors.torch.save_file(state_dict, path, metadata=metadata)


def read_flax_params(path: str) -> dict[str, np.ndarray]:
    """A params.npz (numpy arrays only; pickled objects are refused) → {flax name: array}."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, zipfile.BadZipFile, OSError) as error:
        raise AdapterFormatError(f"{path} is not a readable .npz of plain numpy arrays: {error}") from error


def flax_to_state_dict(params: dict[str, np.ndarray], name: str = "params") -> dict[str, torch.Tensor]:
    """The reference's flattened Flax parameters → the adapter's torch tensors (kernels transposed).

    Names may carry a leading 'params/' (a flattened variables dict). Every name must be one of the
    adapter's; anything else, and any missing name, is an error naming them."""
    flat = {key.removeprefix("params/"): value for key, value in params.items()}
    state_dict, unknown = {}, []
    for key, value in flat.items():
        module, _, leaf = key.rpartition("/")
        if module in FLAX_MODULES and leaf in ("kernel", "bias"):
            target = FLAX_MODULES[module]
            if leaf == "kernel":
                if value.ndim != 2:
                    raise AdapterFormatError(f"{name}: {key} has shape {value.shape}, expected a Dense kernel [in, out]")
                state_dict[f"{target}.weight"] = torch.from_numpy(np.ascontiguousarray(value.T))
            else:
                state_dict[f"{target}.bias"] = torch.from_numpy(np.array(value))
        else:
            unknown.append(key)
    if unknown:
        hints = [f"{sum(k.startswith(p) for k in unknown)} tensors of {what} ({p}*)"
                 for p, what in NOT_ADAPTER_PREFIXES.items() if any(k.startswith(p) for k in unknown)]
        raise AdapterFormatError(
            f"{name}: {len(unknown)} parameter names are not part of the Neural Assets adapter, e.g. {sorted(unknown)[:5]}"
            + (f"; they include {', '.join(hints)}, which this converter does not port" if hints else "")
            + f". Expected exactly kernel and bias of {sorted(FLAX_MODULES)}")
    missing = sorted(f"{module}/{leaf}" for module in FLAX_MODULES for leaf in ("kernel", "bias")
                     if f"{FLAX_MODULES[module]}.{'weight' if leaf == 'kernel' else 'bias'}" not in state_dict)
    if missing:
        raise AdapterFormatError(f"{name}: parameters missing: {missing}")
    return state_dict


def convert_flax_params(npz_path: str, output_path: str, slots: int, dino: str = DEFAULT_DINO,
                        overwrite: bool = False) -> NeuralAssetsConfig:
    """Convert the reference's params.npz into a version-1 adapter file at output_path.

    The Flax tree does not say how many slots the model was trained with (the weights are shared
    across slots), so `slots` must be given: 10 for the MOVi-A/B/C models, 23 for MOVi-E/F."""
    if slots < 1:
        raise AdapterFormatError(f"slots must be at least 1, got {slots}")
    name = os.path.basename(npz_path)
    state_dict = flax_to_state_dict(read_flax_params(npz_path), name)
    feature_dim = state_dict["appearance.weight"].shape[1]
    token_dim = state_dict["appearance.weight"].shape[0]
    context_dim = state_dict["neck.weight"].shape[0]
    config = NeuralAssetsConfig(slots=slots, feature_dim=feature_dim, dino=dino, token_dim=token_dim,
                                context_dim=context_dim)
    module = adapter_from_state_dict(state_dict, config_metadata(config), name)
    save_neural_assets_adapter(output_path, module, overwrite=overwrite)
    log.info("wrote %s: Neural Assets adapter with %d slots, %s features %d", output_path, slots, dino, feature_dim)
    return config
