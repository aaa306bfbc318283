"""A small deterministic ray caster for scenes of planes, boxes and spheres.

It produces the bundled demo scene and ground truth for the tests: RGB, metric z-depth and an
instance id per pixel. Camera conventions are OpenCV's: x right, y down, z forward; world y
points down too, so "up" is -y and a ground plane at y = h lies h metres below the camera.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

NO_HIT = float("inf")


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @staticmethod
    def from_fov(width: int, height: int, horizontal_fov_deg: float) -> "Camera":
        f = width / (2 * math.tan(math.radians(horizontal_fov_deg) / 2))
        return Camera(width, height, f, f, width / 2, height / 2)

    def project(self, x: float, y: float, z: float) -> tuple[float, float]:
        return self.fx * x / z + self.cx, self.fy * y / z + self.cy


@dataclass(frozen=True)
class Plane:
    point: tuple[float, float, float]
    normal: tuple[float, float, float]
    colour: tuple[float, float, float]
    checker: float = 0.0  # square size in metres; 0 = plain
    instance: int = 0


@dataclass(frozen=True)
class Box:
    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    colour: tuple[float, float, float]
    yaw_deg: float = 0.0  # rotation about the vertical axis
    stripes: float = 0.0  # stripe period in metres along the box's x; 0 = plain
    instance: int = 0


@dataclass(frozen=True)
class Sphere:
    centre: tuple[float, float, float]
    radius: float
    colour: tuple[float, float, float]
    instance: int = 0


Primitive = Plane | Box | Sphere
LIGHT = (-0.4, -0.8, -0.45)  # direction towards the light (up, left, towards the camera)
AMBIENT = 0.35


def scaled(primitive: Primitive, factor: float) -> Primitive:
    """The primitive scaled about the camera centre: same image, depth times `factor`."""
    if isinstance(primitive, Plane):
        return replace(primitive, point=tuple(factor * v for v in primitive.point), checker=primitive.checker * factor)
    if isinstance(primitive, Box):
        return replace(primitive, centre=tuple(factor * v for v in primitive.centre),
                       size=tuple(factor * v for v in primitive.size), stripes=primitive.stripes * factor)
    return replace(primitive, centre=tuple(factor * v for v in primitive.centre), radius=primitive.radius * factor)


def _rays(camera: Camera) -> torch.Tensor:
    """Ray directions [H,W,3] with z = 1, so the hit distance t is the z-depth."""
    v, u = torch.meshgrid(torch.arange(camera.height, dtype=torch.float64) + 0.5,
                          torch.arange(camera.width, dtype=torch.float64) + 0.5, indexing="ij")
    return torch.stack(((u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, torch.ones_like(u)), -1)


def _hit_plane(p: Plane, d: torch.Tensor):
    n = torch.tensor(p.normal, dtype=d.dtype)
    n = n / n.norm()
    denom = d @ n
    t = (torch.tensor(p.point, dtype=d.dtype) @ n) / denom
    t = torch.where((denom.abs() > 1e-9) & (t > 1e-6), t, torch.full_like(t, NO_HIT))
    normal = (-torch.sign(denom))[..., None] * n
    hit = d * t[..., None]
    albedo = torch.tensor(p.colour, dtype=d.dtype).expand(*t.shape, 3)
    if p.checker > 0:
        # Checker in the plane's own 2D coordinates, so it is stable for any plane orientation.
        a = torch.linalg.cross(n, torch.tensor((0.0, 0.0, 1.0) if abs(n[2]) < 0.9 else (1.0, 0.0, 0.0), dtype=d.dtype))
        a = a / a.norm()
        b = torch.linalg.cross(n, a)
        parity = (torch.floor(hit @ a / p.checker) + torch.floor(hit @ b / p.checker)) % 2
        albedo = albedo * (0.75 + 0.25 * parity)[..., None]
    return t, normal, albedo


def _hit_box(bx: Box, d: torch.Tensor):
    yaw = math.radians(bx.yaw_deg)
    # Rotation about the world y axis; the box is axis-aligned in its own frame.
    rot = torch.tensor([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]], dtype=d.dtype)
    origin = -torch.tensor(bx.centre, dtype=d.dtype) @ rot  # camera centre in box frame
    local_d = d @ rot
    half = torch.tensor(bx.size, dtype=d.dtype) / 2
    safe = torch.where(local_d.abs() < 1e-12, torch.full_like(local_d, 1e-12), local_d)
    t1, t2 = (-half - origin) / safe, (half - origin) / safe
    t_near = torch.minimum(t1, t2).amax(-1)
    t_far = torch.maximum(t1, t2).amin(-1)
    hit_ok = (t_near <= t_far) & (t_near > 1e-6)
    t = torch.where(hit_ok, t_near, torch.full_like(t_near, NO_HIT))
    axis = torch.minimum(t1, t2).argmax(-1)
    local_normal = torch.zeros_like(local_d).scatter_(-1, axis[..., None], 1.0)
    local_normal = local_normal * -torch.sign(local_d)
    normal = local_normal @ rot.T
    albedo = torch.tensor(bx.colour, dtype=d.dtype).expand(*t.shape, 3)
    if bx.stripes > 0:
        local_hit = origin + local_d * t_near[..., None]
        band = torch.floor(local_hit[..., 0] / bx.stripes) % 2
        albedo = albedo * (0.6 + 0.4 * band)[..., None]
    return t, normal, albedo


def _hit_sphere(s: Sphere, d: torch.Tensor):
    c = torch.tensor(s.centre, dtype=d.dtype)
    a = (d * d).sum(-1)
    b = -2 * (d @ c)
    disc = b * b - 4 * a * (c @ c - s.radius ** 2)
    t = (-b - disc.clamp_min(0).sqrt()) / (2 * a)
    t = torch.where((disc >= 0) & (t > 1e-6), t, torch.full_like(t, NO_HIT))
    normal = d * t.clamp(max=1e6)[..., None] - c
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    albedo = torch.tensor(s.colour, dtype=d.dtype).expand(*t.shape, 3)
    return t, normal, albedo


_HIT = {Plane: _hit_plane, Box: _hit_box, Sphere: _hit_sphere}


@dataclass(frozen=True)
class Render:
    rgb: torch.Tensor  # [H,W,3] float32 0..1 (black where nothing was hit)
    depth: torch.Tensor  # [H,W] float32 metric z-depth, inf where nothing was hit
    instance: torch.Tensor  # [H,W] int64, -1 where nothing was hit


def render(camera: Camera, primitives: list[Primitive]) -> Render:
    d = _rays(camera)
    depth = torch.full(d.shape[:2], NO_HIT, dtype=d.dtype)
    rgb = torch.zeros(*d.shape[:2], 3, dtype=d.dtype)
    instance = torch.full(d.shape[:2], -1, dtype=torch.int64)
    light = torch.tensor(LIGHT, dtype=d.dtype)
    light = light / light.norm()
    for primitive in primitives:
        t, normal, albedo = _HIT[type(primitive)](primitive, d)
        closer = t < depth
        shade = AMBIENT + (1 - AMBIENT) * (normal @ light).clamp_min(0)
        rgb = torch.where(closer[..., None], albedo * shade[..., None], rgb)
        depth = torch.where(closer, t, depth)
        instance = torch.where(closer, torch.full_like(instance, primitive.instance), instance)
    return Render(rgb.float().clamp(0, 1), depth.float(), instance)
