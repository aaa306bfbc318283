"""The pose planes Diorama's small Neural Assets model reads for one object (pure tensor maths).

Neural Assets gives its diffusion model each object's appearance (from its box in the source frame) and its
target 3D pose (box corners) as tokens. The small model has no attention, so both become image planes on the
target frame's grid: the object's source box as a 0/1 rectangle (where its appearance is, and what must be
filled in once it has left), and its target 3D box as a pose hint (ops.asset_render.box_pose_hint: the box's
silhouette holding its nearness), and the source box's pixels moved onto the target box (moved_appearance).
The blend region, the only pixels the edit may change, is the smallest
rectangle holding both, grown by a margin for the edges and the contact shadow.

The training recipe (training/recipes/small_neural_assets.py) and the conditioning node
(nodes/small_neural_assets.py) both build the model's input here, so inference reads what training fed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import assets as A
from .asset_render import box_pose_hint
from .composite_window import resize_layers
from .placement import mask_bounding_box
from .small_compositor_inputs import GREY


@dataclass(frozen=True)
class PosePlanes:
    source_box: torch.Tensor  # [H, W] 1 inside the object's box in the source frame
    pose_hint: torch.Tensor  # [H, W] nearness on the target 3D box's silhouette, 0 elsewhere
    blend: torch.Tensor  # [H, W] 1 where the edit may change pixels


def fraction_box_mask(box: tuple[float, float, float, float], height: int, width: int) -> torch.Tensor:
    """[H, W] 0/1 of a (y0, x0, y1, x1) box in fractions of the image (ops.assets' source_box convention)."""
    y0, x0, y1, x1 = box
    mask = torch.zeros(height, width)
    mask[round(y0 * height):round(y1 * height), round(x0 * width):round(x1 * width)] = 1.0
    return mask


def grown_rectangle(mask: torch.Tensor, margin: int) -> torch.Tensor:
    """[H, W] 0/1: the bounding rectangle of `mask` > 0 grown by `margin` pixels (all 0 for an empty mask)."""
    out = torch.zeros_like(mask, dtype=torch.float32)
    rows, cols = torch.nonzero(mask > 0, as_tuple=True)
    if rows.numel():
        height, width = mask.shape
        out[max(0, int(rows.min()) - margin):min(height, int(rows.max()) + 1 + margin),
            max(0, int(cols.min()) - margin):min(width, int(cols.max()) + 1 + margin)] = 1.0
    return out


def pose_planes(asset: A.Asset, camera: A.Camera, margin: int) -> PosePlanes:
    """Planes for moving `asset` (its source_box in the source frame) to its 3D pose seen by `camera`, on the
    camera's image grid. Raises when neither the source box nor the target box is in the image."""
    height, width = camera.image_hw
    source = fraction_box_mask(asset.source_box, height, width)
    hint = box_pose_hint(asset, camera)
    if not bool((source > 0).any()) and not bool((hint > 0).any()):
        raise ValueError("the object's source box is empty and its target 3D box is outside the camera's view: "
                         "nothing to move; check the asset's source_box and pose")
    return PosePlanes(source, hint, grown_rectangle(source + hint, margin))


def moved_appearance(source: torch.Tensor, source_box: torch.Tensor, pose_hint: torch.Tensor) -> torch.Tensor:
    """IMAGE [B,H,W,3]: the source frame's pixels inside the object's source box [H,W], stretched onto the
    rectangle around its target silhouette (pose_hint [H,W] > 0), grey elsewhere; all grey when either plane is
    empty (e.g. cropped away by a window). The spatial stand-in for Neural Assets' appearance tokens (features
    RoI-aligned from the source box, read at the target pose): a convolution-only UNet copies what lies where it
    paints far more easily than it carries it across the frame."""
    appearance = torch.full_like(source[..., :3], GREY)
    if not bool((source_box > 0.5).any()) or not bool((pose_hint > 0).any()):
        return appearance
    sx0, sy0, sx1, sy1 = mask_bounding_box(source_box)
    tx0, ty0, tx1, ty1 = mask_bounding_box((pose_hint > 0).float())
    crop = source[:, sy0:sy1, sx0:sx1, :3].permute(0, 3, 1, 2)
    appearance[:, ty0:ty1, tx0:tx1] = resize_layers(crop, (ty1 - ty0, tx1 - tx0)).clamp(0, 1).permute(0, 2, 3, 1)
    return appearance


@torch.no_grad()
def neural_assets_concat(vae, source: torch.Tensor, source_box: torch.Tensor, pose_hint: torch.Tensor) -> torch.Tensor:
    """The conditioning's `concat_latent_image`, raw latent units: [source latent (32) | source box (1) | pose hint
    (1) | moved appearance latent (32)], the planes area-averaged to the latent grid. source IMAGE [B,H,W,3],
    planes [B,H,W] (one object's: the same for every batch item); H, W multiples of the VAE's latent factor.
    `vae` is anything with ComfyUI's VAE.encode."""
    latent = vae.encode(source[..., :3]).float()
    planes = torch.stack((source_box, pose_hint), dim=1).float().to(latent.device)
    appearance = torch.cat([moved_appearance(source[i:i + 1], source_box[i], pose_hint[i])
                            for i in range(source.shape[0])])
    return torch.cat((latent, F.avg_pool2d(planes, source.shape[1] // latent.shape[-2]),
                      vae.encode(appearance).float()), dim=1)
