"""Depth-aware paste: exactness outside the object, feathering and colour matching."""
import torch

from diorama.ops.object_layer import place_object
from diorama.ops.paste import depth_aware_paste, feathered_alpha, harmonise_colour, surrounding_ring
from placements import insertion_case, iou


def test_pixels_outside_the_visible_object_are_bit_identical():
    case = insertion_case("behind")
    placed = place_object(case.object_rgb[None], case.object_mask[None], case.box, tuple(case.background_depth.shape))
    visible = case.visible_truth[None]
    composite, alpha = depth_aware_paste(case.background_rgb[None], placed, visible, feather_px=3, colour_match=0.5)
    outside = alpha[0] == 0
    assert torch.equal(composite[0][outside], case.background_rgb[outside])
    assert bool((alpha[0][case.visible_truth == 0] == 0).all()), "nothing is pasted where the object is hidden"
    assert iou(alpha[0] > 0, case.visible_truth) > 0.95


def test_paste_without_feather_or_colour_match_reproduces_the_true_render():
    # At the same resolution and without harmonisation the paste is the renderer's own composite.
    case = insertion_case("in_front")
    placed = place_object(case.object_rgb[None], case.object_mask[None], case.box, tuple(case.background_depth.shape))
    composite, _ = depth_aware_paste(case.background_rgb[None], placed, case.visible_truth[None], 0, 0)
    torch.testing.assert_close(composite[0], case.truth_rgb, atol=1e-6, rtol=0)


def test_feathered_alpha_is_zero_outside_and_opaque_in_the_core():
    visible = torch.zeros(1, 40, 40)
    visible[0, 10:30, 10:30] = 1
    alpha = feathered_alpha(visible, 4.0)
    assert bool((alpha[visible == 0] == 0).all())
    assert alpha[0, 20, 20] == 1
    assert 0 < alpha[0, 10, 20] < 1


def test_colour_match_moves_the_object_towards_its_surroundings():
    background = torch.full((40, 40, 3), 0.2)
    background[..., 2] = 0.6  # bluish room
    obj = torch.full((40, 40, 3), 0.8)  # bright grey object
    mask = torch.zeros(40, 40)
    mask[10:30, 10:30] = 1
    ring = surrounding_ring(mask, 3)
    before = (obj[mask > 0].mean(0) - background[ring > 0].mean(0)).abs().sum()
    matched = harmonise_colour(obj, mask, background, ring, strength=1.0)
    after = (matched[mask > 0].mean(0) - background[ring > 0].mean(0)).abs().sum()
    assert after < 0.05 * before
    assert torch.equal(harmonise_colour(obj, mask, background, ring, strength=0.0), obj)
