"""Reading dataset files (PIL, no OpenCV) with errors that name the file and say what was expected."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
INSTANCE_MAP_MODES = ("P", "L", "I;16", "I")  # palette index or grey value = instance id


def _open(path: Path) -> Image.Image:
    try:
        picture = Image.open(path)
        picture.load()  # Image.open is lazy: a truncated file only fails when its pixels are read
    except FileNotFoundError:
        raise ValueError(f"image file {path} does not exist") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {path} ({error}); expected a readable JPEG or PNG") from None
    return picture


def read_rgb(path: Path) -> torch.Tensor:
    """[3, H, W] float32 in [0, 1]; alpha, if any, is dropped."""
    pixels = np.asarray(_open(path).convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255


def read_rgba(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[3, H, W] float32 RGB and, when the file has an alpha channel, its [H, W] bool mask (alpha > 0.5)."""
    picture = _open(path)
    if picture.mode not in ("RGBA", "LA", "PA") and "transparency" not in picture.info:
        return read_rgb(path), None
    pixels = torch.from_numpy(np.asarray(picture.convert("RGBA")).copy())
    return pixels[..., :3].permute(2, 0, 1).float() / 255, pixels[..., 3] > 127


def read_instance_map(path: Path) -> torch.Tensor:
    """[H, W] int64 instance ids (0 = background) from a palette or greyscale PNG."""
    picture = _open(path)
    if picture.mode not in INSTANCE_MAP_MODES:
        raise ValueError(f"mask {path} is a {picture.mode} image; expected a palette (P) or greyscale (L) PNG whose "
                         "pixel values are instance ids (0 = background), as YouTube-VOS/DAVIS annotations")
    return torch.from_numpy(np.asarray(picture).astype(np.int64))


def read_binary_mask(path: Path) -> torch.Tensor:
    """[H, W] bool: any non-zero pixel of a greyscale/palette/RGB(A) mask image (alpha, when present)."""
    picture = _open(path)
    if picture.mode in ("RGBA", "LA"):
        return torch.from_numpy(np.asarray(picture.getchannel("A")).copy()) > 127
    return torch.from_numpy(np.asarray(picture.convert("L")).copy()) > 127


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path} as JSON ({error})") from None


def require_same_size(image: torch.Tensor, image_path: Path, mask: torch.Tensor, mask_path: Path) -> None:
    if tuple(image.shape[-2:]) != tuple(mask.shape[-2:]):
        raise ValueError(f"{mask_path} is {mask.shape[-1]}x{mask.shape[-2]} px but its image {image_path} is "
                         f"{image.shape[-1]}x{image.shape[-2]} px; a mask must have its image's size")


def subfolders(folder: Path, chosen, option: str) -> list[str]:
    """The names of the folders directly inside `folder`, sorted, or the `chosen` list (a source's
    `videos`/`objects` option) after checking it is a list of names."""
    if chosen is None:
        return sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not isinstance(chosen, (list, tuple)) or not all(isinstance(name, str) and name for name in chosen):
        raise ValueError(f"{option} must be a list of folder names in {folder}, got {chosen!r}")
    return list(chosen)


def require_folder(path: Path, what: str) -> None:
    if not path.is_dir():
        raise ValueError(f"{what}: folder {path} does not exist")


def images_in(folder: Path) -> dict[str, Path]:
    """Frame name (file stem) → image file, for the image files directly inside `folder`."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise ValueError(f"{found[path.stem]} and {path} are the same frame in two files; keep one")
            found[path.stem] = path
    return found
