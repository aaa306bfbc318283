"""python -m diorama.convert {bifrost,anydoor} FILE.ckpt [--name NAME] [--models-dir DIR] [--dtype fp16] [--overwrite]
   python -m diorama.convert neural-assets PARAMS.npz --slots N [--dino NAME] [--name NAME] [--models-dir DIR]
   python -m diorama.convert llava-bifrost BASE_FOLDER LORA_FOLDER --out NAME [--vision-tower CLIP_FOLDER]
                             [--models-dir DIR] [--dtype bf16] [--overwrite]

Converts a released BIFRÖST or AnyDoor Lightning checkpoint into the model files ComfyUI's loaders
read: UNet → diffusion_models/, ControlNet(s) → controlnet/, DINOv2-g → clip_vision/, identity
projection → identity_adapters/, VAE → vae/. Only weights are loaded (torch.load weights_only=True,
memory-mapped); optimizer state is skipped without being read. Existing files are never replaced
unless --overwrite is given.

neural-assets: the reference's Flax parameter tree (params.npz of plain arrays, read without
pickle) → a Neural Assets adapter in neural_assets/; --slots is the N it was trained with.

llava-bifrost: BIFRÖST's LLaVA-1.5 (original LLaVA folder + its LoRA folder) → a transformers LLaVA
folder in LLM/NAME with the LoRA merged (see loaders/llava_conversion.py).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

FOLDERS = ("diffusion_models", "controlnet", "clip_vision", "identity_adapters", "vae", "neural_assets", "LLM")


def _import_comfyui() -> None:
    """Make ComfyUI's modules importable without starting its nodes: conversion needs its model
    classes (to check layouts) and folder_paths (to find the model folders), nothing else."""
    if "folder_paths" in sys.modules:  # already booted in this process (tests, or a host that imported us)
        return
    from .runner.boot import find_comfyui_root

    root = find_comfyui_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import torch
    from comfy.cli_args import args

    if os.environ.get("DIORAMA_BASE_DIR"):
        args.base_directory = os.path.abspath(os.environ["DIORAMA_BASE_DIR"])
    if not torch.cuda.is_available():
        args.cpu = True


def output_folders(models_dir: str | None) -> dict[str, str]:
    """Where each part goes: DIR/<folder>/ with --models-dir, else ComfyUI's own path for that folder."""
    if models_dir:
        return {folder: os.path.join(os.path.abspath(models_dir), folder) for folder in FOLDERS}
    import folder_paths

    from .loaders.model_folders import register_model_folders

    register_model_folders()
    return {folder: _default_path(folder, folder_paths.get_folder_paths(folder)) for folder in FOLDERS}


def _default_path(folder: str, paths: list[str]) -> str:
    # ComfyUI lists the legacy models/unet/ before models/diffusion_models/; both are read by
    # UNETLoader, and the folder named like the model type is where people look for the file.
    return next((p for p in paths if os.path.basename(os.path.normpath(p)) == folder), paths[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diorama.convert", description=__doc__.split("\n\n")[1])
    parser.add_argument("model", choices=["bifrost", "anydoor", "neural-assets", "llava-bifrost"],
                        help="which released model the checkpoint holds")
    parser.add_argument("checkpoint", help="the Lightning .ckpt file (e.g. AnyDoor's epoch=1-step=8687.ckpt), for "
                                           "neural-assets the Flax params .npz, for llava-bifrost the base LLaVA folder")
    parser.add_argument("lora", nargs="?", help="llava-bifrost: the LoRA folder (adapter_config.json, "
                                                "adapter_model.safetensors, optional non_lora_trainables)")
    parser.add_argument("--out", help="llava-bifrost: name of the folder written under LLM/")
    parser.add_argument("--vision-tower", help="llava-bifrost: the CLIP folder, when the base weights hold no "
                                               "vision tower")
    parser.add_argument("--slots", type=int, help="neural-assets: object slots N the model was trained with "
                                                  "(10 for MOVi-A/B/C, 23 for MOVi-E/F)")
    parser.add_argument("--dino", default="dino_vitb8", help="neural-assets: the DINO it was trained with "
                                                             "(default dino_vitb8, the reference's)")
    parser.add_argument("--name", help="file name stem of the written parts (default: the model name)")
    parser.add_argument("--models-dir", help="write into DIR/<folder>/ instead of ComfyUI's model folders")
    parser.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="cast floating-point weights (default: as stored)")
    parser.add_argument("--overwrite", action="store_true", help="replace files that already exist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if args.model == "llava-bifrost":
        if not args.lora or not args.out:
            parser.error("llava-bifrost needs BASE_FOLDER LORA_FOLDER --out NAME")
        return convert_llava_bifrost(args)
    if args.lora or args.out or args.vision_tower:
        parser.error("LORA_FOLDER, --out and --vision-tower only apply to llava-bifrost")
    if args.model == "neural-assets":
        if args.dtype:
            parser.error("--dtype does not apply to neural-assets (adapters are written in float32)")
        return convert_neural_assets(args)
    if args.slots is not None:
        parser.error("--slots only applies to neural-assets")

    try:
        _import_comfyui()
        from .loaders.bifrost_checkpoint import DTYPES, CheckpointError, convert_checkpoint

        written = convert_checkpoint(args.checkpoint, args.model, output_folders(args.models_dir), name=args.name,
                                     dtype=DTYPES[args.dtype] if args.dtype else None, overwrite=args.overwrite)
    except (CheckpointError, FileExistsError, FileNotFoundError, RuntimeError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    log = logging.getLogger("diorama.convert")
    log.info("converted %s (%s) into %d files, %.2f GB in all:", args.checkpoint, args.model, len(written),
             sum(w.size_bytes for w in written) / 1e9)
    for part in written:
        log.info("  %-15s %8.1f MB  %s  (%s)", part.spec.suffix, part.size_bytes / 1e6, part.path, part.spec.loader)
    return 0


def convert_neural_assets(args: argparse.Namespace) -> int:
    if args.slots is None:
        sys.stderr.write("error: neural-assets needs --slots N (the object slots the model was trained with: "
                         "10 for MOVi-A/B/C, 23 for MOVi-E/F)\n")
        return 2
    try:
        _import_comfyui()
        from .loaders.neural_assets_adapter import AdapterFormatError, convert_flax_params

        folder = output_folders(args.models_dir)["neural_assets"]
        os.makedirs(folder, exist_ok=True)
        name = args.name or f"neural_assets_{args.dino}_n{args.slots}"
        path = os.path.join(folder, f"{name}.safetensors")
        config = convert_flax_params(args.checkpoint, path, args.slots, args.dino, overwrite=args.overwrite)
    except (AdapterFormatError, FileExistsError, FileNotFoundError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    logging.getLogger("diorama.convert").info("converted %s into %s (%d slots → %d tokens, %s features)",
                                              args.checkpoint, path, config.slots, config.num_tokens, config.dino)
    return 0


def convert_llava_bifrost(args: argparse.Namespace) -> int:
    try:
        _import_comfyui()
        from .loaders.bifrost_checkpoint import DTYPES
        from .loaders.llava_conversion import LlavaConversionError, convert_llava

        out = os.path.join(output_folders(args.models_dir)["LLM"], args.out)
        report = convert_llava(args.checkpoint, args.lora, out, vision_tower=args.vision_tower,
                               dtype=DTYPES[args.dtype] if args.dtype else None, overwrite=args.overwrite)
    except (LlavaConversionError, FileExistsError, FileNotFoundError, OSError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    logging.getLogger("diorama.convert").info(
        "converted %s + LoRA %s into %s: %d tensors, %d with the LoRA merged, %d from non_lora_trainables, "
        "%d recomputed buffers/unused parts dropped, tokens added: %s", args.checkpoint, args.lora, out,
        report.converted, len(report.merged), len(report.replaced), len(report.dropped), report.added_tokens or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
