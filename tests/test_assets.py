"""Neural Assets geometry against the reference's goldens (scenes 1-2), closed forms and hand-made
cases for the rules the held-back scenes check (behind the camera, straddling its plane, fx != fy,
crossing the border), and lifting rendered boxes back to 3D."""
import math

import numpy as np
import pytest
import torch
from neural_assets_scenes import SLOTS, load_scene, scene_assets, scene_camera, scene_objects

from diorama.ops import assets as A
from diorama.ops import bundled_scene
from diorama.ops.asset_lifting import lift_masks, lift_mask_in_camera, lifting_camera
from diorama.ops.asset_preview import EDGES, draw_assets
from diorama.ops.depth_map import DepthMap
from diorama.ops.render import Box, render

TOLERANCE = 1e-4


def close(actual: torch.Tensor, expected: np.ndarray, tolerance: float = TOLERANCE) -> None:
    np.testing.assert_allclose(actual.detach().numpy().astype(np.float64), expected.astype(np.float64),
                               rtol=0, atol=tolerance)


@pytest.fixture(scope="module", params=[1, 2], ids=["scene1", "scene2"])
def scene(request):
    return load_scene(request.param)


@pytest.mark.parametrize("frame", [0, 1])
def test_corners_quaternions_and_box_vectors(scene, frame):
    camera, objects = scene_camera(scene, frame), scene_objects(scene, frame)
    close(torch.stack([A.box_corners(o) for o in objects]), scene["in_obj_corners_world"][frame])
    close(torch.stack([A.to_blender_camera(A.box_corners(o), camera) for o in objects]), scene["out_corners_cam_blender"][frame])
    close(torch.stack([A.quaternion_from_rotation(o.rotation) for o in objects]), scene["in_obj_quat_world"][frame])
    close(torch.stack([A.quaternion_in_blender_camera(o, camera) for o in objects]), scene["out_quat_cam_blender"][frame])
    close(A.box10_rows(objects, camera, SLOTS), scene["out_box10_cam"][frame])


def test_cameras_in_reference_form(scene):
    for frame in (0, 1):
        camera = scene_camera(scene, frame)
        close(A.blender_camera_to_world(camera), scene["in_cam2world_blender"][frame], 1e-9)
        close(A.quaternion_from_rotation(A.blender_camera_to_world(camera)[:3, :3]), scene["in_cam_quat_blender"][frame], 1e-9)
        close(A.camera_position(camera), scene["in_cam_position"][frame], 1e-9)


@pytest.mark.parametrize("frame", [0, 1])
def test_boxes_from_segmentation(scene, frame):
    count = scene["in_obj_size"].shape[0]
    boxes = A.boxes_from_segmentation(torch.from_numpy(scene["in_segmentation"][frame]), count, SLOTS)
    close(boxes, scene["out_bboxes2d"][frame], 0)
    assert A.box_padding(boxes).tolist() == scene["out_bboxes2d_padding"][frame].tolist()


def test_pose_rows_per_frame_and_model_inputs(scene):
    close(A.padded_object_rows(scene_objects(scene, 0), scene_camera(scene, 0), SLOTS), scene["out_pose12_src_objects"])
    close(A.padded_object_rows(scene_objects(scene, 1), scene_camera(scene, 1), SLOTS), scene["out_pose12_tgt_objects"])
    assets = scene_assets(scene)
    close(A.pose_rows(assets, SLOTS), scene["out_pose12_tgt"])
    boxes = A.source_boxes(assets, SLOTS)
    close(boxes, scene["out_src_bboxes"], 0)
    assert A.box_padding(boxes).tolist() == scene["out_src_bboxes_padding"].tolist()
    assert A.pose_rows(assets, SLOTS).dtype == torch.float32 and boxes.dtype == torch.float32


def test_null_condition(scene):
    boxes, poses = A.null_condition(SLOTS)
    close(boxes, scene["out_cfg_null_src_bboxes"], 0)
    close(poses, scene["out_cfg_null_pose12_tgt"], 0)
    # The reference marks every slot of the null condition as real (its padding is all True).
    assert scene["out_cfg_null_src_bboxes_padding"].all()


def test_more_objects_than_slots_is_refused():
    assets = scene_assets(load_scene(2))
    with pytest.raises(ValueError, match="2 objects but the model has only 1 object slots"):
        A.pose_rows(assets, 1)
    with pytest.raises(ValueError, match="2 objects but the model has only 1"):
        A.source_boxes(assets, 1)


# ---------------------------------------------------------------------------------------------
# Closed forms and hand-made cases (independent of the goldens)


def identity_camera(fx=200.0, fy=200.0, cx=64.0, cy=48.0, hw=(96, 128)) -> A.Camera:
    """World = OpenCV camera frame."""
    return A.Camera(((fx, 0, cx), (0, fy, cy), (0, 0, 1)), tuple(map(tuple, np.eye(4).tolist())), hw)


def unit_asset(centre, size=(1.0, 2.0, 3.0), rotation=np.eye(3)) -> A.Asset:
    return A.Asset(centre, size, np.asarray(rotation).tolist(), (0, 0, 0, 0))


def test_quarter_turn_about_the_vertical_permutes_the_corners():
    # Rz(90°) maps local (x, y, z) to world (−y, x, z): the corner with local signs (sx, sy, sz)
    # lands where the unrotated box (sizes swapped in x/y) has its corner (−sy, sx, sz).
    size = (1.0, 2.0, 3.0)
    turned = A.Asset((0.5, -1.0, 2.0), size, A.rotation_from_ypr(math.pi / 2, 0, 0).tolist(), (0, 0, 0, 0))
    straight = A.Asset((0.5, -1.0, 2.0), (2.0, 1.0, 3.0), np.eye(3).tolist(), (0, 0, 0, 0))
    signs = A.CORNER_SIGNS
    permutation = [signs.index((-sy, sx, sz)) for sx, sy, sz in signs]
    assert permutation == [4, 5, 0, 1, 6, 7, 2, 3]
    torch.testing.assert_close(A.box_corners(turned), A.box_corners(straight)[permutation], atol=1e-12, rtol=0)


def test_ypr_round_trip_and_convention():
    yaw, pitch, roll = 0.3, -0.4, 1.1
    r = A.rotation_from_ypr(yaw, pitch, roll)
    assert A.ypr_from_rotation(r) == pytest.approx((yaw, pitch, roll), abs=1e-12)
    # Yaw alone turns world x towards world y (counter-clockwise seen from above, z up).
    torch.testing.assert_close(A.rotation_from_ypr(math.pi / 2, 0, 0) @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                               torch.tensor([0.0, 1, 0], dtype=torch.float64), atol=1e-12, rtol=0)


def numpy_projection(points, fx, fy, cx, cy, hw):
    """Direct OpenCV pinhole with the reference's +1e-6 on the depth, written independently."""
    p = np.asarray(points, dtype=np.float64)
    z = p[:, 2]
    return np.stack(((fx * p[:, 0] + cx * z) / ((z + 1e-6) * hw[1]), (fy * p[:, 1] + cy * z) / ((z + 1e-6) * hw[0]), z), 1)


def test_unequal_focal_lengths_and_off_centre_principal_point():
    camera = identity_camera(fx=300, fy=270, cx=120, cy=140, hw=(256, 256))
    points = [[0.3, -0.2, 4.0], [-1.0, 0.5, 7.5], [2.0, 1.0, 3.0], [0.0, 0.0, 1.0]]
    np.testing.assert_allclose(A.project(torch.tensor(points, dtype=torch.float64), camera).numpy(),
                               numpy_projection(points, 300, 270, 120, 140, (256, 256)), rtol=1e-12, atol=0)
    # The optical axis projects to the principal point (cx/W, cy/H), shrunk by Z/(Z + 1e-6) as the
    # reference's arithmetic does.
    uvd = A.project(torch.tensor([[0.0, 0.0, 5.0]], dtype=torch.float64), camera)[0]
    assert uvd[:2].tolist() == pytest.approx([120 / 256 * 5 / (5 + 1e-6), 140 / 256 * 5 / (5 + 1e-6)], abs=1e-12)


def test_behind_the_camera_reflects_through_the_principal_point():
    camera = identity_camera()
    cx, cy = 64 / 128, 48 / 96
    front = A.project(torch.tensor([[0.5, 0.25, 2.0]], dtype=torch.float64), camera)[0].tolist()
    behind = A.project(torch.tensor([[0.5, 0.25, -2.0]], dtype=torch.float64), camera)[0].tolist()
    assert behind[2] == -2.0  # d is the signed z-depth, not dropped
    assert (behind[0] - cx) == pytest.approx(-(front[0] - cx), rel=1e-5)
    assert (behind[1] - cy) == pytest.approx(-(front[1] - cy), rel=1e-5)
    # A whole object behind the camera keeps its pose row (computed, not zeroed).
    assets = A.Assets((unit_asset((0.0, 0.0, -6.0)),), camera, camera)
    row = A.pose_rows(assets, 2)[0]
    assert bool(torch.isfinite(row).all()) and bool((row[2::3] < 0).all()) and bool((row != 0).all())


def test_straddling_the_camera_plane_is_finite_and_huge():
    camera = identity_camera()
    # A box whose corners sit at z = ±1e-4: the projection explodes but stays finite, signs reflect.
    asset = A.Asset((0.4, 0.2, 0.0), (0.2, 0.2, 2e-4), np.eye(3).tolist(), (0, 0, 0, 0))
    row = A.pose_rows(A.Assets((asset,), camera, camera), 1)[0]
    assert bool(torch.isfinite(row).all())
    assert float(row[0::3].abs().max()) > 100  # u far outside [0, 1]
    expected = numpy_projection(A.box_corners(asset)[list(A.POSE_CORNERS)].numpy(), 200, 200, 64, 48, (96, 128))
    np.testing.assert_allclose(row.numpy(), expected.reshape(12).astype(np.float32), rtol=1e-6)


def test_crossing_the_border_is_not_clipped():
    camera = identity_camera()
    asset = unit_asset((1.5, 0.0, 4.0))  # its right half lies outside the image
    rows = A.pose_rows(A.Assets((asset,), camera, camera), 1)[0]
    u = rows[0::3]
    assert float(u.max()) > 1.0 and float(u.min()) < 1.0
    expected = numpy_projection(A.box_corners(asset)[list(A.POSE_CORNERS)].numpy(), 200, 200, 64, 48, (96, 128))
    np.testing.assert_allclose(rows.numpy(), expected.reshape(12).astype(np.float32), rtol=1e-6)


def test_invisible_object_gets_a_zero_box_but_keeps_its_pose_row():
    segmentation = torch.zeros(32, 32, dtype=torch.int32)
    segmentation[4:10, 20:31] = 2  # object 1 visible, object 0 not
    boxes = A.boxes_from_segmentation(segmentation, 2, 3)
    assert boxes[0].tolist() == [0, 0, 0, 0]
    assert boxes[1].tolist() == pytest.approx([4 / 32, 20 / 32, 10 / 32, 31 / 32])
    camera = identity_camera()
    assets = A.Assets((A.Asset((0, 0, 5), (1, 1, 1), np.eye(3).tolist(), tuple(boxes[0].tolist())),), camera, camera)
    assert bool((A.pose_rows(assets, 3)[0] != 0).all()) and A.source_boxes(assets, 3)[0].tolist() == [0, 0, 0, 0]


def test_relative_camera_row_is_identity_for_one_camera_and_matches_a_known_motion():
    camera = A.Camera(((100, 0, 50), (0, 100, 50), (0, 0, 1)), A.world_to_camera_from_ypr((0, 0, 1), 0, 0, 0), (100, 100))
    same = A.relative_camera_row(camera, camera)
    torch.testing.assert_close(same, torch.tensor([1., 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], dtype=torch.float64), atol=1e-12, rtol=0)
    # Target one unit to the camera's right: a source-camera point appears one unit further left.
    moved = A.move_camera(A.Assets((), camera, camera), (1.0, 0.0, 0.0), 0, 0, 0)
    row = A.relative_camera_row(camera, moved.target_camera)
    assert row[9:].tolist() == pytest.approx([-1.0, 0.0, 0.0], abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Edits


def two_object_scene() -> A.Assets:
    camera = A.Camera(((200, 0, 64), (0, 200, 48), (0, 0, 1)),
                      A.world_to_camera_look_at((0, -6, 2), (0, 0, 0.5)), (96, 128))
    objects = (A.Asset((0, 0, 0.5), (1, 1, 1), np.eye(3).tolist(), (0.3, 0.3, 0.6, 0.5)),
               A.Asset((1.5, 1, 0.4), (0.5, 0.8, 0.8), A.rotation_from_ypr(0.4, 0, 0).tolist(), (0.2, 0.6, 0.5, 0.9)))
    return A.Assets(objects, camera, camera)


def test_edits_change_only_their_object():
    scene = two_object_scene()
    before = A.pose_rows(scene, 4)
    for edited in (A.move_object(scene, 1, (0.5, 0, 0)), A.rotate_object(scene, 1, 0.7, 0.1, 0.0),
                   A.scale_object(scene, 1, 1.5)):
        after = A.pose_rows(edited, 4)
        torch.testing.assert_close(after[[0, 2, 3, 4]], before[[0, 2, 3, 4]], atol=0, rtol=0)
        assert not torch.equal(after[1], before[1])
        assert edited.objects[1].source_box == scene.objects[1].source_box


def test_rotate_keeps_the_centre_and_move_in_camera_axes_goes_away_from_the_viewer():
    scene = two_object_scene()
    rotated = A.rotate_object(scene, 0, math.pi / 2, 0, 0)
    assert rotated.objects[0].centre == scene.objects[0].centre
    # Rz(90°) applied to a box first turned by Rz(0.4) is the box turned by Rz(0.4 + 90°).
    twice = A.rotate_object(scene, 1, math.pi / 2, 0, 0).objects[1].rotation
    np.testing.assert_allclose(np.array(twice), A.rotation_from_ypr(0.4 + math.pi / 2, 0, 0).numpy(), atol=1e-12)
    before = A.to_camera(torch.tensor(scene.objects[0].centre, dtype=torch.float64), scene.target_camera)
    moved = A.move_object(scene, 0, (0, 0, 2.0), "camera")
    after = A.to_camera(torch.tensor(moved.objects[0].centre, dtype=torch.float64), scene.target_camera)
    torch.testing.assert_close(after - before, torch.tensor([0, 0, 2.0], dtype=torch.float64), atol=1e-12, rtol=0)


def test_remove_transfer_and_swap_background():
    scene = two_object_scene()
    removed = A.remove_object(scene, 0)
    assert removed.objects == scene.objects[1:]
    other = two_object_scene()
    image = torch.rand(96, 128, 3)
    moved_camera = A.move_camera(scene, (0, 0, 0), 0.3, 0, 0)
    transferred = A.transfer_object(moved_camera, other, 1, image)
    new = transferred.objects[-1]
    assert len(transferred.objects) == 3 and new.source == 1 and transferred.extra_sources[0] is image
    assert new.source_box == other.objects[1].source_box and new.size == other.objects[1].size
    # 'as seen by the camera': the object projects in the target camera where it was in the other source camera.
    close(A.object_corner_rows((new,), transferred.target_camera),
          A.object_corner_rows((other.objects[1],), other.source_camera).numpy(), 1e-9)
    same_world = A.transfer_object(scene, other, 1, image, "same world coordinates")
    assert same_world.objects[-1].centre == other.objects[1].centre
    # A second transfer of an object whose own appearance came from an extra source carries that image.
    again = A.transfer_object(scene, transferred, 2, torch.zeros(96, 128, 3))
    assert again.extra_sources[0] is image and again.objects[-1].source == 1
    swapped = A.swap_background_source(transferred, torch.ones(64, 64, 3))
    assert swapped.background_source == 2 and len(swapped.extra_sources) == 2


def test_bad_edits_say_what_is_wrong():
    scene = two_object_scene()
    with pytest.raises(ValueError, match=r"object index 2 is out of range; the scene has 2 object\(s\) \(valid: 0..1\)"):
        A.move_object(scene, 2, (1, 0, 0))
    with pytest.raises(ValueError, match="scale factors must be > 0"):
        A.scale_object(scene, 0, (1, 0, 1))
    with pytest.raises(ValueError, match="size must be > 0"):
        A.Asset((0, 0, 0), (1, 0, 1), np.eye(3).tolist(), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="NaN"):
        A.Asset((0, float("nan"), 0), (1, 1, 1), np.eye(3).tolist(), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="lies outside the image"):
        A.Asset((0, 0, 0), (1, 1, 1), np.eye(3).tolist(), (0.2, 0.2, 1.3, 0.5))
    with pytest.raises(ValueError, match="focal lengths must be > 0"):
        identity_camera(fx=0)
    with pytest.raises(ValueError, match="must be a rotation"):
        A.Asset((0, 0, 0), (1, 1, 1), [[1, 0, 0], [0, 2, 0], [0, 0, 1]], (0, 0, 0, 0))


# ---------------------------------------------------------------------------------------------
# Lifting and preview


@pytest.mark.parametrize("centre, size", [((1.5, 0.95, 5.0), (0.9, 1.1, 0.9)), ((-1.4, 0.9, 4.5), (1.0, 0.8, 0.9))])
def test_lifting_a_rendered_box_recovers_its_centre_and_size(centre, size):
    width, height = 512, 384
    render_camera = bundled_scene.camera(width, height)
    shot = render(render_camera, [Box(centre=centre, size=size, colour=(0.6, 0.5, 0.4), instance=3)])
    mask = (shot.instance == 3).float()
    # Background far away, as a depth model would see a wall: a mask bleeding onto it must not count.
    depth = torch.where(mask > 0, shot.depth, torch.full_like(shot.depth, 30.0))
    bled = mask.clone()
    bled[mask.nonzero()[:, 0].max() + 1, mask.nonzero()[:, 1].min():mask.nonzero()[:, 1].max()] = 1
    # A nearer occluder over a few of the object's pixels (another surface, 1.5 m in front).
    occluded = depth.clone()
    rows, cols = mask.nonzero()[:40].unbind(1)
    occluded[rows, cols] -= 1.5
    camera = lifting_camera(height, width, render_camera.fx)
    true_centre, true_size = torch.tensor(centre, dtype=torch.float64), torch.tensor(size, dtype=torch.float64)
    for m, d in ((mask, depth), (bled, depth), (mask, occluded)):
        lifted_centre, lifted_size = lift_mask_in_camera(m, d.double(), camera)
        assert float(((lifted_centre - true_centre).abs() / true_size).max()) < 0.02
        assert float(((lifted_size - true_size).abs() / true_size).max()) < 0.02
    # As an Asset in the lifted world (z up): local axes right, forward, up.
    asset = lift_masks(mask[None], DepthMap(depth[None], "metric"), camera)[0]
    camera_centre = A.to_camera(torch.tensor(asset.centre, dtype=torch.float64), camera)
    assert float(((camera_centre - true_centre).abs() / true_size).max()) < 0.02
    assert asset.size == pytest.approx((size[0], size[2], size[1]), rel=0.02)
    np.testing.assert_allclose(np.array(asset.rotation), np.eye(3), atol=1e-12)


def test_lifting_refuses_disparity():
    camera = lifting_camera(32, 32, 30.0)
    with pytest.raises(ValueError, match="'disparity' depth; lifting boxes to 3D needs metric depth"):
        lift_masks(torch.ones(1, 32, 32), DepthMap(torch.ones(1, 32, 32), "disparity"), camera)


def test_preview_draws_twelve_edges_and_skips_corners_behind_the_camera():
    assert len(EDGES) == 12 and all(bin(a ^ b).count("1") == 1 for a, b in EDGES)
    camera = identity_camera()
    image = torch.zeros(1, 96, 128, 3)
    front = A.Assets((unit_asset((0.0, 0.0, 8.0), (1, 1, 1)),), camera, camera)
    drawn = draw_assets(image, front, camera)
    # The box's front face spans x in fx·(±0.5)/7.5 + cx = 64 ± 13.3 px: its outline is drawn there.
    assert float(drawn[0, 48, 50:52].sum()) > 0 and float(drawn[0, 48, 60:68].sum()) == 0
    behind = A.Assets((unit_asset((0.0, 0.0, -8.0), (1, 1, 1)),), camera, camera)
    assert float(draw_assets(image, behind, camera).sum()) == 0
    straddling = A.Assets((unit_asset((0.0, 0.0, 0.2), (1, 1, 1)),), camera, camera)
    assert bool(torch.isfinite(draw_assets(image, straddling, camera)).all())
