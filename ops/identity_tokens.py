"""DINOv2 input pixels and position embeddings at the size BIFRÖST/AnyDoor feed (224²).

BIFRÖST and AnyDoor run DINOv2 ViT-g/14 on a 224² reference although its position embeddings were
learnt for a 37² patch grid (518²). DINOv2's own code resizes them on the fly; the weights of both
methods were trained with exactly that resize, so it is reproduced here number for number.
"""
from __future__ import annotations

import math

import torch

# ImageNet statistics, as DINOv2 and the reference encoder normalise with.
DINO_MEAN = (0.485, 0.456, 0.406)
DINO_STD = (0.229, 0.224, 0.225)
# DINOv2 adds this to the target grid before turning it into a scale factor (its comment: "to
# avoid floating point error in the interpolation"); the sampling positions depend on it.
POSITION_OFFSET = 0.1


def dino_pixels(crop_u8: torch.Tensor) -> torch.Tensor:
    """Reference crops [B,H,W,3] uint8 → DINOv2 input [B,3,H,W] float32, as the reference computes it.

    The reference divides the uint8 crop by 255 in numpy (float64), converts to float32, and then
    normalises in float32; doing the division in float32 instead differs in the last bit.
    """
    if crop_u8.dtype != torch.uint8 or crop_u8.ndim != 4 or crop_u8.shape[-1] != 3:
        raise ValueError(f"expected reference crops as uint8 [batch, height, width, 3], got {crop_u8.dtype} "
                         f"{tuple(crop_u8.shape)}")
    unit = (crop_u8.to(torch.float64) / 255.0).to(torch.float32).permute(0, 3, 1, 2)
    mean = torch.tensor(DINO_MEAN, dtype=torch.float32, device=unit.device).view(1, 3, 1, 1)
    std = torch.tensor(DINO_STD, dtype=torch.float32, device=unit.device).view(1, 3, 1, 1)
    return (unit - mean) / std


def interpolate_position_embeddings(positions: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Learnt position embeddings [1, 1+M², C] (class token first) for a grid_h × grid_w patch grid.

    As DINOv2 (the release BIFRÖST/AnyDoor vendor): the M×M grid is resized bicubically (A = -0.75,
    align_corners=False, no antialias) in float32 with *scale factors* (grid + 0.1)/M, which
    PyTorch also uses for the sampling positions (not the output/input size ratio), so the result
    differs from a plain resize to the target size. The result is float32 (DINOv2 casts it to the
    activations' dtype, never back to a low-precision weight dtype). The learnt grid is returned
    unchanged when the target is the learnt square grid, as DINOv2 does.
    """
    if positions.ndim != 3 or positions.shape[0] != 1:
        raise ValueError(f"expected position embeddings [1, 1 + M*M, C], got {tuple(positions.shape)}")
    side = math.isqrt(positions.shape[1] - 1)
    if side * side != positions.shape[1] - 1:
        raise ValueError(f"{positions.shape[1] - 1} patch positions do not form a square grid")
    if grid_h == side and grid_w == side:
        return positions
    positions = positions.float()
    dim = positions.shape[-1]
    grid = positions[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(
        grid,
        scale_factor=((grid_h + POSITION_OFFSET) / side, (grid_w + POSITION_OFFSET) / side),
        mode="bicubic",
        align_corners=False,
    )
    if tuple(resized.shape[-2:]) != (grid_h, grid_w):
        raise RuntimeError(f"position grid resized to {tuple(resized.shape[-2:])}, expected {(grid_h, grid_w)}")
    patches = resized.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat((positions[:, :1], patches), dim=1)
