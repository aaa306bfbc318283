"""Keypoints: OpenPose-18 / BODY_25 / DWPose-133 → COCO-17 on hand-made skeletons, retargeting keeps
limb-length ratios, drawing matches a hand-checked case, bad inputs are clear errors.

The joint orders below are written out from the published layouts (OpenPose's COCO-18 body output
and BODY_25, COCO's 17 keypoints, COCO-WholeBody's first 17 = COCO), not imported from Diorama."""
from __future__ import annotations

import math

import pytest
import torch

from diorama.ops import keypoints as kp

COCO = ["nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist",
        "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle"]
OPENPOSE = ["nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip", "r_knee",
            "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear"]
BODY25 = ["nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "mid_hip", "r_hip",
          "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear", "l_big_toe",
          "l_small_toe", "l_heel", "r_big_toe", "r_small_toe", "r_heel"]
# A standing person facing the camera on a 640x480 canvas, in pixels (their left is image right).
PERSON = {"nose": (320, 90), "neck": (320, 140), "r_shoulder": (280, 140), "r_elbow": (260, 200),
          "r_wrist": (250, 260), "l_shoulder": (360, 140), "l_elbow": (380, 200), "l_wrist": (390, 260),
          "r_hip": (300, 260), "r_knee": (298, 340), "r_ankle": (296, 420), "l_hip": (340, 260),
          "l_knee": (342, 340), "l_ankle": (344, 420), "r_eye": (312, 82), "l_eye": (328, 82), "r_ear": (302, 88),
          "l_ear": (338, 88), "mid_hip": (320, 260), "l_big_toe": (350, 430), "l_small_toe": (356, 428),
          "l_heel": (342, 426), "r_big_toe": (290, 430), "r_small_toe": (284, 428), "r_heel": (298, 426)}
WIDTH, HEIGHT = 640, 480


def flat(order, missing=(), scale=(1.0, 1.0)):
    values = []
    for name in order:
        if name in missing:
            values += [0.0, 0.0, 0.0]
        else:
            x, y = PERSON[name]
            values += [x * scale[0], y * scale[1], 1.0]
    return values


def frame(values):
    return {"people": [{"pose_keypoints_2d": values, "face_keypoints_2d": None, "hand_left_keypoints_2d": None,
                        "hand_right_keypoints_2d": None}], "canvas_width": WIDTH, "canvas_height": HEIGHT}


def expected(missing=()):
    rows = [[PERSON[n][0] / WIDTH, PERSON[n][1] / HEIGHT, 1.0] if n not in missing else [0.0, 0.0, 0.0] for n in COCO]
    return torch.tensor(rows)


def test_openpose_normalised_maps_to_coco():
    """controlnet_aux's OpenPose writes fractions of the canvas."""
    result = kp.from_pose_keypoint([frame(flat(OPENPOSE, scale=(1 / WIDTH, 1 / HEIGHT)))])
    assert result.image_hw == (HEIGHT, WIDTH)
    torch.testing.assert_close(result.points[0], expected(), atol=1e-6, rtol=0)


def test_dwpose_pixels_with_missing_joints_map_to_coco():
    """DWPose writes pixels and (0, 0, 0) for joints under its confidence threshold."""
    missing = ("l_ear", "r_wrist")
    result = kp.from_pose_keypoint([frame(flat(OPENPOSE, missing))])
    torch.testing.assert_close(result.points[0], expected(missing), atol=1e-6, rtol=0)
    forced = kp.from_pose_keypoint([frame(flat(OPENPOSE, missing))], coordinates="pixels")
    torch.testing.assert_close(forced.points, result.points)


def test_body25_and_wholebody_map_to_coco():
    body25 = kp.from_pose_keypoint(frame(flat(BODY25)))
    torch.testing.assert_close(body25.points[0], expected(), atol=1e-6, rtol=0)
    # COCO-WholeBody: 17 body (COCO order), 6 feet, 68 face, 42 hands.
    wholebody = flat(COCO) + [1.0, 1.0, 0.5] * (133 - 17)
    torch.testing.assert_close(kp.from_pose_keypoint([frame(wholebody)]).points[0], expected(), atol=1e-6, rtol=0)


def test_person_index_and_batch():
    two = frame(flat(OPENPOSE))
    two["people"].append({"pose_keypoints_2d": flat(OPENPOSE, scale=(0.5, 0.5))})
    second = kp.from_pose_keypoint([two, two], person=1)
    assert second.points.shape == (2, 17, 3)
    torch.testing.assert_close(second.points[1, :, :2], expected()[:, :2] * 0.5, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="person index 2 does not exist"):
        kp.from_pose_keypoint([two], person=2)


def test_openpose_to_coco_round_trip_through_openpose18():
    coco = kp.from_pose_keypoint([frame(flat(OPENPOSE))]).points
    back = kp.to_openpose18(coco)[0]
    pixels = back[:, :2] * torch.tensor([WIDTH, HEIGHT])
    truth = torch.tensor([PERSON[n] for n in OPENPOSE], dtype=torch.float32)
    torch.testing.assert_close(pixels, truth, atol=1e-3, rtol=0)  # the neck is the shoulders' midpoint here


@pytest.mark.parametrize("bad, message", [
    (flat(OPENPOSE)[:16 * 3], "16 body keypoints"),
    (flat(OPENPOSE, missing=OPENPOSE), "every keypoint of skeleton"),
    (flat(OPENPOSE)[:-1], "x, y, confidence triples"),
], ids=["fewer than 17", "all invisible", "not triples"])
def test_bad_pose_keypoint_is_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        kp.from_pose_keypoint([frame(bad)])


def coco_pixels_rows():
    return [list(PERSON[n]) + [1.0] for n in COCO]


def test_from_numbers_units_and_bad_inputs():
    pixels = kp.from_numbers(coco_pixels_rows(), HEIGHT, WIDTH, "pixels")
    torch.testing.assert_close(pixels.points[0], expected(), atol=1e-6, rtol=0)
    pairs = kp.from_numbers([[x / WIDTH, y / HEIGHT] for x, y, _ in coco_pixels_rows()], HEIGHT, WIDTH, "fractions")
    torch.testing.assert_close(pairs.points, pixels.points, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="16 keypoints given, expected the 17 COCO keypoints"):
        kp.from_numbers(coco_pixels_rows()[:16], HEIGHT, WIDTH, "pixels")
    with pytest.raises(ValueError, match="every keypoint of skeleton"):
        kp.from_numbers([[0.5, 0.5, 0.0]] * 17, HEIGHT, WIDTH, "fractions")
    outside = coco_pixels_rows()
    outside[15][1] = HEIGHT + 30  # left ankle below the image
    with pytest.raises(ValueError, match="outside the image, e.g. left_ankle"):
        kp.from_numbers(outside, HEIGHT, WIDTH, "pixels")
    outside[15][2] = 0.0  # ... unless it is marked out of frame
    assert kp.from_numbers(outside, HEIGHT, WIDTH, "pixels").points.shape == (1, 17, 3)


LIMBS = [("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"), ("r_hip", "r_knee"), ("r_knee", "r_ankle"),
         ("l_shoulder", "r_shoulder"), ("nose", "l_eye"), ("l_hip", "l_ankle")]


def limb_lengths(keypoints: kp.Keypoints) -> torch.Tensor:
    height, width = keypoints.image_hw
    xy = keypoints.points[0, :, :2].double() * torch.tensor([width, height], dtype=torch.float64)
    return torch.stack([(xy[COCO.index(a)] - xy[COCO.index(b)]).norm() for a, b in LIMBS])


@pytest.mark.parametrize("box, target_hw, anchor", [
    ((0.1, 0.2, 0.3, 0.9), (256, 512), "bottom"),  # tall narrow box in a wide image: width limits
    ((0.2, 0.6, 0.9, 0.8), (400, 300), "center"),  # flat box: height limits
])
def test_retarget_keeps_limb_ratios_and_fits_the_box(box, target_hw, anchor):
    source = kp.from_numbers(coco_pixels_rows(), HEIGHT, WIDTH, "pixels")
    moved = kp.retarget(source, box, target_hw, anchor)
    before, after = limb_lengths(source), limb_lengths(moved)
    ratio = after / before
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio), rtol=1e-5, atol=0)
    height, width = target_hw
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    xy = moved.points[0, :, :2].double() * torch.tensor([width, height], dtype=torch.float64)
    assert xy[:, 0].min() >= x0 - 1e-3 and xy[:, 0].max() <= x1 + 1e-3
    assert xy[:, 1].min() >= y0 - 1e-3 and xy[:, 1].max() <= y1 + 1e-3
    spans = (xy[:, 0].max() - xy[:, 0].min(), xy[:, 1].max() - xy[:, 1].min())
    assert math.isclose(spans[0], x1 - x0, rel_tol=1e-5) or math.isclose(spans[1], y1 - y0, rel_tol=1e-5)
    assert math.isclose((xy[:, 0].max() + xy[:, 0].min()) / 2, (x0 + x1) / 2, rel_tol=1e-5)
    if anchor == "bottom":
        assert math.isclose(xy[:, 1].max(), y1, rel_tol=1e-6)
    else:
        assert math.isclose((xy[:, 1].max() + xy[:, 1].min()) / 2, (y0 + y1) / 2, rel_tol=1e-5)


def test_retarget_needs_two_distinct_points():
    rows = [[0.5, 0.5, 0.0]] * 17
    rows[0] = [0.5, 0.5, 1.0]
    with pytest.raises(ValueError, match="at least two distinct visible keypoints"):
        kp.retarget(kp.from_numbers(rows, 64, 64, "fractions"), (0.1, 0.1, 0.5, 0.5), (64, 64))


def test_drawing_matches_a_hand_checked_case():
    """Two shoulders 20 px apart on a 40² canvas. OpenPose adds the neck at their midpoint and draws
    limb neck→right shoulder in 0.6·(255, 0, 0), neck→left shoulder in 0.6·(255, 85, 0), then discs of
    radius 4: neck (255, 85, 0), right shoulder (255, 170, 0), left shoulder (85, 255, 0) (OpenPose-18
    joints 1, 2 and 5 take colours 1, 2 and 5)."""
    rows = [[0.0, 0.0, 0.0]] * 17
    rows[COCO.index("r_shoulder")] = [10, 20, 1.0]  # the person's right is image left
    rows[COCO.index("l_shoulder")] = [30, 20, 1.0]
    image = kp.draw_openpose(kp.from_numbers(rows, 40, 40, "pixels"), 40, 40)
    pixel = lambda x, y: tuple(int(v) for v in (image[0, y, x] * 255).round())  # noqa: E731
    assert image.shape == (1, 40, 40, 3)
    assert pixel(20, 20) == (255, 85, 0)
    assert pixel(10, 20) == (255, 170, 0)
    assert pixel(30, 20) == (85, 255, 0)
    assert pixel(12, 22) == (255, 170, 0)  # inside the right shoulder's disc
    assert pixel(15, 20) == pixel(15, 22) == (153, 0, 0)  # the right limb, within its 4-px half width
    assert pixel(25, 20) == pixel(25, 18) == (153, 51, 0)
    assert pixel(15, 26) == (0, 0, 0) and pixel(25, 14) == (0, 0, 0)  # beyond the half width
    assert pixel(2, 2) == (0, 0, 0) and pixel(39, 39) == (0, 0, 0)
    lit = (image[0].sum(-1) > 0).nonzero()
    assert lit[:, 0].min() >= 15 and lit[:, 0].max() <= 25  # nothing far from the shoulder line
    # Below min_confidence nothing is drawn.
    faint = [[x, y, 0.2 if v else 0.0] for x, y, v in rows]
    assert kp.draw_openpose(kp.from_numbers(faint, 40, 40, "pixels"), 40, 40).max() == 0


def test_keypoint_nodes(node_class):
    import json

    pose = [frame(flat(OPENPOSE))]
    keypoints = node_class("DioramaKeypointsFromOpenPose").execute(pose, 0, "auto").result[0]
    from_numbers = node_class("DioramaKeypointsFromNumbers").execute(
        json.dumps(coco_pixels_rows()), "pixels", WIDTH, HEIGHT).result[0]
    torch.testing.assert_close(keypoints.points, from_numbers.points, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="not valid JSON"):
        node_class("DioramaKeypointsFromNumbers").execute("[[1, 2", "pixels", WIDTH, HEIGHT)
    background = torch.zeros(1, 96, 128, 3)
    moved = node_class("DioramaRetargetKeypoints").execute(keypoints, "bottom", 0.25, 0.25, 0.5, 1.0,
                                                           target_image=background).result[0]
    assert moved.image_hw == (96, 128)
    drawn = node_class("DioramaDrawKeypoints").execute(moved, 0.3).result[0]
    assert drawn.shape == (1, 96, 128, 3) and drawn.max() > 0
    lit = (drawn[0].sum(-1) > 0).nonzero()
    assert lit[:, 1].min() >= 32 - 5 and lit[:, 1].max() <= 64 + 5  # inside the box (± the disc radius)
    over = node_class("DioramaDrawKeypoints").execute(moved, 0.3, canvas=torch.full((1, 96, 128, 3), 0.5)).result[0]
    assert torch.equal(over[0, 0, 0], torch.full((3,), 128 / 255.0))
    # A box that misses the image is refused before any work.
    with pytest.raises(ValueError, match="lies outside the"):
        node_class("DioramaRetargetKeypoints").execute(keypoints, "bottom", 1.5, 1.5, 2.0, 2.0,
                                                       target_image=background)
