"""LocatePlacement's preview: the background with the box, above a depth legend strip."""
from __future__ import annotations

import torch

from .drawing import draw_box

MARK = (1.0, 0.2, 0.2)


def legend_strip(width: int, height: int, marks: tuple[float, float]) -> torch.Tensor:
    """[height, width, 3]: a grey ramp from far (black, left) to near (white, right) with the span
    between `marks` (fractions of the ramp, far → near) drawn in red, at least 2 px wide."""
    ramp = torch.linspace(0.0, 1.0, width).view(1, width, 1).expand(height, width, 3).clone()
    low, high = sorted(min(max(m, 0.0), 1.0) for m in marks)
    x0 = min(round(low * (width - 1)), width - 2) if width > 1 else 0
    x1 = max(round(high * (width - 1)) + 1, x0 + 2)
    ramp[height // 3:, x0:x1] = ramp.new_tensor(MARK)
    return ramp


def locate_preview(image: torch.Tensor, box: tuple[int, int, int, int], marks: tuple[float, float] | None) -> torch.Tensor:
    """image [1,H,W,3] with the pixel box drawn; with depth marks, a legend strip (H/12, at least 8 px)
    is appended below so the picture itself is not covered."""
    drawn = draw_box(image, box)
    if marks is None:
        return drawn
    height, width = image.shape[1:3]
    strip = legend_strip(width, max(8, height // 12), marks).to(drawn)
    return torch.cat([drawn, strip.unsqueeze(0).expand(drawn.shape[0], -1, -1, -1)], dim=1)
