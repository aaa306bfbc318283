"""The BIFRÖST nodes give the reference's values from ComfyUI-typed inputs (IMAGE k/255, MASK, depth)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reference_data import reference_dir

CASE = reference_dir("bifrost") / "case0_partial_occlusion.npz"


@pytest.fixture(scope="module")
def golden():
    return np.load(CASE)


def image(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).float()[None] / 255


def placement(node_class, golden):
    x, y, w, h = golden["in_bg_mask_xywh"].tolist()
    far, near = golden["in_depth_range"].tolist()
    return node_class("DioramaPlacementDepthRange").execute(image(golden["in_back_image"]), x, y, w, h, far, near).result[0]


def fused(node_class, golden):
    from diorama.ops.depth_map import DepthMap

    depth = lambda key: DepthMap(torch.from_numpy(golden[key].astype(np.float32))[None], "disparity")  # noqa: E731
    mask = torch.from_numpy(golden["in_ref_mask"]).float()[None]
    return node_class("DioramaBifrostDepthFuse").execute(depth("in_back_depth_u16"), depth("in_ref_depth_u16"), mask,
                                                         placement(node_class, golden)).result


def test_depth_fuse_node_matches_the_reference(node_class, golden):
    fused_depth, visible, preview = fused(node_class, golden)
    np.testing.assert_allclose(fused_depth.values[0].numpy(), golden["fused_depth_f32"], rtol=1e-5, atol=1e-5)
    assert np.array_equal(visible[0].numpy().astype(np.uint8), golden["fused_mask"])
    assert preview.shape == (1, *golden["fused_mask"].shape, 3)


def test_hints_node_matches_the_reference_and_makes_the_padded_window(node_class, golden):
    fused_depth, visible, _ = fused(node_class, golden)
    window, detail, depth, preview = node_class("DioramaBifrostHints").execute(
        image(golden["in_back_image"]), visible, image(golden["in_ref_image"]),
        torch.from_numpy(golden["in_ref_mask"]).float()[None], float(golden["random_ratios_drawn"][-1]),
        int(golden["in_sobel_threshold"]), float(golden["in_pixel_num"]), "BIFRÖST", fused_depth,
        placement(node_class, golden)).result
    assert np.array_equal(detail[0].numpy(), golden["item_hint"])
    np.testing.assert_allclose(depth[0].numpy(), golden["item_depth"], atol=1e-6)
    y1, y2, x1, x2 = golden["item_tar_box_yyxx_crop"].tolist()
    assert (window.area.y0, window.area.y1, window.area.x0, window.area.x1) == (y1, y2, x1, x2)
    assert window.sample_hw == (512, 512) and window.padded_hw[0] == window.padded_hw[1] == max(y2 - y1, x2 - x1)
    assert preview.shape == (1, 512, 1024, 3) and float(preview.min()) >= 0 and float(preview.max()) <= 1


def test_reference_paste_stitch_reproduces_the_reference_paste_back():
    from diorama.nodes.composite import reference_paste
    from diorama.ops.bifrost_reference import square_padding
    from diorama.ops.composite_window import CompositeWindow
    from diorama.ops.window import Window

    g = np.load(CASE)
    y1, y2, x1, x2 = g["item_tar_box_yyxx_crop"].tolist()
    window = CompositeWindow(Window(y1, y2, x1, x2), (512, 512), g["in_back_image"].shape[:2], square_padding(y2 - y1, x2 - x1))
    # Decoded pixels as a VAE gives them: exactly representable values, so ×255 is exact.
    decoded = torch.from_numpy(np.clip(np.round(g["in_x_sample_synthetic"]), 0, 255) / 255).float()[None]
    pasted = reference_paste(image(g["in_back_image"]), decoded, window)
    expected_source = np.clip(np.round(g["in_x_sample_synthetic"]), 0, 255).astype(np.float32)
    from diorama.ops.bifrost_reference import paste_back

    expected = paste_back(torch.from_numpy(expected_source), torch.from_numpy(g["in_back_image"]), (y1, y2, x1, x2),
                          window.padding)
    assert torch.equal((pasted[0] * 255).round().to(torch.uint8), expected)
    outside = torch.ones(g["in_back_image"].shape[:2], dtype=torch.bool)
    outside[y1 + 5:y2 - 5, x1 + 5:x2 - 5] = False
    assert torch.equal((pasted[0] * 255).round().to(torch.uint8)[outside], torch.from_numpy(g["in_back_image"])[outside])


@pytest.mark.parametrize("bad, message", [
    (dict(x=0.9, width=0.2), "reaches outside"),
    (dict(depth_far=0.8, depth_near=0.2), "far <= near"),
    (dict(width=0.0), "must be > 0"),
])
def test_placement_depth_range_rejects_bad_numbers(node_class, golden, bad, message):
    values = dict(x=0.3, y=0.3, width=0.2, height=0.2, depth_far=0.3, depth_near=0.6) | bad
    with pytest.raises(ValueError, match=message):
        node_class("DioramaPlacementDepthRange").execute(image(golden["in_back_image"]), **values)


def test_diorama_depth_fuse_refuses_a_relative_depth_range(node_class, golden):
    from diorama.ops.depth_map import DepthMap

    depth = DepthMap(torch.rand(1, 64, 64), "disparity")
    with pytest.raises(ValueError, match="BIFRÖST Depth Fuse"):
        node_class("DioramaDepthFuse").execute(depth, depth, torch.ones(1, 64, 64), placement(node_class, golden))


def test_hints_refuse_an_empty_reference_mask(node_class, golden):
    background = image(golden["in_back_image"])
    target = torch.zeros(background.shape[:3])
    target[:, 100:150, 100:150] = 1
    with pytest.raises(ValueError, match="reference_mask"):
        node_class("DioramaBifrostHints").execute(background, target, background, torch.zeros(background.shape[:3]),
                                                  2.0, 50, 0.02, "BIFRÖST")
