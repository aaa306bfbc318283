"""Neural Assets scenes written as JSON text, checked field by field.

```
{"camera": {"image_size": [H, W],
            "focal_px": f | [fx, fy]  or  "fov_deg": horizontal degrees  or  "intrinsics": 3x3 K,
            "principal_point": [cx, cy]            (optional, default the image centre),
            "world_to_camera": 4x4 OpenCV          or  "position": [x, y, z] with
            "look_at": [x, y, z] (+ "up", default [0, 0, 1])  or  "yaw_pitch_roll": degrees},
 "target_camera": {... the same ...}              (optional, default = camera),
 "objects": [{"centre": [x, y, z], "size": [sx, sy, sz],
              "yaw_pitch_roll": degrees  or  "rotation": 3x3 object → world,
              "source_box": [y0, x0, y1, x1]}]}   (fractions of the source image, ends exclusive;
                                                   optional, all zero = not visible)
```
"source_camera" is accepted for "camera". Angles are degrees; yaw/pitch/roll follow
`rotation_from_ypr` for objects and `world_to_camera_from_ypr` for cameras.
"""
from __future__ import annotations

import json
import math

from .assets import (Asset, Assets, Camera, focal_from_fov, intrinsics_from_focal, rotation_from_ypr,
                     world_to_camera_from_ypr, world_to_camera_look_at)

CAMERA_KEYS = {"image_size", "focal_px", "fov_deg", "intrinsics", "principal_point", "world_to_camera", "position",
               "look_at", "up", "yaw_pitch_roll"}
OBJECT_KEYS = {"centre", "center", "size", "yaw_pitch_roll", "rotation", "source_box"}
SCENE_KEYS = {"camera", "source_camera", "target_camera", "objects"}


def _numbers(value, count: int, path: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != count:
        raise ValueError(f"{path}: expected a list of {count} numbers, got {json.dumps(value)}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{path}[{i}]: expected a number, got {json.dumps(v)}")
        if not math.isfinite(v):
            raise ValueError(f"{path}[{i}] is {v}; expected a finite number")
        out.append(float(v))
    return tuple(out)


def _number(value, path: str) -> float:
    return _numbers([value], 1, path)[0]


def _rows(value, rows: int, columns: int, path: str) -> tuple[tuple[float, ...], ...]:
    if not isinstance(value, (list, tuple)) or len(value) != rows:
        raise ValueError(f"{path}: expected a {rows}x{columns} matrix (a list of {rows} rows), got {json.dumps(value)}")
    return tuple(_numbers(row, columns, f"{path}[{i}]") for i, row in enumerate(value))


def _check_keys(entry, allowed: set[str], path: str) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: expected a JSON object {{...}}, got {json.dumps(entry)}")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")


def _one_of(entry: dict, keys: tuple[str, ...], path: str, required: bool = True) -> str | None:
    present = [k for k in keys if k in entry]
    if len(present) > 1:
        raise ValueError(f"{path}: give only one of {list(keys)}, got {present}")
    if not present and required:
        raise ValueError(f"{path}: missing; expected one of {list(keys)}")
    return present[0] if present else None


def parse_camera(entry, path: str) -> Camera:
    _check_keys(entry, CAMERA_KEYS, path)
    if "image_size" not in entry:
        raise ValueError(f"{path}.image_size: missing; expected [height, width] in pixels")
    height, width = _numbers(entry["image_size"], 2, f"{path}.image_size")
    if height < 1 or width < 1 or height != int(height) or width != int(width):
        raise ValueError(f"{path}.image_size: expected whole pixel counts >= 1, got {[height, width]}")
    height, width = int(height), int(width)
    lens = _one_of(entry, ("intrinsics", "focal_px", "fov_deg"), path)
    if lens == "intrinsics":
        if "principal_point" in entry:
            raise ValueError(f"{path}: principal_point is part of intrinsics; give one or the other")
        k = _rows(entry["intrinsics"], 3, 3, f"{path}.intrinsics")
        if k[0][0] <= 0 or k[1][1] <= 0:
            raise ValueError(f"{path}.intrinsics: focal lengths must be > 0 px, got fx={k[0][0]}, fy={k[1][1]}")
    else:
        cx, cy = _numbers(entry["principal_point"], 2, f"{path}.principal_point") if "principal_point" in entry else (None, None)
        if lens == "fov_deg":
            fov = _number(entry["fov_deg"], f"{path}.fov_deg")
            if not 0 < fov < 180:
                raise ValueError(f"{path}.fov_deg is {fov}; expected a horizontal field of view between 0 and 180 degrees")
            fx = fy = focal_from_fov(width, fov)
        else:
            raw = entry["focal_px"]
            fx, fy = _numbers(raw, 2, f"{path}.focal_px") if isinstance(raw, list) else (_number(raw, f"{path}.focal_px"),) * 2
            if fx <= 0 or fy <= 0:
                raise ValueError(f"{path}.focal_px is {raw}; focal lengths must be > 0 px")
        k = intrinsics_from_focal(height, width, fx, fy, cx, cy)
    pose = _one_of(entry, ("world_to_camera", "position"), path, required=False)
    if pose == "world_to_camera":
        for key in ("look_at", "up", "yaw_pitch_roll"):
            if key in entry:
                raise ValueError(f"{path}: {key} goes with position, not with world_to_camera")
        world_to_camera = _rows(entry["world_to_camera"], 4, 4, f"{path}.world_to_camera")
    else:
        position = _numbers(entry["position"], 3, f"{path}.position") if pose else (0.0, 0.0, 0.0)
        aim = _one_of(entry, ("look_at", "yaw_pitch_roll"), path, required=False)
        if aim == "look_at":
            up = _numbers(entry["up"], 3, f"{path}.up") if "up" in entry else (0.0, 0.0, 1.0)
            try:
                world_to_camera = world_to_camera_look_at(position, _numbers(entry["look_at"], 3, f"{path}.look_at"), up)
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
        else:
            if "up" in entry:
                raise ValueError(f"{path}: up goes with look_at")
            ypr = _numbers(entry["yaw_pitch_roll"], 3, f"{path}.yaw_pitch_roll") if aim else (0.0, 0.0, 0.0)
            world_to_camera = world_to_camera_from_ypr(position, *(math.radians(a) for a in ypr))
    try:
        return Camera(k, world_to_camera, (height, width))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def parse_object(entry, path: str) -> Asset:
    _check_keys(entry, OBJECT_KEYS, path)
    centre_key = _one_of(entry, ("centre", "center"), path)
    centre = _numbers(entry[centre_key], 3, f"{path}.{centre_key}")
    if "size" not in entry:
        raise ValueError(f"{path}.size: missing; expected [sx, sy, sz] full extents")
    size = _numbers(entry["size"], 3, f"{path}.size")
    if min(size) <= 0:
        raise ValueError(f"{path}.size is {list(size)}; every extent must be > 0")
    turn = _one_of(entry, ("yaw_pitch_roll", "rotation"), path, required=False)
    if turn == "rotation":
        rotation = _rows(entry["rotation"], 3, 3, f"{path}.rotation")
    else:
        ypr = _numbers(entry["yaw_pitch_roll"], 3, f"{path}.yaw_pitch_roll") if turn else (0.0, 0.0, 0.0)
        rotation = tuple(tuple(r) for r in rotation_from_ypr(*(math.radians(a) for a in ypr)).tolist())
    box = _numbers(entry["source_box"], 4, f"{path}.source_box") if "source_box" in entry else (0.0,) * 4
    try:
        return Asset(centre, size, rotation, box)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def parse_assets(text: str) -> Assets:
    try:
        scene = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"assets JSON is not valid JSON: {error}") from None
    _check_keys(scene, SCENE_KEYS, "assets JSON")
    source_key = _one_of(scene, ("camera", "source_camera"), "assets JSON")
    source = parse_camera(scene[source_key], source_key)
    target = parse_camera(scene["target_camera"], "target_camera") if "target_camera" in scene else source
    objects = scene.get("objects", [])
    if not isinstance(objects, list):
        raise ValueError(f"objects: expected a list of objects, got {json.dumps(objects)}")
    return Assets(tuple(parse_object(o, f"objects[{i}]") for i, o in enumerate(objects)), source, target)


def parse_pixel_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """A JSON list of pixel boxes [x0, y0, x1, y1] (ends exclusive), as detectors output them."""
    try:
        boxes = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"boxes is not valid JSON: {error}") from None
    if not isinstance(boxes, list) or not boxes:
        raise ValueError(f"boxes: expected a non-empty list of [x0, y0, x1, y1] pixel boxes, got {text.strip()[:200]}")
    out = []
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = _numbers(box, 4, f"boxes[{i}]")
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"boxes[{i}] = {box} is empty; expected x1 > x0 and y1 > y0 ([x0, y0, x1, y1] in pixels)")
        out.append((x0, y0, x1, y1))
    return out
