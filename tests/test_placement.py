"""Placement maths: boxes, mask boxes and the ground-contact depth."""
import pytest
import torch

from diorama.ops.depth_map import DepthMap
from diorama.ops.object_layer import fit_in_box
from diorama.ops.placement import Placement, ground_contact_depth, mask_bounding_box, normalised_box
from diorama.ops.render import Camera, Plane, render


def test_pixel_and_fraction_boxes_agree():
    assert normalised_box(64, 48, 128, 96, 96, 128, "pixels") == (0.5, 0.5, 1.0, 1.0)
    assert normalised_box(0.1, 0.2, 0.3, 0.4, 96, 128, "fractions") == (0.1, 0.2, 0.3, 0.4)


@pytest.mark.parametrize("box, message", [
    ((10, 10, 10, 20), "zero or negative area"),
    ((10, 20, 30, 5), "zero or negative area"),
    ((200, 10, 260, 40), "outside the 128x96 image"),
    ((-50, -50, -10, -10), "outside the 128x96 image"),
    ((float("nan"), 0, 10, 10), "NaN or infinity"),
])
def test_bad_boxes_are_clear_errors(box, message):
    with pytest.raises(ValueError, match=message):
        normalised_box(*box, 96, 128, "pixels")


def test_box_partly_outside_the_image_is_kept():
    assert normalised_box(100, 50, 160, 90, 96, 128, "pixels")[2] == 160 / 128


def test_mask_bounding_box_ends_are_exclusive_and_empty_is_an_error():
    mask = torch.zeros(10, 12)
    mask[2:5, 3:9] = 1
    assert mask_bounding_box(mask) == (3, 2, 9, 5)
    with pytest.raises(ValueError, match="mask is empty"):
        mask_bounding_box(torch.zeros(4, 4))


def test_fit_in_box_keeps_aspect_and_stands_on_the_bottom_edge():
    assert fit_in_box(50, 100, (0, 0, 100, 100)) == (25, 0, 75, 100)
    assert fit_in_box(100, 50, (0, 0, 100, 100)) == (0, 50, 100, 100)


def test_ground_contact_depth_on_a_rendered_ground_plane():
    # The ground 1.5 m below a camera with fy = 200 is at depth 200 * 1.5 / (v - cy) on row v.
    cam = Camera(320, 240, 200.0, 200.0, 160.0, 120.0)
    room = [Plane(point=(0, 1.5, 0), normal=(0, -1, 0), colour=(1, 1, 1)),
            Plane(point=(0, 0, 50), normal=(0, 0, -1), colour=(1, 1, 1))]
    depth = DepthMap(render(cam, room).depth[None], "metric")
    placement_box = (0.4, 0.5, 0.6, 0.9)  # bottom edge on row 216
    expected = 200.0 * 1.5 / (216 - 1 + 0.5 - 120.0)
    assert ground_contact_depth(depth, placement_box) == pytest.approx(expected, rel=0.02)


def test_pixel_box_is_never_empty():
    placement = Placement((0.5, 0.5, 0.5001, 0.5001), 1.0, "metric", (10, 10))
    x0, y0, x1, y1 = placement.pixel_box(10, 10)
    assert x1 > x0 and y1 > y0
