"""The colour-free high-frequency detail map of a masked object (after BIFRÖST's Sobel map).

Per RGB channel the Sobel gradient magnitude (half |dx| plus half |dy|, saturated at 1), the
maximum over channels (which removes colour), kept inside the eroded mask and zeroed below a
threshold. BIFRÖST's exact hint construction, with its uint8 quirks, is a separate path.
"""
from __future__ import annotations

import kornia
import torch


def detail_map(image: torch.Tensor, mask: torch.Tensor, threshold: float = 50 / 255, erode_px: int = 2) -> torch.Tensor:
    """image [B,H,W,3] 0..1, mask [B,H,W] → IMAGE [B,H,W,3] with three identical channels."""
    rgb = image.permute(0, 3, 1, 2)
    gradients = kornia.filters.spatial_gradient(rgb, mode="sobel", normalized=False)  # [B,3,2,H,W]
    magnitude = (0.5 * gradients[:, :, 0].abs() + 0.5 * gradients[:, :, 1].abs()).clamp(max=1.0)
    detail = magnitude.amax(dim=1)
    inside = (mask > 0.5).float().unsqueeze(1)
    if erode_px > 0:
        kernel = torch.ones(2 * erode_px + 1, 2 * erode_px + 1, device=inside.device)
        inside = kornia.morphology.erosion(inside, kernel)
    detail = detail * inside[:, 0]
    detail = torch.where(detail < threshold, torch.zeros_like(detail), detail)
    return detail.unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()
