"""Rendering world-frame primitives through an ops.assets Camera, and the pose hint of a 3D box.

The pose hint is how Diorama's small Neural Assets model reads an object's target 3D pose: the object's box
rendered as a solid from the target camera, each pixel of its silhouette holding the nearness
NEAR_METRES / depth (0 outside). A fixed scale, not a per-frame min-max, so the same pose gives the same
hint in every scene and a nearer box is brighter; the silhouette's shape carries the box's rotation.
"""
from __future__ import annotations

import torch

from . import assets as A
from .render import Box, Camera, Primitive, Render, in_camera, render

NEAR_METRES = 2.0  # a box face 2 m from the camera has hint 1


def render_view(camera: A.Camera, primitives: list[Primitive], light_world: tuple[float, float, float],
                shadows: bool = False) -> Render:
    """Primitives described in the world frame, seen by `camera`, lit by a light fixed in the world."""
    (fx, _, cx), (_, fy, cy), _ = camera.intrinsics
    height, width = camera.image_hw
    rotation = torch.tensor(camera.world_to_camera, dtype=torch.float64)[:3, :3]
    light = tuple((rotation @ torch.tensor(light_world, dtype=torch.float64)).tolist())
    return render(Camera(width, height, fx, fy, cx, cy), [in_camera(p, camera.world_to_camera) for p in primitives],
                  light=light, shadows=shadows)


def box_pose_hint(asset: A.Asset, camera: A.Camera) -> torch.Tensor:
    """[H, W] float32: NEAR_METRES / depth on the silhouette of the asset's 3D box seen by `camera`, else 0."""
    solid = Box(centre=tuple(asset.centre), size=tuple(asset.size), colour=(1.0, 1.0, 1.0),
                rotation=tuple(map(tuple, asset.rotation)), instance=1)
    shot = render_view(camera, [solid], (0.0, 0.0, 1.0))
    hit = shot.instance == 1
    return torch.where(hit, NEAR_METRES / shot.depth.clamp_min(1e-6), torch.zeros_like(shot.depth)).float()
