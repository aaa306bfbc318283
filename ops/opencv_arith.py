"""OpenCV's arithmetic, reproduced bit for bit in torch.

BIFRÖST and AnyDoor prepared every training and inference input with OpenCV (uint8 fixed-point
bilinear resizing, Sobel on reflected borders, saturating casts). Their weights saw exactly those
values, so the reference-exact path computes them the same way instead of with torch's own
(slightly different) interpolation. Images are [H, W] or [H, W, C] tensors, as OpenCV sees them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

RESIZE_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
RESIZE_COEF_SCALE = 1 << RESIZE_COEF_BITS


def saturate_u8(values: torch.Tensor) -> torch.Tensor:
    """OpenCV's saturate_cast<uchar> of a float: round half to even, then clip."""
    return values.round().clamp(0, 255).to(torch.uint8)


def _linear_taps(src: int, dst: int, clamp_weights: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Source index and weight of the second tap per destination pixel, with OpenCV's float32
    coordinate `(d + 0.5) * scale - 0.5`.

    OpenCV clamps columns by moving all weight onto the edge pixel, but clamps rows only by
    clipping the row index and keeps both weights, which rounds differently in fixed point.
    """
    scale = src / dst  # double, as in OpenCV
    coord = ((torch.arange(dst, dtype=torch.float64) + 0.5) * scale - 0.5).to(torch.float32)
    index = torch.floor(coord)
    frac = coord - index
    index = index.to(torch.int64)
    if not clamp_weights:
        return index, frac
    low = index < 0
    frac[low], index[low] = 0.0, 0
    high = index >= src - 1
    frac[high], index[high] = 0.0, src - 1
    return index, frac


def _fixed_point_weights(frac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return saturate_short((1.0 - frac) * RESIZE_COEF_SCALE), saturate_short(frac * RESIZE_COEF_SCALE)


def saturate_short(values: torch.Tensor) -> torch.Tensor:
    return values.round().clamp(-32768, 32767).to(torch.int64)


def _as_hwc(image: torch.Tensor) -> tuple[torch.Tensor, bool]:
    return (image[..., None], True) if image.dim() == 2 else (image, False)


def _area_halve_u8(image: torch.Tensor) -> torch.Tensor:
    """OpenCV's INTER_AREA for an exact 2× reduction, which its INTER_LINEAR switches to."""
    v = image.to(torch.int64)
    total = v[0::2, 0::2] + v[0::2, 1::2] + v[1::2, 0::2] + v[1::2, 1::2]
    return ((total + 2) >> 2).to(torch.uint8)


def resize_linear(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """`cv2.resize(image, (width, height))` (INTER_LINEAR) for uint8 or float images [H,W(,C)]."""
    if width < 1 or height < 1:
        raise ValueError(f"cannot resize to {width}x{height}")
    image, flat = _as_hwc(image)
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        out = image.clone()
    elif image.dtype == torch.uint8:
        out = _resize_linear_u8(image, width, height)
    else:
        out = _resize_linear_float(image, width, height)
    return out[..., 0] if flat else out


def _resize_linear_u8(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    src_h, src_w = image.shape[:2]
    if src_w == 2 * width and src_h == 2 * height:
        return _area_halve_u8(image)
    xi, xf = _linear_taps(src_w, width)
    yi, yf = _linear_taps(src_h, height, clamp_weights=False)
    # int32 is exact and halves the memory traffic of int64: weights are <= 2^11, so a row value is
    # < 2^20, and a vertical product of a weight and a row shifted by 4 is < 2^27.
    a0, a1 = (w.to(torch.int32)[None, :, None] for w in _fixed_point_weights(xf))
    b0, b1 = (w.to(torch.int32)[:, None, None] for w in _fixed_point_weights(yf))
    v = image.to(torch.int32)
    x_next = (xi + 1).clamp(max=src_w - 1)
    # Horizontal pass: integer rows scaled by 2^11 (index_select gathers faster than fancy indexing).
    rows = (v.index_select(1, xi) * a0 + v.index_select(1, x_next) * a1) >> 4
    s0, s1 = rows.index_select(0, yi.clamp(0, src_h - 1)), rows.index_select(0, (yi + 1).clamp(0, src_h - 1))
    # Vertical pass as OpenCV's SIMD kernel does it: 16-bit high products, then a rounding shift by 2.
    t = ((b0 * s0) >> 16) + ((b1 * s1) >> 16)
    return ((t + 2) >> 2).clamp(0, 255).to(torch.uint8)


def _resize_linear_float(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    src_h, src_w = image.shape[:2]
    if min(src_h, src_w) >= 2:
        return _resize_linear_ipp(image, width, height)
    xi, xf = _linear_taps(src_w, width)
    yi, yf = _linear_taps(src_h, height)
    dtype = image.dtype
    # OpenCV keeps both weights as float32, whatever the image type.
    x0, x1, y0, y1 = ((1 - xf).to(dtype), xf.to(dtype), (1 - yf).to(dtype), yf.to(dtype))
    x_next = (xi + 1).clamp(max=src_w - 1)
    y_next = (yi + 1).clamp(max=src_h - 1)
    rows = image[:, xi] * x0[None, :, None] + image[:, x_next] * x1[None, :, None]
    return rows[yi] * y0[:, None, None] + rows[y_next] * y1[:, None, None]


def _double_taps(src: int, dst: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    coord = (torch.arange(dst, dtype=torch.float64) + 0.5) * (src / dst) - 0.5
    index = torch.floor(coord)
    frac = coord - index
    index = index.to(torch.int64)
    frac[index < 0] = 0.0
    index = index.clamp(min=0)
    frac[index >= src - 1] = 0.0
    index = index.clamp(max=src - 1)
    return index, (index + 1).clamp(max=src - 1), frac


def _resize_linear_ipp(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The float path OpenCV's binary wheels take through Intel IPP (whenever the source is at
    least 2×2): coordinates in double precision and `a + f·(b − a)` with a fused multiply-add,
    columns first. Matches IPP to the last bit on all but about 1e-4 of pixels (there by ≤ 2 ulp)."""
    src_h, src_w = image.shape[:2]
    xi, xn, xf = _double_taps(src_w, width)
    yi, yn, yf = _double_taps(src_h, height)
    dtype = image.dtype
    wide = torch.float64

    def lerp(a: torch.Tensor, b: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
        weight = frac.to(dtype).to(wide)
        return (weight * (b - a).to(wide) + a.to(wide)).to(dtype)

    rows = lerp(image[:, xi], image[:, xn], xf[None, :, None])
    return lerp(rows[yi], rows[yn], yf[:, None, None])


def erode_box(mask: torch.Tensor, size: int, iterations: int) -> torch.Tensor:
    """`cv2.erode(mask, ones((size, size)), iterations)`: pixels outside the image never erode."""
    out = mask
    pad = size // 2
    for _ in range(iterations):
        padded = F.pad(out[None, None].to(torch.float32), (pad, pad, pad, pad), value=float("inf"))
        out = (-F.max_pool2d(-padded, size, stride=1)).to(mask.dtype)[0, 0]
    return out


def sobel_abs_u8(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`convertScaleAbs(Sobel(image, CV_64F, 1, 0, 3))` and the same for dy, per channel of a uint8
    [H,W,C] image, with OpenCV's default BORDER_REFLECT_101."""
    x = image.to(torch.float64).permute(2, 0, 1)[:, None]
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    diff = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    kx = (smooth[:, None] * diff[None, :])[None, None]
    ky = (diff[:, None] * smooth[None, :])[None, None]
    dx = F.conv2d(x, kx)[:, 0].permute(1, 2, 0)
    dy = F.conv2d(x, ky)[:, 0].permute(1, 2, 0)
    return saturate_u8(dx.abs()), saturate_u8(dy.abs())


def add_weighted_u8(a: torch.Tensor, alpha: float, b: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """`cv2.addWeighted` for uint8 images (computed in float32, saturated)."""
    total = a.to(torch.float32) * alpha + b.to(torch.float32) * beta + gamma
    return saturate_u8(total)


def normalize_minmax(values: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """`cv2.normalize(values, None, low, high, NORM_MINMAX, CV_32F)`: scale and shift are found in
    double precision, then applied in float32 with a fused multiply-add, as OpenCV's convertTo does."""
    v = values.to(torch.float64)
    vmin, vmax = float(v.min()), float(v.max())
    scale = (high - low) * (1.0 / (vmax - vmin) if vmax - vmin > 2.220446049250313e-16 else 0.0)
    shift = low - vmin * scale
    scale32 = torch.tensor(scale, dtype=torch.float32).to(torch.float64)
    shift32 = torch.tensor(shift, dtype=torch.float32).to(torch.float64)
    return (v.to(torch.float32).to(torch.float64) * scale32 + shift32).to(torch.float32)
