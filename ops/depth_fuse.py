"""Fusing a placed object's depth into the background depth, with occlusion.

The object's depth is scaled so that its median equals the placement depth. A uniform scale of
depth is exactly what scaling the whole object about the camera centre does (its image stays
the same), and it is also right for disparity, where scaling inverse depth by c scales depth by
1/c. The object is visible only where it is nearer than the scene.
"""
from __future__ import annotations

import torch

from .depth_map import DepthMap, nearer
from .object_layer import PlacedObject


def scale_object_depth(object_depth: torch.Tensor, object_mask: torch.Tensor, target: float) -> torch.Tensor:
    """Scale each batch item's object depth [B,H,W] so its median over the mask is `target`."""
    scaled = torch.zeros_like(object_depth)
    for i in range(object_depth.shape[0]):
        inside = object_mask[i] > 0.5
        if not bool(inside.any()):
            continue
        median = object_depth[i][inside].median()
        if not bool(median > 0):
            raise ValueError(
                f"object depth has median {float(median):.4g} inside its mask; expected > 0 "
                "(metric depth in metres, or disparity shifted so the object is positive)"
            )
        scaled[i] = object_depth[i] * (target / median)
    return scaled


def fuse_object_depth(background: DepthMap, placed: PlacedObject, target_depth: float) -> tuple[DepthMap, torch.Tensor]:
    """Returns the fused depth and the visible-object mask [B,H,W] (1 where the object is seen)."""
    if placed.depth is None:
        raise ValueError("the placed object carries no depth; give the object's depth map")
    if background.kind == "metric" and target_depth <= 0:
        raise ValueError(f"placement depth {target_depth:.4g} m is not > 0; metric depth must be positive")
    rows, cols = placed.window.slices
    scene = background.values[:, rows, cols]
    object_depth = scale_object_depth(placed.depth, placed.mask, target_depth)
    seen = (placed.mask > 0.5) & nearer(object_depth, scene, background.kind)
    fused = background.values.clone()
    fused[:, rows, cols] = torch.where(seen, object_depth, scene)
    visible = torch.zeros_like(background.values)
    visible[:, rows, cols] = seen.to(visible.dtype)
    return DepthMap(fused, background.kind), visible
