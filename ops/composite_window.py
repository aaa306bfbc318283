"""The crop a diffusion model samples: a context window around the object at the model's resolution.

Sampling only this window is what makes compositing cost follow the object rather than the photo,
and stitching it back through the blend mask keeps every other pixel exactly as it was.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .window import Window


@dataclass(frozen=True)
class CompositeWindow:
    area: Window  # pixels of the background that are sampled
    sample_hw: tuple[int, int]  # the size the model samples at: multiples of the latent factor
    image_hw: tuple[int, int]  # the background size the window was made for
    # (top, bottom, left, right) zero padding around the area before resizing, for models trained on
    # crops padded to a square (BIFRÖST, AnyDoor)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def padded_hw(self) -> tuple[int, int]:
        top, bottom, left, right = self.padding
        return self.area.shape[0] + top + bottom, self.area.shape[1] + left + right


def composite_window(box: tuple[int, int, int, int], image_hw: tuple[int, int], expansion: float,
                     resolution: int, latent_factor: int) -> CompositeWindow:
    """A window around `box` (x0, y0, x1, y1) grown by `expansion`, square where the image allows,
    kept inside the image, sampled at about resolution² pixels in the window's aspect."""
    height, width = image_hw
    if min(height, width) < latent_factor:
        raise ValueError(f"the background is {width}x{height} px, smaller than the VAE's latent factor "
                         f"{latent_factor}; it needs at least {latent_factor} px on each side")
    if expansion < 1:
        raise ValueError(f"expansion {expansion} must be >= 1 (the window must contain the object)")
    x0, y0 = max(box[0], 0), max(box[1], 0)
    x1, y1 = min(box[2], width), min(box[3], height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"the box {box} does not overlap the {width}x{height} background")
    side = max(x1 - x0, y1 - y0) * expansion
    w, h = min(max(round(side), x1 - x0), width), min(max(round(side), y1 - y0), height)
    left = min(max(round((x0 + x1 - w) / 2), 0), width - w)
    top = min(max(round((y0 + y1 - h) / 2), 0), height - h)
    scale = resolution / math.sqrt(w * h)

    def multiple(value: float) -> int:
        return max(latent_factor, round(value / latent_factor) * latent_factor)

    return CompositeWindow(Window(top, top + h, left, left + w), (multiple(h * scale), multiple(w * scale)), image_hw)


def require_window_fits(window: CompositeWindow, height: int, width: int, name: str) -> None:
    if window.image_hw != (height, width):
        raise ValueError(f"the composite window was made for a {window.image_hw[1]}x{window.image_hw[0]} image but "
                         f"{name} is {width}x{height} px; make the window from this image")


def resize_layers(layers: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B,C,h,w] resized with antialiasing (unchanged when the size already matches)."""
    if tuple(layers.shape[-2:]) == tuple(size):
        return layers
    return F.interpolate(layers, size=size, mode="bilinear", align_corners=False, antialias=True)


def _padded(layers: torch.Tensor, window: CompositeWindow) -> torch.Tensor:
    top, bottom, left, right = window.padding
    return F.pad(layers, (left, right, top, bottom)) if any(window.padding) else layers


def unpad(layers: torch.Tensor, window: CompositeWindow) -> torch.Tensor:
    """[B,C,H,W] at the padded window size → the window area only."""
    top, _, left, _ = window.padding
    height, width = window.area.shape
    return layers[..., top:top + height, left:left + width]


def crop_image(image: torch.Tensor, window: CompositeWindow) -> torch.Tensor:
    """IMAGE [B,H,W,C] → the window at sampling size [B,h,w,C]."""
    rows, cols = window.area.slices
    return resize_layers(_padded(image[:, rows, cols].permute(0, 3, 1, 2), window), window.sample_hw).permute(0, 2, 3, 1)


def crop_plane(plane: torch.Tensor, window: CompositeWindow) -> torch.Tensor:
    """MASK or depth values [B,H,W] → the window at sampling size [B,h,w]."""
    rows, cols = window.area.slices
    return resize_layers(_padded(plane[:, None, rows, cols], window), window.sample_hw)[:, 0]
