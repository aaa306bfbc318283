"""The one sample type every training source yields and every recipe consumes.

A training pair is two frames of the same scene: a *source* (where an object's appearance is read)
and a *target* (what the model must produce). Video segmentation data gives two frames of one
video, multi-view data two views of one object, 3D-box video two frames with boxes and cameras, and
the renderer all of it plus depth and a clean plate. Fields a source cannot provide are None;
a recipe states which fields it needs (`require`) and fails with the source's name if one is absent.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...ops.assets import Asset, Camera


@dataclass(frozen=True)
class Frame:
    image: torch.Tensor  # [3, H, W] float32 in [0, 1]
    masks: torch.Tensor  # [K, H, W] bool, one per instance, in `instance_ids` order (K may be 0)
    instance_ids: tuple[int, ...]  # dataset instance ids, stable across the frames of one scene
    depth: torch.Tensor | None = None  # [H, W] float32 metric z-depth (OpenCV camera), inf = no surface
    camera: Camera | None = None  # OpenCV conventions, as ops.assets
    boxes3d: tuple[Asset, ...] | None = None  # per instance, same order as instance_ids (world frame)
    clean_plate: torch.Tensor | None = None  # [3, H, W] the same view without `PairedFrames.object_id`

    def mask_of(self, instance_id: int) -> torch.Tensor:
        """[H, W] bool mask of one instance (all False when it is not visible in this frame)."""
        if instance_id not in self.instance_ids:
            return torch.zeros(self.image.shape[-2:], dtype=torch.bool)
        return self.masks[self.instance_ids.index(instance_id)]


@dataclass(frozen=True)
class PairedFrames:
    source: Frame
    target: Frame
    object_id: int  # the instance the pair is about (composited / re-posed / inserted)
    origin: str  # where it came from (dataset path and frame names, or "render seed=…"): for errors and logs
    caption: str | None = None  # person insertion: what the caption modality says
    keypoints: torch.Tensor | None = None  # [17, 3] COCO-17 (x, y in pixels of the target, visibility)
    extras: dict = field(default_factory=dict)  # source-specific facts a recipe may read (documented there)

    def require(self, *fields: str) -> None:
        """Raise a clear error when a recipe needs a field this source does not provide."""
        missing = [name for name in fields if _field(self, name) is None]
        if missing:
            raise ValueError(f"training pair from {self.origin} has no {', '.join(missing)}; this recipe needs "
                             f"{', '.join(fields)} (use a data source that provides them, e.g. the renderer)")


def _field(pair: PairedFrames, dotted: str):
    value = pair
    for part in dotted.split("."):
        value = getattr(value, part)
        if value is None:
            return None
    return value
