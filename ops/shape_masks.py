"""IMPRINT's shape-guided masks: four precision levels of the placed object's region.

Level 3 is the exact silhouette; level 2 dilates it; level 1 is its convex hull (dilated); level 0
is the bounding box. Each level contains the finer ones, so a coarser mask only ever gives the
generator more freedom over the object's shape.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .object_layer import PlacedObject
from .placement import mask_bounding_box
from .window import move_to_window, on_canvas

LEVELS = (0, 1, 2, 3)
HULL_DIRECTIONS = 32


def dilation_radius(silhouette: torch.Tensor) -> int:
    x0, y0, x1, y1 = mask_bounding_box(silhouette)
    return max(1, round(0.03 * math.hypot(x1 - x0, y1 - y0)))


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a [H,W] mask by a (2r+1)² square, from an integral image (cost independent of r)."""
    k = 2 * radius + 1
    padded = F.pad((mask > 0.5).to(torch.float64), (radius + 1, radius, radius + 1, radius))
    integral = padded.cumsum(0).cumsum(1)
    counts = integral[k:, k:] - integral[:-k, k:] - integral[k:, :-k] + integral[:-k, :-k]
    return (counts > 0.5).to(mask.dtype)


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
    hull[y0:y1, x0:x1] = inside.to(mask.dtype)
    return hull


def shape_mask_levels(silhouette: torch.Tensor, level: int) -> torch.Tensor:
    """The level's mask for one binary [H,W] silhouette, on the same grid (which must leave room to grow)."""
    if level == 3:
        return silhouette
    radius = dilation_radius(silhouette)
    dilated = dilate(silhouette, radius)
    if level == 2:
        return dilated
    hull = torch.maximum(dilate(convex_hull_mask(silhouette), radius), dilated)
    if level == 1:
        return hull
    box = torch.zeros_like(hull)
    x0, y0, x1, y1 = mask_bounding_box(hull)
    box[y0:y1, x0:x1] = 1.0
    return box


def shape_mask(placed: PlacedObject, level: int) -> torch.Tensor:
    """[B,H,W] canvas mask of the given precision level (0 box … 3 silhouette) per batch item."""
    if level not in LEVELS:
        raise ValueError(f"shape mask level {level} is unknown; expected 0 (box), 1 (hull), 2 (dilated) or 3 (exact)")
    height, width = placed.window.shape
    # Dilation grows the silhouette by at most 3% of the region's diagonal on each side.
    work = placed.window.grown(math.ceil(0.03 * math.hypot(height, width)) + 2, placed.canvas_hw)
    silhouettes = move_to_window((placed.mask > 0.5).float(), placed.window, work)
    levels = torch.stack([shape_mask_levels(s, level) for s in silhouettes])
    return on_canvas(levels, work, placed.canvas_hw)
