"""The bundled demo scene: a room with a table, a ball and a cabinet, and a striped crate to insert.

The crate's target place is behind the table, so a correct composite hides its lower part. Every
image, depth map and mask is rendered, so the ground truth (the crate really standing there) is
known exactly.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .render import Box, Camera, Plane, Render, Sphere, render

FIELD_OF_VIEW_DEG = 70.0
CRATE_INSTANCE = 10
CRATE_TARGET = (1.5, 0.95, 5.0)
CRATE = Box(centre=CRATE_TARGET, size=(0.9, 1.1, 0.9), colour=(0.85, 0.35, 0.2), yaw_deg=25.0, stripes=0.15,
            instance=CRATE_INSTANCE)
ROOM = [
    Plane(point=(0, 1.5, 0), normal=(0, -1, 0), colour=(0.55, 0.45, 0.35), checker=0.5, instance=0),
    Plane(point=(0, 0, 9), normal=(0, 0, -1), colour=(0.75, 0.78, 0.8), instance=1),
    Plane(point=(-3.5, 0, 0), normal=(1, 0, 0), colour=(0.7, 0.65, 0.6), instance=2),
    Box(centre=(0.3, 1.1, 3.6), size=(1.6, 0.8, 0.8), colour=(0.45, 0.3, 0.2), instance=3),
    Sphere(centre=(-1.2, 1.15, 4.5), radius=0.35, colour=(0.2, 0.4, 0.8), instance=4),
    Box(centre=(2.0, 0.5, 6.5), size=(1.0, 2.0, 0.6), colour=(0.5, 0.55, 0.45), instance=5),
]


def camera(width: int, height: int) -> Camera:
    return Camera.from_fov(width, height, FIELD_OF_VIEW_DEG)


def render_background(width: int, height: int) -> Render:
    return render(camera(width, height), ROOM)


def render_truth(width: int, height: int) -> Render:
    """The room with the crate standing at its target place."""
    return render(camera(width, height), ROOM + [CRATE])


def render_crate_alone(width: int, height: int, centre: tuple[float, float, float] = CRATE_TARGET) -> Render:
    return render(camera(width, height), [replace(CRATE, centre=centre)])


def render_reference(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The crate photographed alone (another camera distance, centred), on white.

    Returns image [H,W,3], mask [H,W] and metric depth [H,W]; outside the crate the depth is its
    farthest depth, so the map stays a valid (positive, finite) metric depth everywhere.
    """
    shot = render_crate_alone(size, size, centre=(0.0, 0.0, 2.2))
    return object_layers(shot)


def object_layers(shot: Render) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image on white, mask and depth of the crate in a render of it alone."""
    mask = (shot.instance == CRATE_INSTANCE).float()
    image = torch.where(mask[..., None] > 0, shot.rgb, torch.ones_like(shot.rgb))
    depth = torch.where(mask > 0, shot.depth, shot.depth[mask > 0].max())
    return image, mask, depth
