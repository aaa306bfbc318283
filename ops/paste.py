"""Training-free depth-aware paste: the placed object where it is visible, feathered and harmonised."""
from __future__ import annotations

import kornia
import torch

from .object_layer import PlacedObject
from .shape_masks import dilate
from .window import move_to_window, on_canvas

LUMA = (0.299, 0.587, 0.114)


def feathered_alpha(visible: torch.Tensor, feather_px: float) -> torch.Tensor:
    """Soft alpha [B,H,W] that fades towards the visible region's edge and is exactly 0 outside it."""
    if feather_px <= 0:
        return visible
    sigma = feather_px / 2
    size = 2 * int(3 * sigma) + 1
    blurred = kornia.filters.gaussian_blur2d(visible.unsqueeze(1), (size, size), (sigma, sigma))[:, 0]
    # Blur spreads half the edge outwards; doubling and clipping keeps the core opaque
    # (snapped to 1 there, as the kernel's float normalisation leaves 1 - 1e-7).
    alpha = (2 * blurred - 1).clamp(0, 1)
    return torch.where(alpha > 1 - 1e-4, torch.ones_like(alpha), alpha) * visible


def surrounding_ring(mask: torch.Tensor, width: int) -> torch.Tensor:
    """[H,W] band of `width` px just outside a mask."""
    solid = (mask > 0.5).float()
    return dilate(solid, width) - solid


def harmonise_colour(obj: torch.Tensor, obj_mask: torch.Tensor, background: torch.Tensor,
                     ring: torch.Tensor, strength: float) -> torch.Tensor:
    """Pull the object's mean luminance and colour cast towards its surroundings.

    obj/background [H,W,3], masks [H,W]. Gains are per channel and blended by `strength`
    (0 keeps the object, 1 gives it the ring's mean colour balance and brightness).
    """
    if strength <= 0 or ring.sum() < 1 or obj_mask.sum() < 1:
        return obj
    luma = obj.new_tensor(LUMA)
    ring_mean = (background * ring[..., None]).sum((0, 1)) / ring.sum()
    obj_mean = (obj * obj_mask[..., None]).sum((0, 1)) / obj_mask.sum()
    ring_luma, obj_luma = (ring_mean * luma).sum(), (obj_mean * luma).sum()
    luminance_gain = ring_luma / obj_luma.clamp_min(1e-4)
    cast_gain = (ring_mean / ring_luma.clamp_min(1e-4)) / (obj_mean / obj_luma.clamp_min(1e-4)).clamp_min(1e-4)
    gain = (luminance_gain * cast_gain).clamp(0.25, 4.0) ** strength
    return (obj * gain).clamp(0, 1)


def depth_aware_paste(background: torch.Tensor, placed: PlacedObject, visible: torch.Tensor,
                      feather_px: float = 2.0, colour_match: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """background [B,H,W,3], visible [B,H,W] canvas mask → (composite IMAGE, alpha MASK).

    Work happens in a window around the object; every pixel with alpha 0 is returned
    bit-identical to the background.
    """
    rx0, ry0, rx1, ry1 = placed.region
    ring_width = max(2, round(0.05 * max(rx1 - rx0, ry1 - ry0)))
    work = placed.window.grown(max(ring_width, int(1.5 * feather_px)) + 1, placed.canvas_hw)
    rows, cols = work.slices
    obj_mask = move_to_window((placed.mask > 0.5).float(), placed.window, work)
    obj_image = move_to_window(placed.image.permute(0, 3, 1, 2), placed.window, work).permute(0, 2, 3, 1)
    alpha = feathered_alpha(visible[:, rows, cols] * obj_mask, feather_px)
    composite = background.clone()
    for i in range(background.shape[0]):
        scene = background[i, rows, cols]
        obj = harmonise_colour(obj_image[i], obj_mask[i], scene, surrounding_ring(obj_mask[i], ring_width), colour_match)
        a = alpha[i][..., None]
        composite[i, rows, cols] = torch.where(a > 0, scene * (1 - a) + obj * a, scene)
    return composite, on_canvas(alpha, work, placed.canvas_hw)
