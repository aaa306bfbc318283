"""A small deterministic ray caster for scenes of planes, boxes and spheres.

It produces the bundled demo scene and ground truth for the tests: RGB, metric z-depth and an
instance id per pixel. Camera conventions are OpenCV's: x right, y down, z forward; world y
points down too, so "up" is -y and a ground plane at y = h lies h metres below the camera.
Primitives are given in the camera frame; `in_camera` moves a scene described in any world frame
(e.g. z up, as ops.assets and Kubric) into the frame of a camera placed by its world → camera pose.
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
    # Where the checker grid starts and its first in-plane axis; the defaults (the camera centre and an
    # axis derived from the normal) tie the pattern to the camera, `in_camera` ties it to the world.
    texture_origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    texture_axis: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class Box:
    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    colour: tuple[float, float, float]
    yaw_deg: float = 0.0  # rotation about the vertical axis
    stripes: float = 0.0  # stripe period in metres along the box's x; 0 = plain
    instance: int = 0
    checker: float = 0.0  # square size in metres of a checker on every face (in the box's frame); 0 = plain
    rotation: tuple[tuple[float, float, float], ...] | None = None  # 3x3 box → camera; replaces yaw_deg when set


@dataclass(frozen=True)
class Sphere:
    centre: tuple[float, float, float]
    radius: float
    colour: tuple[float, float, float]
    instance: int = 0
    checker: int = 0  # segments around the equator of a longitude/latitude checker (even); 0 = plain
    rotation: tuple[tuple[float, float, float], ...] | None = None  # 3x3 sphere → camera (orients the checker)


Primitive = Plane | Box | Sphere
LIGHT = (-0.4, -0.8, -0.45)  # direction towards the light (up, left, towards the camera)
AMBIENT = 0.35


def scaled(primitive: Primitive, factor: float) -> Primitive:
    """The primitive scaled about the camera centre: same image, depth times `factor`."""
    if isinstance(primitive, Plane):
        return replace(primitive, point=tuple(factor * v for v in primitive.point), checker=primitive.checker * factor,
                       texture_origin=tuple(factor * v for v in primitive.texture_origin))
    if isinstance(primitive, Box):
        return replace(primitive, centre=tuple(factor * v for v in primitive.centre),
                       size=tuple(factor * v for v in primitive.size), stripes=primitive.stripes * factor,
                       checker=primitive.checker * factor)
    return replace(primitive, centre=tuple(factor * v for v in primitive.centre), radius=primitive.radius * factor)


def _unit(vector) -> torch.Tensor:
    v = torch.as_tensor(vector, dtype=torch.float64)
    return v / v.norm()


def _checker_axis(normal: torch.Tensor) -> torch.Tensor:
    """The default first in-plane axis of a plane's checker (unit `normal`)."""
    a = torch.linalg.cross(normal, torch.tensor((0.0, 0.0, 1.0) if abs(normal[2]) < 0.9 else (1.0, 0.0, 0.0),
                                                dtype=normal.dtype))
    return a / a.norm()


def _box_rotation(bx: Box) -> torch.Tensor:
    """Box → camera rotation [3, 3] float64: `rotation` when given, else `yaw_deg` about the y axis."""
    if bx.rotation is not None:
        return torch.tensor(bx.rotation, dtype=torch.float64)
    yaw = math.radians(bx.yaw_deg)
    return torch.tensor([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]],
                        dtype=torch.float64)


def _sphere_rotation(s: Sphere) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64) if s.rotation is None else torch.tensor(s.rotation, dtype=torch.float64)


def in_camera(primitive: Primitive, world_to_camera) -> Primitive:
    """A primitive described in a world frame, moved into the frame of a camera whose 4x4 world → camera
    pose (OpenCV: x right, y down, z forward) is `world_to_camera`. Textures stay fixed to the object:
    a plane's checker to its world origin and axis, a box's stripes to the box."""
    pose = torch.as_tensor(world_to_camera, dtype=torch.float64)
    rotation, translation = pose[:3, :3], pose[:3, 3]

    def point(v) -> tuple[float, float, float]:
        return tuple((rotation @ torch.as_tensor(v, dtype=torch.float64) + translation).tolist())

    def direction(v) -> tuple[float, float, float]:
        return tuple((rotation @ torch.as_tensor(v, dtype=torch.float64)).tolist())

    if isinstance(primitive, Plane):
        axis = primitive.texture_axis if primitive.texture_axis is not None else _checker_axis(_unit(primitive.normal))
        return replace(primitive, point=point(primitive.point), normal=direction(primitive.normal),
                       texture_origin=point(primitive.texture_origin), texture_axis=direction(axis))
    if isinstance(primitive, Box):
        box_to_camera = rotation @ _box_rotation(primitive)
        return replace(primitive, centre=point(primitive.centre), rotation=tuple(map(tuple, box_to_camera.tolist())))
    sphere_to_camera = rotation @ _sphere_rotation(primitive)
    return replace(primitive, centre=point(primitive.centre), rotation=tuple(map(tuple, sphere_to_camera.tolist())))


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
        a = _checker_axis(n) if p.texture_axis is None else _unit(p.texture_axis).to(d.dtype)
        b = torch.linalg.cross(n, a)
        on_plane = hit - torch.tensor(p.texture_origin, dtype=d.dtype)
        parity = (torch.floor(on_plane @ a / p.checker) + torch.floor(on_plane @ b / p.checker)) % 2
        albedo = albedo * (0.75 + 0.25 * parity)[..., None]
    return t, normal, albedo


def _hit_box(bx: Box, d: torch.Tensor):
    rot = _box_rotation(bx).to(d.dtype)  # the box is axis-aligned in its own frame
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
    if bx.checker > 0:
        # Squares in the two in-face coordinates (the face's own axis sits on a cell boundary).
        cells = torch.floor((origin + local_d * t_near[..., None]) / bx.checker)
        parity = (cells.sum(-1) - cells.gather(-1, axis[..., None])[..., 0]) % 2
        albedo = albedo * (0.7 + 0.3 * parity)[..., None]
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
    if s.checker > 0:
        local = normal @ _sphere_rotation(s).to(d.dtype)  # the unit surface direction in the sphere's frame
        longitude = torch.atan2(local[..., 1], local[..., 0]) + math.pi  # 0..2π
        latitude = torch.asin(local[..., 2].clamp(-1, 1)) + math.pi / 2  # 0..π
        step = 2 * math.pi / s.checker
        parity = (torch.floor(longitude / step) + torch.floor(latitude / step)) % 2
        albedo = albedo * (0.7 + 0.3 * parity)[..., None]
    return t, normal, albedo


_HIT = {Plane: _hit_plane, Box: _hit_box, Sphere: _hit_sphere}
SHADOW_OFFSET = 1e-4  # metres: shadow rays start this far off the surface, so it does not shadow itself
SHADOW_EPSILON = 1e-6


# Shadow rays: does a primitive block the way from each point of `origins` [N, 3] towards the light
# (unit `direction` [3])? Origins lie on the light side of their own surface, outside every primitive.
def _blocks_plane(p: Plane, origins: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    n = _unit(p.normal).to(origins.dtype)
    denom = direction @ n
    if abs(float(denom)) < 1e-9:
        return torch.zeros(origins.shape[0], dtype=torch.bool)
    t = ((torch.tensor(p.point, dtype=origins.dtype) - origins) @ n) / denom
    return t > SHADOW_EPSILON


def _blocks_box(bx: Box, origins: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    rot = _box_rotation(bx).to(origins.dtype)
    local_origins = (origins - torch.tensor(bx.centre, dtype=origins.dtype)) @ rot
    local_d = direction @ rot
    safe = torch.where(local_d.abs() < 1e-12, torch.full_like(local_d, 1e-12), local_d)
    half = torch.tensor(bx.size, dtype=origins.dtype) / 2
    t1, t2 = (-half - local_origins) / safe, (half - local_origins) / safe
    t_near, t_far = torch.minimum(t1, t2).amax(-1), torch.maximum(t1, t2).amin(-1)
    return (t_near <= t_far) & (t_near > SHADOW_EPSILON)


def _blocks_sphere(s: Sphere, origins: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    oc = origins - torch.tensor(s.centre, dtype=origins.dtype)
    b = oc @ direction
    disc = b * b - ((oc * oc).sum(-1) - s.radius ** 2)
    return (disc >= 0) & (-b - disc.clamp_min(0).sqrt() > SHADOW_EPSILON)


_BLOCKS = {Plane: _blocks_plane, Box: _blocks_box, Sphere: _blocks_sphere}


@dataclass(frozen=True)
class Render:
    rgb: torch.Tensor  # [H,W,3] float32 0..1 (black where nothing was hit)
    depth: torch.Tensor  # [H,W] float32 metric z-depth, inf where nothing was hit
    instance: torch.Tensor  # [H,W] int64, -1 where nothing was hit


def render(camera: Camera, primitives: list[Primitive], light: tuple[float, float, float] = LIGHT,
           shadows: bool = False) -> Render:
    """`light`: direction towards a distant light in the camera frame (a light fixed in the world is
    that direction turned by the world → camera rotation, so every view of a scene is lit alike).
    `shadows`: cast shadows, i.e. a surface point another primitive hides from the light gets only the
    ambient term."""
    d = _rays(camera)
    depth = torch.full(d.shape[:2], NO_HIT, dtype=d.dtype)
    rgb = torch.zeros(*d.shape[:2], 3, dtype=d.dtype)
    instance = torch.full(d.shape[:2], -1, dtype=torch.int64)
    surface_normal = torch.zeros_like(rgb)
    surface_albedo = torch.zeros_like(rgb)
    light = torch.tensor(light, dtype=d.dtype)
    light = light / light.norm()
    for primitive in primitives:
        t, normal, albedo = _HIT[type(primitive)](primitive, d)
        closer = t < depth
        shade = AMBIENT + (1 - AMBIENT) * (normal @ light).clamp_min(0)
        rgb = torch.where(closer[..., None], albedo * shade[..., None], rgb)
        depth = torch.where(closer, t, depth)
        instance = torch.where(closer, torch.full_like(instance, primitive.instance), instance)
        if shadows:
            surface_normal = torch.where(closer[..., None], normal, surface_normal)
            surface_albedo = torch.where(closer[..., None], albedo, surface_albedo)
    if shadows:
        # Only lit surfaces can be shadowed; their normal faces the light, so the offset moves off it.
        lit = torch.isfinite(depth) & ((surface_normal @ light) > 0)
        origins = d[lit] * depth[lit][:, None] + SHADOW_OFFSET * surface_normal[lit]
        blocked = torch.zeros(origins.shape[0], dtype=torch.bool)
        for primitive in primitives:
            blocked |= _BLOCKS[type(primitive)](primitive, origins, light)
        shadowed = torch.zeros_like(lit)
        shadowed[lit] = blocked
        rgb = torch.where(shadowed[..., None], surface_albedo * AMBIENT, rgb)
    return Render(rgb.float().clamp(0, 1), depth.float(), instance)
