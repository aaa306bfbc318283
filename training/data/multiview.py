"""Multi-view object data: several photographs (or renders) of one object from different viewpoints.

    ROOT/<object>/<view>.png            RGBA: alpha is the object's mask, or
    ROOT/<object>/<view>.jpg|png        + ROOT/<object>/<view>_mask.png (white = object; wins over alpha)
    ROOT/<object>/cameras.json          optional: {"<view>": {"K": 3x3 pixels, "world_to_camera": 4x4 OpenCV}}

A pair is two different views of one object (both orders): source = the view the appearance is read
from, target = the view to generate, each with the object's mask (instance id 1). Views are sorted
by name. The layout (views, masks, cameras) is checked when the source opens; pixels when a pair is read.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ...ops.assets import Camera
from .files import (IMAGE_SUFFIXES, read_binary_mask, read_json, read_rgb, read_rgba, require_folder, require_same_size,
                    subfolders)
from .frames import Frame, PairedFrames
from .pairs import OrderedPairs

MASK_SUFFIX = "_mask"
OBJECT_ID = 1


@dataclass(frozen=True)
class View:
    image: Path
    mask: Path | None  # None: the image's alpha channel is the mask
    camera: Camera | None


@dataclass(frozen=True)
class MultiviewObject:
    name: str
    views: tuple[View, ...]


def _probe(path: Path) -> tuple[bool, tuple[int, int]]:
    """(has an alpha channel, (width, height)) from the file's header, without decoding its pixels."""
    try:
        with Image.open(path) as picture:
            return picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info, picture.size
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read image {path} ({error}); expected a readable JPEG or PNG") from None


def _cameras(path: Path, views: dict[str, Path]) -> dict[str, Camera]:
    entries = read_json(path)
    if not isinstance(entries, dict):
        raise ValueError(f"{path} must map view names to {{'K': 3x3, 'world_to_camera': 4x4}}, got {type(entries).__name__}")
    missing = sorted(set(views) - set(entries))
    unknown = sorted(set(entries) - set(views))
    if missing or unknown:
        raise ValueError(f"{path} must hold one camera per view of {path.parent}; views without a camera: {missing}, "
                         f"cameras without a view: {unknown}")
    cameras = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not {"K", "world_to_camera"} <= set(entry):
            raise ValueError(f"{path}: camera {name!r} must be {{'K': 3x3 pixels, 'world_to_camera': 4x4 OpenCV}}, "
                             f"got {entry!r}")
        width, height = _probe(views[name])[1]
        try:
            cameras[name] = Camera(entry["K"], entry["world_to_camera"], (height, width))
        except ValueError as error:
            raise ValueError(f"{path}: camera {name!r}: {error}") from None
    return cameras


def _object(folder: Path) -> MultiviewObject:
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {stem[: -len(MASK_SUFFIX)]: path for stem, path in files.items() if stem.endswith(MASK_SUFFIX)}
    images = {stem: path for stem, path in files.items() if not stem.endswith(MASK_SUFFIX)}
    orphans = [str(path) for name, path in masks.items() if name not in images]
    if orphans:
        raise ValueError(f"masks without a view: {', '.join(orphans)}; a mask <view>{MASK_SUFFIX}.png needs <view>.jpg/.png")
    if len(images) < 2:
        raise ValueError(f"object {folder} has {len(images)} view(s); a multi-view pair needs at least 2 images")
    without = [str(path) for name, path in images.items() if name not in masks and not _probe(path)[0]]
    if without:
        raise ValueError(f"views without a mask: {', '.join(without)}; give each an alpha channel or a "
                         f"<view>{MASK_SUFFIX}.png next to it")
    cameras = _cameras(folder / "cameras.json", images) if (folder / "cameras.json").exists() else {}
    return MultiviewObject(folder.name, tuple(View(images[name], masks.get(name), cameras.get(name)) for name in images))


class MultiviewPairs(Sequence):
    """Ordered pairs of two views of one object, from ROOT/<object>/<view> files."""

    def __init__(self, root: str, objects: list[str] | None = None):
        self.root = Path(root)
        require_folder(self.root, "multi-view dataset")
        names = subfolders(self.root, objects, "multi-view source: objects")
        if not names:
            raise ValueError(f"multi-view dataset {self.root} has no object folders; expected ROOT/<object>/<view>.png")
        for name in names:
            require_folder(self.root / name, f"multi-view object {name!r}")
        self.objects = [_object(self.root / name) for name in names]
        self.pairs = OrderedPairs([len(obj.views) for obj in self.objects])

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> PairedFrames:
        o, first, second = self.pairs.locate(index, "multi-view source")
        obj = self.objects[o]
        source, target = obj.views[first], obj.views[second]
        return PairedFrames(_frame(source), _frame(target), OBJECT_ID,
                            origin=f"{self.root / obj.name} views {source.image.name}, {target.image.name}",
                            extras={"object": obj.name, "views": (source.image.stem, target.image.stem)})


def _frame(view: View) -> Frame:
    if view.mask is None:
        image, mask = read_rgba(view.image)
        if mask is None:
            raise ValueError(f"{view.image} has no alpha channel (any more) and no {view.image.stem}{MASK_SUFFIX}.png; "
                             "expected one of them as the object's mask")
        where = f"the alpha channel of {view.image}"
    else:
        image, mask = read_rgb(view.image), read_binary_mask(view.mask)
        require_same_size(image, view.image, mask, view.mask)
        where = str(view.mask)
    if not bool(mask.any()):
        raise ValueError(f"the object's mask is empty in {where}; every view must show the object")
    return Frame(image, mask[None], (OBJECT_ID,), camera=view.camera)
