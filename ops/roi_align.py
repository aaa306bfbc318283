"""Neural Assets' RoIAlign and resize: antialiased linear resampling as `jax.image.scale_and_translate`.

The reference crops each box out of the DINO feature map with `jax.image.scale_and_translate`
(method "linear", antialias on), and resizes images with `jax.image.resize` (bilinear, antialias
on), which is the same resampler with no translation. This is not torchvision's RoIAlign (no
sampling grid, no sampling_ratio): every output cell is a normalised tent-weighted average of the
input cells, the tent widened to the output cell's footprint when it covers more than one input
cell. The resampling is separable, so one weight matrix per axis does it:

    sample position   f_o = (o + ½ − t) / s − ½        (input index units, cell centres at integers)
    tent width        k   = max(1 / s, 1)
    weights           w_oi = max(0, 1 − |f_o − i| / k), divided by their sum over i = 0..L−1
    output            0 where f_o ∉ [−½, L − ½], and where the weight sum is ~0

For a box [a, b) (fractions of the map) resampled to S cells: s = S / ((b − a) L), t = −a S / (b − a).
"""
from __future__ import annotations

import torch

# jax keeps a weight column only where its sum exceeds 1000 float32 epsilons (else all zero).
_MIN_WEIGHT_SUM = 1000 * torch.finfo(torch.float32).eps
# The reference clamps box sides to this before dividing by them (zero-size boxes stay finite).
_MIN_BOX_SIDE = 1e-6


def resample_weights(input_size: int, output_size: int, scale: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Antialiased linear resampling matrices [..., output_size, input_size] (float64) for per-item
    `scale` and `translation` of any batch shape, as jax.image.scale_and_translate builds them."""
    scale = scale.to(torch.float64)[..., None, None]
    translation = translation.to(torch.float64)[..., None, None]
    out_index = torch.arange(output_size, dtype=torch.float64, device=scale.device)[:, None]
    in_index = torch.arange(input_size, dtype=torch.float64, device=scale.device)[None, :]
    sample = (out_index + 0.5 - translation) / scale - 0.5  # [..., O, 1]
    width = torch.clamp(1.0 / scale, min=1.0)
    weights = torch.clamp(1.0 - (sample - in_index).abs() / width, min=0.0)  # [..., O, I]
    total = weights.sum(dim=-1, keepdim=True)
    weights = torch.where(total.abs() > _MIN_WEIGHT_SUM, weights / torch.where(total != 0, total, 1.0), 0.0)
    inside = (sample >= -0.5) & (sample <= input_size - 0.5)
    return torch.where(inside, weights, 0.0)


def _box_axis_weights(start: torch.Tensor, end: torch.Tensor, cells: int, size: int) -> torch.Tensor:
    """[B,K] box extents along one axis (fractions) → [B,K,size,cells] RoIAlign weights."""
    extent = torch.clamp(end.to(torch.float64) - start.to(torch.float64), min=_MIN_BOX_SIDE)
    scale = size / (extent * cells)
    translation = -start.to(torch.float64) * size / extent
    return resample_weights(cells, size, scale, translation)


def roi_align(features: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """The reference's RoIAlign: features [B,h,w,C], boxes [B,K,4] (y0, x0, y1, x1) as fractions of the
    map → [B,K,size,size,C]. Boxes may extend past the map or be empty: cells whose centre falls
    outside the map are 0, and an all-zero box samples the map's corner (callers zero those)."""
    if features.ndim != 4:
        raise ValueError(f"expected feature maps [batch, height, width, channels], got {tuple(features.shape)}")
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != features.shape[0]:
        raise ValueError(f"expected boxes [batch={features.shape[0]}, boxes, 4] as (y0, x0, y1, x1), "
                         f"got {tuple(boxes.shape)}")
    if size < 1:
        raise ValueError(f"RoIAlign output size must be at least 1, got {size}")
    height, width = features.shape[1:3]
    rows = _box_axis_weights(boxes[..., 0], boxes[..., 2], height, size).to(features.dtype)
    cols = _box_axis_weights(boxes[..., 1], boxes[..., 3], width, size).to(features.dtype)
    return torch.einsum("bkyh,bhwc,bkxw->bkyxc", rows, features, cols)
