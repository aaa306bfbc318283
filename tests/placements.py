"""Rendered insertion cases with exact ground truth, shared by the fusion and paste tests.

The object's own depth map comes from rendering it alone in a copy of the world scaled by
`k` about the camera: its image is unchanged and its depth is k times the true depth, exactly
the unknown scale DepthFuse must remove using the placement depth.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from diorama.ops import bundled_scene
from diorama.ops.placement import mask_bounding_box
from diorama.ops.render import render, scaled

WIDTH, HEIGHT = 320, 240
DEPTH_SCALE = 1.7
CASES = {
    "behind": (1.5, 0.95, 5.0),  # partly hidden by the table
    "beside": (3.0, 0.95, 5.5),  # nothing in front of it
    "in_front": (2.4, 0.95, 5.2),  # hides the lower part of the cabinet
}


@dataclass
class InsertionCase:
    background_rgb: torch.Tensor  # [H,W,3]
    background_depth: torch.Tensor  # [H,W] metres
    background_instance: torch.Tensor  # [H,W] which primitive each pixel shows
    object_rgb: torch.Tensor  # [h,w,3] object alone, white elsewhere
    object_mask: torch.Tensor  # [h,w]
    object_depth: torch.Tensor  # [h,w] true depth times DEPTH_SCALE
    box: tuple[int, int, int, int]  # pixel box of the object at its target
    median_depth: float  # true median depth of the object at its target, metres
    visible_truth: torch.Tensor  # [H,W] where the object is seen in the true render
    truth_rgb: torch.Tensor  # [H,W,3] true composite


def insertion_case(name: str, source_resolution: int = 1) -> InsertionCase:
    centre = CASES[name]
    crate = replace(bundled_scene.CRATE, centre=centre)
    cam = bundled_scene.camera(WIDTH, HEIGHT)
    room = render(cam, bundled_scene.ROOM)
    truth = render(cam, bundled_scene.ROOM + [crate])
    alone = render(cam, [crate])
    target_mask = (alone.instance == bundled_scene.CRATE_INSTANCE).float()
    source_cam = bundled_scene.camera(WIDTH * source_resolution, HEIGHT * source_resolution)
    source = render(source_cam, [scaled(crate, DEPTH_SCALE)])
    object_rgb, object_mask, object_depth = bundled_scene.object_layers(source)
    return InsertionCase(
        background_rgb=room.rgb,
        background_depth=room.depth,
        background_instance=room.instance,
        object_rgb=object_rgb,
        object_mask=object_mask,
        object_depth=object_depth,
        box=mask_bounding_box(target_mask),
        median_depth=float(alone.depth[target_mask > 0].median()),
        visible_truth=(truth.instance == bundled_scene.CRATE_INSTANCE).float(),
        truth_rgb=truth.rgb,
    )


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum()) / max(1, float((a | b).sum()))
