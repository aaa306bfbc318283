"""Where an object goes: a box in the background image plus the depth it sits at."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .depth_map import DepthMap


@dataclass(frozen=True)
class Placement:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width/height
    depth: float  # the object's median depth, in `depth_kind` units
    depth_kind: str
    image_size: tuple[int, int]  # (height, width) of the background it was made for
    # BIFRÖST's form, kept exactly as given because its pixel rounding depends on it: the box as
    # (x, y, w, h) fractions and the depth as (far, near) fractions of the background's disparity range.
    xywh: tuple[float, float, float, float] | None = None
    relative_depth_range: tuple[float, float] | None = None

    def pixel_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Integer box (x0, y0, x1, y1), ends exclusive, for an image of this size; never empty."""
        x0, y0, x1, y1 = self.box
        px0, py0 = round(x0 * width), round(y0 * height)
        return px0, py0, max(round(x1 * width), px0 + 1), max(round(y1 * height), py0 + 1)


def normalised_box(x0: float, y0: float, x1: float, y1: float, height: int, width: int,
                   unit: str) -> tuple[float, float, float, float]:
    """Check a box given in `pixels` or `fractions` and return it as fractions."""
    if unit == "pixels":
        x0, x1, y0, y1 = x0 / width, x1 / width, y0 / height, y1 / height
    elif unit != "fractions":
        raise ValueError(f"box unit {unit!r} is unknown; expected 'pixels' or 'fractions'")
    named = {"x0": x0, "y0": y0, "x1": x1, "y1": y1}
    not_finite = [f"{name}={value}" for name, value in named.items() if not math.isfinite(value)]
    if not_finite:  # name the input, so the user knows which widget or link to fix
        raise ValueError(f"box {', '.join(not_finite)}: expected finite numbers (not NaN or infinity)")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box (x0={x0:.4g}, y0={y0:.4g}, x1={x1:.4g}, y1={y1:.4g}) has zero or negative area; "
                         "expected x1 > x0 and y1 > y0")
    if x1 <= 0 or y1 <= 0 or x0 >= 1 or y0 >= 1:
        raise ValueError(f"box (x0={x0:.4g}, y0={y0:.4g}, x1={x1:.4g}, y1={y1:.4g}) lies outside the "
                         f"{width}x{height} image; at least part of it must overlap the image")
    return x0, y0, x1, y1


def mask_bounding_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1), ends exclusive, of the pixels above 0.5 in a [H,W] mask."""
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    if ys.numel() == 0:
        raise ValueError("mask is empty (no pixel above 0.5); expected the object's silhouette")
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def ground_contact_depth(depth: DepthMap, box: tuple[float, float, float, float], batch_index: int = 0) -> float:
    """Depth of the scene where the box's bottom edge meets it (median over a small patch there).

    An object standing on the ground sits at the depth of the ground under its base; the patch
    median ignores single-pixel outliers of estimated depth.
    """
    values = depth.values[batch_index]
    height, width = values.shape
    x0, _, x1, y1 = box
    cx = min(max((x0 + x1) / 2 * width, 0), width - 1)
    cy = min(max(y1 * height - 1, 0), height - 1)
    half = max(1, round(0.01 * max(height, width)))
    patch = values[max(0, int(cy) - half): int(cy) + half + 1, max(0, int(cx) - half): int(cx) + half + 1]
    return float(patch.median())
