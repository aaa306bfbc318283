"""2D boxes or masks + metric depth + intrinsics → 3D boxes (Neural Assets' assets from a photo).

The lifted scene's world is the camera's own frame relabelled z-up: the camera sits at the origin,
level, looking along world +y (x right, z up), as `world_to_camera_from_ypr(0, 0, 0, 0)` defines.
Each box is axis-aligned with the camera; its local axes are x right, y forward (away from the
camera), z up, so a lifted object's size is (width, depth, height) and yaw edits turn it about the
vertical as for MOVi objects.
"""
from __future__ import annotations

import torch

from .assets import Asset, Camera, intrinsics_from_focal, world_to_camera_from_ypr
from .depth_map import DepthMap

# Depth outliers under a mask (its edges bleeding onto the background, a nearer occluder) are other
# surfaces: the object is the run of sorted depths around the median with no jump larger than this
# fraction of the median depth. Percentile fences would cut a box's far side, which few pixels see.
DEPTH_GAP_RELATIVE = 0.05
FRONT_QUANTILE = 0.05  # a box's front: its nearest depth, robust to a few bad pixels
MIN_DEPTH_FRACTION = 1e-3  # a flat, camera-facing surface still gets a (thin) positive depth extent
# Box axes in OpenCV camera axes: local x → camera x, local y → camera z (forward), local z → −camera y (up).
LOCAL_TO_CAMERA = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))


def lifting_camera(height: int, width: int, focal_px: float, cx: float | None = None, cy: float | None = None) -> Camera:
    """The camera of a lifted scene: intrinsics from the focal length (square pixels), world as above."""
    return Camera(intrinsics_from_focal(height, width, focal_px, cx=cx, cy=cy),
                  world_to_camera_from_ypr((0.0, 0.0, 0.0), 0.0, 0.0, 0.0), (height, width))


def require_metric(depth: DepthMap, name: str = "depth") -> None:
    if depth.kind != "metric":
        raise ValueError(f"{name} is {depth.kind!r} depth; lifting boxes to 3D needs metric depth (metres along "
                         "the optical axis), because relative disparity has no scale or offset to place boxes with. "
                         "Use a metric depth model (e.g. Depth Anything V2 Metric) or Depth From Image as 'metric'")


def _depth_plane(depth: DepthMap, camera: Camera, name: str) -> torch.Tensor:
    require_metric(depth, name)
    values = depth.values[0] if depth.values.ndim == 3 else depth.values
    if tuple(values.shape) != tuple(camera.image_hw):
        raise ValueError(f"{name} is {values.shape[-1]}x{values.shape[-2]} px but the camera's intrinsics are for "
                         f"{camera.image_hw[1]}x{camera.image_hw[0]} px; they must match")
    return values.to(torch.float64)


def _back_project(u: torch.Tensor, v: torch.Tensor, z: torch.Tensor, camera: Camera) -> torch.Tensor:
    pixels = torch.stack((u, v, torch.ones_like(u)), dim=-1)
    rays = pixels @ torch.linalg.inv(torch.as_tensor(camera.intrinsics, dtype=torch.float64)).T
    return rays * z[..., None]


def _depth_cluster(z: torch.Tensor) -> torch.Tensor:
    """bool [N]: the depths in the gap-free run of sorted depths that holds the median."""
    order = torch.argsort(z)
    ordered = z[order]
    jumps = torch.nonzero(ordered.diff() > DEPTH_GAP_RELATIVE * ordered[len(ordered) // 2], as_tuple=True)[0]
    middle = len(ordered) // 2
    start = int(jumps[jumps < middle].max()) + 1 if bool((jumps < middle).any()) else 0
    end = int(jumps[jumps >= middle].min()) + 1 if bool((jumps >= middle).any()) else len(ordered)
    keep = torch.zeros_like(z, dtype=torch.bool)
    keep[order[start:end]] = True
    return keep


def lift_mask_in_camera(mask: torch.Tensor, depth: torch.Tensor, camera: Camera,
                        min_depth_ratio: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre, size) of the camera-axis-aligned box around the mask's back-projected pixels, in
    OpenCV camera coordinates.

    Each pixel counts with its whole footprint (its four corners at its depth), so the extent is the
    silhouette's, not its pixel centres'. The depth extent is the visible surface's: only what the
    camera sees of the object is measured, so it is at least `min_depth_ratio` × the smaller of width
    and height (a prior for objects seen face-on; 0 = trust the visible surface). Faces seen at a
    grazing angle end short of their far edge by up to one pixel's depth span (measured on rendered
    boxes: within 2 % when the far edges are seen well, ~5 % on steep views).
    """
    inside = mask > 0.5
    rows, cols = torch.nonzero(inside, as_tuple=True)
    if rows.numel() == 0:
        raise ValueError("mask is empty (no pixel above 0.5); expected the object's silhouette")
    z = depth[rows, cols]
    if not bool(torch.isfinite(z).all()) or float(z.min()) <= 0:
        raise ValueError("depth under the mask must be finite and > 0 metres")
    keep = _depth_cluster(z)
    rows, cols, z = rows[keep], cols[keep], z[keep]
    corners = []
    for dv in (0.0, 1.0):
        for du in (0.0, 1.0):
            corners.append(_back_project(cols.to(z.dtype) + du, rows.to(z.dtype) + dv, z, camera))
    points = torch.cat(corners)
    lower, upper = points.amin(0), points.amax(0)
    size = upper - lower
    lateral = float(torch.minimum(size[0], size[1]))
    depth_size = max(float(size[2]), min_depth_ratio * lateral, MIN_DEPTH_FRACTION * float(torch.maximum(size[0], size[1])))
    centre = torch.stack((lower[0] + size[0] / 2, lower[1] + size[1] / 2, lower[2] + depth_size / 2))
    return centre, torch.stack((size[0], size[1], size.new_tensor(depth_size)))


def lift_box_in_camera(box: tuple[float, float, float, float], depth: torch.Tensor,
                       camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre, size) in OpenCV camera coordinates from a pixel box (x0, y0, x1, y1, ends exclusive).

    A box does not say which of its pixels are the object, so: its front is the box's nearest depth
    (5th percentile, robust to a few bad pixels), its width and height are the box edges
    back-projected at that depth, and its depth extent is a prior — as deep as its narrower side.
    Use a mask when the depth extent matters.
    """
    height, width = depth.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    c0, r0 = max(int(x0), 0), max(int(y0), 0)
    c1, r1 = min(int(-(-x1 // 1)), width), min(int(-(-y1 // 1)), height)
    if c1 <= c0 or r1 <= r0:
        raise ValueError(f"box (x0={x0:g}, y0={y0:g}, x1={x1:g}, y1={y1:g}) px does not overlap the "
                         f"{width}x{height} image; expected x1 > x0, y1 > y0 inside the image")
    z = depth[r0:r1, c0:c1].reshape(-1)
    if not bool(torch.isfinite(z).all()) or float(z.min()) <= 0:
        raise ValueError("depth inside the box must be finite and > 0 metres")
    front = torch.quantile(z, FRONT_QUANTILE)
    corners = _back_project(torch.tensor([x0, x1], dtype=z.dtype), torch.tensor([y0, y1], dtype=z.dtype),
                            front.expand(2), camera)
    size_x, size_y = (corners[1, :2] - corners[0, :2]).unbind()
    size_z = torch.minimum(size_x, size_y)
    centre = torch.stack(((corners[0, 0] + corners[1, 0]) / 2, (corners[0, 1] + corners[1, 1]) / 2, front + size_z / 2))
    return centre, torch.stack((size_x, size_y, size_z))


def camera_box_to_asset(centre: torch.Tensor, size: torch.Tensor, camera: Camera,
                        source_box: tuple[float, float, float, float]) -> Asset:
    """An OpenCV-camera-aligned box as an Asset in world coordinates (local axes: right, forward, up)."""
    pose = torch.as_tensor(camera.world_to_camera, dtype=torch.float64)
    camera_to_world = pose[:3, :3].T
    local_to_camera = torch.as_tensor(LOCAL_TO_CAMERA, dtype=torch.float64)
    centre_world = camera_to_world @ (centre - pose[:3, 3])
    rotation = camera_to_world @ local_to_camera
    # Local (x, y, z) = camera (x, z, −y): the sizes follow the same axes.
    size_local = (float(size[0]), float(size[2]), float(size[1]))
    return Asset(tuple(centre_world.tolist()), size_local, tuple(tuple(r) for r in rotation.tolist()), source_box)


def mask_source_box(mask: torch.Tensor) -> tuple[float, float, float, float]:
    """(y0, x0, y1, x1) fractions, ends exclusive, of the pixels above 0.5."""
    rows, cols = torch.nonzero(mask > 0.5, as_tuple=True)
    height, width = mask.shape
    return (int(rows.min()) / height, int(cols.min()) / width, (int(rows.max()) + 1) / height, (int(cols.max()) + 1) / width)


def lift_masks(masks: torch.Tensor, depth: DepthMap, camera: Camera, min_depth_ratio: float = 0.0) -> tuple[Asset, ...]:
    """One Asset per mask [K, H, W] (same size as the depth and the camera's image)."""
    plane = _depth_plane(depth, camera, "depth")
    if tuple(masks.shape[1:]) != tuple(plane.shape):
        raise ValueError(f"masks are {masks.shape[2]}x{masks.shape[1]} px but the depth is "
                         f"{plane.shape[1]}x{plane.shape[0]} px; they must match")
    assets = []
    for i, mask in enumerate(masks):
        try:
            centre, size = lift_mask_in_camera(mask, plane, camera, min_depth_ratio)
        except ValueError as error:
            raise ValueError(f"mask {i}: {error}") from None
        assets.append(camera_box_to_asset(centre, size, camera, mask_source_box(mask)))
    return tuple(assets)


def lift_boxes(boxes: list[tuple[float, float, float, float]], depth: DepthMap, camera: Camera) -> tuple[Asset, ...]:
    """One Asset per pixel box (x0, y0, x1, y1, ends exclusive); the source box is the box clipped to the image."""
    plane = _depth_plane(depth, camera, "depth")
    height, width = plane.shape
    assets = []
    for i, box in enumerate(boxes):
        try:
            centre, size = lift_box_in_camera(box, plane, camera)
        except ValueError as error:
            raise ValueError(f"box {i}: {error}") from None
        x0, y0, x1, y1 = box
        source_box = (max(y0, 0) / height, max(x0, 0) / width, min(y1, height) / height, min(x1, width) / width)
        assets.append(camera_box_to_asset(centre, size, camera, source_box))
    return tuple(assets)
