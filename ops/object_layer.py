"""The reference object, cut out and scaled into its placement box on the background's canvas."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .placement import mask_bounding_box
from .window import Window, on_canvas


@dataclass(frozen=True)
class PlacedObject:
    """The object's layers over `window`, the part of the canvas it covers (never the whole photo)."""

    image: torch.Tensor | None  # [B, h, w, 3], zero outside the object
    mask: torch.Tensor  # [B, h, w] coverage 0..1
    depth: torch.Tensor | None  # [B, h, w] the object's own depth where mask > 0, else 0
    region: tuple[int, int, int, int]  # pixel rectangle the object was fitted into (may exceed the canvas)
    window: Window  # region ∩ canvas
    canvas_hw: tuple[int, int]

    def canvas_mask(self) -> torch.Tensor:
        """[B,H,W] coverage on the full canvas."""
        return on_canvas(self.mask, self.window, self.canvas_hw)


def fit_in_box(src_w: int, src_h: int, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Largest rectangle of the source's aspect inside the box, centred horizontally, standing on its bottom."""
    x0, y0, x1, y1 = box
    scale = min((x1 - x0) / src_w, (y1 - y0) / src_h)
    w, h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    left = x0 + ((x1 - x0) - w) // 2
    return left, y1 - h, left + w, y1


def _resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B,C,h,w] → [B,C,H,W]; identical when the size does not change."""
    if tuple(t.shape[-2:]) == size:
        return t
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)


def place_object(image: torch.Tensor | None, mask: torch.Tensor, box: tuple[int, int, int, int],
                 canvas_hw: tuple[int, int], depth: torch.Tensor | None = None) -> PlacedObject:
    """Cut the object to its mask's bounding box and fit it into `box` of a canvas.

    image [B,h,w,3] (optional), mask [B,h,w], depth [B,h,w] (optional). All batch items share the
    union bounding box so one rectangle serves the batch. Image and depth are resized weighted by
    the mask, so the object never mixes with whatever surrounded it in its source photo.
    """
    sx0, sy0, sx1, sy1 = mask_bounding_box(mask.amax(dim=0))
    region = fit_in_box(sx1 - sx0, sy1 - sy0, box)
    rx0, ry0, rx1, ry1 = region
    height, width = canvas_hw
    window = Window(max(ry0, 0), min(ry1, height), max(rx0, 0), min(rx1, width))
    if window.y1 <= window.y0 or window.x1 <= window.x0:
        raise ValueError(f"the placed object {region} does not overlap the {width}x{height} background")
    size = (ry1 - ry0, rx1 - rx0)
    crop_mask = mask[:, sy0:sy1, sx0:sx1].unsqueeze(1)
    fitted_mask = _resize(crop_mask, size).clamp(0, 1)
    inside = (slice(None), slice(None), slice(window.y0 - ry0, window.y1 - ry0), slice(window.x0 - rx0, window.x1 - rx0))
    placed_mask = fitted_mask[inside]
    covered = placed_mask > 0

    def fitted(layer: torch.Tensor) -> torch.Tensor:
        resized = _resize(layer[:, :, sy0:sy1, sx0:sx1] * crop_mask, size) / fitted_mask.clamp_min(1e-6)
        return resized[inside] * covered

    placed_image = None if image is None else fitted(image.permute(0, 3, 1, 2)).clamp(0, 1).permute(0, 2, 3, 1)
    placed_depth = None if depth is None else fitted(depth.unsqueeze(1))[:, 0]
    return PlacedObject(placed_image, placed_mask[:, 0], placed_depth, region, window, canvas_hw)
