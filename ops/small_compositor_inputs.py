"""The inputs of Diorama's small compositor (issue 9), shared by its training recipe
(training/recipes/small_compositor.py) and its conditioning node (nodes/small_compositor.py), so what the
model reads at inference is built by the same code that built it in training.

The model's `concat_latent_image`, in raw TAEF2 units (ComfyUI applies the model's latent format):
[background latent with the blend region grey (32) | depth hint area-averaged to the latent grid (1) |
reference latent (32)]. An input a graph does not give is replaced by its absent value, which the model
learned by condition dropout: a hint of all ABSENT_HINT (nothing near), a reference of all GREY.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .composite_window import resize_layers
from .placement import mask_bounding_box

GREY = 0.5  # the fill of masked pixels, as Composite Sample's inpaint conditioning
ABSENT_HINT = 0.0  # the depth hint of an input without one: nothing near


def absent_hint(height: int, width: int) -> torch.Tensor:
    """[H,W]: the depth hint the model reads when none is given."""
    return torch.full((height, width), ABSENT_HINT)


def absent_reference(height: int, width: int) -> torch.Tensor:
    """[H,W,3]: the reference image the model reads when none is given."""
    return torch.full((height, width, 3), GREY)


def grey_where_masked(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """IMAGE [...,H,W,3] with the pixels where mask [...,H,W] > 0.5 set to GREY: the region to fill."""
    return torch.where((mask > 0.5)[..., None], torch.full_like(image, GREY), image)


def square_crop_around(box: tuple[int, int, int, int], height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the smallest square holding `box`, moved inside the image (clipped if larger)."""
    x0, y0, x1, y1 = box
    side = min(max(x1 - x0, y1 - y0), height, width)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    left = min(max(cx - side // 2, 0), width - side)
    top = min(max(cy - side // 2, 0), height - side)
    return left, top, left + side, top + side


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """IMAGE [B,H,W,3] → [B,h,w,3], antialiased bilinear, kept in [0, 1]."""
    return resize_layers(image.permute(0, 3, 1, 2), size).clamp(0, 1).permute(0, 2, 3, 1)


def reference_crop(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The model's reference: the object (image [H,W,3] where mask [H,W]) on grey, cropped to a square around
    the mask's box and resized to `size` (h, w) (the sampled size: a non-square one stretches the square)."""
    on_grey = image * mask[..., None] + GREY * (1 - mask[..., None])
    x0, y0, x1, y1 = square_crop_around(mask_bounding_box(mask), *mask.shape)
    return resize_image(on_grey[None, y0:y1, x0:x1], size)[0]


@torch.no_grad()
def concat_latent_image(vae, background: torch.Tensor, hint: torch.Tensor | None,
                        reference: torch.Tensor | None) -> torch.Tensor:
    """The conditioning's `concat_latent_image`, raw latent units: [background latent | depth hint area-averaged
    to the latent grid | reference latent], the parts given (a model trained without one has no channels for
    it). background/reference IMAGE [B,H,W,3] with the blend region of the background already grey, hint [B,H,W]
    near = 1; H and W multiples of the VAE's latent factor. `vae` is anything with ComfyUI's VAE.encode."""
    latent = vae.encode(background[..., :3]).float()
    parts = [latent]
    if hint is not None:
        parts.append(F.avg_pool2d(hint[:, None].float().to(latent.device), background.shape[1] // latent.shape[-2]))
    if reference is not None:
        parts.append(vae.encode(reference[..., :3]).float())
    return torch.cat(parts, dim=1)
