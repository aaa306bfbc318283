"""AnyDoor's detail hint against an independent numpy/OpenCV implementation of its `process_pairs`
(AnyDoor ships no golden arrays; OpenCV is the test-only oracle for its arithmetic)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from diorama.ops import bifrost_reference as br
from reference_data import reference_dir


def box_of(mask):
    rows, cols = np.where(mask.any(1))[0], np.where(mask.any(0))[0]
    return rows[0], rows[-1], cols[0], cols[-1]


def grow(box, ratio, h, w):
    y1, y2, x1, x2 = box
    yc, xc = 0.5 * (y1 + y2), 0.5 * (x1 + x2)
    bh, bw = ratio * (y2 - y1 + 1), ratio * (x2 - x1 + 1)
    return max(0, int(yc - bh * 0.5)), min(h, int(yc + bh * 0.5)), max(0, int(xc - bw * 0.5)), min(w, int(xc + bw * 0.5))


def squared(box, h, w):
    y1, y2, x1, x2 = box
    cy, cx, bh, bw = (y1 + y2) // 2, (x1 + x2) // 2, y2 - y1, x2 - x1
    if bh >= bw:
        x1, x2 = cx - bh // 2, cx + bh // 2
    else:
        y1, y2 = cy - bw // 2, cy + bw // 2
    return max(0, y1), min(h, y2), max(0, x1), min(w, x2)


def square_pad(image, value):
    h, w = image.shape[:2]
    first = int(abs(h - w) / 2)
    second = abs(h - w) - first
    pads = ((0, 0), (first, second)) if h > w else ((first, second), (0, 0))
    return np.pad(image, pads + ((0, 0),) * (image.ndim - 2), constant_values=value)


def anydoor_oracle(reference, ref_mask, background, target_mask, ratio, threshold=50):
    y1, y2, x1, x2 = box_of(ref_mask)
    whitened = np.where(ref_mask[..., None] == 1, reference, 255).astype(np.uint8)[y1:y2, x1:x2]
    mask = ref_mask[y1:y2, x1:x2]
    h, w = mask.shape
    H, W = int(h * 1.2), int(w * 1.2)
    t, l = (H - h) // 2, (W - w) // 2
    whitened = np.pad(whitened, ((t, H - h - t), (l, W - w - l), (0, 0)), constant_values=255)
    mask = np.pad(mask, ((t, H - h - t), (l, W - w - l)), constant_values=0)
    crop = cv2.resize(square_pad(whitened, 255), (224, 224))
    crop_mask = cv2.resize(square_pad(np.stack([mask] * 3, -1) * 255, 0), (224, 224))[..., 0]
    # The colour high-frequency map.
    small = cv2.resize(crop, (256, 256))
    inside = (cv2.resize(crop_mask / 255, (256, 256)) > 0.5).astype(np.uint8)
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8), iterations=2)
    edges = cv2.addWeighted(cv2.convertScaleAbs(cv2.Sobel(small, cv2.CV_64F, 1, 0, ksize=3)), 0.5,
                            cv2.convertScaleAbs(cv2.Sobel(small, cv2.CV_64F, 0, 1, ksize=3)), 0.5, 0)
    edges = edges.max(-1) * inside
    edges[edges < threshold] = 0
    detail = cv2.resize((np.stack([edges] * 3, -1).astype(np.float32) / 255 * small.astype(np.float32)).astype(np.uint8),
                        (224, 224))
    # The target crop and collage.
    hh, ww = target_mask.shape
    box = grow(box_of(target_mask), 1.1, hh, ww)
    crop_box = squared(grow(box, ratio, hh, ww), hh, ww)
    cy1, cy2, cx1, cx2 = crop_box
    cropped = background[cy1:cy2, cx1:cx2]
    by1, by2, bx1, bx2 = box[0] - cy1, box[1] - cy1, box[2] - cx1, box[3] - cx1
    collage = cropped.copy()
    collage[by1:by2, bx1:bx2] = cv2.resize(detail, (bx2 - bx1, by2 - by1))
    collage_mask = np.zeros(cropped.shape[:2], np.float64)
    collage_mask[by1:by2, bx1:bx2] = 1
    collage = cv2.resize(square_pad(collage, 0), (512, 512)).astype(np.float32)
    collage_mask = square_pad(collage_mask, -1).astype(np.int64).astype(np.uint8)  # -1 → 255, as numpy stores it
    collage_mask = (cv2.resize(collage_mask, (512, 512)).astype(np.float32) > 0.5).astype(np.float32)
    return np.concatenate([collage / 127.5 - 1.0, collage_mask[..., None]], -1), crop_box


@pytest.mark.parametrize("ratio", [1.5, 2.1, 2.9])
def test_anydoor_hint_matches_an_independent_implementation(ratio):
    g = np.load(reference_dir("bifrost") / "real_repo_example.npz")
    reference, ref_mask, background = g["in_ref_image"], g["in_ref_mask"], g["in_back_image"]
    target_mask = g["tar_mask"]
    expected, crop_box = anydoor_oracle(reference, ref_mask, background, target_mask, ratio)
    crop, crop_mask = br.reference_crop(torch.from_numpy(reference), torch.from_numpy(ref_mask))
    detail = br.high_frequency_map(crop, crop_mask, 50, colour=True)
    hints = br.build_anydoor_hint(torch.from_numpy(background), torch.from_numpy(target_mask), detail, ratio)
    assert hints.crop.crop_box == tuple(int(v) for v in crop_box)
    assert hints.depth is None
    assert np.array_equal(hints.detail.numpy(), expected)
    # Unlike BIFRÖST's, AnyDoor's collage keeps the reference's colour detail in the box.
    assert float(hints.detail[..., :3].max()) > -1
