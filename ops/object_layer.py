"""The reference object, cut out and scaled into its placement box on the background's canvas."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .placement import mask_bounding_box


@dataclass(frozen=True)
class PlacedObject:
    image: torch.Tensor | None  # [B, H, W, 3] on the canvas, zero outside the object
    mask: torch.Tensor  # [B, H, W] coverage 0..1 on the canvas
    depth: torch.Tensor | None  # [B, H, W] the object's own depth where mask > 0, else 0
    region: tuple[int, int, int, int]  # pixel rectangle the object was fitted into (may exceed the canvas)


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
    """Cut the object to its mask's bounding box and place it in `box` of a canvas.

    image [B,h,w,3] (optional), mask [B,h,w], depth [B,h,w] (optional). All batch items share the union
    bounding box so one rectangle serves the batch. Depth is resized weighted by the mask, so
    the object's depth never mixes with whatever surrounded it in the source image.
    """
    union = mask.amax(dim=0)
    sx0, sy0, sx1, sy1 = mask_bounding_box(union)
    region = fit_in_box(sx1 - sx0, sy1 - sy0, box)
    rx0, ry0, rx1, ry1 = region
    size = (ry1 - ry0, rx1 - rx0)
    crop_mask = mask[:, sy0:sy1, sx0:sx1].unsqueeze(1)
    placed_mask = _resize(crop_mask, size).clamp(0, 1)

    def resized_inside_mask(layer: torch.Tensor) -> torch.Tensor:
        return _resize(layer[:, :, sy0:sy1, sx0:sx1] * crop_mask, size) / placed_mask.clamp_min(1e-6)

    height, width = canvas_hw
    # Part of the region may lie outside the canvas: paste only the overlap.
    cx0, cy0, cx1, cy1 = max(rx0, 0), max(ry0, 0), min(rx1, width), min(ry1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(f"the placed object {region} does not overlap the {width}x{height} background")
    window = (slice(None), slice(None), slice(cy0 - ry0, cy1 - ry0), slice(cx0 - rx0, cx1 - rx0))

    def on_canvas(layer: torch.Tensor) -> torch.Tensor:
        canvas = layer.new_zeros(layer.shape[0], layer.shape[1], height, width)
        canvas[:, :, cy0:cy1, cx0:cx1] = layer[window]
        return canvas

    canvas_mask = on_canvas(placed_mask)
    covered = canvas_mask > 0
    placed_image = placed_depth = None
    if image is not None:
        placed_image = (on_canvas(resized_inside_mask(image.permute(0, 3, 1, 2)).clamp(0, 1)) * covered).permute(0, 2, 3, 1)
    if depth is not None:
        placed_depth = (on_canvas(resized_inside_mask(depth.unsqueeze(1))) * covered)[:, 0]
    return PlacedObject(image=placed_image, mask=canvas_mask[:, 0], depth=placed_depth, region=region)
