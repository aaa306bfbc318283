"""Start ComfyUI in this process, headless, with the custom nodes loaded."""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from .event_loop import outside_running_loop

_booted = False


def find_comfyui_root() -> Path:
    """The ComfyUI tree to run: $DIORAMA_COMFYUI, else the ComfyUI whose custom_nodes/ holds the pack."""
    candidates = [Path(os.environ["DIORAMA_COMFYUI"])] if os.environ.get("DIORAMA_COMFYUI") else []
    # The pack is often a symlink in custom_nodes/: look beside both its linked and its real path.
    for pack in (Path(__file__).absolute().parents[1], Path(__file__).resolve().parents[1]):
        if pack.parent.name == "custom_nodes":
            candidates.append(pack.parent.parent)
    for candidate in candidates:
        if (candidate / "comfy" / "model_management.py").is_file() and (candidate / "nodes.py").is_file():
            return candidate
    raise RuntimeError(
        "ComfyUI was not found. Set DIORAMA_COMFYUI to a ComfyUI folder (one holding nodes.py and comfy/), "
        "or run ./dev.sh, which builds one. Searched: " + (", ".join(map(str, candidates)) or "nothing (no candidates)")
    )


def boot_comfyui(base_directory: str | None = None, output_directory: str | None = None) -> None:
    """Import ComfyUI as a library and load its nodes and the custom nodes (once per process)."""
    global _booted
    if _booted:
        if output_directory:
            sys.modules["folder_paths"].set_output_directory(os.path.abspath(output_directory))
        return
    root = find_comfyui_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))

    import torch
    from comfy.cli_args import args

    base_directory = base_directory or os.environ.get("DIORAMA_BASE_DIR")
    if base_directory:
        args.base_directory = os.path.abspath(base_directory)
    if not torch.cuda.is_available():
        # Measured on CPU: pytorch attention runs UNet and DINOv2 steps ~1.5x faster than the default.
        args.cpu = True
        args.use_pytorch_cross_attention = True

    import folder_paths

    if output_directory:
        folder_paths.set_output_directory(os.path.abspath(output_directory))
    import utils.extra_config  # noqa: F401  (ComfyUI expects it imported before nodes)
    import nodes

    outside_running_loop(lambda: asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False)))
    # ComfyUI only logs a custom node pack that fails to import; a headless run must not go on without it.
    if not any(name.startswith("Diorama") for name in nodes.NODE_CLASS_MAPPINGS):
        raise RuntimeError("the Diorama nodes did not load into ComfyUI (run with --verbose to see why); "
                           f"custom node folders searched: {folder_paths.get_folder_paths('custom_nodes')}")
    _booted = True
