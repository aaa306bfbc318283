"""Preview of a Neural Assets scene: every object's 3D box projected into an image, 12 edges each."""
from __future__ import annotations

import math

import torch

from .assets import Assets, Camera, box_corners, project, to_camera

# Corner i has local signs from its bits (x = 4, y = 2, z = 1, Kubric's order); an edge joins two
# corners that differ in one bit.
EDGES = tuple((i, i ^ bit) for i in range(8) for bit in (1, 2, 4) if i < i ^ bit)
PALETTE = ((1.0, 0.25, 0.2), (0.2, 0.85, 0.3), (0.25, 0.5, 1.0), (1.0, 0.85, 0.1), (0.9, 0.3, 0.9),
           (0.1, 0.9, 0.9), (1.0, 0.55, 0.1), (0.6, 0.4, 1.0), (0.6, 1.0, 0.4), (1.0, 0.5, 0.7))
NEAR = 1e-3  # corners nearer than this (or behind the camera) are not drawn: their projection is reflected


def object_colour(index: int) -> tuple[float, float, float]:
    return PALETTE[index % len(PALETTE)]


def _clip_segment(p: tuple[float, float], q: tuple[float, float], width: int, height: int):
    """Liang–Barsky: the part of segment p→q inside [0, width]×[0, height], or None."""
    t0, t1 = 0.0, 1.0
    dx, dy = q[0] - p[0], q[1] - p[1]
    for edge_p, edge_q in ((-dx, p[0]), (dx, width - p[0]), (-dy, p[1]), (dy, height - p[1])):
        if edge_p == 0:
            if edge_q < 0:
                return None
            continue
        t = edge_q / edge_p
        if edge_p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return None
    return (p[0] + t0 * dx, p[1] + t0 * dy), (p[0] + t1 * dx, p[1] + t1 * dy)


def segment_pixels(p, q, width: int, height: int, thickness: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the pixels a segment between pixel coordinates p, q (x, y) covers in the image."""
    clipped = _clip_segment(p, q, width, height)
    if clipped is None:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    (x0, y0), (x1, y1) = clipped
    steps = int(math.ceil(max(abs(x1 - x0), abs(y1 - y0)))) + 1
    t = torch.linspace(0, 1, steps, dtype=torch.float64)
    xs, ys = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
    offsets = torch.arange(thickness, dtype=torch.float64) - (thickness - 1) / 2
    cols = (xs[:, None, None] + offsets[None, :, None]).floor().long().expand(-1, thickness, thickness).reshape(-1)
    rows = (ys[:, None, None] + offsets[None, None, :]).floor().long().expand(-1, thickness, thickness).reshape(-1)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    return rows[inside], cols[inside]


def draw_assets(image: torch.Tensor, assets: Assets, camera: Camera, thickness: int = 2) -> torch.Tensor:
    """A copy of image [B, H, W, 3] with each object's 12 box edges drawn (one colour per object).

    Projected fractions are scaled to the image's own size, so any resolution of the camera's image
    works. An edge with a corner behind (or almost on) the camera plane is left out of the drawing
    only; the geometry itself never culls anything.
    """
    out = image.clone()
    height, width = image.shape[1:3]
    for index, asset in enumerate(assets.objects):
        points = to_camera(box_corners(asset), camera)
        uvd = project(points, camera)
        colour = out.new_tensor(object_colour(index))
        for a, b in EDGES:
            if float(points[a, 2]) <= NEAR or float(points[b, 2]) <= NEAR:
                continue
            p = (float(uvd[a, 0]) * width, float(uvd[a, 1]) * height)
            q = (float(uvd[b, 0]) * width, float(uvd[b, 1]) * height)
            rows, cols = segment_pixels(p, q, width, height, thickness)
            out[:, rows, cols] = colour
    return out
