"""Video object segmentation datasets in YouTube-VOS's on-disk layout (DAVIS's train layout is the same):

    ROOT/JPEGImages/<video>/<frame>.jpg
    ROOT/Annotations/<video>/<frame>.png   palette (or greyscale) PNG: pixel value = instance id, 0 = background
    ROOT/meta.json                          optional: {"videos": {<video>: {"objects": {"<id>": {"category": ...,
                                            "frames": [<frame>, ...]}}}}} (YouTube-VOS's train meta)

The two folders are options (`images`, `annotations`, relative to ROOT), e.g. DAVIS's
"JPEGImages/480p" and "Annotations/480p".

`extras`: "video", "frames" (the two frame names) and, with meta.json, "names" ({instance id: category}).

Every frame needs its mask (YouTube-VOS's train split: the annotated frames, every 5th). A pair is
two different frames of one video in which the same instance is visible: source = the earlier or the
later frame, target = the other (both orders are pairs). With meta.json the frames of each instance
come from it (nothing is read at open); without, every mask is read once at open.
The layout is checked when the source opens; image contents when a pair is read.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import images_in, read_instance_map, read_json, read_rgb, require_folder, require_same_size, subfolders
from .frames import Frame, PairedFrames
from .pairs import OrderedPairs


@dataclass(frozen=True)
class InstanceTrack:
    video: str
    instance: int
    frames: tuple[str, ...]  # frame names where the instance is visible, in order
    category: str | None


@dataclass(frozen=True)
class Video:
    name: str
    images: dict[str, Path]  # frame name → JPEGImages file
    masks: dict[str, Path]  # frame name → Annotations file
    instances: tuple[int, ...]
    names: dict[int, str]  # instance id → category (meta.json), for sentence-building recipes


def _check_frames_match(frames_dir: Path, masks_dir: Path, video: str, images: dict[str, Path],
                        masks: dict[str, Path]) -> None:
    without_mask = [images[name] for name in images if name not in masks]
    without_image = [masks[name] for name in masks if name not in images]
    if not images:
        raise ValueError(f"video {video!r} has no frames: {frames_dir / video} holds no .jpg/.png files")
    if without_mask or without_image:
        problems = []
        if without_mask:
            problems.append("frames without a mask: " + ", ".join(
                f"{p} (expected {masks_dir / video / (p.stem + '.png')})" for p in without_mask[:5]))
        if without_image:
            problems.append("masks without a frame: " + ", ".join(map(str, without_image[:5])))
        raise ValueError(f"video {video!r} has {len(images)} frames in {frames_dir / video} but {len(masks)} "
                         f"masks in {masks_dir / video}; every frame needs its mask of the same name. "
                         + "; ".join(problems))


def _tracks_from_meta(meta_path: Path, frames_dir: Path, video: str, images: dict[str, Path],
                      meta: dict) -> list[InstanceTrack]:
    entry = meta.get("videos", {}).get(video)
    if entry is None:
        raise ValueError(f"{meta_path} does not list video {video!r}; expected videos.{video}.objects")
    objects = entry.get("objects", {})
    if not objects:
        raise ValueError(f"video {video!r} has no instances in {meta_path}; expected at least one object")
    not_ids = [key for key in objects if not str(key).isdigit()]
    if not_ids:
        raise ValueError(f"{meta_path}: the object keys of video {video!r} must be instance ids (the mask values), "
                         f"got {not_ids}")
    tracks = []
    for key, description in sorted(objects.items(), key=lambda item: int(item[0])):
        frames = tuple(description.get("frames", ()))
        if not frames:
            raise ValueError(f"instance {key} of video {video!r} is empty everywhere: {meta_path} lists no "
                             "frame for it")
        unknown = [name for name in frames if name not in images]
        if unknown:
            raise ValueError(f"{meta_path} lists frames {unknown[:5]} for instance {key} of video {video!r}, but "
                             f"{frames_dir / video} has no such frame")
        tracks.append(InstanceTrack(video, int(key), frames, description.get("category")))
    return tracks


def _tracks_from_masks(masks_dir: Path, video: str, masks: dict[str, Path], min_pixels: int) -> list[InstanceTrack]:
    seen: dict[int, list[str]] = {}
    for name, path in masks.items():
        ids, counts = torch.unique(read_instance_map(path), return_counts=True)
        for instance, count in zip(ids.tolist(), counts.tolist()):
            if instance != 0 and count >= min_pixels:
                seen.setdefault(instance, []).append(name)
    if not seen:
        raise ValueError(f"video {video!r} has no instances: every mask in {masks_dir / video} is empty "
                         f"(no instance id covers {min_pixels} px or more)")
    return [InstanceTrack(video, instance, tuple(frames), None) for instance, frames in sorted(seen.items())]


class VideoSegmentationPairs(Sequence):
    """Pairs of frames of one video showing the same instance, from a YouTube-VOS-style folder."""

    def __init__(self, root: str, videos: list[str] | None = None, min_pixels: int = 1, images: str = "JPEGImages",
                 annotations: str = "Annotations"):
        self.root = Path(root)
        require_folder(self.root, "video segmentation dataset")
        for option, value in (("images", images), ("annotations", annotations)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"video segmentation source: {option} must be a folder path relative to root, "
                                 f"got {value!r}")
        self.frames_dir, self.masks_dir = self.root / images, self.root / annotations
        for folder in (self.frames_dir, self.masks_dir):
            require_folder(folder, f"video segmentation dataset (frames in {images}/<video>/, masks in "
                                   f"{annotations}/<video>/)")
        if int(min_pixels) != min_pixels or min_pixels < 1:
            raise ValueError(f"video segmentation source: min_pixels must be a whole number >= 1, got {min_pixels!r}")
        names = subfolders(self.frames_dir, videos, "video segmentation source: videos")
        if not names:
            raise ValueError(f"video segmentation dataset {self.root} has no videos: {self.frames_dir} is empty")
        meta = read_json(self.root / "meta.json") if (self.root / "meta.json").exists() else None
        self.videos: dict[str, Video] = {}
        self.tracks: list[InstanceTrack] = []
        for name in names:
            require_folder(self.frames_dir / name, f"video {name!r}")
            require_folder(self.masks_dir / name, f"masks of video {name!r}")
            frames, masks = images_in(self.frames_dir / name), images_in(self.masks_dir / name)
            _check_frames_match(self.frames_dir, self.masks_dir, name, frames, masks)
            tracks = (_tracks_from_meta(self.root / "meta.json", self.frames_dir, name, frames, meta) if meta is not None
                      else _tracks_from_masks(self.masks_dir, name, masks, int(min_pixels)))
            self.videos[name] = Video(name, frames, masks, tuple(t.instance for t in tracks),
                                      {t.instance: t.category for t in tracks if t.category is not None})
            self.tracks.extend(tracks)
        self.pairs = OrderedPairs([len(track.frames) for track in self.tracks])
        if not len(self.pairs):
            raise ValueError(f"video segmentation dataset {self.root}: no instance is visible in two frames of one video, "
                             "so there is no training pair")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> PairedFrames:
        t, first, second = self.pairs.locate(index, "video segmentation source")
        track = self.tracks[t]
        video = self.videos[track.video]
        source, target = (self._frame(video, track.frames[i], track.instance) for i in (first, second))
        names = f"{video.images[track.frames[first]].name}, {video.images[track.frames[second]].name}"
        extras = {"video": video.name, "frames": (track.frames[first], track.frames[second])}
        if video.names:
            extras["names"] = dict(video.names)
        return PairedFrames(source, target, track.instance,
                            origin=f"{self.frames_dir / video.name} frames {names}", extras=extras)

    def _frame(self, video: Video, name: str, instance: int) -> Frame:
        image_path, mask_path = video.images[name], video.masks[name]
        image, ids = read_rgb(image_path), read_instance_map(mask_path)
        require_same_size(image, image_path, ids, mask_path)
        masks = torch.stack([ids == i for i in video.instances])
        if not bool(masks[video.instances.index(instance)].any()):
            # Only meta.json can list a frame without reading its mask (a scan lists the frames it saw).
            raise ValueError(f"instance {instance} is empty in {mask_path}, but {self.root / 'meta.json'} lists frame "
                             f"{name!r} for it (or the mask changed since the source opened)")
        return Frame(image, masks, video.instances)
