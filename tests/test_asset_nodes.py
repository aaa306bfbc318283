"""Asset nodes through ComfyUI's node classes: JSON and widget scenes reproduce the reference's
pose rows, edits touch only their object, lifting from rendered depth, and bad inputs fail clearly."""
import json
import math

import numpy as np
import pytest
import torch
from reference_data import reference_dir

from diorama.ops import assets as A
from diorama.ops.depth_map import DepthMap

SLOTS = 10


@pytest.fixture(scope="module")
def scene1():
    return dict(np.load(reference_dir("neural_assets") / "scene1.npz"))


def scene1_json(scene) -> str:
    """Scene 1 written as a user would: K, world_to_camera per camera, degrees, source box from its render."""
    segmentation = torch.from_numpy(scene["in_segmentation"][0])
    box = A.boxes_from_segmentation(segmentation, 1, 1)[0].double().tolist()

    def camera(frame):
        return {"image_size": [256, 256], "intrinsics": scene["in_k_pix"].tolist(),
                "world_to_camera": scene["in_world2cam_opencv"][frame].tolist()}
    return json.dumps({
        "camera": camera(0), "target_camera": camera(1),
        "objects": [{"centre": scene["in_obj_center_world"][1, 0].tolist(), "size": scene["in_obj_size"][0].tolist(),
                     "yaw_pitch_roll": [math.degrees(a) for a in scene["in_obj_ypr"][1, 0]], "source_box": box}],
    })


def test_json_scene_gives_the_reference_pose_rows(node_class, scene1):
    assets = node_class("DioramaAssetsFromJSON").execute(scene1_json(scene1)).result[0]
    np.testing.assert_allclose(A.pose_rows(assets, SLOTS).numpy(), scene1["out_pose12_tgt"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(A.source_boxes(assets, SLOTS).numpy(), scene1["out_src_bboxes"], atol=0, rtol=0)


def test_widget_camera_and_add_asset_chain(node_class):
    # A 256² camera with a 90° field of view 5 units behind the origin, looking along +y: a unit cube
    # at the origin has its near face (y = −0.5) at depth 4.5, centred in the image.
    scene = node_class("DioramaAssetsCamera").execute(256, 256, "field of view (deg)", 90.0, 1.0, -1.0, -1.0,
                                                      0.0, -5.0, 0.0, 0.0, 0.0, 0.0).result[0]
    camera = scene.source_camera
    assert camera.intrinsics[0] == pytest.approx((128.0, 0.0, 128.0)) and scene.objects == ()
    scene = node_class("DioramaAddAsset").execute(scene, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0.4, 0.4, 0.6, 0.6).result[0]
    rows = A.object_corner_rows(scene.objects, camera)[0]
    # p0 = (−0.5, −0.5, −0.5): X = −0.5 (left), Y = +0.5 (down), Z = 4.5.
    expected_u = (128 * -0.5 + 128 * 4.5) / (256 * (4.5 + 1e-6))
    expected_v = (128 * 0.5 + 128 * 4.5) / (256 * (4.5 + 1e-6))
    assert rows[:3].tolist() == pytest.approx([expected_u, expected_v, 4.5], abs=1e-9)
    assert scene.objects[0].source_box == (0.4, 0.4, 0.6, 0.6)


def test_editing_one_object_changes_only_its_row(node_class):
    text = json.dumps({"camera": {"image_size": [128, 128], "fov_deg": 60, "position": [0, -6, 2], "look_at": [0, 0, 0.5]},
                       "objects": [{"centre": [-1, 0, 0.5], "size": [1, 1, 1]},
                                   {"centre": [1, 0, 0.5], "size": [1, 1, 1], "yaw_pitch_roll": [20, 0, 0]}]})
    scene = node_class("DioramaAssetsFromJSON").execute(text).result[0]
    before = A.pose_rows(scene, SLOTS)
    edits = [
        ("DioramaMoveAsset", (scene, 1, 0.5, 0.0, 0.0, "world")),
        ("DioramaRotateAsset", (scene, 1, 45.0, 0.0, 0.0)),
        ("DioramaScaleAsset", (scene, 1, 1.5, 1.0, 1.0)),
    ]
    for node, arguments in edits:
        after = A.pose_rows(node_class(node).execute(*arguments).result[0], SLOTS)
        changed = [i for i in range(SLOTS + 1) if not torch.equal(after[i], before[i])]
        assert changed == [1], node
    removed = node_class("DioramaRemoveAsset").execute(scene, 0).result[0]
    assert torch.equal(A.pose_rows(removed, SLOTS)[0], before[1])
    moved = node_class("DioramaMoveCamera").execute(scene, 0.0, 0.0, 1.0, "camera", 10.0, 0.0, 0.0).result[0]
    after = A.pose_rows(moved, SLOTS)
    assert not torch.equal(after[-1], before[-1]) and moved.source_camera == scene.source_camera


def test_transfer_swap_and_preview(node_class):
    text = json.dumps({"camera": {"image_size": [64, 64], "focal_px": 60, "position": [0, -6, 1], "look_at": [0, 0, 0.5]},
                       "objects": [{"centre": [0, 0, 0.5], "size": [1, 1, 1], "source_box": [0.3, 0.3, 0.7, 0.7]}]})
    scene = node_class("DioramaAssetsFromJSON").execute(text).result[0]
    other_image = torch.rand(1, 64, 64, 3)
    merged = node_class("DioramaTransferAsset").execute(scene, scene, other_image, 0, "same world coordinates").result[0]
    assert len(merged.objects) == 2 and merged.objects[1].source == 1
    assert torch.equal(merged.extra_sources[0], other_image[0])
    swapped = node_class("DioramaSwapBackgroundSource").execute(merged, torch.zeros(1, 32, 32, 3)).result[0]
    assert swapped.background_source == 2
    preview = node_class("DioramaPreviewAssets").execute(torch.zeros(2, 64, 64, 3), merged, "target", 1).result[0]
    assert preview.shape == (2, 64, 64, 3) and float(preview.sum()) > 0
    assert torch.equal(preview[0], preview[1])


def test_lift_assets_from_rendered_depth(node_class):
    from diorama.ops import bundled_scene
    from diorama.ops.render import Box, render

    width, height = 320, 240
    render_camera = bundled_scene.camera(width, height)
    shot = render(render_camera, [Box(centre=(0.8, 0.7, 4.0), size=(0.8, 0.8, 0.8), colour=(0.5, 0.5, 0.5), instance=1)])
    mask = (shot.instance == 1).float()[None]
    depth = DepthMap(torch.where(mask > 0, shot.depth[None], torch.full_like(mask, 20.0)), "metric")
    assets, preview = node_class("DioramaLiftAssets").execute(
        shot.rgb[None], depth, "field of view (deg)", bundled_scene.FIELD_OF_VIEW_DEG, 1.0, -1.0, -1.0, 0.0, masks=mask).result
    centre = A.to_camera(torch.tensor(assets.objects[0].centre, dtype=torch.float64), assets.target_camera)
    assert centre.tolist() == pytest.approx([0.8, 0.7, 4.0], rel=0.02)
    assert assets.source_camera == assets.target_camera and preview.shape == (1, height, width, 3)
    by_box = node_class("DioramaLiftAssets").execute(
        shot.rgb[None], depth, "field of view (deg)", bundled_scene.FIELD_OF_VIEW_DEG, 1.0, -1.0, -1.0, 0.0,
        boxes="[[150, 120, 220, 190]]").result[0]
    assert by_box.objects[0].source_box == pytest.approx((120 / 240, 150 / 320, 190 / 240, 220 / 320))


def bad_json(**changes) -> str:
    scene = {"camera": {"image_size": [64, 64], "focal_px": 60.0},
             "objects": [{"centre": [0, 5, 0], "size": [1, 1, 1], "source_box": [0.1, 0.1, 0.5, 0.5]}]}
    for path, value in changes.items():
        entry, key = (scene["camera"], path[7:]) if path.startswith("camera_") else (scene["objects"][0], path)
        entry[key] = value
    return json.dumps(scene)


@pytest.mark.parametrize("text, message", [
    (bad_json(size=[1, 0, 1]), r"objects\[0\].size is \[1.0, 0.0, 1.0\]; every extent must be > 0"),
    (bad_json(centre=[0, float("nan"), 0]), r"objects\[0\].centre\[1\] is nan; expected a finite number"),
    (bad_json(camera_focal_px=0), r"camera.focal_px is 0; focal lengths must be > 0 px"),
    (bad_json(camera_focal_px=-5.0), r"camera.focal_px is -5.0; focal lengths must be > 0 px"),
    (bad_json(source_box=[0.2, 0.2, 1.4, 0.6]), r"objects\[0\]: source_box .* lies outside the image"),
    (bad_json(center=[0, 1, 0]), r"objects\[0\]: give only one of \['centre', 'center'\]"),
    (bad_json(colour=[1, 0, 0]), r"objects\[0\]: unknown key\(s\) \['colour'\]"),
    ("{not json", "assets JSON is not valid JSON"),
])
def test_bad_json_fields_are_named(node_class, text, message):
    with pytest.raises(ValueError, match=message):
        node_class("DioramaAssetsFromJSON").execute(text)


def test_bad_node_inputs_raise_clear_errors(node_class):
    scene = node_class("DioramaAssetsFromJSON").execute(bad_json()).result[0]
    with pytest.raises(ValueError, match=r"object index 3 is out of range; the scene has 1 object\(s\) \(valid: 0..0\)"):
        node_class("DioramaMoveAsset").execute(scene, 3, 1.0, 0.0, 0.0, "world")
    with pytest.raises(ValueError, match="object index 1 is out of range"):
        node_class("DioramaRemoveAsset").execute(scene, 1)
    with pytest.raises(ValueError, match="size must be > 0"):
        node_class("DioramaAddAsset").execute(scene, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="focal_px must be > 0"):
        node_class("DioramaAssetsCamera").execute(64, 64, "focal length (px)", 60.0, 0.0, -1.0, -1.0, 0, 0, 0, 0, 0, 0)
    image = torch.rand(1, 32, 32, 3)
    with pytest.raises(ValueError, match="'disparity' depth; lifting boxes to 3D needs metric depth"):
        node_class("DioramaLiftAssets").execute(image, DepthMap(torch.ones(1, 32, 32), "disparity"), "focal length (px)",
                                                60.0, 30.0, -1.0, -1.0, 0.0, masks=torch.ones(1, 32, 32))
    metric = DepthMap(torch.ones(1, 32, 32) * 3, "metric")
    with pytest.raises(ValueError, match="mask 0: mask is empty"):
        node_class("DioramaLiftAssets").execute(image, metric, "focal length (px)", 60.0, 30.0, -1.0, -1.0, 0.0,
                                                masks=torch.zeros(1, 32, 32))
    with pytest.raises(ValueError, match="exactly one of them"):
        node_class("DioramaLiftAssets").execute(image, metric, "focal length (px)", 60.0, 30.0, -1.0, -1.0, 0.0)
    with pytest.raises(ValueError, match="does not overlap the 32x32 image"):
        node_class("DioramaLiftAssets").execute(image, metric, "focal length (px)", 60.0, 30.0, -1.0, -1.0, 0.0,
                                                boxes="[[40, 40, 50, 50]]")
