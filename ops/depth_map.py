"""Float depth maps that remember what their numbers mean.

`metric` values are metres along the optical axis (smaller = nearer); `disparity` values are
relative inverse depth (larger = nearer) as Depth Anything and MiDaS/DPT predict them. Depth is
never quantised: previews and hints are derived views, not the data.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import require_finite

KINDS = ("metric", "disparity")


@dataclass(frozen=True)
class DepthMap:
    values: torch.Tensor  # [B, H, W] float32
    kind: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"depth kind {self.kind!r} is unknown; expected one of {KINDS}")
        if self.values.ndim != 3:
            raise ValueError(f"depth values must be [batch, height, width], got shape {tuple(self.values.shape)}")


def checked_depth(values: torch.Tensor, kind: str, name: str) -> DepthMap:
    """A DepthMap from numbers that come from outside (a model, another pack): finite, metric > 0.

    Maps derived from checked maps inside Diorama need no second pass over every pixel.
    """
    require_finite(values, name)
    if kind == "metric" and bool((values <= 0).any()):
        raise ValueError(f"{name}: metric depth must be > 0 metres everywhere; minimum is {float(values.min()):.4g}")
    return DepthMap(values, kind)


def nearer(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """Where depth `a` is nearer to the camera than depth `b`."""
    return a < b if kind == "metric" else a > b


def nearness(depth: DepthMap) -> torch.Tensor:
    """A quantity that grows towards the camera, whatever the kind (inverse metres for metric)."""
    return 1.0 / depth.values if depth.kind == "metric" else depth.values


def depth_hint(depth: DepthMap) -> torch.Tensor:
    """IMAGE [B,H,W,3] with near = white, as depth ControlNets were trained on (MiDaS-style).

    Normalised over the whole batch, so the frames of a batch share one scale.
    """
    near = nearness(depth)
    low, high = near.min(), near.max()
    scaled = (near - low) * (1 / (high - low)) if high > low else torch.zeros_like(near)
    return scaled.unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()
