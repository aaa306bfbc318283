"""Saving composites so that a failed write (full disk, quota, a vanished folder) leaves nothing behind.

ComfyUI's SaveImage writes each PNG in place, so a write that fails half-way leaves a truncated file
under a real output name. Here every image of the batch is first written to a hidden temporary file
in the output folder and renamed only when all of them are complete: a batch is saved whole or not
at all, and the names the UI shows always refer to complete files.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import comfy.utils
import folder_paths
import torch
from comfy.cli_args import args
from comfy_api.latest import io, ui
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..ops.checks import file_pixels
from .common import CATEGORY

log = logging.getLogger(__name__)


def _png_metadata(prompt: dict | None, extra_pnginfo: dict | None) -> PngInfo | None:
    """The workflow and prompt ComfyUI embeds in its PNGs, so a saved composite still opens as a graph."""
    if args.disable_metadata:
        return None
    metadata = PngInfo()
    if prompt is not None:
        metadata.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        metadata.add_text(key, json.dumps(value))
    return metadata


def _temporary_path(final: Path) -> Path:
    # Hidden and outside ComfyUI's `<prefix>_<counter>_.png` pattern, so the counter never counts it.
    return final.with_name(f".{final.name}.{os.getpid()}.partial")


def write_pngs_atomically(images: list[Image.Image], paths: list[Path], metadata: PngInfo | None,
                          compress_level: int, on_written: Callable[[int], None] | None = None) -> None:
    """Write every image to its path, or none of them: on any error the temporary files are removed
    and the error is raised with the file and folder it concerned."""
    temporaries = [_temporary_path(path) for path in paths]
    try:
        for index, (image, temporary) in enumerate(zip(images, temporaries)):
            image.save(temporary, format="PNG", pnginfo=metadata, compress_level=compress_level)
            if on_written is not None:
                on_written(index)
    except OSError as error:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
        reason = error.strerror or str(error)
        raise OSError(error.errno, f"could not write {paths[index].name} into the output folder {paths[index].parent}: "
                                   f"{reason}. Nothing of this batch was saved (no partial files); free space "
                                   f"or choose another output folder, then queue again") from error
    for temporary, path in zip(temporaries, paths):
        os.replace(temporary, path)


class SaveImageAtomic(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaSaveImage",
            display_name="Diorama Save Image",
            category=f"{CATEGORY}/output",
            description="Saves images to the output folder like Save Image, but all-or-nothing: a full disk or "
                        "another write error saves nothing and leaves no partial file, with an error that says why. "
                        "Pixels are rounded to the nearest 8-bit level, so a loaded image saves back unchanged.",
            inputs=[
                io.Image.Input("images", tooltip="The images to save (every item of the batch)."),
                io.String.Input("filename_prefix", default="Diorama",
                                tooltip="Prefix of the saved files; may hold a subfolder and ComfyUI's %date:…% "
                                        "or %Node.widget% formatting, as in Save Image."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images: torch.Tensor, filename_prefix: str) -> io.NodeOutput:
        if images.ndim != 4 or images.shape[0] == 0 or images.shape[-1] not in (1, 3, 4):
            raise ValueError(f"Diorama Save Image: images must be an IMAGE batch [B, H, W, C] with C 1, 3 or 4 "
                             f"and B ≥ 1, got shape {tuple(images.shape)}")
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), images.shape[2], images.shape[1])
        pixels = file_pixels(images).cpu().numpy()
        pictures = [Image.fromarray(item[..., 0] if item.shape[-1] == 1 else item) for item in pixels]
        names = [f"{filename.replace('%batch_num%', str(index))}_{counter + index:05}_.png" for index in range(len(pictures))]
        progress = comfy.utils.ProgressBar(len(pictures))
        write_pngs_atomically(pictures, [Path(folder) / name for name in names],
                              _png_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo), compress_level=4,
                              on_written=lambda _: progress.update(1))
        log.info("saved %d image(s) to %s", len(names), folder)
        return io.NodeOutput(ui=ui.SavedImages([ui.SavedResult(name, subfolder, io.FolderType.output) for name in names]))
