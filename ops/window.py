"""Rectangles of the canvas that work is confined to, so cost follows the object, not the photo."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def grown(self, margin: int, canvas_hw: tuple[int, int]) -> "Window":
        """This window with `margin` px added on every side, clipped to the canvas."""
        height, width = canvas_hw
        return Window(max(self.y0 - margin, 0), min(self.y1 + margin, height),
                      max(self.x0 - margin, 0), min(self.x1 + margin, width))


def move_to_window(layer: torch.Tensor, source: Window, target: Window) -> torch.Tensor:
    """A [..., h, w] layer covering `source` re-cut to cover `target`, zero where source has no data."""
    out = layer.new_zeros(*layer.shape[:-2], *target.shape)
    y0, y1 = max(source.y0, target.y0), min(source.y1, target.y1)
    x0, x1 = max(source.x0, target.x0), min(source.x1, target.x1)
    if y1 > y0 and x1 > x0:
        out[..., y0 - target.y0:y1 - target.y0, x0 - target.x0:x1 - target.x0] = \
            layer[..., y0 - source.y0:y1 - source.y0, x0 - source.x0:x1 - source.x0]
    return out


def on_canvas(layer: torch.Tensor, source: Window, canvas_hw: tuple[int, int]) -> torch.Tensor:
    return move_to_window(layer, source, Window(0, canvas_hw[0], 0, canvas_hw[1]))
