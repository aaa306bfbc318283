"""DepthFuse against rendered ground truth and closed-form cases."""
import pytest
import torch

from diorama.ops.depth_fuse import fuse_object_depth, scale_object_depth
from diorama.ops.depth_map import DepthMap
from diorama.ops.object_layer import place_object
from placements import CASES, DEPTH_SCALE, insertion_case, iou


def fuse_case(case, kind: str):
    """Run placement + fusion with the depth given as metric metres or as disparity."""
    if kind == "metric":
        background, obj, target = case.background_depth, case.object_depth, case.median_depth
    else:
        # Disparity up to an unknown scale, different for the background and the object.
        background, obj = 3.0 / case.background_depth, 0.4 / case.object_depth
        target = float((3.0 / case.median_depth))
    placed = place_object(None, case.object_mask[None], case.box, tuple(case.background_depth.shape), depth=obj[None])
    fused, visible = fuse_object_depth(DepthMap(background[None], kind), placed, target)
    return fused, visible[0], placed


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("kind", ["metric", "disparity"])
@pytest.mark.parametrize("source_resolution", [1, 2])
def test_visible_mask_matches_rendered_visibility(name, kind, source_resolution):
    case = insertion_case(name, source_resolution)
    _, visible, _ = fuse_case(case, kind)
    assert case.visible_truth.sum() > 50, "the case must show the object"
    assert iou(visible, case.visible_truth) >= 0.98


def test_cases_cover_occlusion_both_ways():
    behind = insertion_case("behind")
    _, visible, placed = fuse_case(behind, "metric")
    assert visible.sum() < 0.9 * (placed.canvas_mask() > 0.5).sum(), "behind the table the crate must be partly hidden"
    in_front = insertion_case("in_front")
    _, visible, placed = fuse_case(in_front, "metric")
    assert torch.equal(visible, (placed.canvas_mask()[0] > 0.5).float()), "in front, the whole crate must be visible"
    cabinet = in_front.background_instance == 5
    assert (visible.bool() & cabinet).sum() > 100, "in front, the crate must hide part of the cabinet"


@pytest.mark.parametrize("kind", ["metric", "disparity"])
def test_fused_depth_is_true_depth_where_visible_and_background_elsewhere(kind):
    case = insertion_case("in_front")
    fused, visible, _ = fuse_case(case, kind)
    outside = visible == 0
    expected_background = case.background_depth if kind == "metric" else 3.0 / case.background_depth
    assert torch.equal(fused.values[0][outside], expected_background[outside])
    # Where visible, the scaled object depth equals the true depth (same resolution: exact up to fp error).
    inside = (visible > 0) & (case.visible_truth > 0)
    true_object = torch.where(inside, case.object_depth / DEPTH_SCALE, 0)
    expected = true_object if kind == "metric" else 3.0 / true_object.clamp_min(1e-6)
    torch.testing.assert_close(fused.values[0][inside], expected[inside], rtol=1e-3, atol=1e-4)


def test_scale_object_depth_sets_the_median_closed_form():
    depth = torch.tensor([[[1.0, 2.0, 3.0, 100.0]]])
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])
    scaled = scale_object_depth(depth, mask, 10.0)
    torch.testing.assert_close(scaled, torch.tensor([[[5.0, 10.0, 15.0, 500.0]]]))


def test_nonpositive_object_disparity_is_a_clear_error():
    depth = torch.full((1, 4, 4), -1.0)
    with pytest.raises(ValueError, match="median .* expected > 0"):
        scale_object_depth(depth, torch.ones(1, 4, 4), 1.0)
