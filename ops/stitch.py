"""Putting a generated window back into the full photo: colour-matched, feathered, exact outside."""
from __future__ import annotations

import torch

from .composite_window import CompositeWindow, resize_layers, unpad
from .paste import feathered_alpha
from .shape_masks import dilate

SEAM_RING_PX = 6


def seam_colour_offset(generated: torch.Tensor, original: torch.Tensor, blend: torch.Tensor, ring_px: int) -> torch.Tensor:
    """Mean colour the generated window drifted by, measured on a ring just outside the blend region.

    generated/original [h,w,3], blend [h,w]. Outside the blend region the model was asked to keep
    the background, so any mean difference there is drift that would show as a seam.
    """
    inside = (blend > 0).float()
    ring = (dilate(inside, ring_px) - inside) > 0
    if not bool(ring.any()):
        ring = inside < 1  # the blend region fills the ring's room: use every known pixel
    if not bool(ring.any()):
        return generated.new_zeros(3)
    return (original[ring] - generated[ring]).mean(dim=0)


def stitch_window(background: torch.Tensor, generated: torch.Tensor, blend: torch.Tensor, window: CompositeWindow,
                  feather_px: float, colour_match: bool) -> torch.Tensor:
    """background [B,H,W,3], generated [B,h,w,3] at sampling size, blend [B,H,W] soft mask.

    Returns the full image: inside the blend region the generated pixels (shifted by the seam's
    colour drift when `colour_match`), blended through an inward feather; every pixel with blend 0
    is the background's, bit for bit.
    """
    rows, cols = window.area.slices
    pixels = unpad(resize_layers(generated.permute(0, 3, 1, 2), window.padded_hw), window).permute(0, 2, 3, 1)
    out = background.clone()
    for i in range(background.shape[0]):
        original = background[i, rows, cols]
        region = blend[i, rows, cols]
        generated_i = pixels[i]
        if colour_match:
            generated_i = (generated_i + seam_colour_offset(generated_i, original, region, SEAM_RING_PX)).clamp(0, 1)
        alpha = (feathered_alpha((region > 0).float()[None], feather_px)[0] * region)[..., None]
        out[i, rows, cols] = torch.where(alpha > 0, original * (1 - alpha) + generated_i * alpha, original)
    return out
