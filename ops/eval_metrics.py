"""Image metrics of the evaluation command (pure torch): PSNR, SSIM, IoU, colour-histogram identity
similarity, and the object region of a composite. Images are [H, W, 3] floats in [0, 1]; masks [H, W] bool;
boxes (x0, y0, x1, y1) pixels, ends exclusive."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]

SSIM_WINDOW = 11  # Wang et al. 2004: 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, data range 1
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2
HISTOGRAM_BINS = 8  # per channel: 8³ joint colour bins
CHANGE_THRESHOLD = 0.04  # > 10/255 on some channel counts as changed by the compositor


def box_mask(box: Box, height: int, width: int) -> torch.Tensor:
    x0, y0, x1, y1 = box
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return mask


def psnr(image: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """10·log10(1 / MSE) over the pixels of `mask` (all when None); inf for identical pixels."""
    squared = ((image.double() - truth.double()) ** 2).mean(-1)
    if mask is not None:
        if not bool(mask.any()):
            raise ValueError("psnr: the mask selects no pixels")
        squared = squared[mask]
    mse = float(squared.mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _gaussian_window() -> torch.Tensor:
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64) - SSIM_WINDOW // 2
    g = torch.exp(-offsets ** 2 / (2 * SSIM_SIGMA ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, SSIM_WINDOW, SSIM_WINDOW)


def ssim_map(image: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """[H, W] SSIM per pixel (mean over RGB), Gaussian-weighted local statistics, reflect-padded borders."""
    x, y = (t.double().permute(2, 0, 1)[None] for t in (image, truth))
    pad = SSIM_WINDOW // 2
    if min(x.shape[-2:]) <= pad:
        raise ValueError(f"ssim: images must be larger than {pad} px on each side, got {tuple(x.shape[-2:])}")
    window = _gaussian_window()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (pad,) * 4, mode="reflect"), window, groups=3)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)) / ((mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (var_x + var_y + SSIM_C2))
    return ssim[0].mean(0)


def ssim(image: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean SSIM over the pixels of `mask` (all when None); the local statistics see the whole image, so a
    box's value includes its context the same way for every method."""
    values = ssim_map(image, truth)
    return float(values.mean() if mask is None else values[mask].mean())


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a ∩ b| / |a ∪ b| of two bool masks; 1 when both are empty (nothing to find, nothing found)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def changed_region(composite: torch.Tensor, background: torch.Tensor, within: torch.Tensor | None = None,
                   threshold: float = CHANGE_THRESHOLD) -> torch.Tensor:
    """Where a composite differs from the background it was made from: the object region a compositor
    produced (object, its soft edge and any shadow it cast), limited to `within` when given."""
    changed = (composite - background).abs().amax(-1) > threshold
    return changed if within is None else changed & within


def colour_histogram(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalised joint RGB histogram (8³ bins) of the masked pixels."""
    pixels = image[mask].clamp(0, 1)
    if pixels.shape[0] == 0:
        return torch.zeros(HISTOGRAM_BINS ** 3, dtype=torch.float64)
    bins = (pixels * HISTOGRAM_BINS).long().clamp_max(HISTOGRAM_BINS - 1)
    index = (bins[:, 0] * HISTOGRAM_BINS + bins[:, 1]) * HISTOGRAM_BINS + bins[:, 2]
    counts = torch.bincount(index, minlength=HISTOGRAM_BINS ** 3).double()
    return counts / counts.sum()


def identity_similarity(image: torch.Tensor, region: torch.Tensor, truth: torch.Tensor, truth_region: torch.Tensor) -> float:
    """Cosine similarity of the colour histograms of the composite's object region and the object's visible
    pixels in the ground truth: 1 for the same colour distribution, 0 for no shared colour (or nothing there)."""
    a, b = colour_histogram(image, region), colour_histogram(truth, truth_region)
    norm = float(a.norm() * b.norm())
    return 0.0 if norm == 0 else float(a @ b) / norm
