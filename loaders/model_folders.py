"""Diorama's model folders, registered with ComfyUI so extra_model_paths.yaml can add to them."""
from __future__ import annotations

import os

import comfy.utils
import folder_paths
import safetensors
import torch

DEPTH_FOLDER = "depth_estimation"
IDENTITY_ADAPTER_FOLDER = "identity_adapters"
NEURAL_ASSETS_FOLDER = "neural_assets"  # Neural Assets adapters (safetensors)
DINO_FOLDER = "dino"  # transformers DINO / DINOv2 folders for Neural Assets
PERSON_ADAPTER_FOLDER = "person_adapters"  # person insertion adapters (safetensors)
LLM_FOLDER = "LLM"  # transformers VLM folders; the name other packs (Florence-2, Qwen-VL nodes) share
SMALL_MODEL_FOLDER = "diorama_small_models"  # Diorama's own small UNets (loaders.small_model)
# The small models shipped with the pack (<pack>/small_models/), listed after the user's folders.
SHIPPED_SMALL_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "small_models")


def register_model_folders() -> None:
    """Add the default folders after any the user configured, never replacing them."""
    for folder in (DEPTH_FOLDER, IDENTITY_ADAPTER_FOLDER, NEURAL_ASSETS_FOLDER, DINO_FOLDER, PERSON_ADAPTER_FOLDER,
                   LLM_FOLDER, SMALL_MODEL_FOLDER):
        folder_paths.add_model_folder_path(folder, os.path.join(folder_paths.models_dir, folder))
    folder_paths.add_model_folder_path(SMALL_MODEL_FOLDER, SHIPPED_SMALL_MODELS)


def transformers_folders(folder_name: str) -> list[str]:
    """Model folders (holding config.json) under a registered folder, relative to it."""
    configs = [f for f in folder_paths.get_filename_list(folder_name) if os.path.basename(f) == "config.json"]
    return sorted({os.path.dirname(f).replace(os.sep, "/") for f in configs if os.path.dirname(f)})


def check_model_name(folder_name: str, name: str) -> None:
    """Refuse names that could reach outside the model folders, before any file is looked at.

    ComfyUI's get_full_path silently strips a leading `..` or `/`, which would load a different file
    than the one named; an API client could also send any string. So `..` parts, absolute paths and
    drive letters are errors here, not rewritten."""
    parts = name.replace("\\", "/").split("/")
    if not name or os.path.isabs(name) or name.startswith(("/", "\\")) or os.path.splitdrive(name)[0] \
            or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise ValueError(f"model name {name!r} is refused: expected a name relative to the {folder_name!r} model "
                         "folders, as listed by the loader (no '..' parts, no absolute path or drive)")


def resolve_transformers_folder(folder_name: str, name: str) -> str:
    """Absolute path of a listed model folder, or an error naming every folder searched."""
    check_model_name(folder_name, name)
    for root in folder_paths.get_folder_paths(folder_name):
        candidate = os.path.join(root, name)
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return candidate
    searched = ", ".join(folder_paths.get_folder_paths(folder_name))
    raise FileNotFoundError(
        f"model folder {name!r} (a transformers folder with config.json and model.safetensors) was not found "
        f"in the {folder_name!r} model folders: {searched}"
    )


def resolve_model_file(folder_name: str, name: str) -> str:
    """Absolute path of a listed model file, or an error naming every folder searched."""
    check_model_name(folder_name, name)
    path = folder_paths.get_full_path(folder_name, name)
    if path is None:
        searched = ", ".join(folder_paths.get_folder_paths(folder_name))
        raise FileNotFoundError(f"model file {name!r} was not found in the {folder_name!r} model folders: {searched}")
    return path


def _unreadable(path: str, error: Exception) -> ValueError:
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ValueError(f"{path}: cannot be read as a safetensors file ({detail}); the file is truncated, corrupt or "
                      "not a safetensors file: expected a complete .safetensors file (compare its size with the "
                      "source and copy it again)")


SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


def safetensors_files(folder_name: str) -> list[str]:
    """The safetensors files of a model folder (pickled formats are never offered)."""
    return [f for f in folder_paths.get_filename_list(folder_name) if f.lower().endswith(SAFETENSORS_SUFFIXES)]


def _require_safetensors_name(path: str) -> None:
    if not path.lower().endswith(SAFETENSORS_SUFFIXES):
        raise ValueError(f"{os.path.basename(path)}: expected a .safetensors file (pickled .ckpt/.pt/.bin weights "
                         "are not loaded here)")


def read_safetensors(path: str) -> tuple[dict, dict]:
    """(state dict, metadata) of a .safetensors file through ComfyUI's loader, with a clear error for a
    truncated or non-safetensors file: safetensors' own message ("header too large") names neither the
    file nor what to do, and ComfyUI only rewrites it for some safetensors versions."""
    _require_safetensors_name(path)
    try:
        state_dict, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    except Exception as error:  # SafetensorError is not importable under a stable name across versions
        raise _unreadable(path, error) from None
    return state_dict, metadata or {}


def read_safetensors_layout(path: str) -> dict[str, torch.Tensor]:
    """The file's tensors as meta tensors of the stored shapes, read from the header alone, so a file of
    the wrong model is refused before gigabytes of weights are read."""
    _require_safetensors_name(path)
    try:
        with safetensors.safe_open(path, framework="pt") as file:
            return {key: torch.empty(file.get_slice(key).get_shape(), device="meta") for key in file.keys()}
    except Exception as error:
        raise _unreadable(path, error) from None
