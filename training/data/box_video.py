"""3D-box video data: frames with per-frame cameras and 3D boxes of every object, in a simple layout,
and a converter from Kubric/MOVi scenes.

    ROOT/<video>/frames/<frame>.png|jpg   the frames (sorted by name)
    ROOT/<video>/boxes.json               {"frames": {"<frame>": {
                                              "camera": {"K": 3x3 pixels, "world_to_camera": 4x4 OpenCV},
                                              "objects": [{"instance": 1, "centre": [x, y, z], "size": [sx, sy, sz],
                                                           "rotation": 3x3 object → world,
                                                           "name": "red car" (optional)}, ...]}, ...}}
    ROOT/<video>/masks/<frame>.png        optional: instance ids (palette/greyscale PNG, 0 = background)
    ROOT/<video>/depth/<frame>.npy        optional: float32 [H, W] metric z-depth (OpenCV camera); 0, negative
                                          or non-finite = no surface

Conventions are ops.assets' (OpenCV cameras, any world frame; Kubric's is z up). `size` is the full
extent along the object's local x, y, z; every frame lists every object of the video (an object out
of view still has its box). A pair is two different frames of one video (both orders) about one
instance: with masks, one visible (>= min_pixels) in both frames; without, any listed instance, and
the frames' masks are the rectangles of the projected 3D boxes (extras["masks"] = "projected boxes").
Each frame's `boxes3d[k].source_box` is the 2D box of instance k's mask in that frame; `extras["names"]`
holds the objects' optional names ({instance id: name}, from the first frame). Swapping
source and target at random is the recipe's business, not the source's.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...ops import assets as A
from .files import images_in, read_instance_map, read_json, read_rgb, require_folder, require_same_size, subfolders
from .frames import Frame, PairedFrames
from .pairs import OrderedPairs

log = logging.getLogger(__name__)
BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class BoxFrame:
    name: str
    image: Path
    mask: Path | None
    depth: Path | None
    camera: A.Camera
    objects: tuple[A.Asset, ...]  # source_box zero; filled from the mask when read


@dataclass(frozen=True)
class BoxVideo:
    frames: tuple[BoxFrame, ...]
    instances: tuple[int, ...]  # sorted ids; every frame's objects are in this order
    names: dict[int, str]  # the objects' optional "name"s


@dataclass(frozen=True)
class BoxTrack:
    video: str
    instance: int
    frames: tuple[int, ...]  # indices into the video's frames


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as picture:
            return picture.size
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read image {path} ({error}); expected a readable JPEG or PNG") from None


def _objects(path: Path, name: str, entries) -> tuple[tuple[int, ...], tuple[A.Asset, ...]]:
    if not isinstance(entries, list):
        raise ValueError(f"{path}: frame {name!r} 'objects' must be a list of "
                         "{'instance', 'centre', 'size', 'rotation'}, got " + type(entries).__name__)
    ids, assets = [], []
    for entry in entries:
        if not isinstance(entry, dict) or not {"instance", "centre", "size", "rotation"} <= set(entry):
            raise ValueError(f"{path}: frame {name!r}: every object needs 'instance', 'centre', 'size' and 'rotation', "
                             f"got {entry!r}")
        instance = entry["instance"]
        if not isinstance(instance, int) or instance < 1:
            raise ValueError(f"{path}: frame {name!r}: instance ids must be whole numbers >= 1 (0 is the background "
                             f"in masks), got {instance!r}")
        try:
            assets.append(A.Asset(entry["centre"], entry["size"], entry["rotation"], (0.0, 0.0, 0.0, 0.0)))
        except ValueError as error:
            raise ValueError(f"{path}: frame {name!r}, instance {instance}: {error}") from None
        ids.append(instance)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: frame {name!r} lists an instance twice: {ids}")
    order = sorted(range(len(ids)), key=ids.__getitem__)
    return tuple(ids[i] for i in order), tuple(assets[i] for i in order)


def _frame_files(folder: Path, names: list[str], suffix: str, what: str) -> dict[str, Path] | None:
    """Per-frame optional files (masks, depth): None when the folder is absent, else one per frame."""
    if not folder.is_dir():
        return None
    found = {p.stem: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == suffix}
    missing = [name for name in names if name not in found]
    extra = sorted(str(found[stem]) for stem in found if stem not in names)
    if missing or extra:
        raise ValueError(f"{folder} must hold one {what} per frame ({len(names)} frames, {len(found)} files); "
                         f"frames without one: {[str(folder / (n + suffix)) for n in missing[:5]]}, "
                         f"files without a frame: {extra[:5]}")
    return found


def _names(path: Path, entries: list) -> dict[int, str]:
    names = {}
    for entry in entries:
        if "name" in entry:
            if not isinstance(entry["name"], str) or not entry["name"].strip():
                raise ValueError(f"{path}: the name of instance {entry['instance']} must be a non-empty string, "
                                 f"got {entry['name']!r}")
            names[entry["instance"]] = entry["name"].strip()
    return names


def _video(root: Path, name: str) -> BoxVideo:
    folder = root / name
    require_folder(folder / "frames", f"3D-box video {name!r}")
    images = images_in(folder / "frames")
    if not images:
        raise ValueError(f"3D-box video {name!r} has no frames: {folder / 'frames'} holds no .jpg/.png files")
    boxes_path = folder / "boxes.json"
    if not boxes_path.exists():
        raise ValueError(f"3D-box video {name!r} has no {boxes_path}; expected per-frame cameras and 3D boxes")
    described = read_json(boxes_path)
    frames = described.get("frames") if isinstance(described, dict) else None
    if not isinstance(frames, dict):
        raise ValueError(f"{boxes_path} must be {{'frames': {{<frame>: {{'camera': ..., 'objects': [...]}}}}}}")
    missing = [str(images[n]) for n in images if n not in frames]
    unknown = [n for n in frames if n not in images]
    if missing or unknown:
        raise ValueError(f"{boxes_path} must describe every frame of {folder / 'frames'}; frames without boxes: "
                         f"{missing[:5]}, boxes without a frame: {unknown[:5]}")
    names = list(images)
    masks = _frame_files(folder / "masks", names, ".png", "mask")
    depths = _frame_files(folder / "depth", names, ".npy", "depth map")
    result, instances = [], None
    for frame_name in names:
        entry = frames[frame_name]
        camera_entry = entry.get("camera") if isinstance(entry, dict) else None
        if not isinstance(camera_entry, dict) or not {"K", "world_to_camera"} <= set(camera_entry):
            raise ValueError(f"{boxes_path}: frame {frame_name!r} needs 'camera': {{'K': 3x3, 'world_to_camera': 4x4}}")
        width, height = _image_size(images[frame_name])
        try:
            camera = A.Camera(camera_entry["K"], camera_entry["world_to_camera"], (height, width))
        except ValueError as error:
            raise ValueError(f"{boxes_path}: frame {frame_name!r} camera: {error}") from None
        ids, objects = _objects(boxes_path, frame_name, entry.get("objects", []))
        if instances is None:
            instances = ids
        elif ids != instances:
            raise ValueError(f"{boxes_path}: frame {frame_name!r} lists instances {list(ids)} but frame {names[0]!r} "
                             f"lists {list(instances)}; every frame must list every object of the video")
        result.append(BoxFrame(frame_name, images[frame_name], masks[frame_name] if masks else None,
                               depths[frame_name] if depths else None, camera, objects))
    if not instances:
        raise ValueError(f"3D-box video {name!r} has no objects: {boxes_path} lists none")
    return BoxVideo(tuple(result), instances, _names(boxes_path, frames[names[0]]["objects"]))


def _tracks(name: str, video: BoxVideo, min_pixels: int) -> list[BoxTrack]:
    if video.frames[0].mask is None:
        return [BoxTrack(name, i, tuple(range(len(video.frames)))) for i in video.instances]
    visible: dict[int, list[int]] = {i: [] for i in video.instances}
    for index, frame in enumerate(video.frames):
        ids, counts = torch.unique(read_instance_map(frame.mask), return_counts=True)
        for instance, count in zip(ids.tolist(), counts.tolist()):
            if instance in visible and count >= min_pixels:
                visible[instance].append(index)
    return [BoxTrack(name, i, tuple(visible[i])) for i in video.instances]


def _read_depth(path: Path, height: int, width: int) -> torch.Tensor:
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read depth map {path} ({error}); expected a .npy float array [H, W]") from None
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.shape != (height, width) or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth map {path} is {depth.dtype} {depth.shape}; expected float [{height}, {width}] "
                         "(its frame's size) in metres")
    depth = torch.from_numpy(depth.astype(np.float32))
    return torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.full_like(depth, math.inf))


def _projected_box_masks(objects: tuple[A.Asset, ...], camera: A.Camera) -> torch.Tensor:
    """[K, H, W] bool: the image rectangle spanned by each 3D box's projected corners (empty when a
    corner is behind the camera, where the projection is not a bound)."""
    height, width = camera.image_hw
    masks = torch.zeros(len(objects), height, width, dtype=torch.bool)
    for k, asset in enumerate(objects):
        uvd = A.project(A.to_camera(A.box_corners(asset), camera), camera)
        if float(uvd[:, 2].min()) <= 0:
            continue
        x0, x1 = (max(0, min(width, round(float(v) * width))) for v in (uvd[:, 0].min(), uvd[:, 0].max()))
        y0, y1 = (max(0, min(height, round(float(v) * height))) for v in (uvd[:, 1].min(), uvd[:, 1].max()))
        masks[k, y0:y1, x0:x1] = True
    return masks


def _mask_box(mask: torch.Tensor) -> tuple[float, float, float, float]:
    if not bool(mask.any()):
        return (0.0, 0.0, 0.0, 0.0)
    ys, xs = torch.nonzero(mask, as_tuple=True)
    height, width = mask.shape
    return (int(ys.min()) / height, int(xs.min()) / width, (int(ys.max()) + 1) / height, (int(xs.max()) + 1) / width)


class BoxVideoPairs(Sequence):
    """Pairs of frames of one video about one instance, with cameras and every object's 3D box."""

    def __init__(self, root: str, videos: list[str] | None = None, min_pixels: int = 1):
        self.root = Path(root)
        require_folder(self.root, "3D-box video dataset")
        if int(min_pixels) != min_pixels or min_pixels < 1:
            raise ValueError(f"box video source: min_pixels must be a whole number >= 1, got {min_pixels!r}")
        names = subfolders(self.root, videos, "box video source: videos")
        if not names:
            raise ValueError(f"3D-box video dataset {self.root} has no video folders; expected ROOT/<video>/frames/")
        self.videos = {name: _video(self.root, name) for name in names}
        self.tracks = [track for name, video in self.videos.items() for track in _tracks(name, video, int(min_pixels))]
        self.pairs = OrderedPairs([len(track.frames) for track in self.tracks])
        if not len(self.pairs):
            raise ValueError(f"3D-box video dataset {self.root}: no instance is visible in two frames of one video, "
                             "so there is no training pair")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> PairedFrames:
        t, first, second = self.pairs.locate(index, "3D-box video source")
        track = self.tracks[t]
        video = self.videos[track.video]
        source, target = video.frames[track.frames[first]], video.frames[track.frames[second]]
        extras = {"video": track.video, "frames": (source.name, target.name),
                  "masks": "instance masks" if source.mask is not None else "projected boxes"}
        if video.names:
            extras["names"] = dict(video.names)
        return PairedFrames(_frame(source, video.instances), _frame(target, video.instances), track.instance,
                            origin=f"{self.root / track.video} frames {source.image.name}, {target.image.name}",
                            extras=extras)


def _frame(frame: BoxFrame, instances: tuple[int, ...]) -> Frame:
    image = read_rgb(frame.image)
    if frame.mask is not None:
        ids = read_instance_map(frame.mask)
        require_same_size(image, frame.image, ids, frame.mask)
        masks = torch.stack([ids == i for i in instances])
    else:
        masks = _projected_box_masks(frame.objects, frame.camera)
    height, width = image.shape[-2:]
    depth = _read_depth(frame.depth, height, width) if frame.depth is not None else None
    boxes3d = tuple(A.Asset(a.centre, a.size, a.rotation, _mask_box(m)) for a, m in zip(frame.objects, masks))
    return Frame(image, masks, instances, depth=depth, camera=frame.camera, boxes3d=boxes3d)


# ---------------------------------------------------------------------------------------------
# Kubric / MOVi → this layout


def _movi(scene: Mapping, key: str, required: bool = True):
    """scene["camera"]["positions"] or scene["camera/positions"] (nested tfds sample or a flat .npz)."""
    if key in scene:
        return np.asarray(scene[key])
    value = scene
    for part in key.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            if required:
                raise ValueError(f"Kubric/MOVi scene has no {key!r}; expected the MOVi per-scene arrays (video, "
                                 "segmentations, camera/{focal_length, sensor_width, positions, quaternions}, "
                                 "instances/bboxes_3d; depth optional)")
            return None
        value = value[part]
    return np.asarray(value)


def movi_camera(focal_length_mm: float, sensor_width_mm: float, position, quaternion, height: int, width: int) -> A.Camera:
    """A MOVi camera in OpenCV terms: square pixels, f_px = focal / sensor_width · W, principal point at the
    centre; world → OpenCV camera = diag(1, −1, −1, 1) · inv([R(q) | position]) (q: Blender camera → world)."""
    focal = float(focal_length_mm) / float(sensor_width_mm) * width
    camera_to_world = np.eye(4)
    camera_to_world[:3, :3] = A.rotation_from_quaternion(quaternion).numpy()
    camera_to_world[:3, 3] = np.asarray(position, dtype=np.float64)
    world_to_camera = BLENDER_TO_OPENCV @ np.linalg.inv(camera_to_world)
    world_to_camera[3] = (0.0, 0.0, 0.0, 1.0)  # exact, so Camera's check of the last row holds
    return A.Camera(A.intrinsics_from_focal(height, width, focal), world_to_camera.tolist(), (height, width))


def z_depth_from_distance(distance: np.ndarray, camera: A.Camera) -> np.ndarray:
    """Kubric's depth is the distance to the camera centre; z-depth = distance / |K⁻¹ (u, v, 1)|."""
    height, width = camera.image_hw
    (fx, _, cx), (_, fy, cy), _ = camera.intrinsics
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    return distance / np.sqrt(((u - cx) / fx) ** 2 + ((v - cy) / fy) ** 2 + 1)


def convert_movi(scene: Mapping, out_root: Path, video: str) -> Path:
    """Write one Kubric/MOVi scene (a tfds sample as numpy, nested or with 'camera/positions'-style keys)
    as ROOT/<video>/ in this layout; returns the video folder. Instance i of the scene is id i + 1, as in
    MOVi's segmentations."""
    frames = _movi(scene, "video")
    segmentations = _movi(scene, "segmentations")
    corners = _movi(scene, "instances/bboxes_3d")
    positions, quaternions = _movi(scene, "camera/positions"), _movi(scene, "camera/quaternions")
    focal, sensor = float(_movi(scene, "camera/focal_length")), float(_movi(scene, "camera/sensor_width"))
    depth = _movi(scene, "depth", required=False)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"MOVi 'video' must be [frames, H, W, 3], got {frames.shape}")
    count, height, width = frames.shape[:3]
    segmentations = segmentations.reshape(segmentations.shape[:3])
    if segmentations.shape != (count, height, width):
        raise ValueError(f"MOVi 'segmentations' is {segmentations.shape}; expected [{count}, {height}, {width}(, 1)]")
    if corners.ndim != 4 or corners.shape[1:] != (count, 8, 3):
        raise ValueError(f"MOVi 'instances/bboxes_3d' is {corners.shape}; expected [instances, {count}, 8, 3]")
    if positions.shape != (count, 3) or quaternions.shape != (count, 4):
        raise ValueError(f"MOVi camera positions {positions.shape} / quaternions {quaternions.shape}; expected "
                         f"[{count}, 3] / [{count}, 4]")
    if int(segmentations.max()) > corners.shape[0]:
        raise ValueError(f"MOVi segmentations hold id {int(segmentations.max())} but the scene has only "
                         f"{corners.shape[0]} instances")
    if depth is not None and not np.issubdtype(depth.dtype, np.floating):
        # MOVi's README: uint16 spanning metadata/depth_range (the tfds release stores float32 metres).
        depth_range = _movi(scene, "metadata/depth_range")
        depth = depth / 65535 * (float(depth_range[1]) - float(depth_range[0])) + float(depth_range[0])
    if frames.dtype != np.uint8:  # tfds gives uint8; float renders are in [0, 1]
        frames = np.clip(np.round(frames.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    folder = out_root / video
    for sub in ("frames", "masks") + (("depth",) if depth is not None else ()):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    described = {}
    for t in range(count):
        name = f"{t:05d}"
        camera = movi_camera(focal, sensor, positions[t], quaternions[t], height, width)
        objects = []
        for i in range(corners.shape[0]):
            centre, size, rotation = A.box_from_corners(corners[i, t])
            objects.append({"instance": i + 1, "centre": centre.tolist(), "size": size.tolist(),
                            "rotation": rotation.tolist()})
        described[name] = {"camera": {"K": [list(row) for row in camera.intrinsics],
                                      "world_to_camera": [list(row) for row in camera.world_to_camera]},
                           "objects": objects}
        Image.fromarray(frames[t]).save(folder / "frames" / f"{name}.png")
        Image.fromarray(segmentations[t].astype(np.uint8), mode="L").save(folder / "masks" / f"{name}.png")
        if depth is not None:
            distance = depth[t].reshape(height, width).astype(np.float64)
            np.save(folder / "depth" / f"{name}.npy", z_depth_from_distance(distance, camera).astype(np.float32))
    (folder / "boxes.json").write_text(json.dumps({"frames": described}))
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m diorama.training.data.box_video",
        description="Convert Kubric/MOVi scenes (.npz of the per-scene arrays with 'camera/positions'-style keys) "
                    "into Diorama's 3D-box video layout.")
    parser.add_argument("scenes", nargs="+", type=Path, help="scene .npz files (one video each)")
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write ROOT/<scene name>/ into")
    args = parser.parse_args(argv)
    for path in args.scenes:
        with np.load(path, allow_pickle=False) as scene:
            folder = convert_movi(dict(scene), args.out, path.stem)
        log.info("wrote %s", folder)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
