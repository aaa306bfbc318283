"""Diorama's own renderer (ops/render.py) as a source of paired frames with exact ground truth.

Each index is a random scene, deterministic by (seed, index): a ground plane (plain or checkered),
3-5 boxes (any yaw; plain, striped or checkered) and balls (plain or with a longitude/latitude
checker, turned about the vertical) of random colours standing close together on it, a light fixed
in the world (objects cast shadows unless `shadows` is false; the clean plate loses the object's
shadow with the object), and two cameras looking at the group from different directions. One object
visible in both views is the pair's `object_id`; the others may hide part of it. With `people` > 0 a
scene may hold a posed stick-figure person (stick_figure.py), who is then the pair's object, with
COCO-17 `keypoints` in the target and a `caption`.

World frame: z up, ground at z = 0 (as ops.assets and Kubric); cameras are OpenCV world → camera.
Instance ids are 1..N (ops.assets.boxes_from_segmentation's convention); every object is listed in
both frames (an object out of view has an empty mask and a zero source box). Each frame's
`boxes3d[k].source_box` is object k's 2D box in that frame itself. Sky pixels have depth inf.

`extras`: "target_visible_fraction" (visible pixels of the object in the target / its pixels when
rendered alone from the target camera), "source_mode" ("scene"; "object": the source frame shows
the object alone on the sky colour, seen from the source camera; "moved": the source frame is the same
scene seen from the target camera with the object moved 0.3-0.8 m along the ground and turned 15-90° about
the vertical, its shadow with it — the Neural Assets task of putting an object at a new 3D pose), "names" ({instance id: "red box",
"blue ball", "person", …}: colour word of the object's hue + shape, for sentence-building recipes),
"keypoints_occluded" (people only: per joint, whether another object hides it in the target).
"""
from __future__ import annotations

import colorsys
import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch

from ...ops import assets as A
from ...ops.asset_render import render_view
from ...ops.render import Box, Plane, Primitive, Render, Sphere
from .frames import Frame, PairedFrames
from .stick_figure import StickFigure, random_figure

SOURCE_MODES = ("scene", "object", "moved")
MIN_SIZE = 16
MIN_VISIBLE_PIXELS_FRACTION = 0.004  # the chosen object covers at least this share of each view
GROUP_RADIUS = 1.4  # metres: objects stand within this distance of the scene centre, so they occlude
CAMERA_TRIES = 64


# Hue (degrees) upper bounds → colour word; pale colours are "grey".
HUE_WORDS = ((15, "red"), (45, "orange"), (70, "yellow"), (165, "green"), (200, "cyan"), (260, "blue"),
             (300, "purple"), (345, "pink"), (360, "red"))


@dataclass(frozen=True)
class SceneObject:
    primitives: tuple[Primitive, ...]  # world frame, all with the object's instance id
    asset_centre: tuple[float, float, float]
    asset_size: tuple[float, float, float]
    asset_rotation: tuple[tuple[float, float, float], ...]  # object → world
    name: str  # "red box", "blue ball", "person"
    figure: StickFigure | None = None  # a person: its joints and pose


@dataclass(frozen=True)
class Scene:
    ground: Plane
    objects: tuple[SceneObject, ...]  # object k has instance id k + 1
    light: tuple[float, float, float]  # towards the light, world frame
    sky: tuple[float, float, float]


def _colour(rng: random.Random) -> tuple[float, float, float]:
    # Saturated, mid-bright colours so objects stand out from each other and the ground.
    hue = rng.random()
    saturation, value = rng.uniform(0.45, 0.9), rng.uniform(0.55, 0.95)
    channels = [min(1.0, max(0.0, abs((hue * 6 + offset) % 6 - 3) - 1)) for offset in (0, 4, 2)]
    return tuple(value * (1 - saturation + saturation * c) for c in channels)


def _object(rng: random.Random, instance: int, x: float, y: float) -> SceneObject:
    if rng.random() < 0.65:
        size = (rng.uniform(0.35, 1.1), rng.uniform(0.35, 1.1), rng.uniform(0.35, 1.2))
        yaw = rng.uniform(0, 2 * math.pi)
        rotation = tuple(map(tuple, A.rotation_from_ypr(yaw, 0.0, 0.0).tolist()))
        centre = (x, y, size[2] / 2)
        pattern = rng.choice(("plain", "stripes", "checker"))
        colour = _colour(rng)
        box = Box(centre=centre, size=size, colour=colour, rotation=rotation, instance=instance,
                  stripes=rng.uniform(0.08, 0.2) if pattern == "stripes" else 0.0,
                  checker=rng.uniform(0.1, 0.25) if pattern == "checker" else 0.0)
        return SceneObject((box,), centre, size, rotation, f"{colour_word(colour)} box")
    radius = rng.uniform(0.2, 0.55)
    centre = (x, y, radius)
    # Turned about the vertical, so a checkered ball shows its pose; the asset box turns with it.
    rotation = tuple(map(tuple, A.rotation_from_ypr(rng.uniform(0, 2 * math.pi), 0.0, 0.0).tolist()))
    checker = rng.choice((0, 0, 6, 8, 10, 12))
    colour = _colour(rng)
    return SceneObject((Sphere(centre=centre, radius=radius, colour=colour, instance=instance, checker=checker,
                               rotation=rotation),), centre, (2 * radius,) * 3, rotation, f"{colour_word(colour)} ball")


def _person(rng: random.Random, instance: int, x: float, y: float) -> SceneObject:
    clothes = _colour(rng)
    skin = rng.choice(((0.95, 0.8, 0.65), (0.8, 0.6, 0.45), (0.55, 0.38, 0.26), (0.35, 0.24, 0.17)))
    figure = random_figure(rng, instance, x, y, clothes, skin)
    return SceneObject(figure.primitives, figure.centre, figure.size, figure.rotation, "person", figure)


def colour_word(colour: tuple[float, float, float]) -> str:
    hue, saturation, _ = colorsys.rgb_to_hsv(*colour)
    return "grey" if saturation < 0.2 else next(word for bound, word in HUE_WORDS if hue * 360 < bound)


def _footprint(obj: SceneObject) -> float:
    return math.hypot(obj.asset_size[0], obj.asset_size[1]) / 2


def random_scene(rng: random.Random, people: float = 0.0) -> Scene:
    """`people`: the probability that the first object is a stick-figure person (no draw when 0, so scenes
    without people do not depend on the option)."""
    ground = Plane(point=(0.0, 0.0, 0.0), normal=(0.0, 0.0, 1.0), colour=_colour(rng),
                   checker=rng.choice((0.0, rng.uniform(0.3, 0.9))))
    objects: list[SceneObject] = []
    wanted = rng.randint(3, 5)
    person = people > 0 and rng.random() < people
    for _ in range(wanted * 10):  # rejection sampling: objects must not interpenetrate
        if len(objects) == wanted:
            break
        angle, distance = rng.uniform(0, 2 * math.pi), GROUP_RADIUS * math.sqrt(rng.random())
        make = _person if person and not objects else _object
        candidate = make(rng, len(objects) + 1, distance * math.cos(angle), distance * math.sin(angle))
        if all(math.dist(candidate.asset_centre[:2], other.asset_centre[:2]) > _footprint(candidate) + _footprint(other)
               for other in objects):
            objects.append(candidate)
    elevation, azimuth = math.radians(rng.uniform(35, 70)), rng.uniform(0, 2 * math.pi)
    light = (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation))
    sky = tuple(rng.uniform(0.6, 0.95) for _ in range(3))
    return Scene(ground, tuple(objects), light, sky)


def moved_object(obj: SceneObject, offset: tuple[float, float], turn: float) -> SceneObject:
    """The object moved by `offset` (metres along world x, y) and turned by `turn` radians about the vertical
    through its centre; its textures move with it."""
    spin = A.rotation_from_ypr(turn, 0.0, 0.0).double()
    centre = torch.tensor(obj.asset_centre, dtype=torch.float64)
    shift = torch.tensor((*offset, 0.0), dtype=torch.float64)

    def placed(point) -> tuple[float, float, float]:
        return tuple((spin @ (torch.tensor(point, dtype=torch.float64) - centre) + centre + shift).tolist())

    def turned(rotation) -> tuple[tuple[float, float, float], ...]:
        return tuple(map(tuple, (spin @ torch.tensor(rotation, dtype=torch.float64)).tolist()))

    primitives = tuple(replace(p, centre=placed(p.centre), rotation=turned(p.rotation)) for p in obj.primitives)
    return replace(obj, primitives=primitives, asset_centre=placed(obj.asset_centre),
                   asset_rotation=turned(obj.asset_rotation))


def moved_scene(rng: random.Random, scene: Scene, object_id: int, tries: int = 20) -> Scene | None:
    """The scene with object `object_id` moved 0.3-0.8 m and turned 15-90° either way, clear of the others
    (None when `tries` draws all collide)."""
    obj = scene.objects[object_id - 1]
    others = [o for o in scene.objects if o is not obj]
    for _ in range(tries):
        angle, distance = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 0.8)
        turn = rng.choice((-1, 1)) * math.radians(rng.uniform(15, 90))
        moved = moved_object(obj, (distance * math.cos(angle), distance * math.sin(angle)), turn)
        if all(math.dist(moved.asset_centre[:2], o.asset_centre[:2]) > _footprint(moved) + _footprint(o) for o in others):
            return replace(scene, objects=tuple(moved if o is obj else o for o in scene.objects))
    return None


def random_camera(rng: random.Random, size: int, azimuth: float) -> A.Camera:
    """A camera 3.5-6 m from the scene centre, 12-40° above the ground, looking at the group."""
    distance, elevation = rng.uniform(3.5, 6.0), math.radians(rng.uniform(12, 40))
    position = (distance * math.cos(elevation) * math.cos(azimuth), distance * math.cos(elevation) * math.sin(azimuth),
                distance * math.sin(elevation))
    target = (rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(0.1, 0.5))
    focal = A.focal_from_fov(size, rng.uniform(40, 60))
    return A.Camera(A.intrinsics_from_focal(size, size, focal), A.world_to_camera_look_at(position, target), (size, size))


def _image(shot: Render, sky: tuple[float, float, float]) -> torch.Tensor:
    rgb = torch.where((shot.instance < 0)[..., None], torch.tensor(sky, dtype=torch.float32), shot.rgb)
    return rgb.permute(2, 0, 1).contiguous()


def _frame(scene: Scene, camera: A.Camera, shot: Render, clean_plate: torch.Tensor | None = None) -> Frame:
    count = len(scene.objects)
    ids = tuple(range(1, count + 1))
    boxes2d = A.boxes_from_segmentation(shot.instance.clamp_min(0), count, count).tolist()
    boxes3d = tuple(A.Asset(o.asset_centre, o.asset_size, o.asset_rotation, tuple(box))
                    for o, box in zip(scene.objects, boxes2d))
    masks = torch.stack([shot.instance == i for i in ids])
    return Frame(_image(shot, scene.sky), masks, ids, shot.depth, camera, boxes3d, clean_plate)


def _keypoints(figure: StickFigure, camera: A.Camera, shot: Render, instance: int) -> tuple[torch.Tensor, list[bool]]:
    """[17, 3] COCO keypoints in target pixels (x, y, 1; 0 where the joint is behind the camera or outside
    the image), and per joint whether something else hides it (the pixel shows another surface that is
    nearer than the joint, beyond the depth of a limb)."""
    uvd = A.project(A.to_camera(figure.joints, camera), camera)
    height, width = camera.image_hw
    x, y, z = uvd[:, 0] * width, uvd[:, 1] * height, uvd[:, 2]
    inside = (z > 0) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    occluded = []
    for i in range(17):
        if not bool(inside[i]):
            occluded.append(False)
            continue
        row, col = int(y[i]), int(x[i])
        occluded.append(int(shot.instance[row, col]) != instance and float(shot.depth[row, col]) < float(z[i]) - 0.1)
    points = torch.stack((x, y, inside.double()), dim=1).float()
    return torch.where(inside[:, None], points, torch.zeros_like(points)), occluded


@contextmanager
def _one_thread() -> Iterator[None]:
    """A pair is thousands of tiny tensor ops on 64² images; spread over threads they cost more than they
    gain (measured on a busy 2-core machine: 12 pairs at 48² took 1.0 s on one thread, 15 s on two).
    The trainer reads pairs between steps on its own thread, so the setting is restored before training."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class RenderedPairs(Sequence):
    """`count` random scenes at `size`² px; pair `index` is the same for the same (seed, index)."""

    def __init__(self, count: int, size: int = 64, seed: int = 0, source_mode: str = "scene", shadows: bool = True,
                 people: float = 0.0):
        if int(count) != count or count < 1:
            raise ValueError(f"rendered source: count must be a whole number >= 1, got {count!r}")
        if int(size) != size or size < MIN_SIZE:
            raise ValueError(f"rendered source: size must be a whole number of pixels >= {MIN_SIZE}, got {size!r}")
        if int(seed) != seed:
            raise ValueError(f"rendered source: seed must be a whole number, got {seed!r}")
        if source_mode not in SOURCE_MODES:
            raise ValueError(f"rendered source: source_mode must be one of {', '.join(SOURCE_MODES)}, got {source_mode!r}")
        if not isinstance(shadows, bool):
            raise ValueError(f"rendered source: shadows must be true or false, got {shadows!r}")
        if isinstance(people, bool) or not isinstance(people, (int, float)) or not 0 <= people <= 1:
            raise ValueError(f"rendered source: people must be a probability in 0..1, got {people!r}")
        if source_mode == "moved" and people:
            raise ValueError("rendered source: source_mode 'moved' moves boxes and balls only; set people to 0")
        self.count, self.size, self.seed, self.source_mode = int(count), int(size), int(seed), source_mode
        self.shadows, self.people = shadows, float(people)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> PairedFrames:
        if not -self.count <= index < self.count:
            raise IndexError(f"rendered source has {self.count} pairs, index {index} is out of range")
        index %= self.count
        with _one_thread():
            return self._render_pair(index)

    def _render_pair(self, index: int) -> PairedFrames:
        # A string seed: Python's random hashes it with SHA-512, so no two (seed, index) share a stream.
        rng = random.Random(f"diorama.render:{self.seed}:{index}")
        min_pixels = max(4, round(MIN_VISIBLE_PIXELS_FRACTION * self.size ** 2))
        while True:
            scene = random_scene(rng, self.people)
            primitives = [scene.ground] + [p for o in scene.objects for p in o.primitives]
            object_id = rng.randint(1, len(scene.objects))
            if scene.objects[0].figure is not None:
                object_id = 1  # a scene with a person is about the person
            source_scene = scene
            if self.source_mode == "moved":
                source_scene = moved_scene(rng, scene, object_id)
                if source_scene is None:
                    continue  # no free place to move the object to: another scene
            for _ in range(CAMERA_TRIES):
                azimuth = rng.uniform(0, 2 * math.pi)
                target_camera = random_camera(rng, self.size, azimuth)
                if self.source_mode == "moved":
                    source_camera = target_camera
                    source_primitives = [scene.ground] + [p for o in source_scene.objects for p in o.primitives]
                else:
                    source_camera = random_camera(rng, self.size, azimuth + rng.choice((-1, 1)) * math.radians(rng.uniform(30, 120)))
                    source_primitives = primitives if self.source_mode == "scene" else list(scene.objects[object_id - 1].primitives)
                target_shot = render_view(target_camera, primitives, scene.light, self.shadows)
                if int((target_shot.instance == object_id).sum()) < min_pixels:
                    continue
                source_shot = render_view(source_camera, source_primitives, scene.light, self.shadows)
                if int((source_shot.instance == object_id).sum()) >= min_pixels:
                    return self._pair(index, scene, primitives, object_id, (source_camera, source_shot),
                                      (target_camera, target_shot), source_scene)

    def _pair(self, index: int, scene: Scene, primitives: list[Primitive], object_id: int,
              source: tuple[A.Camera, Render], target: tuple[A.Camera, Render], source_scene: Scene) -> PairedFrames:
        """The pair from the two accepted shots: plus the clean plate and the object alone in the target view."""
        (source_camera, source_shot), (target_camera, target_shot) = source, target
        chosen = scene.objects[object_id - 1]
        without = [p for p in primitives if p.instance != object_id]
        plate = _image(render_view(target_camera, without, scene.light, self.shadows), scene.sky)
        target_frame = _frame(scene, target_camera, target_shot, clean_plate=plate)
        alone = int((render_view(target_camera, list(chosen.primitives), scene.light).instance == object_id).sum())
        visible = int(target_frame.mask_of(object_id).sum())
        extras = {"target_visible_fraction": visible / alone, "source_mode": self.source_mode,
                  "names": {k + 1: o.name for k, o in enumerate(scene.objects)}}
        caption, keypoints = None, None
        if chosen.figure is not None:
            caption = f"a person in {colour_word(chosen.primitives[0].colour)} {chosen.figure.pose}"
            keypoints, extras["keypoints_occluded"] = _keypoints(chosen.figure, target_camera, target_shot, object_id)
        return PairedFrames(_frame(source_scene, source_camera, source_shot), target_frame, object_id,
                            origin=f"render seed={self.seed} index={index}", caption=caption, keypoints=keypoints,
                            extras=extras)
