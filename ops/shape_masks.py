"""IMPRINT's shape-guided masks: four precision levels of the placed object's region.

Level 3 is the exact silhouette; level 2 dilates it; level 1 is its convex hull (dilated); level 0
is the bounding box. Each level contains the finer ones, so a coarser mask only ever gives the
generator more freedom over the object's shape.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .depth_map import nearer
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

    With enough directions this is the convex hull up to a pixel; it never cuts the mask. Only
    each row's leftmost and rightmost pixel can support a half-plane, and each half-plane bounds
    a row to an interval, so the work is rows × directions plus one pass to fill the intervals.
    """
    x0, y0, x1, y1 = mask_bounding_box(mask)
    crop = mask[y0:y1, x0:x1] > 0.5
    width = x1 - x0
    xs = torch.arange(width, dtype=torch.float64, device=mask.device)
    ys = torch.arange(y1 - y0, dtype=torch.float64, device=mask.device)
    occupied = crop.any(dim=1)
    left = torch.where(crop, xs, torch.full_like(xs, float(width))).amin(dim=1)[occupied]
    right = torch.where(crop, xs, torch.full_like(xs, -1.0)).amax(dim=1)[occupied]
    angles = torch.arange(directions, dtype=torch.float64, device=mask.device) * (2 * math.pi / directions)
    cos, sin = angles.cos(), angles.sin()
    # Support of each direction over the row extremes: h_k = max_y max(x_l c_k, x_r c_k) + y s_k.
    support = (torch.maximum(left[:, None] * cos, right[:, None] * cos) + ys[occupied][:, None] * sin).amax(dim=0)
    # Row y satisfies x c_k <= h_k - y s_k: an upper bound on x where c_k > 0, a lower one where c_k < 0.
    limit = (support[None, :] - ys[:, None] * sin[None, :] + 1e-6)
    tiny = cos.abs() < 1e-9
    bound = limit / torch.where(tiny, torch.ones_like(cos), cos)
    inf = torch.full_like(bound, float("inf"))
    upper = torch.where(cos > 1e-9, bound, inf).amin(dim=1)
    lower = torch.where(cos < -1e-9, bound, -inf).amax(dim=1)
    # Directions along the rows (c_k = 0) exclude whole rows beyond the support.
    row_ok = torch.where(tiny[None, :], limit >= 0, torch.ones_like(limit, dtype=torch.bool)).all(dim=1)
    inside = (xs[None, :] >= lower[:, None]) & (xs[None, :] <= upper[:, None]) & row_ok[:, None]
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


def without_occluders(mask: torch.Tensor, background_depth: torch.Tensor, kind: str, placement_depth: float,
                      visible: torch.Tensor) -> torch.Tensor:
    """The mask minus scene content in front of the object: where the background is nearer than the
    placement depth and the object is not visible. Coarse levels may then grow around the object
    without letting a generator paint over what hides it. [B,H,W] tensors."""
    target = torch.full_like(background_depth, placement_depth)
    occluder = nearer(background_depth, target, kind) & (visible <= 0.5)
    return mask * (~occluder).to(mask.dtype)
