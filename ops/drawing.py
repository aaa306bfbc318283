"""Overlays for preview images."""
from __future__ import annotations

import torch


def draw_box(image: torch.Tensor, box: tuple[int, int, int, int], colour=(1.0, 0.2, 0.2), thickness: int = 2) -> torch.Tensor:
    """A copy of image [B,H,W,3] with the box outline (x0, y0, x1, y1, ends exclusive) drawn, clipped."""
    out = image.clone()
    height, width = image.shape[1:3]
    x0, y0, x1, y1 = box
    c = out.new_tensor(colour)
    xa, xb = max(x0, 0), min(x1, width)
    ya, yb = max(y0, 0), min(y1, height)
    if xa >= xb or ya >= yb:
        return out
    for top in (y0, y1 - thickness):
        out[:, max(top, 0):min(top + thickness, height), xa:xb] = c
    for left in (x0, x1 - thickness):
        out[:, ya:yb, max(left, 0):min(left + thickness, width)] = c
    return out
