"""IMPRINT's shape-guided masks: four precision levels of the placed object's region.

Level 3 is the exact silhouette; level 2 dilates it; level 1 is its convex hull (dilated); level 0
is the bounding box. Each level contains the finer ones, so a coarser mask only ever gives the
generator more freedom over the object's shape.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .placement import mask_bounding_box

LEVELS = (0, 1, 2, 3)
HULL_DIRECTIONS = 32


def dilation_radius(silhouette: torch.Tensor) -> int:
    x0, y0, x1, y1 = mask_bounding_box(silhouette)
    return max(1, round(0.03 * math.hypot(x1 - x0, y1 - y0)))


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a [H,W] mask with a (2r+1)² square."""
    return F.max_pool2d(mask[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0]


def convex_hull_mask(mask: torch.Tensor, directions: int = HULL_DIRECTIONS) -> torch.Tensor:
    """Intersection of the mask's supporting half-planes in `directions` directions.

    With enough directions this is the convex hull up to a pixel; it never cuts the mask.
    """
    x0, y0, x1, y1 = mask_bounding_box(mask)
    crop = mask[y0:y1, x0:x1] > 0.5
    ys = torch.arange(y1 - y0, dtype=torch.float32, device=mask.device)[:, None]
    xs = torch.arange(x1 - x0, dtype=torch.float32, device=mask.device)[None, :]
    inside = torch.ones_like(crop)
    for k in range(directions):
        angle = 2 * math.pi * k / directions
        projection = xs * math.cos(angle) + ys * math.sin(angle)
        support = projection[crop].max()
        inside &= projection <= support + 1e-4
    hull = torch.zeros_like(mask)
    hull[y0:y1, x0:x1] = inside.float()
    return hull


def shape_mask(placed_mask: torch.Tensor, level: int) -> torch.Tensor:
    """[B,H,W] mask of the given precision level (0 box … 3 silhouette) for each batch item."""
    if level not in LEVELS:
        raise ValueError(f"shape mask level {level} is unknown; expected 0 (box), 1 (hull), 2 (dilated) or 3 (exact)")
    out = torch.zeros_like(placed_mask)
    for i, item in enumerate(placed_mask):
        silhouette = (item > 0.5).float()
        if level == 3:
            out[i] = silhouette
            continue
        dilated = dilate(silhouette, dilation_radius(silhouette))
        if level == 2:
            out[i] = dilated
            continue
        hull = torch.maximum(dilate(convex_hull_mask(silhouette), dilation_radius(silhouette)), dilated)
        if level == 1:
            out[i] = hull
            continue
        x0, y0, x1, y1 = mask_bounding_box(hull)
        out[i, y0:y1, x0:x1] = 1.0
    return out
