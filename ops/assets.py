"""Neural Assets' scene description: per object a 3D box (centre, size, rotation) plus the 2D box of
its appearance in a source image, and a source and a target camera.

The API speaks OpenCV (camera x right, y down, z forward; K in pixels; world → camera 4x4). The
reference code (Kubric/MOVi) works in Blender camera axes (x right, y up, looking along −z); every
function that must reproduce a reference number converts with D = diag(1, −1, −1) internally:
world → Blender camera = D · (world → OpenCV camera).

Projection reproduces the reference's arithmetic, not an idealised pinhole: (a, b, c) = K·p_cam,
u = a / (W·(Z + 1e-6)), v = b / (H·(Z + 1e-6)), d = Z (z-depth). Nothing is clipped or culled: a
corner behind the camera (Z < 0) gets its (u, v) reflected through the principal point, a corner
near the camera plane gets huge (finite) coordinates, corners outside the image fall outside [0, 1].
All maths runs in float64; the model-facing rows are float32 as the reference feeds them.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import torch

EPSILON_DEPTH = 1e-6  # the reference adds this to the depth before dividing (utils_3d.batch_camera2image)
ORTHONORMAL_TOLERANCE = 1e-4
# Kubric's bbox_3d order: itertools.product over (−, +) for the object's local x, y, z.
CORNER_SIGNS = tuple(itertools.product((-1.0, 1.0), repeat=3))
POSE_CORNERS = (0, 1, 2, 4)  # the corners whose (u, v, d) make a 12-number pose row
GLOBAL_BOX = (0.0, 0.0, 1.0, 1.0)
BLENDER_FROM_OPENCV = (1.0, -1.0, -1.0)


def _tensor(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64)


def _matrix(rows, shape: tuple[int, int], name: str) -> tuple[tuple[float, ...], ...]:
    """A nested sequence as a tuple-of-tuples matrix of finite floats with the given shape."""
    try:
        values = tuple(tuple(float(v) for v in row) for row in rows)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a {shape[0]}x{shape[1]} matrix of numbers ({error})") from None
    if len(values) != shape[0] or any(len(row) != shape[1] for row in values):
        raise ValueError(f"{name} must be a {shape[0]}x{shape[1]} matrix, got {len(values)} rows of "
                         f"{sorted({len(row) for row in values})} numbers")
    if not all(math.isfinite(v) for row in values for v in row):
        raise ValueError(f"{name} contains NaN or infinity: {values}")
    return values


def _vector(values, length: int, name: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be {length} numbers ({error})") from None
    if len(out) != length:
        raise ValueError(f"{name} must be {length} numbers, got {len(out)}: {out}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} contains NaN or infinity: {out}")
    return out


def _require_rotation(rotation: tuple[tuple[float, ...], ...], name: str) -> None:
    r = _tensor(rotation)
    error = float((r @ r.T - torch.eye(3, dtype=torch.float64)).abs().max())
    if error > ORTHONORMAL_TOLERANCE or float(torch.linalg.det(r)) <= 0:
        raise ValueError(f"{name} must be a rotation (orthonormal, determinant +1); R·Rᵀ differs from the "
                         f"identity by {error:.3g} and det is {float(torch.linalg.det(r)):.4g}")


@dataclass(frozen=True)
class Camera:  # OpenCV conventions in the API
    intrinsics: tuple[tuple[float, float, float], ...]  # 3x3 K in pixels [[fx,0,cx],[0,fy,cy],[0,0,1]]
    world_to_camera: tuple[tuple[float, ...], ...]  # 4x4, OpenCV camera (x right, y down, z forward)
    image_hw: tuple[int, int]  # (H, W) the intrinsics refer to

    def __post_init__(self):
        k = _matrix(self.intrinsics, (3, 3), "camera intrinsics")
        pose = _matrix(self.world_to_camera, (4, 4), "camera world_to_camera")
        try:
            hw = tuple(int(v) for v in self.image_hw)
        except (TypeError, ValueError):
            raise ValueError(f"camera image_hw must be (height, width) in pixels, got {self.image_hw!r}") from None
        if len(hw) != 2 or min(hw) < 1:
            raise ValueError(f"camera image_hw must be (height, width) with both >= 1 px, got {self.image_hw!r}")
        if k[0][0] <= 0 or k[1][1] <= 0:
            raise ValueError(f"camera focal lengths must be > 0 px, got fx={k[0][0]:.6g}, fy={k[1][1]:.6g}")
        if k[1][0] != 0 or k[2] != (0.0, 0.0, 1.0):
            raise ValueError(f"camera intrinsics must have the form [[fx,s,cx],[0,fy,cy],[0,0,1]], got {k}")
        if pose[3] != (0.0, 0.0, 0.0, 1.0):
            raise ValueError(f"camera world_to_camera's last row must be (0, 0, 0, 1), got {pose[3]}")
        _require_rotation(tuple(row[:3] for row in pose[:3]), "camera world_to_camera's 3x3 part")
        object.__setattr__(self, "intrinsics", k)
        object.__setattr__(self, "world_to_camera", pose)
        object.__setattr__(self, "image_hw", hw)


@dataclass(frozen=True)
class Asset:
    centre: tuple[float, float, float]  # world
    size: tuple[float, float, float]  # full extents along the object's local x, y, z
    rotation: tuple[tuple[float, float, float], ...]  # 3x3 object->world
    source_box: tuple[float, float, float, float]  # (y0, x0, y1, x1) fractions of its source image,
    # y1/x1 exclusive; all zero = not visible
    source: int = 0  # 0 = the source image given to NeuralAssetPose, k > 0 = Assets.extra_sources[k-1]

    def __post_init__(self):
        centre = _vector(self.centre, 3, "centre")
        size = _vector(self.size, 3, "size")
        if min(size) <= 0:
            raise ValueError(f"size must be > 0 along every axis (full extents in world units), got {size}")
        rotation = _matrix(self.rotation, (3, 3), "rotation")
        _require_rotation(rotation, "rotation")
        box = _vector(self.source_box, 4, "source_box")
        if any(box):
            y0, x0, y1, x1 = box
            if min(box) < 0 or max(box) > 1:
                raise ValueError(f"source_box (y0, x0, y1, x1) = {box} lies outside the image; expected fractions in 0..1")
            if y1 <= y0 or x1 <= x0:
                raise ValueError(f"source_box (y0, x0, y1, x1) = {box} is empty; expected y1 > y0 and x1 > x0 "
                                 "(or all zero for an object not visible in its source image)")
        if int(self.source) != self.source or self.source < 0:
            raise ValueError(f"source must be an image index >= 0, got {self.source!r}")
        object.__setattr__(self, "centre", centre)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "rotation", rotation)
        object.__setattr__(self, "source_box", box)
        object.__setattr__(self, "source", int(self.source))


@dataclass(frozen=True)
class Assets:
    objects: tuple[Asset, ...]
    source_camera: Camera
    target_camera: Camera
    background_source: int = 0  # same indexing as Asset.source
    extra_sources: tuple[torch.Tensor, ...] = ()  # images [H,W,3] in [0,1] of transferred objects

    def __post_init__(self):
        objects = tuple(self.objects)
        extra = tuple(self.extra_sources)
        for i, image in enumerate(extra):
            if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[-1] != 3:
                shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
                raise ValueError(f"extra_sources[{i}] must be an image [H, W, 3], got {shape}")
        for i, asset in enumerate(objects):
            if asset.source > len(extra):
                raise ValueError(f"object {i} takes its appearance from source {asset.source} but the scene has "
                                 f"{len(extra)} extra source image(s) (valid: 0..{len(extra)})")
        if not 0 <= self.background_source <= len(extra):
            raise ValueError(f"background_source is {self.background_source} but the scene has {len(extra)} extra "
                             f"source image(s) (valid: 0..{len(extra)})")
        object.__setattr__(self, "objects", objects)
        object.__setattr__(self, "extra_sources", extra)


# ---------------------------------------------------------------------------------------------
# Rotations and cameras


def _rx(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return _tensor([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return _tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return _tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rotation_from_ypr(yaw: float, pitch: float, roll: float) -> torch.Tensor:
    """R = Rz(yaw)·Ry(pitch)·Rx(roll), radians, about the world axes (z up) — the reference's
    object rotation convention."""
    return _rz(yaw) @ _ry(pitch) @ _rx(roll)


def ypr_from_rotation(rotation) -> tuple[float, float, float]:
    """The inverse of rotation_from_ypr (pitch in [−π/2, π/2]; at ±π/2 the roll is set to 0)."""
    r = _tensor(rotation)
    pitch = math.asin(max(-1.0, min(1.0, -float(r[2, 0]))))
    if abs(float(r[2, 0])) > 1 - 1e-12:
        # Gimbal lock: yaw and roll turn about the same axis; put it all into yaw.
        return math.atan2(-float(r[0, 1]), float(r[1, 1])), pitch, 0.0
    return math.atan2(float(r[1, 0]), float(r[0, 0])), pitch, math.atan2(float(r[2, 1]), float(r[2, 2]))


def _as_tuple(matrix: torch.Tensor) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in matrix)


def intrinsics_from_focal(height: int, width: int, fx: float, fy: float | None = None,
                          cx: float | None = None, cy: float | None = None) -> tuple[tuple[float, float, float], ...]:
    """K in pixels; the principal point defaults to the image centre (pixel (i, j) covers [j, j+1))."""
    fy = fx if fy is None else fy
    cx = width / 2 if cx is None else cx
    cy = height / 2 if cy is None else cy
    return ((float(fx), 0.0, float(cx)), (0.0, float(fy), float(cy)), (0.0, 0.0, 1.0))


def focal_from_fov(width: int, horizontal_fov_deg: float) -> float:
    if not 0 < horizontal_fov_deg < 180:
        raise ValueError(f"field of view must be between 0 and 180 degrees (exclusive), got {horizontal_fov_deg}")
    return width / (2 * math.tan(math.radians(horizontal_fov_deg) / 2))


def _pose_matrix(rotation_c2w: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """world → camera 4x4 from the camera → world rotation and the camera centre."""
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = rotation_c2w.T
    pose[:3, 3] = -rotation_c2w.T @ position
    return pose


def world_to_camera_from_ypr(position, yaw: float, pitch: float, roll: float) -> tuple[tuple[float, ...], ...]:
    """OpenCV world → camera for a camera at `position` (world z up) turned by yaw/pitch/roll (radians).

    At (0, 0, 0) the camera looks along world +y, level, with world +z up in the image. Yaw turns
    it left about world z, pitch tilts it up, roll turns it about its viewing axis (positive =
    counter-clockwise seen from behind the camera, so the picture turns clockwise).
    """
    # Blender camera axes (x right, y up, looking along −z) → world; Rx(90°) makes it look along +y.
    c2w_blender = _rz(yaw) @ _rx(math.pi / 2 + pitch) @ _rz(roll)
    return _as_tuple(_pose_matrix(c2w_blender * _tensor(BLENDER_FROM_OPENCV), _tensor(position)))


def world_to_camera_look_at(position, target, up=(0.0, 0.0, 1.0)) -> tuple[tuple[float, ...], ...]:
    """OpenCV world → camera for a camera at `position` looking at `target`, `up` up in the image."""
    position, target, up = _tensor(position), _tensor(target), _tensor(up)
    forward = target - position
    if float(forward.norm()) < 1e-9:
        raise ValueError(f"camera look_at {target.tolist()} is the camera position itself; expected a point to look at")
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    if float(right.norm()) < 1e-9:
        raise ValueError(f"camera looks along its up vector {up.tolist()}; choose another up or look_at")
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    return _as_tuple(_pose_matrix(torch.stack((right, down, forward), dim=1), position))


def camera_position(camera: Camera) -> torch.Tensor:
    pose = _tensor(camera.world_to_camera)
    return -pose[:3, :3].T @ pose[:3, 3]


def world_to_blender_camera(camera: Camera) -> torch.Tensor:
    """4x4 world → Blender camera = D·(world → OpenCV camera)."""
    flip = torch.diag(_tensor(BLENDER_FROM_OPENCV + (1.0,)))
    return flip @ _tensor(camera.world_to_camera)


def blender_camera_to_world(camera: Camera) -> torch.Tensor:
    """4x4 Blender camera → world (the reference's cam2world, Kubric's camera pose)."""
    return torch.linalg.inv(world_to_blender_camera(camera))


# ---------------------------------------------------------------------------------------------
# Boxes, projection, rows


def crop_camera(camera: Camera, box: tuple[float, float, float, float]) -> Camera:
    """The same camera seeing only `box` = (y0, x0, y1, x1), fractions of its image (the box may reach
    past the image): the principal point moves with the crop's corner and the image becomes the crop,
    so projected (u, v) are fractions of the crop, as a model sampling only that window needs them."""
    height, width = camera.image_hw
    y0, x0, y1, x1 = box
    if not (y1 > y0 and x1 > x0):
        raise ValueError(f"crop box {box} has no area; expected y1 > y0 and x1 > x0")
    k = [list(row) for row in camera.intrinsics]
    k[0][2] -= x0 * width
    k[1][2] -= y0 * height
    crop_hw = (max(1, round((y1 - y0) * height)), max(1, round((x1 - x0) * width)))
    return Camera(tuple(tuple(row) for row in k), camera.world_to_camera, crop_hw)


def resize_camera(camera: Camera, height: int, width: int) -> Camera:
    """The same camera taking a (height, width) image of the same view, as if its image were resized: K's x row
    scales by width / W, its y row by height / H, so every projected fraction (u, v) stays the same."""
    old_height, old_width = camera.image_hw
    k = [list(row) for row in camera.intrinsics]
    k[0] = [v * width / old_width for v in k[0]]
    k[1] = [v * height / old_height for v in k[1]]
    return Camera(tuple(tuple(row) for row in k), camera.world_to_camera, (height, width))


def box_corners(asset: Asset) -> torch.Tensor:
    """[8, 3] world corners p_i = c + R·(sign_i ⊙ size/2), Kubric's order."""
    half = _tensor(CORNER_SIGNS) * _tensor(asset.size) / 2
    return _tensor(asset.centre) + half @ _tensor(asset.rotation).T


def to_camera(points_world: torch.Tensor, camera: Camera) -> torch.Tensor:
    """[..., 3] world points in OpenCV camera coordinates."""
    pose = _tensor(camera.world_to_camera)
    return points_world @ pose[:3, :3].T + pose[:3, 3]


def to_blender_camera(points_world: torch.Tensor, camera: Camera) -> torch.Tensor:
    """[..., 3] world points in Blender camera coordinates (the reference's MOVi3DBboxWorldToCamera)."""
    return to_camera(points_world, camera) * _tensor(BLENDER_FROM_OPENCV)


def project(points_camera: torch.Tensor, camera: Camera) -> torch.Tensor:
    """[..., 3] OpenCV camera points → (u, v, d): u, v fractions of the image (right, down), d = Z.

    The reference's arithmetic: (a, b, c) = K·p, (u, v) = (a/W, b/H) / (Z + 1e-6). For Z < 0 the point
    lands reflected through the principal point; near Z = 0 it is huge; nothing is clipped.
    """
    k = _tensor(camera.intrinsics)
    height, width = camera.image_hw
    ab = points_camera @ k[:2].T
    z = points_camera[..., 2]
    denominator = z + EPSILON_DEPTH
    return torch.stack((ab[..., 0] / (width * denominator), ab[..., 1] / (height * denominator), z), dim=-1)


def object_corner_rows(objects: tuple[Asset, ...], camera: Camera) -> torch.Tensor:
    """[n, 12] float64 (u, v, d) of corners p0, p1, p2, p4 of every object seen by `camera`."""
    if not objects:
        return torch.zeros(0, 12, dtype=torch.float64)
    corners = torch.stack([box_corners(a) for a in objects])[:, POSE_CORNERS]
    return project(to_camera(corners, camera), camera).reshape(len(objects), 12)


def relative_camera_row(source: Camera, target: Camera) -> torch.Tensor:
    """[12] inv(cam2world_target) @ cam2world_source in Blender axes: R row-major (9), then t (3)."""
    relative = world_to_blender_camera(target) @ blender_camera_to_world(source)
    return torch.cat((relative[:3, :3].reshape(9), relative[:3, 3]))


def _require_slots(count: int, slots: int) -> None:
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    if count > slots:
        raise ValueError(f"the scene has {count} objects but the model has only {slots} object slots; "
                         f"remove {count - slots} object(s) or use a model with more slots")


def padded_object_rows(objects: tuple[Asset, ...], camera: Camera, slots: int) -> torch.Tensor:
    """[slots, 12] float32: object rows (reference's MOVi3DBboxCornerToImage), zero rows for padding."""
    _require_slots(len(objects), slots)
    rows = torch.zeros(slots, 12, dtype=torch.float64)
    rows[:len(objects)] = object_corner_rows(objects, camera)
    return rows.float()


def pose_rows(assets: Assets, slots: int) -> torch.Tensor:
    """[slots+1, 12] float32 target poses: objects in the TARGET camera, zero padding, last row the
    source → target camera transform in Blender axes (the model input tgt_object_poses)."""
    rows = padded_object_rows(assets.objects, assets.target_camera, slots)
    camera_row = relative_camera_row(assets.source_camera, assets.target_camera).float()
    return torch.cat((rows, camera_row[None]))


def source_boxes(assets: Assets, slots: int) -> torch.Tensor:
    """[slots+1, 4] float32: each object's source_box (y0, x0, y1, x1), zero padding, global box last."""
    _require_slots(len(assets.objects), slots)
    boxes = torch.zeros(slots + 1, 4, dtype=torch.float64)
    for i, asset in enumerate(assets.objects):
        boxes[i] = _tensor(asset.source_box)
    boxes[slots] = _tensor(GLOBAL_BOX)
    return boxes.float()


def box_padding(boxes: torch.Tensor) -> torch.Tensor:
    """[..., K] bool: True where a box is real (not all zero), as the reference's padding flags."""
    return (boxes != 0).any(dim=-1)


def null_condition(slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's CFG-null inputs (RandomDropBoxes): all source boxes zero, global box included,
    and all pose rows zero, camera row included. Returns ([slots+1, 4], [slots+1, 12]) float32."""
    return torch.zeros(slots + 1, 4), torch.zeros(slots + 1, 12)


# ---------------------------------------------------------------------------------------------
# Quaternions and the 10-D box vector


def quaternion_from_rotation(rotation) -> torch.Tensor:
    """(w, x, y, z) Hamilton unit quaternion of a 3x3 rotation, with w >= 0 (Kubric's sign for
    object and camera quaternions)."""
    r = _tensor(rotation)
    # Shepperd's method: take the largest of the four squared components for precision.
    diagonal = torch.stack((r.trace(), r[0, 0], r[1, 1], r[2, 2]))
    i = int(diagonal.argmax())
    if i == 0:
        w = math.sqrt(max(0.0, 1 + float(r.trace()))) / 2
        q = [w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)]
    elif i == 1:
        x = math.sqrt(max(0.0, 1 + float(r[0, 0] - r[1, 1] - r[2, 2]))) / 2
        q = [(r[2, 1] - r[1, 2]) / (4 * x), x, (r[0, 1] + r[1, 0]) / (4 * x), (r[0, 2] + r[2, 0]) / (4 * x)]
    elif i == 2:
        y = math.sqrt(max(0.0, 1 + float(r[1, 1] - r[0, 0] - r[2, 2]))) / 2
        q = [(r[0, 2] - r[2, 0]) / (4 * y), (r[0, 1] + r[1, 0]) / (4 * y), y, (r[1, 2] + r[2, 1]) / (4 * y)]
    else:
        z = math.sqrt(max(0.0, 1 + float(r[2, 2] - r[0, 0] - r[1, 1]))) / 2
        q = [(r[1, 0] - r[0, 1]) / (4 * z), (r[0, 2] + r[2, 0]) / (4 * z), (r[1, 2] + r[2, 1]) / (4 * z), z]
    q = _tensor([float(v) for v in q])
    q = q / q.norm()
    return -q if float(q[0]) < 0 else q


def rotation_from_quaternion(quaternion) -> torch.Tensor:
    """3x3 rotation of a (w, x, y, z) Hamilton quaternion (normalised first), the inverse of
    quaternion_from_rotation; Kubric's camera and object quaternions."""
    q = _tensor(quaternion)
    norm = float(q.norm())
    if not math.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"quaternion (w, x, y, z) must be finite and non-zero, got {q.tolist()}")
    w, x, y, z = (q / norm).tolist()
    return _tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                    [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                    [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def box_from_corners(corners) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(centre [3], size [3], rotation [3, 3]) of a box from its 8 world corners in Kubric's bbox_3d order,
    the inverse of box_corners: centre = mean of the corners, local axes along p4 − p0, p2 − p0, p1 − p0
    (as the reference's MOVi3DBboxToVec), the rotation made exactly orthonormal (nearest rotation, SVD)."""
    p = _tensor(corners)
    if p.shape != (8, 3) or not bool(torch.isfinite(p).all()):
        raise ValueError(f"box corners must be 8 finite (x, y, z) points, got shape {tuple(p.shape)}")
    axes = torch.stack([p[j] - p[0] for j in (4, 2, 1)], dim=1)
    size = axes.norm(dim=0)
    if float(size.min()) <= 0:
        raise ValueError(f"box corners span no volume (extents {size.tolist()}); expected a box with size > 0")
    u, _, vh = torch.linalg.svd(axes / size)
    rotation = u @ vh
    if float(torch.linalg.det(rotation)) <= 0:
        raise ValueError("box corners are mirrored (p4 − p0, p2 − p0, p1 − p0 form a left-handed frame); "
                         "expected Kubric's bbox_3d corner order")
    return p.mean(0), size, rotation


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a ⊗ b of (w, x, y, z) quaternions."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack((aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw), dim=-1)


def quaternion_in_blender_camera(asset: Asset, camera: Camera) -> torch.Tensor:
    """q_cam⁻¹ ⊗ q_obj (object → Blender camera), from the w >= 0 quaternions of the camera's
    rotation (Blender camera → world) and of the object's rotation, as the reference multiplies them;
    the result's sign is whatever that product gives (it is not re-normalised to w >= 0)."""
    q_camera = quaternion_from_rotation(blender_camera_to_world(camera)[:3, :3])
    q_camera_inverse = q_camera * _tensor((1.0, -1.0, -1.0, -1.0))
    return quaternion_multiply(q_camera_inverse, quaternion_from_rotation(asset.rotation))


def box10_rows(objects: tuple[Asset, ...], camera: Camera, slots: int) -> torch.Tensor:
    """[slots, 10] float32 (the reference's MOVi3DBboxToVec): Blender-camera centre (mean of the
    corners), size ((p4−p0), (p2−p0), (p1−p0) lengths), quaternion object → Blender camera; zero padding."""
    _require_slots(len(objects), slots)
    rows = torch.zeros(slots, 10, dtype=torch.float64)
    for i, asset in enumerate(objects):
        corners = to_blender_camera(box_corners(asset), camera)
        size = torch.stack([(corners[j] - corners[0]).norm() for j in (4, 2, 1)])
        rows[i] = torch.cat((corners.mean(0), size, quaternion_in_blender_camera(asset, camera)))
    return rows.float()


def boxes_from_segmentation(segmentation: torch.Tensor, count: int, slots: int) -> torch.Tensor:
    """[slots, 4] float32 (y0, x0, y1, x1) / (H, W) of the visible pixels of objects 1..count in an
    instance map [H, W] (0 = background, i+1 = object i); y1/x1 exclusive; zero when not visible."""
    _require_slots(count, slots)
    height, width = segmentation.shape
    boxes = torch.zeros(slots, 4, dtype=torch.float64)
    for i in range(count):
        ys, xs = torch.nonzero(segmentation == i + 1, as_tuple=True)
        if ys.numel():
            boxes[i] = _tensor([ys.min() / height, xs.min() / width, (ys.max() + 1) / height, (xs.max() + 1) / width])
    return boxes.float()


# ---------------------------------------------------------------------------------------------
# Edits: pure functions Assets → Assets


def require_object_index(assets: Assets, index: int) -> None:
    count = len(assets.objects)
    if not 0 <= index < count:
        valid = f"0..{count - 1}" if count else "none: the scene has no objects"
        raise ValueError(f"object index {index} is out of range; the scene has {count} object(s) (valid: {valid})")


def _replace_object(assets: Assets, index: int, asset: Asset) -> Assets:
    objects = list(assets.objects)
    objects[index] = asset
    return replace(assets, objects=tuple(objects))


def add_object(assets: Assets, asset: Asset) -> Assets:
    return replace(assets, objects=assets.objects + (asset,))


def move_object(assets: Assets, index: int, offset, axes: str = "world") -> Assets:
    """Translate object `index` by `offset`, in world axes or in the TARGET camera's OpenCV axes
    (x right, y down, z forward: e.g. (0, 0, 1) moves it one unit away from the viewer)."""
    require_object_index(assets, index)
    delta = _tensor(_vector(offset, 3, "offset"))
    if axes == "camera":
        delta = _tensor(assets.target_camera.world_to_camera)[:3, :3].T @ delta
    elif axes != "world":
        raise ValueError(f"axes {axes!r} is unknown; expected 'world' or 'camera'")
    asset = assets.objects[index]
    return _replace_object(assets, index, replace(asset, centre=tuple((_tensor(asset.centre) + delta).tolist())))


def rotate_object(assets: Assets, index: int, yaw: float, pitch: float, roll: float) -> Assets:
    """Turn object `index` about its own centre by Rz(yaw)·Ry(pitch)·Rx(roll) (radians, world axes)."""
    require_object_index(assets, index)
    asset = assets.objects[index]
    rotation = rotation_from_ypr(yaw, pitch, roll) @ _tensor(asset.rotation)
    return _replace_object(assets, index, replace(asset, rotation=_as_tuple(rotation)))


def scale_object(assets: Assets, index: int, factor) -> Assets:
    """Scale object `index`'s size about its centre by one factor or one per local axis (> 0)."""
    require_object_index(assets, index)
    factors = _vector((factor,) * 3 if isinstance(factor, (int, float)) else factor, 3, "scale factor")
    if min(factors) <= 0:
        raise ValueError(f"scale factors must be > 0, got {factors}")
    asset = assets.objects[index]
    return _replace_object(assets, index, replace(asset, size=tuple(s * f for s, f in zip(asset.size, factors))))


def remove_object(assets: Assets, index: int) -> Assets:
    require_object_index(assets, index)
    return replace(assets, objects=assets.objects[:index] + assets.objects[index + 1:])


TRANSFER_PLACEMENTS = ("as seen by the camera", "same world coordinates")


def transfer_object(assets: Assets, other: Assets, index: int, other_source_image: torch.Tensor,
                    placement: str = TRANSFER_PLACEMENTS[0]) -> Assets:
    """Append object `index` of `other` to `assets`, with its appearance.

    The object keeps ITS source box; the image that box refers to (`other_source_image` for source 0,
    else the other scene's extra source) is appended to extra_sources and the object points at it.
    Its 3D box: two scenes' world frames have nothing in common in general, so by default the box
    keeps its pose relative to the camera — it stands where, and as large as, it stood in front of the
    other scene's source camera, now in front of this scene's target camera (move it from there).
    'same world coordinates' copies the world box unchanged, for scenes that share a world (MOVi).
    """
    if not 0 <= index < len(other.objects):
        count = len(other.objects)
        raise ValueError(f"object index {index} is out of range for the scene to transfer from; it has "
                         f"{count} object(s) (valid: {f'0..{count - 1}' if count else 'none'})")
    asset = other.objects[index]
    image = other_source_image if asset.source == 0 else other.extra_sources[asset.source - 1]
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"the transferred object's source image must be [H, W, 3], got {tuple(image.shape)}")
    if placement == TRANSFER_PLACEMENTS[0]:
        # world_A ← camera_A(target) ← camera_B(source) ← world_B
        a_from_b = torch.linalg.inv(_tensor(assets.target_camera.world_to_camera)) @ _tensor(other.source_camera.world_to_camera)
        centre = a_from_b[:3, :3] @ _tensor(asset.centre) + a_from_b[:3, 3]
        rotation = a_from_b[:3, :3] @ _tensor(asset.rotation)
        asset = replace(asset, centre=tuple(centre.tolist()), rotation=_as_tuple(rotation))
    elif placement != TRANSFER_PLACEMENTS[1]:
        raise ValueError(f"placement {placement!r} is unknown; expected one of {TRANSFER_PLACEMENTS}")
    extra = assets.extra_sources + (image,)
    return replace(assets, objects=assets.objects + (replace(asset, source=len(extra)),), extra_sources=extra)


def swap_background_source(assets: Assets, image: torch.Tensor) -> Assets:
    """The background token's appearance comes from `image` [H, W, 3] instead of the source image."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"the background source image must be [H, W, 3], got {tuple(image.shape)}")
    extra = assets.extra_sources + (image,)
    return replace(assets, extra_sources=extra, background_source=len(extra))


def move_camera(assets: Assets, offset, yaw: float, pitch: float, roll: float, axes: str = "camera") -> Assets:
    """A new TARGET camera: the current target camera turned about its own centre (yaw left, pitch
    up, roll counter-clockwise seen from behind; radians, in the camera's own axes), then moved by
    `offset` in world axes or in the camera's OpenCV axes (x right, y down, z forward)."""
    camera = assets.target_camera
    delta = _tensor(_vector(offset, 3, "camera offset"))
    c2w_blender = blender_camera_to_world(camera)
    if axes == "camera":
        delta = c2w_blender[:3, :3] @ (delta * _tensor(BLENDER_FROM_OPENCV))
    elif axes != "world":
        raise ValueError(f"axes {axes!r} is unknown; expected 'world' or 'camera'")
    # Blender camera axes: y is up (yaw turns about it), x right (pitch), z backwards (roll).
    turned = c2w_blender[:3, :3] @ _ry(yaw) @ _rx(pitch) @ _rz(roll)
    pose = _pose_matrix(turned * _tensor(BLENDER_FROM_OPENCV), c2w_blender[:3, 3] + delta)
    return replace(assets, target_camera=replace(camera, world_to_camera=_as_tuple(pose)))
