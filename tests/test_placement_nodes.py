"""Placement nodes in the executor's types: ground contact read from rendered depth."""
import pytest
import torch

from diorama.ops import bundled_scene


@pytest.fixture(scope="module")
def room(node_class):
    return node_class("DioramaBundledScene").execute(320, 240, 64).result


def test_ground_contact_from_a_mask_matches_the_ground_plane(node_class, room):
    # A mask standing on the open floor (rows 150..199, columns 20..59): its bottom row is 199.
    mask = torch.zeros(1, 240, 320)
    mask[0, 150:200, 20:60] = 1
    placement, preview = node_class("DioramaPlacementFromMask").execute(
        mask, "ground contact in background depth", 0.0, "metric", background_depth=room[1]).result
    camera = bundled_scene.camera(320, 240)
    # The floor is 1.5 m below the camera: row v sees it at fy·1.5 / (v + 0.5 − cy) metres.
    expected = camera.fy * 1.5 / (199 + 0.5 - camera.cy)
    assert placement.depth == pytest.approx(expected, rel=0.02)
    assert placement.depth_kind == "metric" and placement.image_size == (240, 320)
    assert placement.box == pytest.approx((20 / 320, 150 / 240, 60 / 320, 200 / 240))
    assert preview.shape == (1, 240, 320, 3)


def test_box_in_pixels_and_fractions_give_the_same_placement(node_class, room):
    by_pixels = node_class("DioramaPlacementFromBox").execute(room[0], 32, 24, 160, 180, "pixels", "value", 4.0, "metric").result[0]
    by_fractions = node_class("DioramaPlacementFromBox").execute(room[0], 0.1, 0.1, 0.5, 0.75, "fractions", "value", 4.0,
                                                                 "metric").result[0]
    assert by_pixels.box == pytest.approx(by_fractions.box)
    assert by_pixels.pixel_box(240, 320) == (32, 24, 160, 180)


def test_depth_kind_must_match_the_background_depth(node_class, room):
    with pytest.raises(ValueError, match="depth_kind is 'disparity' but background_depth is 'metric'"):
        node_class("DioramaPlacementFromBox").execute(room[0], 0.1, 0.1, 0.5, 0.75, "fractions", "value", 0.3,
                                                      "disparity", background_depth=room[1])
