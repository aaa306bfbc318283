"""BIFRÖST's preprocessing against the reference implementation's own outputs.

The golden arrays in shared/reference/bifrost were computed by the reference repository's code
(numpy/OpenCV); every intermediate Diorama reproduces must match them: integers exactly, floats
within 1e-5.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diorama.ops import bifrost_reference as br
from diorama.ops.identity_tokens import dino_pixels

from reference_data import reference_dir

GOLDEN_DIR = reference_dir("bifrost")
# Every case in the folder, so cases added later are checked by the same rules.
CASES = sorted(p.stem for p in GOLDEN_DIR.glob("*.npz") if p.stem != "ddim_schedule")


def equal(got, expected, name: str) -> None:
    got = np.asarray(got.numpy() if isinstance(got, torch.Tensor) else got)
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"{name}: shape {got.shape} != {expected.shape}"
    if expected.dtype.kind in "iub":
        mismatched = int((got.astype(np.int64) != expected.astype(np.int64)).sum())
        assert mismatched == 0, f"{name}: {mismatched} of {expected.size} values differ"
    else:
        np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), rtol=1e-5, atol=1e-5, err_msg=name)


class Case:
    """The reference's driver and `process_pairs`, step by step, with Diorama's functions."""

    def __init__(self, name: str):
        self.g = np.load(GOLDEN_DIR / f"{name}.npz")
        g = self.g
        self.ref_mask = self.t("in_ref_mask")
        self.ref_depth = self.t("in_ref_depth_u16").to(torch.int64) * self.ref_mask.to(torch.int64)
        self.y1, self.y2, self.x1, self.x2 = br.mask_bounding_box(self.ref_mask)
        self.fused = br.fuse_reference_depth(self.t("in_back_depth_u16").to(torch.int64),
                                             self.ref_depth[self.y1:self.y2, self.x1:self.x2],
                                             self.ref_mask[self.y1:self.y2, self.x1:self.x2],
                                             tuple(g["in_bg_mask_xywh"].tolist()), tuple(g["in_depth_range"].tolist()))
        self.fused_png = br.fused_depth_png(self.fused.depth)
        # The reference re-reads its visible mask from a PNG of mask·255 and thresholds at 128.
        self.target_mask = ((self.fused.visible.to(torch.int64) * 255) > 128).to(torch.uint8)
        self.crop, self.crop_mask = br.reference_crop(self.t("in_ref_image"),
                                                      self.ref_mask)
        self.detail = br.high_frequency_map(self.crop, self.crop_mask, int(g["in_sobel_threshold"]), bool(g["in_sobel_color"]))
        self.crop_ratio = float(g["random_ratios_drawn"][-1])
        self.hints = br.build_hints(self.t("in_back_image"), self.target_mask, self.fused.visible_in_box, self.fused_png,
                                    self.detail, self.crop_ratio, float(g["in_pixel_num"]))

    def t(self, key: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.g[key]))


@pytest.fixture(scope="module", params=CASES)
def case(request) -> Case:
    return Case(request.param)


def test_object_depth_crop(case):
    equal(case.ref_depth[case.y1:case.y2, case.x1:case.x2], case.g["ref_depth_cropped"], "ref_depth_cropped")
    equal(case.ref_mask[case.y1:case.y2, case.x1:case.x2], case.g["ref_mask_cropped"], "ref_mask_cropped")


def test_fused_depth_and_masks(case):
    equal(case.fused.depth, case.g["fused_depth_f32"], "fused_depth_f32")
    equal(case.fused.visible, case.g["fused_mask"], "fused_mask")
    equal(case.fused.visible_in_box, case.g["occluded_mask"], "occluded_mask")
    equal(case.fused_png, case.g["fused_depth_png_u8"], "fused_depth_png_u8")
    equal(case.target_mask, case.g["tar_mask"], "tar_mask")


def test_reference_crop_and_dino_inputs(case):
    equal(case.crop, case.g["pp_masked_ref_224"], "pp_masked_ref_224")
    equal(case.crop_mask, case.g["pp_ref_mask_224"], "pp_ref_mask_224")
    equal(case.crop.to(torch.float64) / 255, case.g["item_ref"], "item_ref")
    equal(dino_pixels(case.crop[None]), case.g["dino_input"], "dino_input")
    equal(dino_pixels(torch.zeros(1, 224, 224, 3, dtype=torch.uint8)), case.g["dino_uncond_input"], "dino_uncond_input")


def test_high_frequency_maps(case):
    equal(br.high_frequency_map(case.crop, case.crop_mask, int(case.g["in_sobel_threshold"]), False),
          case.g["pp_sobel_224"], "pp_sobel_224")
    equal(br.high_frequency_map(case.crop, case.crop_mask, int(case.g["in_sobel_threshold"]), True),
          case.g["pp_sobel_224_color_true"], "pp_sobel_224_color_true")


def test_crop_boxes(case):
    crop = case.hints.crop
    equal(np.array(br.mask_bounding_box(case.target_mask)), case.g["pp_tar_box_yyxx_raw"], "pp_tar_box_yyxx_raw")
    equal(np.array(crop.object_box), case.g["pp_tar_box_yyxx_1p1"], "pp_tar_box_yyxx_1p1")
    equal(np.array(crop.crop_box), case.g["item_tar_box_yyxx_crop"], "item_tar_box_yyxx_crop")
    equal(np.array(crop.object_in_crop), case.g["pp_tar_box_in_crop"], "pp_tar_box_in_crop")
    h1, w1 = case.hints.crop_hw
    side = max(h1, w1)
    equal(np.array([h1, w1, side, side]), case.g["item_extra_sizes"], "item_extra_sizes")


def test_hints(case):
    equal(case.hints.detail, case.g["item_hint"], "item_hint")
    equal(case.hints.depth, case.g["item_depth"], "item_depth")
    equal(case.hints.target, case.g["item_jpg"], "item_jpg")
    equal(case.hints.detail.permute(2, 0, 1)[None], case.g["control_detail"], "control_detail")
    equal(case.hints.depth.permute(2, 0, 1)[None], case.g["control_depth"], "control_depth")


def test_padding_of_the_mask_channel_reads_inside(case):
    """numpy stores the reference's -1 mask padding in uint8 as 255, so the padded band is 1."""
    h1, w1 = case.hints.crop_hw
    top, _, left, _ = br.square_padding(h1, w1)
    band = int(max(top, left) * br.HINT_SIZE / max(h1, w1)) - 1
    mask = case.hints.detail[..., 3]
    assert band >= 1 or max(top, left) <= 1
    assert bool((mask[:max(band, 0)] if top else mask[:, :max(band, 0)]).eq(1).all())


def test_paste_back(case):
    h1, w1 = case.hints.crop_hw
    generated = torch.from_numpy(case.g["in_x_sample_synthetic"])
    pasted = br.paste_back(generated, case.t("in_back_image"), case.hints.crop.crop_box, br.square_padding(h1, w1))
    equal(pasted, case.g["gen_image"], "gen_image")
