"""Training data sources: the renderer as a source of paired frames, and the on-disk dataset layouts."""
from __future__ import annotations

import pytest
import torch

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
