"""Training data sources: the renderer as a source of paired frames, and the on-disk dataset layouts."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from diorama.ops import assets as A
from diorama.ops.keypoints import COCO17
from diorama.training.data.box_video import convert_movi
from diorama.training.data.rendered import HUE_WORDS
from diorama.training.data.stick_figure import POSES, random_figure
from diorama.training.data.sources import open_source
from neural_assets_scenes import load_scene, scene_camera, scene_objects

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
    threads = torch.get_num_threads()
    for index in (7, 0):  # out of order: a pair does not depend on which were drawn before
        assert all(torch.equal(a, b) for a, b in zip(_frame_tensors(again[index]), _frame_tensors(rendered[index])))
        assert again[index].target.boxes3d == rendered[index].target.boxes3d
        assert again[index].target.camera == rendered[index].target.camera
    assert torch.get_num_threads() == threads, "rendering on one thread must not change the caller's setting"
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


@pytest.fixture(scope="module")
def rendered_people():
    source = open_source({"kind": "rendered", "count": 6, "size": 96, "seed": 5, "people": 1.0})
    return [source[i] for i in range(len(source))]


@pytest.mark.parametrize("pairs", ["rendered", "rendered_people"])
def test_rendered_boxes_cameras_and_depth_agree(pairs, request):
    """Depth back-projected through the stated camera lands on the stated 3D box (or the ground at z = 0),
    and each frame's 2D box is its mask's extent."""
    for pair in request.getfixturevalue(pairs):
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
            h, w = mask.shape
            assert asset.source_box == pytest.approx((int(ys.min()) / h, int(xs.min()) / w, (int(ys.max()) + 1) / h,
                                                      (int(xs.max()) + 1) / w))
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


def test_rendered_clean_plate_removes_the_object_and_its_shadow(rendered):
    shadowed = 0
    for pair in rendered:
        outside = ~pair.target.mask_of(pair.object_id)
        plate, image = pair.target.clean_plate[:, outside], pair.target.image[:, outside]
        # Outside the object only its shadow goes: pixels get brighter or stay exactly as they were.
        assert bool((plate >= image).all())
        shadowed += int((plate > image).any(0).sum()) > 0
        inside = ~outside
        assert float((pair.target.clean_plate[:, inside] - pair.target.image[:, inside]).abs().amax(0).mean()) > 0.02
    assert shadowed >= len(rendered) // 2, "most objects cast a visible shadow"
    unshadowed = open_source({"kind": "rendered", "count": 1, "size": SIZE, "seed": 3, "shadows": False})[0]
    outside = ~unshadowed.target.mask_of(unshadowed.object_id)
    assert torch.equal(unshadowed.target.clean_plate[:, outside], unshadowed.target.image[:, outside])


def test_rendered_objects_are_sometimes_partly_occluded(rendered):
    fractions = [pair.extras["target_visible_fraction"] for pair in rendered]
    assert all(0 < f <= 1 for f in fractions)
    assert any(f < 0.9 for f in fractions) and any(f == 1.0 for f in fractions)
    for pair in rendered:
        visible = int(pair.target.mask_of(pair.object_id).sum())
        others = pair.target.masks.any(0) & ~pair.target.mask_of(pair.object_id)
        if pair.extras["target_visible_fraction"] < 1:
            assert visible > 0 and bool(others.any()), "what hides the object is another object"


def test_rendered_names_say_shape_and_colour(rendered):
    checked = 0
    for pair in rendered:
        names = pair.extras["names"]
        assert sorted(names) == list(pair.target.instance_ids)
        for k, instance in enumerate(pair.target.instance_ids):
            colour, shape = names[instance].split()
            asset = pair.target.boxes3d[k]
            is_ball = len(set(asset.size)) == 1  # a ball's box is a cube; boxes have three random sides
            assert shape == ("ball" if is_ball else "box")
            mask = pair.target.masks[k]
            if colour in ("red", "green", "blue") and int(mask.sum()) >= 20:
                # The lit colour's strongest channel is the one the name says.
                assert int(pair.target.image[:, mask].mean(1).argmax()) == ("red", "green", "blue").index(colour)
                checked += 1
    assert checked >= 3


def test_rendered_people_have_keypoints_on_their_silhouette_and_a_caption(rendered_people):
    on_body = 0
    for pair in rendered_people:
        assert pair.object_id == 1 and pair.extras["names"][1] == "person"
        assert pair.keypoints.shape == (17, 3)
        colour, pose = pair.caption.removeprefix("a person in ").split(" ", 1)
        assert colour in {word for _, word in HUE_WORDS} | {"grey"} and pose in {p for _, p in POSES}
        mask = pair.target.mask_of(1)
        for (x, y, v), hidden in zip(pair.keypoints.tolist(), pair.extras["keypoints_occluded"]):
            if v == 0:
                assert (x, y) == (0.0, 0.0)
                continue
            assert 0 <= x < 96 and 0 <= y < 96
            near = mask[max(0, int(y) - 1):int(y) + 2, max(0, int(x) - 1):int(x) + 2]
            if not hidden:  # a joint nothing hides lies on the drawn body (within a pixel: limbs are thin)
                assert bool(near.any()), f"{pair.origin}: keypoint ({x:.1f}, {y:.1f}) off the person"
                on_body += 1
    assert on_body >= 6 * 12


def test_stick_figure_left_is_the_persons_left():
    import random as stdlib_random
    for seed in range(10):
        figure = random_figure(stdlib_random.Random(seed), 1, 0.0, 0.0, (1, 0, 0), (1, 1, 1))
        j = dict(zip(COCO17, figure.joints))
        facing = j["nose"] - (j["left_ear"] + j["right_ear"]) / 2
        left = torch.linalg.cross(torch.tensor((0.0, 0.0, 1.0), dtype=torch.float64), facing)  # z up × forward
        assert float((j["left_shoulder"] - j["right_shoulder"]) @ left) > 0
        for side in ("left", "right"):
            raised = float(j[f"{side}_wrist"][2]) > float(j[f"{side}_shoulder"][2])
            assert raised == (f"raising the {side} arm" in figure.pose or figure.pose == "raising both arms")
        assert float(figure.joints[:, 2].min()) > 0, "the figure stands on the ground, not in it"


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
    ({"kind": "rendered", "count": 2, "shadows": "yes"}, "shadows must be true or false"),
    ({"kind": "rendered", "count": 2, "people": 1.5}, r"people must be a probability in 0..1, got 1.5"),
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
        assert pair.extras.get("names") == ({i: f"thing{i}" for i in pair.source.instance_ids} if with_meta else None)
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


# ---------------------------------------------------------------------------------------------
# 3D-box video and the Kubric/MOVi converter


def _movi_scene(number: int) -> dict:
    """A Neural Assets golden scene as MOVi's per-scene arrays (tfds keys, flattened as in an .npz)."""
    scene = load_scene(number)
    return {"video": np.round(scene["in_image"] * 255).astype(np.uint8),
            "segmentations": scene["in_segmentation"][..., None].astype(np.uint8),
            "camera/focal_length": scene["in_focal_length_mm"], "camera/sensor_width": scene["in_sensor_width_mm"],
            "camera/positions": scene["in_cam_position"], "camera/quaternions": scene["in_cam_quat_blender"],
            "instances/bboxes_3d": scene["in_obj_corners_world"].transpose(1, 0, 2, 3)}


def test_movi_converter_round_trips_scene1_boxes_and_cameras(tmp_path):
    scene = load_scene(1)
    folder = convert_movi(_movi_scene(1), tmp_path, "scene1")
    assert folder == tmp_path / "scene1"
    source = open_source({"kind": "box_video", "root": str(tmp_path)})
    assert len(source) == 2  # one object, visible in both frames: both orders
    pair = source[0]
    assert pair.extras["frames"] == ("00000", "00001") and pair.extras["masks"] == "instance masks"
    for t, frame in enumerate((pair.source, pair.target)):
        # ops.assets' own reading of the same scene (tests/neural_assets_scenes.py).
        expected_camera = scene_camera(scene, t)
        assert frame.camera.intrinsics == expected_camera.intrinsics and frame.camera.image_hw == (256, 256)
        torch.testing.assert_close(torch.tensor(frame.camera.world_to_camera),
                                   torch.tensor(expected_camera.world_to_camera), atol=1e-9, rtol=0)
        for got, want in zip(frame.boxes3d, scene_objects(scene, t)):
            for field in ("centre", "size", "rotation"):
                torch.testing.assert_close(torch.tensor(getattr(got, field)), torch.tensor(getattr(want, field)),
                                           atol=1e-9, rtol=0)
        # The reference's 2D boxes and 12-number pose rows (golden outputs of its own code).
        n = len(frame.boxes3d)
        torch.testing.assert_close(torch.tensor([a.source_box for a in frame.boxes3d], dtype=torch.float32),
                                   torch.from_numpy(scene["out_bboxes2d"][t, :n]))
        pose = scene["out_pose12_src_objects" if t == 0 else "out_pose12_tgt_objects"][:n]
        torch.testing.assert_close(A.object_corner_rows(frame.boxes3d, frame.camera).float(), torch.from_numpy(pose),
                                   atol=1e-5, rtol=1e-5)
        assert torch.equal(frame.image, torch.from_numpy(scene["in_image"][t]).permute(2, 0, 1))
        assert torch.equal(frame.masks, torch.from_numpy(scene["in_segmentation"][t] == 1)[None])
        assert frame.depth is None


def test_movi_converter_turns_distance_into_z_depth(tmp_path):
    movi = _movi_scene(2)
    k = load_scene(2)["in_k_pix"]
    # A wall 5 m in front of the camera: Kubric stores the distance to the camera centre, which grows
    # towards the corners as |K⁻¹(u, v, 1)|; the layout stores z = 5 everywhere.
    v, u = np.meshgrid(np.arange(256) + 0.5, np.arange(256) + 0.5, indexing="ij")
    ray = np.sqrt(((u - k[0, 2]) / k[0, 0]) ** 2 + ((v - k[1, 2]) / k[1, 1]) ** 2 + 1)
    movi["depth"] = np.stack([5.0 * ray, 7.0 * ray])[..., None].astype(np.float32)
    convert_movi(movi, tmp_path, "floats")
    encoded = dict(movi, **{"depth": np.round((movi["depth"] - 4.0) / 6.0 * 65535).astype(np.uint16),
                            "metadata/depth_range": np.array([4.0, 10.0])})
    convert_movi(encoded, tmp_path, "uint16")
    source = open_source({"kind": "box_video", "root": str(tmp_path), "videos": ["floats", "uint16"]})
    for index, tolerance in ((0, 1e-5), (len(source) // 2, 1e-3)):
        pair = source[index]
        assert pair.extras["frames"][0] == "00000"
        torch.testing.assert_close(pair.source.depth, torch.full((256, 256), 5.0), atol=tolerance, rtol=0)
        torch.testing.assert_close(pair.target.depth, torch.full((256, 256), 7.0), atol=tolerance, rtol=0)


def _box_video(root, with_masks: bool):
    """Two frames of a 1 m cube and a sphere-ish second box seen by a camera moving sideways."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "v" / "frames").mkdir(parents=True)
    frames = {}
    for t in range(2):
        name = f"{t:05d}"
        Image.new("RGB", (40, 30), (100, 100, 100)).save(root / "v" / "frames" / f"{name}.png")
        frames[name] = {"camera": {"K": A.intrinsics_from_focal(30, 40, 30.0),
                                   "world_to_camera": A.world_to_camera_look_at((0.5 * t, -6.0, 1.5), (0, 0, 0.5))},
                        "objects": [{"instance": 2, "centre": [1.0, 0.5, 0.4], "size": [0.8, 0.8, 0.8],
                                     "rotation": np.eye(3).tolist(), "name": "green crate"},
                                    {"instance": 1, "centre": [0.0, 0.0, 0.5], "size": [1.0, 1.0, 1.0],
                                     "rotation": A.rotation_from_ypr(0.3 * t, 0, 0).tolist()}]}
        if with_masks:
            (root / "v" / "masks").mkdir(exist_ok=True)
            ids = np.zeros((30, 40), np.uint8)
            ids[5:15, 5:15] = 1
            if t == 0:
                ids[20:25, 20:30] = 2
            Image.fromarray(ids, mode="L").save(root / "v" / "masks" / f"{name}.png")
    (root / "v" / "boxes.json").write_text(json.dumps({"frames": frames}))
    return root


def test_box_video_without_masks_uses_projected_boxes(tmp_path):
    source = open_source({"kind": "box_video", "root": str(_box_video(tmp_path, with_masks=False))})
    assert len(source) == 4  # two instances, every frame: 2 orders each
    pair = source[0]
    assert pair.object_id == 1 and pair.extras["masks"] == "projected boxes"
    assert pair.extras["names"] == {2: "green crate"}
    assert pair.target.instance_ids == (1, 2)  # sorted by id, boxes in the same order
    assert pair.target.boxes3d[0].size == (1.0, 1.0, 1.0)
    frame = pair.target
    for k, asset in enumerate(frame.boxes3d):
        # Pinhole projection of the corners, written out here: the mask is the rectangle they span.
        pose = torch.tensor(frame.camera.world_to_camera, dtype=torch.float64)
        corners = A.box_corners(asset) @ pose[:3, :3].T + pose[:3, 3]
        u = 30.0 * corners[:, 0] / corners[:, 2] + 20.0
        v = 30.0 * corners[:, 1] / corners[:, 2] + 15.0
        ys, xs = torch.nonzero(frame.masks[k], as_tuple=True)
        assert abs(int(xs.min()) - float(u.min())) <= 0.5 and abs(int(xs.max()) + 1 - float(u.max())) <= 0.5
        assert abs(int(ys.min()) - float(v.min())) <= 0.5 and abs(int(ys.max()) + 1 - float(v.max())) <= 0.5
        assert asset.source_box == pytest.approx((int(ys.min()) / 30, int(xs.min()) / 40,
                                                  (int(ys.max()) + 1) / 30, (int(xs.max()) + 1) / 40))


def test_box_video_with_masks_pairs_only_frames_showing_the_instance(tmp_path):
    source = open_source({"kind": "box_video", "root": str(_box_video(tmp_path, with_masks=True))})
    assert len(source) == 2 and {source[i].object_id for i in range(2)} == {1}  # instance 2 is visible once
    frame = source[1].source
    assert frame.boxes3d[0].source_box == (5 / 30, 5 / 40, 15 / 30, 15 / 40)
    assert frame.boxes3d[1].source_box == (0.0, 0.0, 0.0, 0.0)  # instance 2 hidden in frame 1


def _edit_boxes(root, change):
    path = root / "v" / "boxes.json"
    described = json.loads(path.read_text())
    change(described["frames"])
    path.write_text(json.dumps(described))


@pytest.mark.parametrize("break_it, message, when", [
    (lambda r: (r / "v/boxes.json").unlink(), r"3D-box video 'v' has no \S+v/boxes.json", "open"),
    (lambda r: _edit_boxes(r, lambda f: f.pop("00001")),
     r"\S+boxes.json must describe every frame of \S+v/frames; frames without boxes: \['\S+v/frames/00001.png'\]", "open"),
    (lambda r: _edit_boxes(r, lambda f: f["00001"]["objects"].pop()),
     r"\S+boxes.json: frame '00001' lists instances \[2\] but frame '00000' lists \[1, 2\]", "open"),
    (lambda r: _edit_boxes(r, lambda f: f["00000"]["objects"][1].update(rotation=[[1, 0, 0], [0, 1, 0], [0, 0, 2]])),
     r"\S+boxes.json: frame '00000', instance 1: rotation must be a rotation", "open"),
    (lambda r: _edit_boxes(r, lambda f: f["00000"]["objects"][1].update(size=[1, 0, 1])),
     r"\S+boxes.json: frame '00000', instance 1: size must be > 0", "open"),
    (lambda r: _edit_boxes(r, lambda f: f["00001"].pop("camera")), r"frame '00001' needs 'camera'", "open"),
    (lambda r: (r / "v/masks/00001.png").unlink(),
     r"\S+v/masks must hold one mask per frame \(2 frames, 1 files\); frames without one: \['\S+v/masks/00001.png'\]", "open"),
    (lambda r: [(r / "v/depth").mkdir(), [np.save(r / f"v/depth/0000{t}.npy", np.ones((3, 3), np.float32)) for t in (0, 1)]],
     r"depth map \S+v/depth/0000[01].npy is float32 \(3, 3\); expected float \[30, 40\]", "read"),
])
def test_box_video_bad_layouts_name_the_files(tmp_path, break_it, message, when):
    root = _box_video(tmp_path, with_masks=True)
    break_it(root)
    if when == "open":
        with pytest.raises(ValueError, match=message):
            open_source({"kind": "box_video", "root": str(root)})
        return
    source = open_source({"kind": "box_video", "root": str(root)})
    with pytest.raises(ValueError, match=message):
        source[0]


def test_box_from_corners_and_quaternions_invert_ops_assets():
    scene = load_scene(2)
    for t in range(2):
        # Kubric's camera quaternion → the reference's camera → world matrix (golden input of the scene file).
        torch.testing.assert_close(A.rotation_from_quaternion(scene["in_cam_quat_blender"][t]),
                                   torch.from_numpy(scene["in_cam2world_blender"][t, :3, :3]), atol=1e-12, rtol=0)
        for i in range(scene["in_obj_size"].shape[0]):
            centre, size, rotation = A.box_from_corners(scene["in_obj_corners_world"][t, i])
            torch.testing.assert_close(centre, torch.from_numpy(scene["in_obj_center_world"][t, i]), atol=1e-12, rtol=0)
            torch.testing.assert_close(size, torch.from_numpy(scene["in_obj_size"][i]), atol=1e-12, rtol=0)
            torch.testing.assert_close(rotation, A.rotation_from_ypr(*scene["in_obj_ypr"][t, i]), atol=1e-12, rtol=0)
    # A quarter turn about z, closed form.
    half = math.sqrt(0.5)
    torch.testing.assert_close(A.rotation_from_quaternion((half, 0, 0, half)),
                               torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="mirrored"):
        A.box_from_corners(scene["in_obj_corners_world"][0, 0] * np.array([1.0, 1.0, -1.0]))  # reflected in z = 0


def test_movi_converter_command_line(tmp_path):
    from diorama.training.data.box_video import main
    np.savez(tmp_path / "scene2.npz", **_movi_scene(2))
    main([str(tmp_path / "scene2.npz"), "--out", str(tmp_path / "dataset")])
    source = open_source({"kind": "box_video", "root": str(tmp_path / "dataset")})
    assert {source[i].extras["video"] for i in range(len(source))} == {"scene2"}
    assert {source[i].object_id for i in range(len(source))} == {1, 2}


@pytest.mark.parametrize("kind, option", [("video_segmentation", "videos"), ("multiview", "objects"), ("box_video", "videos")])
def test_folder_choice_must_be_a_list_of_names(tmp_path, kind, option):
    with pytest.raises(ValueError, match=rf"{option} must be a list of folder names in \S+, got 'v1'"):
        open_source({"kind": kind, "root": str(_write_vos(tmp_path) if kind == "video_segmentation" else tmp_path),
                     option: "v1"})


def test_video_segmentation_davis_folders(tmp_path):
    _write_vos(tmp_path / "vos")
    for sub in ("JPEGImages", "Annotations"):  # DAVIS: one more level, the resolution
        (tmp_path / "davis" / sub).mkdir(parents=True)
        shutil.move(tmp_path / "vos" / sub, tmp_path / "davis" / sub / "480p")
    source = open_source({"kind": "video_segmentation", "root": str(tmp_path / "davis"),
                          "images": "JPEGImages/480p", "annotations": "Annotations/480p"})
    assert len(source) == 10 and "JPEGImages/480p/v1" in source[0].origin
    with pytest.raises(ValueError, match=r"folder \S+davis/JPEGImages/v1 does not exist"):
        open_source({"kind": "video_segmentation", "root": str(tmp_path / "davis"), "videos": ["v1"]})
