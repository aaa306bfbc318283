"""Training data sources: the renderer as a source of paired frames, and the on-disk dataset layouts."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from diorama.ops import assets as A
from diorama.training.data.sources import open_source

SIZE = 48


@pytest.fixture(scope="module")
def rendered():
    source = open_source({"kind": "rendered", "count": 12, "size": SIZE, "seed": 3})
    return [source[i] for i in range(len(source))]


def _frame_tensors(pair):
    return [t for f in (pair.source, pair.target) for t in (f.image, f.masks, f.depth, f.clean_plate) if t is not None]


def _world_points(frame, mask: torch.Tensor) -> torch.Tensor:
    """Back-project the masked pixels' depth through K and the camera pose (independent of the renderer)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    k = torch.tensor(frame.camera.intrinsics, dtype=torch.float64)
    z = frame.depth[ys, xs].double()
    cam = torch.stack(((xs + 0.5 - k[0, 2]) / k[0, 0] * z, (ys + 0.5 - k[1, 2]) / k[1, 1] * z, z), -1)
    pose = torch.tensor(frame.camera.world_to_camera, dtype=torch.float64)
    return (cam - pose[:3, 3]) @ pose[:3, :3]


def test_rendered_pairs_are_deterministic_by_seed_and_index(rendered):
    again = open_source({"kind": "rendered", "count": 12, "size": SIZE, "seed": 3})
    for index in (7, 0):  # out of order: a pair does not depend on which were drawn before
        assert all(torch.equal(a, b) for a, b in zip(_frame_tensors(again[index]), _frame_tensors(rendered[index])))
        assert again[index].target.boxes3d == rendered[index].target.boxes3d
        assert again[index].target.camera == rendered[index].target.camera
    other = open_source({"kind": "rendered", "count": 12, "size": SIZE, "seed": 4})[0]
    assert not torch.equal(other.target.image, rendered[0].target.image)
    assert len(again) == 12 and again[-1].origin == rendered[11].origin
    with pytest.raises(IndexError):
        again[12]


def test_rendered_pairs_have_every_field(rendered):
    for pair in rendered:
        pair.require("source.depth", "target.depth", "target.camera", "source.camera", "target.boxes3d",
                     "source.boxes3d", "target.clean_plate")
        for frame in (pair.source, pair.target):
            assert frame.image.shape == (3, SIZE, SIZE) and frame.image.dtype == torch.float32
            assert 0 <= float(frame.image.min()) and float(frame.image.max()) <= 1
            assert frame.masks.dtype == torch.bool and frame.masks.shape == (len(frame.instance_ids), SIZE, SIZE)
            assert len(frame.boxes3d) == len(frame.instance_ids) >= 3
            assert frame.camera.image_hw == (SIZE, SIZE)
            assert int(frame.mask_of(pair.object_id).sum()) >= 4, "the chosen object is visible in both views"
            # Instances never overlap: one surface per pixel.
            assert int(frame.masks.sum(0).max()) <= 1
        assert pair.source.camera != pair.target.camera
        assert pair.source.instance_ids == pair.target.instance_ids


def test_rendered_boxes_cameras_and_depth_agree(rendered):
    """Depth back-projected through the stated camera lands on the stated 3D box (or the ground at z = 0),
    and each frame's 2D box is its mask's extent."""
    for pair in rendered:
        frame = pair.target
        for k, instance in enumerate(frame.instance_ids):
            mask, asset = frame.masks[k], frame.boxes3d[k]
            if not bool(mask.any()):
                assert asset.source_box == (0.0, 0.0, 0.0, 0.0)
                continue
            local = (_world_points(frame, mask) - torch.tensor(asset.centre, dtype=torch.float64)) @ \
                torch.tensor(asset.rotation, dtype=torch.float64)
            half = torch.tensor(asset.size, dtype=torch.float64) / 2
            assert bool((local.abs() <= half + 1e-3).all()), f"{pair.origin}: object {instance} off its 3D box"
            ys, xs = torch.nonzero(mask, as_tuple=True)
            expected = (int(ys.min()) / SIZE, int(xs.min()) / SIZE, (int(ys.max()) + 1) / SIZE, (int(xs.max()) + 1) / SIZE)
            assert asset.source_box == pytest.approx(expected)
        ground = ~frame.masks.any(0) & torch.isfinite(frame.depth)
        assert float(_world_points(frame, ground)[:, 2].abs().max()) < 1e-3


def test_rendered_box_corners_project_onto_the_silhouette(rendered):
    """ops.assets' projection of an object's 3D box corners (the reference's arithmetic, not the ray caster)
    contains its mask, and spans it exactly for a whole box inside the image."""
    spanned = 0
    for pair in rendered:
        frame = pair.target
        for k, asset in enumerate(frame.boxes3d):
            mask = frame.masks[k]
            corners = A.project(A.to_camera(A.box_corners(asset), frame.camera), frame.camera)
            u, v = corners[:, 0] * SIZE, corners[:, 1] * SIZE
            if not bool(mask.any()):
                continue
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert float(u.min()) - 1 <= int(xs.min()) and int(xs.max()) + 1 <= float(u.max()) + 1
            assert float(v.min()) - 1 <= int(ys.min()) and int(ys.max()) + 1 <= float(v.max()) + 1
            inside = min(float(u.min()), float(v.min())) >= 1 and max(float(u.max()), float(v.max())) <= SIZE - 1
            whole = frame.instance_ids[k] == pair.object_id and pair.extras["target_visible_fraction"] == 1.0
            if inside and whole and len(set(asset.size)) > 1:  # a box (a sphere's box is a cube)
                assert abs(int(xs.min()) - float(u.min())) <= 1 and abs(int(xs.max()) + 1 - float(u.max())) <= 1
                assert abs(int(ys.min()) - float(v.min())) <= 1 and abs(int(ys.max()) + 1 - float(v.max())) <= 1
                spanned += 1
    assert spanned >= 1


def test_rendered_clean_plate_differs_only_under_the_object(rendered):
    for pair in rendered:
        # The renderer casts no shadows, so removing the object changes only the pixels it covered.
        outside = ~pair.target.mask_of(pair.object_id)
        assert torch.equal(pair.target.clean_plate[:, outside], pair.target.image[:, outside])
        inside = ~outside
        assert float((pair.target.clean_plate[:, inside] - pair.target.image[:, inside]).abs().amax(0).mean()) > 0.02


def test_rendered_objects_are_sometimes_partly_occluded(rendered):
    fractions = [pair.extras["target_visible_fraction"] for pair in rendered]
    assert all(0 < f <= 1 for f in fractions)
    assert any(f < 0.9 for f in fractions) and any(f == 1.0 for f in fractions)
    for pair in rendered:
        visible = int(pair.target.mask_of(pair.object_id).sum())
        others = pair.target.masks.any(0) & ~pair.target.mask_of(pair.object_id)
        if pair.extras["target_visible_fraction"] < 1:
            assert visible > 0 and bool(others.any()), "what hides the object is another object"


def test_rendered_object_alone_source():
    pair = open_source({"kind": "rendered", "count": 2, "size": SIZE, "seed": 3, "source_mode": "object"})[1]
    assert pair.extras["source_mode"] == "object"
    visible = pair.source.masks.flatten(1).any(1)
    assert visible.tolist() == [i == pair.object_id for i in pair.source.instance_ids]
    assert bool(pair.target.masks.flatten(1).any(1).sum() >= 2), "the target is the whole scene"


@pytest.mark.parametrize("spec, message", [
    ({"count": 2}, "'kind'"),
    ({"kind": "renderd", "count": 2}, "unknown data source kind 'renderd'; expected one of rendered"),
    ({"kind": "rendered"}, "needs 'count'"),
    ({"kind": "rendered", "count": 2, "sise": 32}, "no option 'sise'"),
    ({"kind": "rendered", "count": 2, "size": 8}, "size must be a whole number of pixels >= 16"),
    ({"kind": "rendered", "count": 0}, "count must be a whole number >= 1"),
    ({"kind": "rendered", "count": 2, "source_mode": "alone"}, "source_mode must be one of scene, object"),
])
def test_open_source_refuses_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_source(spec)


# ---------------------------------------------------------------------------------------------
# Video segmentation (YouTube-VOS layout)

VOS_H, VOS_W = 16, 20
# video → frame → instances visible in it; each instance is a rectangle of its own colour.
VOS_VIDEOS = {"v1": {"00000": (1, 2), "00005": (1,), "00010": (1, 2)}, "v2": {"00000": (3,), "00005": (3,)}}
VOS_COLOURS = {1: (220, 40, 40), 2: (40, 200, 60), 3: (50, 60, 210)}


def _vos_rectangle(instance: int, frame: str) -> tuple[slice, slice]:
    shift = int(frame) // 5
    return (slice(2, 8), slice(2 + shift, 8 + shift)) if instance != 2 else (slice(9, 15), slice(10, 17))


def _vos_frame(frame: str, instances) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((VOS_H, VOS_W, 3), 128, np.uint8)
    ids = np.zeros((VOS_H, VOS_W), np.uint8)
    for instance in instances:
        image[_vos_rectangle(instance, frame)] = VOS_COLOURS[instance]
        ids[_vos_rectangle(instance, frame)] = instance
    return image, ids


def _palette_png(ids: np.ndarray, path) -> None:
    picture = Image.fromarray(ids, mode="P")
    picture.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12))  # DAVIS-like palette
    picture.save(path)


def _write_vos(root, meta: dict | None = None):
    for video, frames in VOS_VIDEOS.items():
        (root / "JPEGImages" / video).mkdir(parents=True)
        (root / "Annotations" / video).mkdir(parents=True)
        for frame, instances in frames.items():
            image, ids = _vos_frame(frame, instances)
            Image.fromarray(image).save(root / "JPEGImages" / video / f"{frame}.jpg", quality=100, subsampling=0)
            _palette_png(ids, root / "Annotations" / video / f"{frame}.png")
    if meta is not None:
        (root / "meta.json").write_text(json.dumps(meta))
    return root


def _vos_meta() -> dict:
    objects = {}
    for video, frames in VOS_VIDEOS.items():
        for frame, instances in frames.items():
            for instance in instances:
                entry = objects.setdefault(video, {}).setdefault(str(instance), {"category": f"thing{instance}", "frames": []})
                entry["frames"].append(frame)
    return {"videos": {video: {"objects": found} for video, found in objects.items()}}


@pytest.mark.parametrize("with_meta", [False, True])
def test_video_segmentation_pairs_every_two_frames_sharing_an_instance(tmp_path, with_meta):
    root = _write_vos(tmp_path, _vos_meta() if with_meta else None)
    source = open_source({"kind": "video_segmentation", "root": str(root)})
    # Instance 1: 3 frames → 6 ordered pairs; instance 2: frames 0 and 10 → 2; instance 3: 2 frames → 2.
    assert len(source) == 10
    seen = set()
    for index in range(len(source)):
        pair = source[index]
        video, frames = pair.extras["video"], pair.extras["frames"]
        seen.add((video, pair.object_id, frames))
        assert pair.source.instance_ids == pair.target.instance_ids == ((1, 2) if video == "v1" else (3,))
        assert pair.extras.get("category") == (f"thing{pair.object_id}" if with_meta else None)
        for frame_name, frame in zip(frames, (pair.source, pair.target)):
            image, ids = _vos_frame(frame_name, VOS_VIDEOS[video][frame_name])
            assert torch.equal(frame.masks, torch.stack([torch.from_numpy(ids == i) for i in frame.instance_ids]))
            assert float((frame.image - torch.from_numpy(image).permute(2, 0, 1) / 255).abs().mean()) < 0.02  # JPEG
            assert frame.depth is None and frame.camera is None and frame.boxes3d is None
        assert frame_name in pair.origin and str(root) in pair.origin
    expected = {("v1", 1, (a, b)) for a in VOS_VIDEOS["v1"] for b in VOS_VIDEOS["v1"] if a != b}
    expected |= {("v1", 2, ("00000", "00010")), ("v1", 2, ("00010", "00000")),
                 ("v2", 3, ("00000", "00005")), ("v2", 3, ("00005", "00000"))}
    assert seen == expected
    assert torch.equal(source[3].target.image, source[3].target.image)
    with pytest.raises(IndexError):
        source[10]


def _drop(path):
    path.unlink()


def _garbage(path):
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def _rgb_mask(path):
    Image.new("RGB", (VOS_W, VOS_H), (1, 0, 0)).save(path)


def _small_mask(path):
    _palette_png(np.ones((VOS_H // 2, VOS_W // 2), np.uint8), path)


def _empty_masks(root):
    for path in (root / "Annotations" / "v2").iterdir():
        _palette_png(np.zeros((VOS_H, VOS_W), np.uint8), path)


def _meta_with(root, change):
    meta = _vos_meta()
    change(meta["videos"])
    (root / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("break_it, message, when", [
    (lambda r: _drop(r / "Annotations/v1/00005.png"),
     r"video 'v1' has 3 frames in \S+JPEGImages/v1 but 2 masks in \S+Annotations/v1.*frames without a mask: "
     r"\S+JPEGImages/v1/00005.jpg \(expected \S+Annotations/v1/00005.png\)", "open"),
    (lambda r: _palette_png(np.zeros((VOS_H, VOS_W), np.uint8), r / "Annotations/v2/00010.png"),
     r"video 'v2' has 2 frames .* but 3 masks .*masks without a frame: \S+Annotations/v2/00010.png", "open"),
    (lambda r: shutil.rmtree(r / "Annotations"), r"folder \S+Annotations does not exist", "open"),
    (lambda r: shutil.rmtree(r / "Annotations/v2"), r"masks of video 'v2': folder \S+Annotations/v2 does not exist", "open"),
    (_empty_masks, r"video 'v2' has no instances: every mask in \S+Annotations/v2 is empty", "open"),
    (lambda r: _meta_with(r, lambda v: v["v1"]["objects"].update({"4": {"frames": []}})),
     r"instance 4 of video 'v1' is empty everywhere: \S+meta.json lists no frame for it", "open"),
    (lambda r: _meta_with(r, lambda v: v["v2"].update({"objects": {}})),
     r"video 'v2' has no instances in \S+meta.json", "open"),
    (lambda r: _meta_with(r, lambda v: v["v2"]["objects"]["3"]["frames"].append("00099")),
     r"meta.json lists frames \['00099'\] for instance 3 of video 'v2', but \S+JPEGImages/v2 has no such frame", "open"),
    (lambda r: _meta_with(r, lambda v: v["v1"]["objects"]["2"]["frames"].append("00005")),
     r"instance 2 is empty in \S+Annotations/v1/00005.png, but \S+meta.json lists frame '00005' for it", "read"),
    (lambda r: _garbage(r / "JPEGImages/v1/00000.jpg"),
     r"cannot read image \S+JPEGImages/v1/00000.jpg .*expected a readable JPEG or PNG", "read"),
    (lambda r: _rgb_mask(r / "Annotations/v2/00000.png"),
     r"mask \S+Annotations/v2/00000.png is a RGB image; expected a palette \(P\) or greyscale \(L\) PNG", "open"),
    (lambda r: _small_mask(r / "Annotations/v1/00010.png"),
     r"\S+Annotations/v1/00010.png is 10x8 px but its image \S+JPEGImages/v1/00010.jpg is 20x16 px", "read"),
])
def test_video_segmentation_bad_layouts_name_the_files(tmp_path, break_it, message, when):
    root = _write_vos(tmp_path)
    break_it(root)
    if when == "open":
        with pytest.raises(ValueError, match=message):
            open_source({"kind": "video_segmentation", "root": str(root)})
        return
    source = open_source({"kind": "video_segmentation", "root": str(root)})
    with pytest.raises(ValueError, match=message):
        for index in range(len(source)):
            source[index]


# ---------------------------------------------------------------------------------------------
# Multi-view objects

MV_H, MV_W = 12, 16


def _mv_view(index: int) -> tuple[np.ndarray, np.ndarray]:
    """A view of the object: a square that moves with the view index, on a per-view background."""
    rgb = np.full((MV_H, MV_W, 3), (30 + 40 * index, 90, 160), np.uint8)
    mask = np.zeros((MV_H, MV_W), bool)
    mask[3:9, 2 + 2 * index:8 + 2 * index] = True
    rgb[mask] = (250, 200, 20)
    return rgb, mask


def _mv_camera(index: int) -> dict:
    return {"K": A.intrinsics_from_focal(MV_H, MV_W, 20.0),
            "world_to_camera": A.world_to_camera_look_at((3.0 * np.cos(index), 3.0 * np.sin(index), 1.0), (0, 0, 0))}


def _write_multiview(root):
    (root / "mug").mkdir(parents=True)
    for i in range(3):  # RGBA views
        rgb, mask = _mv_view(i)
        Image.fromarray(np.dstack([rgb, mask.astype(np.uint8) * 255])).save(root / "mug" / f"view_{i:02d}.png")
    (root / "shoe").mkdir()
    for i in range(2):  # image + mask files, with cameras
        rgb, mask = _mv_view(i)
        Image.fromarray(rgb).save(root / "shoe" / f"view_{i:02d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "shoe" / f"view_{i:02d}_mask.png")
    (root / "shoe" / "cameras.json").write_text(json.dumps({f"view_{i:02d}": _mv_camera(i) for i in range(2)}))
    return root


def test_multiview_pairs_two_views_of_one_object(tmp_path):
    source = open_source({"kind": "multiview", "root": str(_write_multiview(tmp_path))})
    assert len(source) == 3 * 2 + 2 * 1
    seen = set()
    for index in range(len(source)):
        pair = source[index]
        name, views = pair.extras["object"], pair.extras["views"]
        seen.add((name, views))
        assert pair.object_id == 1
        for view, frame in zip(views, (pair.source, pair.target)):
            rgb, mask = _mv_view(int(view[-2:]))
            assert torch.equal(frame.image, torch.from_numpy(rgb).permute(2, 0, 1) / 255)
            assert frame.instance_ids == (1,) and torch.equal(frame.masks[0], torch.from_numpy(mask))
            if name == "shoe":
                camera = _mv_camera(int(view[-2:]))
                assert frame.camera == A.Camera(camera["K"], camera["world_to_camera"], (MV_H, MV_W))
            else:
                assert frame.camera is None
    assert seen == {("mug", (f"view_0{a}", f"view_0{b}")) for a in range(3) for b in range(3) if a != b} | \
        {("shoe", ("view_00", "view_01")), ("shoe", ("view_01", "view_00"))}


def _write_json(path, value):
    path.write_text(json.dumps(value))


def _bad_rotation(root):
    cameras = json.loads((root / "shoe/cameras.json").read_text())
    cameras["view_01"]["world_to_camera"][0][0] = 2.0
    _write_json(root / "shoe/cameras.json", cameras)


@pytest.mark.parametrize("break_it, message, when", [
    (lambda r: [(r / "mug" / f"view_0{i}.png").unlink() for i in (1, 2)], r"object \S+mug has 1 view\(s\)", "open"),
    (lambda r: Image.new("RGB", (MV_W, MV_H)).save(r / "mug/view_03.png"),
     r"views without a mask: \S+mug/view_03.png; give each an alpha channel or a <view>_mask.png", "open"),
    (lambda r: Image.new("L", (MV_W, MV_H)).save(r / "shoe/view_07_mask.png"),
     r"masks without a view: \S+shoe/view_07_mask.png", "open"),
    (lambda r: _write_json(r / "shoe/cameras.json", {"view_00": _mv_camera(0)}),
     r"\S+shoe/cameras.json must hold one camera per view .*views without a camera: \['view_01'\]", "open"),
    (_bad_rotation, r"\S+shoe/cameras.json: camera 'view_01': camera world_to_camera's 3x3 part must be a rotation", "open"),
    (lambda r: Image.new("L", (MV_W, MV_H)).save(r / "shoe/view_01_mask.png"),
     r"the object's mask is empty in \S+shoe/view_01_mask.png", "read"),
    (lambda r: Image.new("L", (MV_W // 2, MV_H)).save(r / "shoe/view_00_mask.png"),
     r"\S+shoe/view_00_mask.png is 8x12 px but its image \S+shoe/view_00.png is 16x12 px", "read"),
    (lambda r: (r / "mug/view_02.png").write_bytes(b"\x89PNG\r\n\x1a\n broken"),
     r"cannot read image \S+mug/view_02.png", "open"),
])
def test_multiview_bad_layouts_name_the_files(tmp_path, break_it, message, when):
    root = _write_multiview(tmp_path)
    break_it(root)
    if when == "open":
        with pytest.raises(ValueError, match=message):
            open_source({"kind": "multiview", "root": str(root)})
        return
    source = open_source({"kind": "multiview", "root": str(root)})
    with pytest.raises(ValueError, match=message):
        for index in range(len(source)):
            source[index]
