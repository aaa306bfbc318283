"""Diorama's OpenCV arithmetic against OpenCV itself (a test-only dependency), on random sizes."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from diorama.ops import opencv_arith as oa

RNG = np.random.default_rng(1234)
SIZES = [tuple(int(v) for v in RNG.integers(2, 300, 4)) for _ in range(25)] + [
    (100, 80, 50, 40),  # exactly 2× smaller: OpenCV switches to area averaging
    (1, 120, 1, 77), (64, 1, 33, 1),  # one row / column: no IPP
    (40, 40, 77, 77), (224, 224, 256, 256), (256, 256, 224, 224)]


@pytest.mark.parametrize("h, w, H, W", SIZES)
def test_uint8_resize_is_bit_exact(h, w, H, W):
    image = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert np.array_equal(oa.resize_linear(torch.from_numpy(image), W, H).numpy(), cv2.resize(image, (W, H)))


@pytest.mark.parametrize("h, w, H, W", SIZES)
def test_float_resize_matches_within_float32_rounding(h, w, H, W):
    image = (RNG.random((h, w, 3)) * 255).astype(np.float32)
    expected = cv2.resize(image, (W, H)).reshape(H, W, 3)
    got = oa.resize_linear(torch.from_numpy(image), W, H).numpy()
    np.testing.assert_allclose(got, expected, rtol=3e-7, atol=3e-5)
    plane = RNG.random((h, w))
    np.testing.assert_allclose(oa.resize_linear(torch.from_numpy(plane), W, H).numpy(),
                               cv2.resize(plane, (W, H)).reshape(H, W), rtol=1e-12, atol=1e-12)


def test_sobel_add_weighted_erode_normalize():
    image = RNG.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    dx, dy = oa.sobel_abs_u8(torch.from_numpy(image))
    ex = cv2.convertScaleAbs(cv2.Sobel(image, cv2.CV_64F, 1, 0, ksize=3))
    ey = cv2.convertScaleAbs(cv2.Sobel(image, cv2.CV_64F, 0, 1, ksize=3))
    assert np.array_equal(dx.numpy(), ex) and np.array_equal(dy.numpy(), ey)
    assert np.array_equal(oa.add_weighted_u8(dx, 0.5, dy, 0.5, 0).numpy(), cv2.addWeighted(ex, 0.5, ey, 0.5, 0))
    mask = (RNG.random((90, 70)) > 0.15).astype(np.uint8)
    assert np.array_equal(oa.erode_box(torch.from_numpy(mask), 5, 2).numpy(),
                          cv2.erode(mask, np.ones((5, 5), np.uint8), iterations=2))
    depth = RNG.integers(0, 65536, (60, 50)).astype(np.uint16)
    expected = np.zeros(depth.shape, np.float32)
    cv2.normalize(depth, expected, alpha=0.3 * 255, beta=0.7 * 255, norm_type=cv2.NORM_MINMAX, dtype=cv2.CV_32F)
    assert np.array_equal(oa.normalize_minmax(torch.from_numpy(depth.astype(np.int64)), 0.3 * 255, 0.7 * 255).numpy(),
                          expected)
