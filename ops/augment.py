"""IMPRINT's training augmentation Î_obj = P(T(I_obj)): an affine transform T (rotation, scale, shear,
shift, mirror) applied to the object image and its mask through one sampling grid, so the mask keeps
covering exactly the transformed object, then a colour and lighting perturbation P given as a 3-D
look-up table (the paper uses the LUTs of its ref. [16]; here a random smooth colour map — a mixing
matrix, per-channel gamma, light gain and offset — tabulated on a lattice and applied by trilinear
interpolation, which is how a .cube LUT is applied).

Pixel coordinates are pixel centres (x, y) = column, row indices. All randomness comes from the
`generator` argument.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AffineRanges:
    rotation_deg: float = 15.0  # uniform in ±
    scale: tuple[float, float] = (0.85, 1.15)  # uniform, about the image centre
    shear_deg: float = 5.0  # uniform in ±, along x
    shift: float = 0.08  # uniform in ± this fraction of the width / height
    mirror: float = 0.5  # probability of a left-right mirror


@dataclass(frozen=True)
class ColourRanges:
    mixing: float = 0.08  # off-identity colour-mixing entries uniform in ±
    gamma: float = 0.25  # per-channel gamma exp(uniform ±)
    gain: tuple[float, float] = (0.7, 1.3)  # light intensity, uniform
    offset: float = 0.05  # per-channel offset uniform in ±
    lattice: int = 17  # LUT points per axis (.cube files commonly use 17 or 33)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def random_affine(generator: torch.Generator, height: int, width: int,
                  ranges: AffineRanges = AffineRanges()) -> torch.Tensor:
    """A [3,3] float64 matrix A mapping input pixel coordinates (x, y, 1) to output ones, about the centre."""
    angle = math.radians(_uniform(generator, -ranges.rotation_deg, ranges.rotation_deg))
    scale = _uniform(generator, *ranges.scale)
    shear = math.tan(math.radians(_uniform(generator, -ranges.shear_deg, ranges.shear_deg)))
    shift_x = _uniform(generator, -ranges.shift, ranges.shift) * width
    shift_y = _uniform(generator, -ranges.shift, ranges.shift) * height
    mirror = -1.0 if _uniform(generator, 0.0, 1.0) < ranges.mirror else 1.0
    cx, cy = (width - 1) / 2, (height - 1) / 2
    to_centre = torch.tensor([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=torch.float64)
    linear = torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]],
                          dtype=torch.float64)
    linear = linear @ torch.tensor([[scale * mirror, scale * shear, 0], [0, scale, 0], [0, 0, 1]], dtype=torch.float64)
    back = torch.tensor([[1, 0, cx + shift_x], [0, 1, cy + shift_y], [0, 0, 1]], dtype=torch.float64)
    return back @ linear @ to_centre


def sampling_grid(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """grid_sample's [1,H,W,2] grid (align_corners=False) that reads, for every output pixel p, the input at A⁻¹p."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    points = torch.stack((xs, ys, torch.ones_like(xs)), dim=-1) @ torch.linalg.inv(matrix).T
    # Pixel centre x ↔ normalised (2x + 1) / W − 1 when align_corners=False.
    normalised = torch.stack(((2 * points[..., 0] + 1) / width - 1, (2 * points[..., 1] + 1) / height - 1), dim=-1)
    return normalised[None].to(torch.float32)


def warp(image: torch.Tensor, mask: torch.Tensor, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Image [C,H,W] (bilinear) and mask [H,W] (nearest) transformed by the same A; outside the input is 0."""
    if image.ndim != 3 or mask.shape != image.shape[1:]:
        raise ValueError(f"expected an image [C, H, W] and a mask [H, W] of the same size, got {tuple(image.shape)} "
                         f"and {tuple(mask.shape)}")
    grid = sampling_grid(matrix, *mask.shape).to(image.device)
    warped = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    warped_mask = F.grid_sample(mask[None, None].float(), grid, mode="nearest", padding_mode="zeros",
                                align_corners=False)[0, 0]
    return warped.to(image.dtype), warped_mask > 0.5


def colour_function(generator: torch.Generator, ranges: ColourRanges = ColourRanges()):
    """A random colour and light change f: [...,3] in 0..1 → [...,3] in 0..1 (what the LUT tabulates)."""
    mixing = torch.eye(3, dtype=torch.float64) + torch.empty(3, 3, dtype=torch.float64).uniform_(
        -ranges.mixing, ranges.mixing, generator=generator) * (1 - torch.eye(3, dtype=torch.float64))
    mixing = mixing / mixing.sum(dim=1, keepdim=True)  # grey stays grey before gamma and gain
    gamma = torch.empty(3, dtype=torch.float64).uniform_(-ranges.gamma, ranges.gamma, generator=generator).exp()
    gain = _uniform(generator, *ranges.gain)
    offset = torch.empty(3, dtype=torch.float64).uniform_(-ranges.offset, ranges.offset, generator=generator)

    def apply(rgb: torch.Tensor) -> torch.Tensor:
        mixed = (rgb.to(torch.float64) @ mixing.T).clamp(0, 1)
        return (gain * mixed ** gamma + offset).clamp(0, 1)

    return apply


def lattice_lut(function, points: int) -> torch.Tensor:
    """A 3-D LUT [S,S,S,3] (indexed r, g, b) of `function` on an S-point lattice over [0, 1]³."""
    axis = torch.linspace(0, 1, points, dtype=torch.float64)
    r, g, b = torch.meshgrid(axis, axis, axis, indexing="ij")
    return function(torch.stack((r, g, b), dim=-1)).to(torch.float32)


def apply_lut(image: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Image [3,H,W] in 0..1 through a 3-D LUT [S,S,S,3] (r, g, b indexed) by trilinear interpolation."""
    if image.ndim != 3 or image.shape[0] != 3 or lut.ndim != 4 or lut.shape[-1] != 3:
        raise ValueError(f"expected an image [3, H, W] and a LUT [S, S, S, 3], got {tuple(image.shape)} and "
                         f"{tuple(lut.shape)}")
    # grid_sample's 5-D input is [N, C, D, H, W] read at (x → W, y → H, z → D): D = r, H = g, W = b.
    table = lut.permute(3, 0, 1, 2)[None].to(image.device, torch.float32)
    rgb = image.clamp(0, 1).permute(1, 2, 0) * 2 - 1  # lattice ends at ±1 with align_corners=True
    grid = rgb.flip(-1)[None, None]  # (b, g, r) = (x, y, z)
    out = F.grid_sample(table, grid.float(), mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, :, 0].to(image.dtype)


def augment_object(image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                   affine: AffineRanges = AffineRanges(), colour: ColourRanges = ColourRanges()
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """P(T(I_obj)) for a masked object image [3,H,W] in 0..1 and its mask [H,W]: the same affine for both,
    everything outside the transformed mask set to 0 (the object stays background-free), then the LUT."""
    matrix = random_affine(generator, *mask.shape, affine)
    warped, warped_mask = warp(image, mask, matrix)
    lut = lattice_lut(colour_function(generator, colour), colour.lattice)
    return apply_lut(warped, lut) * warped_mask, warped_mask
