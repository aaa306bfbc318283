"""A posed stick-figure person for the renderer: COCO-17 joints, the boxes and ball drawing them, and a
caption saying the pose. It lets the person-insertion recipe train on rendered pairs with real keypoints.

The figure stands on the ground (world z up) facing its local +y, so its left is local −x. Limbs are
boxes from joint to joint, the torso a box, the head a ball; every part carries the person's instance id.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from ...ops import assets as A
from ...ops.keypoints import COCO17
from ...ops.render import Box, Primitive, Sphere

# Arm abduction from hanging down (degrees) for the left and right arm, and what the caption says.
POSES = (((12.0, 12.0), "standing with arms down"), ((85.0, 85.0), "standing with arms out"),
         ((165.0, 12.0), "raising the left arm"), ((12.0, 165.0), "raising the right arm"),
         ((165.0, 165.0), "raising both arms"))
HEAD_RADIUS = 0.11
LIMB_WIDTH = {"arm": 0.08, "leg": 0.1}
MARGIN = 0.12  # around the joints, more than half a limb's width, the head's radius and the torso's depth


@dataclass(frozen=True)
class StickFigure:
    primitives: tuple[Primitive, ...]  # world frame
    joints: torch.Tensor  # [17, 3] float64 world, COCO-17 order
    centre: tuple[float, float, float]  # the figure's 3D box (world), as ops.assets.Asset wants it
    size: tuple[float, float, float]
    rotation: tuple[tuple[float, float, float], ...]
    pose: str  # what the caption says about the pose, e.g. "raising the left arm"


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def _local_joints(rng: random.Random, pose: tuple[float, float], scale: float) -> torch.Tensor:
    """[17, 3] joints of a figure `scale` × 1.7 m tall in its own frame (x right, y forward, z up)."""
    stride = rng.uniform(-0.25, 0.25)
    joints = {}
    for side, x in (("left", -1.0), ("right", 1.0)):
        hip = torch.tensor((0.1 * x, 0.0, 0.92), dtype=torch.float64)
        leg = _unit(torch.tensor((0.0, stride * -x, -1.0), dtype=torch.float64))
        joints[f"{side}_hip"], joints[f"{side}_knee"], joints[f"{side}_ankle"] = hip, hip + 0.4 * leg, hip + 0.82 * leg
        shoulder = torch.tensor((0.2 * x, 0.0, 1.42), dtype=torch.float64)
        lift = math.radians(pose[0 if side == "left" else 1])
        arm = _unit(torch.tensor((x * math.sin(lift), rng.uniform(-0.3, 0.3), -math.cos(lift)), dtype=torch.float64))
        joints[f"{side}_shoulder"], joints[f"{side}_elbow"], joints[f"{side}_wrist"] = (
            shoulder, shoulder + 0.3 * arm, shoulder + 0.57 * arm)
    head = torch.tensor((0.0, 0.0, 1.6), dtype=torch.float64)
    joints["nose"] = head + torch.tensor((0.0, HEAD_RADIUS, 0.0), dtype=torch.float64)
    for side, x in (("left", -1.0), ("right", 1.0)):
        joints[f"{side}_eye"] = head + torch.tensor((0.04 * x, 0.095, 0.035), dtype=torch.float64)
        joints[f"{side}_ear"] = head + torch.tensor((0.1 * x, 0.0, 0.0), dtype=torch.float64)
    return torch.stack([joints[name] for name in COCO17]) * scale


def _limb(a: torch.Tensor, b: torch.Tensor, width: float, colour, instance: int) -> Box:
    """A box from joint a to joint b (its local z along the bone)."""
    z = _unit(b - a)
    x = _unit(torch.linalg.cross(torch.tensor((0.0, 0.0, 1.0), dtype=torch.float64) if abs(float(z[2])) < 0.9
                                 else torch.tensor((1.0, 0.0, 0.0), dtype=torch.float64), z))
    rotation = torch.stack((x, torch.linalg.cross(z, x), z), dim=1)
    return Box(centre=tuple(((a + b) / 2).tolist()), size=(width, width, float((b - a).norm())), colour=colour,
               rotation=tuple(map(tuple, rotation.tolist())), instance=instance)


def random_figure(rng: random.Random, instance: int, x: float, y: float, clothes, skin) -> StickFigure:
    """A figure standing at (x, y) on the ground, turned about the vertical, in a random pose of POSES."""
    (pose, phrase), scale = rng.choice(POSES), rng.uniform(0.85, 1.1)
    rotation = A.rotation_from_ypr(rng.uniform(0, 2 * math.pi), 0.0, 0.0)
    position = torch.tensor((x, y, 0.0), dtype=torch.float64)
    local = _local_joints(rng, pose, scale)
    world = local @ rotation.T + position
    j = dict(zip(COCO17, world))
    parts: list[Primitive] = []
    for side in ("left", "right"):
        for a, b, kind, colour in ((f"{side}_hip", f"{side}_knee", "leg", clothes),
                                   (f"{side}_knee", f"{side}_ankle", "leg", clothes),
                                   (f"{side}_shoulder", f"{side}_elbow", "arm", clothes),
                                   (f"{side}_elbow", f"{side}_wrist", "arm", skin)):
            parts.append(_limb(j[a], j[b], LIMB_WIDTH[kind] * scale, colour, instance))
    torso_centre = torch.tensor((0.0, 0.0, 1.17), dtype=torch.float64) * scale @ rotation.T + position
    parts.append(Box(centre=tuple(torso_centre.tolist()), size=(0.4 * scale, 0.2 * scale, 0.58 * scale), colour=clothes,
                     rotation=tuple(map(tuple, rotation.tolist())), instance=instance))
    head = torch.tensor((0.0, 0.0, 1.6), dtype=torch.float64) * scale @ rotation.T + position
    parts.append(Sphere(centre=tuple(head.tolist()), radius=HEAD_RADIUS * scale, colour=skin, instance=instance))
    # The 3D box: the joints' extent plus a margin, from the ground to the top of the head, in the figure's frame.
    low, high = local.amin(0) - MARGIN * scale, local.amax(0) + MARGIN * scale
    low[2], high[2] = 0.0, max(float(high[2]), (1.6 + HEAD_RADIUS) * scale + 0.01)  # raised hands may be higher
    centre = ((low + high) / 2) @ rotation.T + position
    return StickFigure(tuple(parts), world, tuple(centre.tolist()), tuple((high - low).tolist()),
                       tuple(map(tuple, rotation.tolist())), phrase)
