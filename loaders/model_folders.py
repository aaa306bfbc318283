"""Diorama's model folders, registered with ComfyUI so extra_model_paths.yaml can add to them."""
from __future__ import annotations

import os

import folder_paths

DEPTH_FOLDER = "depth_estimation"
IDENTITY_ADAPTER_FOLDER = "identity_adapters"
NEURAL_ASSETS_FOLDER = "neural_assets"  # Neural Assets adapters (safetensors)
DINO_FOLDER = "dino"  # transformers DINO / DINOv2 folders for Neural Assets
PERSON_ADAPTER_FOLDER = "person_adapters"  # person insertion adapters (safetensors)
LLM_FOLDER = "LLM"  # transformers VLM folders; the name other packs (Florence-2, Qwen-VL nodes) share


def register_model_folders() -> None:
    """Add the default folders after any the user configured, never replacing them."""
    for folder in (DEPTH_FOLDER, IDENTITY_ADAPTER_FOLDER, NEURAL_ASSETS_FOLDER, DINO_FOLDER, PERSON_ADAPTER_FOLDER,
                   LLM_FOLDER):
        folder_paths.add_model_folder_path(folder, os.path.join(folder_paths.models_dir, folder))


def transformers_folders(folder_name: str) -> list[str]:
    """Model folders (holding config.json) under a registered folder, relative to it."""
    configs = [f for f in folder_paths.get_filename_list(folder_name) if os.path.basename(f) == "config.json"]
    return sorted({os.path.dirname(f).replace(os.sep, "/") for f in configs if os.path.dirname(f)})


def resolve_transformers_folder(folder_name: str, name: str) -> str:
    """Absolute path of a listed model folder, or an error naming every folder searched."""
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
    path = folder_paths.get_full_path(folder_name, name)
    if path is None:
        searched = ", ".join(folder_paths.get_folder_paths(folder_name))
        raise FileNotFoundError(f"model file {name!r} was not found in the {folder_name!r} model folders: {searched}")
    return path
