"""Where a rendered pair's object goes in its target frame, as every compositing method receives it: the 2D
box of the object's projected 3D box, the depth of its centre, and the background depth it is fused into.

Shared by the small compositor's training inputs and the evaluation's scenes, so the model learns from the
placement the evaluation (and a user's Diorama Placement From Box) gives it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...ops import assets as A
from .frames import PairedFrames


@dataclass(frozen=True)
class Insertion:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 pixels: the projected 3D box, clipped to the frame
    depth: float  # metres: the object's centre in the target camera
    background_depth: torch.Tensor  # [H, W] metric, finite: what the object is fused into


def finite_depth(depth: torch.Tensor) -> torch.Tensor:
    """Depth with its infinite pixels (no surface) set to the farthest finite depth."""
    far = float(depth[torch.isfinite(depth)].max())
    return torch.where(torch.isfinite(depth), depth, torch.full_like(depth, far))


def clipped_box(x0: float, y0: float, x1: float, y1: float, height: int, width: int) -> tuple[int, int, int, int]:
    """The smallest whole-pixel box around (x0, y0, x1, y1), inside the frame."""
    box = (max(0, math.floor(x0)), max(0, math.floor(y0)), min(width, math.ceil(x1)), min(height, math.ceil(y1)))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"the object's projected box {x0:.1f},{y0:.1f},{x1:.1f},{y1:.1f} lies outside the image")
    return box


def insertion_of(pair: PairedFrames) -> Insertion:
    """The placement of a rendered pair's object. Background depth: the target depth with the object's own
    pixels set far (rendered pairs carry no clean-plate depth; those pixels are behind the object by
    construction)."""
    pair.require("target.depth", "target.camera", "target.boxes3d")
    target = pair.target
    height, width = target.image.shape[-2:]
    asset = target.boxes3d[target.instance_ids.index(pair.object_id)]
    uvd = A.project(A.to_camera(A.box_corners(asset), target.camera), target.camera)
    box = clipped_box(float(uvd[:, 0].min()) * width, float(uvd[:, 1].min()) * height,
                      float(uvd[:, 0].max()) * width, float(uvd[:, 1].max()) * height, height, width)
    centre = A.to_camera(torch.tensor(asset.centre, dtype=torch.float64), target.camera)
    seen = target.mask_of(pair.object_id)
    background_depth = torch.where(seen, torch.full_like(target.depth, math.inf), target.depth)
    return Insertion(box, float(centre[2]), finite_depth(background_depth))
