"""IMPRINT's four shape-mask levels."""
import math

import pytest
import torch

from diorama.ops.placement import mask_bounding_box
from diorama.ops.object_layer import place_object
from diorama.ops.shape_masks import convex_hull_mask, dilate, shape_mask, shape_mask_levels


def l_shape() -> torch.Tensor:
    mask = torch.zeros(1, 80, 80)
    mask[0, 10:70, 10:25] = 1  # vertical bar
    mask[0, 55:70, 10:60] = 1  # foot
    return mask


def test_levels_nest_from_silhouette_to_box():
    mask = l_shape()
    # Placed into a box of its own size at its own place, the object lands exactly on itself.
    placed = place_object(None, mask, mask_bounding_box(mask[0]), (80, 80))
    levels = [shape_mask(placed, level)[0] for level in range(4)]
    assert torch.equal(levels[3], mask[0])
    for finer, coarser in zip(levels[3:0:-1], levels[2::-1]):
        assert bool((coarser >= finer).all()), "each level must contain the finer ones"
        assert coarser.sum() > finer.sum()
    x0, y0, x1, y1 = mask_bounding_box(levels[1])
    assert levels[0].sum() == (x1 - x0) * (y1 - y0), "level 0 is the box around level 1"


def test_convex_hull_fills_the_concave_corner_of_an_l():
    hull = convex_hull_mask(l_shape()[0])
    # The hull of the L is the pentagon through (10,10) (25,10) (60,55) (60,70) (10,70) (pixel corners):
    # the point (40, 45) lies under the diagonal from (25,10) to (60,55), so inside; (50, 20) is above it.
    assert hull[45, 40] == 1 and hull[20, 50] == 0
    assert hull[12, 12] == 1 and hull[68, 58] == 1


def test_hull_of_a_disk_is_the_disk():
    yy, xx = torch.meshgrid(torch.arange(101.0), torch.arange(101.0), indexing="ij")
    disk = (((xx - 50) ** 2 + (yy - 50) ** 2) <= 30 ** 2).float()
    hull = convex_hull_mask(disk)
    assert bool((hull >= disk).all())
    assert float(hull.sum() - disk.sum()) / float(disk.sum()) < 0.02
    assert abs(float(disk.sum()) - math.pi * 900) / (math.pi * 900) < 0.02


def test_levels_near_the_canvas_border_are_clipped_not_shifted():
    mask = torch.zeros(1, 40, 40)
    mask[0, 30:40, 0:12] = 1
    placed = place_object(None, mask, (0, 30, 12, 40), (40, 40))
    assert torch.equal(shape_mask(placed, 3)[0], mask[0])
    assert torch.equal(shape_mask(placed, 2)[0], shape_mask_levels(mask[0], 2))


def test_integral_dilation_equals_max_pooling():
    mask = (torch.rand(50, 60) > 0.97).float()
    pooled = torch.nn.functional.max_pool2d(mask[None, None], 9, stride=1, padding=4)[0, 0]
    assert torch.equal(dilate(mask, 4), pooled)


def test_unknown_level_is_a_clear_error():
    mask = l_shape()
    placed = place_object(None, mask, mask_bounding_box(mask[0]), (80, 80))
    with pytest.raises(ValueError, match="level 4 is unknown"):
        shape_mask(placed, 4)


def test_hull_contains_scipy_convex_hull_and_barely_exceeds_it():
    from scipy.spatial import ConvexHull, Delaunay

    generator = torch.Generator().manual_seed(3)
    mask = torch.zeros(90, 120)
    for _ in range(4):  # a few scattered blobs: a very non-convex mask
        cy, cx = torch.randint(10, 80, (1,), generator=generator).item(), torch.randint(10, 110, (1,), generator=generator).item()
        mask[cy - 5:cy + 5, cx - 7:cx + 7] = 1
    points = torch.nonzero(mask > 0.5).double().numpy()
    grid = torch.stack(torch.meshgrid(torch.arange(90.0), torch.arange(120.0), indexing="ij"), -1).reshape(-1, 2).numpy()
    exact = torch.from_numpy(Delaunay(points).find_simplex(grid) >= 0).reshape(90, 120)
    hull = convex_hull_mask(mask) > 0.5
    assert bool((hull | ~exact).all()), "the hull must contain the exact convex hull"
    # 32 directions stay within D·(1/cos(π/32) − 1) ≈ 0.005·D of the true hull, plus a pixel of
    # rasterisation: the excess area is under 1.5 px times the hull's perimeter.
    perimeter = ConvexHull(points).area
    assert float(hull.sum() - exact.sum()) <= 1.5 * perimeter
    x0, y0, x1, y1 = mask_bounding_box(mask)
    assert float(hull.sum()) < 0.8 * (x1 - x0) * (y1 - y0), "a box is not a hull"


def test_occluders_are_cut_out_and_the_visible_object_kept():
    from diorama.ops.shape_masks import without_occluders

    # A 1-D scene: background at 2 m (a table) on the left, 9 m (a wall) on the right; the object
    # stands at 5 m over columns 2..7 and is visible only where the wall is behind it.
    depth = torch.tensor([[[2.0, 2.0, 2.0, 2.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0]]])
    visible = torch.tensor([[[0, 0, 0, 0, 1, 1, 1, 1, 0, 0]]], dtype=torch.float32)
    coarse = torch.ones(1, 1, 10)
    kept = without_occluders(coarse, depth, "metric", 5.0, visible)
    assert kept.tolist() == [[[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]]]
    disparity = without_occluders(coarse, 1 / depth, "disparity", 1 / 5.0, visible)
    assert torch.equal(disparity, kept)
