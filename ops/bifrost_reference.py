"""BIFRÖST's (and AnyDoor's) own input preparation, reproduced exactly.

The released weights were trained and evaluated on inputs made by the reference repository's
numpy/OpenCV code, quirks included (a detail map that a uint8 cast erases, a mask padding that
wraps to 255, inclusive box ends used as exclusive slice ends). Reproducing those values, not
improving on them, is what gives the published behaviour. Arrays follow the reference's layout:
uint8 images [H,W,3], masks [H,W] with values {0,1}, boxes as (y1, y2, x1, x2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .opencv_arith import add_weighted_u8, erode_box, normalize_minmax, resize_linear, saturate_u8, sobel_abs_u8

Box = tuple[int, int, int, int]  # y1, y2, x1, x2

REFERENCE_SIZE = 224
HINT_SIZE = 512
REFERENCE_EXPANSION = 1.2
OBJECT_BOX_EXPANSION = 1.1
SOBEL_SIZE = 256
PASTE_MARGIN = 5
CROP_RATIOS = tuple(k / 10 for k in range(15, 30))  # the reference draws one of these at random


def mask_bounding_box(mask: torch.Tensor) -> Box:
    """The reference's `get_bbox_from_mask`: inclusive last row/column, the whole image below 10 pixels."""
    height, width = mask.shape
    if int(mask.to(torch.int64).sum()) < 10:
        return 0, height, 0, width
    rows = torch.nonzero(mask.any(dim=1))[:, 0]
    cols = torch.nonzero(mask.any(dim=0))[:, 0]
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def pad_centred(image: torch.Tensor, top: int, bottom: int, left: int, right: int, value: int) -> torch.Tensor:
    planes = image.permute(2, 0, 1) if image.dim() == 3 else image[None]
    padded = F.pad(planes, (left, right, top, bottom), value=value)
    return padded.permute(1, 2, 0) if image.dim() == 3 else padded[0]


def square_padding(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the reference's `pad_to_square` (centred, extra pixel after)."""
    difference = abs(height - width)
    first = int(difference / 2)
    second = difference - first
    return (0, 0, first, second) if height > width else (first, second, 0, 0)


def pad_to_square(image: torch.Tensor, value: int) -> torch.Tensor:
    return pad_centred(image, *square_padding(*image.shape[:2]), value)


def expand_image_mask(image: torch.Tensor, mask: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred margin around the object crop: white image, empty mask."""
    height, width = image.shape[:2]
    grown_h, grown_w = int(height * ratio), int(width * ratio)
    top, left = (grown_h - height) // 2, (grown_w - width) // 2
    bottom, right = grown_h - height - top, grown_w - width - left
    return (pad_centred(image, top, bottom, left, right, 255), pad_centred(mask, top, bottom, left, right, 0))


def reference_crop(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 224² whitened object crop DINOv2 sees, and its mask (0/255).

    image uint8 [H,W,3], mask {0,1} [H,W] → (uint8 [224,224,3], uint8 [224,224]).
    """
    mask = mask.to(torch.uint8)
    y1, y2, x1, x2 = mask_bounding_box(mask)
    keep = mask[..., None]
    whitened = image * keep + 255 * (1 - keep)
    crop, crop_mask = expand_image_mask(whitened[y1:y2, x1:x2], mask[y1:y2, x1:x2], REFERENCE_EXPANSION)
    crop = resize_linear(pad_to_square(crop, 255), REFERENCE_SIZE, REFERENCE_SIZE)
    crop_mask = resize_linear(pad_to_square(crop_mask * 255, 0), REFERENCE_SIZE, REFERENCE_SIZE)
    return crop, crop_mask


def high_frequency_map(crop: torch.Tensor, crop_mask: torch.Tensor, threshold: int, colour: bool) -> torch.Tensor:
    """The reference's `sobel`: per-channel Sobel magnitude, max over channels (colour-free), inside
    the eroded object mask, small values dropped. float [0,1] [H,W,3], or uint8 colour when `colour`."""
    height, width = crop.shape[:2]
    small = resize_linear(crop, SOBEL_SIZE, SOBEL_SIZE)
    inside = (resize_linear(crop_mask.to(torch.float64) / 255, SOBEL_SIZE, SOBEL_SIZE) > 0.5).to(torch.uint8)
    inside = erode_box(inside, 5, 2)
    dx, dy = sobel_abs_u8(small)
    magnitude = add_weighted_u8(dx, 0.5, dy, 0.5, 0).amax(dim=-1) * inside
    magnitude[magnitude < threshold] = 0
    magnitude = magnitude[..., None].expand(-1, -1, 3)
    if colour:
        detail = (magnitude.to(torch.float32) / 255 * small.to(torch.float32)).to(torch.uint8)
    else:
        detail = magnitude.to(torch.float32) / 255
    return resize_linear(detail, width, height)


@dataclass(frozen=True)
class FusedDepth:
    depth: torch.Tensor  # float32 [H,W] in 0..255 (disparity: larger is nearer)
    visible: torch.Tensor  # uint8 [H,W], the object's visible pixels inside its box
    visible_in_box: torch.Tensor  # uint8 [box_h, box_w]


def box_rows_cols(box_xywh: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel extent (row0, rows, col0, cols) of a fractional [x, y, w, h] box, as the reference rounds it."""
    x, y, w, h = box_xywh
    return int(y * height), int(h * height), int(x * width), int(w * width)


def fuse_reference_depth(background_depth: torch.Tensor, object_depth: torch.Tensor, object_mask: torch.Tensor,
                         box_xywh: tuple[float, float, float, float], depth_range: tuple[float, float]) -> FusedDepth:
    """The reference's `depth_mask_fusion` in 'place' mode.

    background_depth: [H,W] disparity (any scale); object_depth/object_mask: the object's disparity
    (already zero outside its mask) and mask, cropped to the object; depth_range: (low, high) in
    0..1 of the background's min-max range, the object's far and near end.
    """
    height, width = background_depth.shape
    row0, rows, col0, cols = box_rows_cols(box_xywh, height, width)
    if rows < 1 or cols < 1:
        raise ValueError(f"the box {box_xywh} covers less than one pixel of the {width}x{height} background")
    if row0 + rows > height or col0 + cols > width:
        raise ValueError(f"the box {box_xywh} (x, y, w, h) reaches outside the image; x + w and y + h must be <= 1")
    fused = normalize_minmax(background_depth, 0, 255)
    low, high = depth_range
    scaled = resize_linear(normalize_minmax(object_depth, low * 255, high * 255), cols, rows)
    placed_mask = resize_linear(object_mask.to(torch.uint8), cols, rows)
    area = fused[row0:row0 + rows, col0:col0 + cols]
    visible = (placed_mask == 1) & (scaled > area)
    area[visible] = scaled[visible]
    visible_in_box = visible.to(torch.uint8)
    visible_full = torch.zeros(height, width, dtype=torch.uint8)
    visible_full[row0:row0 + rows, col0:col0 + cols] = visible_in_box
    return FusedDepth(fused, visible_full, visible_in_box)


def expand_box(box: Box, ratio: float, height: int, width: int) -> Box:
    """The reference's `expand_bbox` with a fixed ratio: centre ± ratio·(size+1)/2, clipped."""
    y1, y2, x1, x2 = box
    xc, yc = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
    h, w = ratio * (y2 - y1 + 1), ratio * (x2 - x1 + 1)
    return (max(0, int(yc - h * 0.5)), min(height, int(yc + h * 0.5)),
            max(0, int(xc - w * 0.5)), min(width, int(xc + w * 0.5)))


def square_box(box: Box, height: int, width: int) -> Box:
    """The reference's `box2squre`: a square on the long side about the centre, clipped."""
    y1, y2, x1, x2 = box
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    h, w = y2 - y1, x2 - x1
    if h >= w:
        x1, x2 = cx - h // 2, cx + h // 2
    else:
        y1, y2 = cy - w // 2, cy + w // 2
    return max(0, y1), min(height, y2), max(0, x1), min(width, x2)


def reference_crop_ratio(ratio: float) -> float:
    """The crop ratio as the reference computes it (an integer draw divided by 10)."""
    tenths = round(ratio * 10)
    if not 15 <= tenths <= 29:
        raise ValueError(f"crop ratio {ratio} is outside the range the weights were trained on; expected 1.5 to 2.9 "
                         "in steps of 0.1")
    return tenths / 10


@dataclass(frozen=True)
class HintCrop:
    object_box: Box  # the object's box grown 1.1×, in the background
    crop_box: Box  # the region that is sampled, in the background
    object_in_crop: Box


def hint_crop(target_mask: torch.Tensor, crop_ratio: float) -> HintCrop:
    """Where the model samples: the visible object's box ×1.1, grown by the crop ratio, made square."""
    height, width = target_mask.shape
    object_box = expand_box(mask_bounding_box(target_mask), OBJECT_BOX_EXPANSION, height, width)
    crop = square_box(expand_box(object_box, reference_crop_ratio(crop_ratio), height, width), height, width)
    inside = (object_box[0] - crop[0], object_box[1] - crop[0], object_box[2] - crop[2], object_box[3] - crop[2])
    return HintCrop(object_box, crop, inside)


def dilate_mask_boxes(mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """The reference's `aug_tar_mask`: every mask pixel sets the box [i-kh, i+kh) × [j-kw, j+kw)."""
    height, width = mask.shape
    kh, kw = int(fraction * height), int(fraction * width)
    if kh == 0 or kw == 0:
        return mask.clone()  # the box is empty: nothing is set
    planes = mask[None, None].to(torch.float32)
    # A pixel p is set by a source q with q - k <= p < q + k, i.e. q in (p - k, p + k].
    planes = F.pad(planes, (kw - 1, kw, kh - 1, kh))
    # A box maximum is a column maximum of row maxima: two 1-D pools instead of one 2-D one.
    planes = F.max_pool2d(F.max_pool2d(planes, (2 * kh, 1), stride=1), (1, 2 * kw), stride=1)
    return planes[0, 0].to(mask.dtype).maximum(mask)


def depth_hint_source(fused_depth_u8: torch.Tensor) -> torch.Tensor:
    """The fused depth as the depth ControlNet's source: min-max to 0..255, truncated, three channels."""
    return normalize_minmax(fused_depth_u8, 0, 255).to(torch.uint8)[..., None].expand(-1, -1, 3)


@dataclass(frozen=True)
class Hints:
    detail: torch.Tensor  # float32 [512,512,4]: collage RGB in [-1,1] + mask channel {0,1}
    depth: torch.Tensor | None  # float32 [512,512,3] in [0,1]; None for AnyDoor
    crop: HintCrop
    crop_hw: tuple[int, int]  # the crop's size before it was padded square (H1, W1)
    target: torch.Tensor  # float32 [512,512,3] in [-1,1]: the background crop (training's `jpg`)


def _square_hint(cropped: torch.Tensor, collage: torch.Tensor, mask: torch.Tensor, crop: HintCrop,
                 depth_source: torch.Tensor | None) -> Hints:
    """Pad the crop's collage, mask and depth square and resize them to 512² as the reference does."""
    crop_hw = (cropped.shape[0], cropped.shape[1])
    # The mask is padded with -1, which numpy stores in uint8 as 255: the padding reads as "inside".
    mask_channel = resize_linear(pad_to_square(mask, 255), HINT_SIZE, HINT_SIZE).to(torch.float32) > 0.5
    collage = resize_linear(pad_to_square(collage, 0), HINT_SIZE, HINT_SIZE).to(torch.float32)
    detail_hint = torch.cat([collage / 127.5 - 1.0, mask_channel.to(torch.float32)[..., None]], dim=-1)
    target = resize_linear(pad_to_square(cropped, 0), HINT_SIZE, HINT_SIZE).to(torch.float32) / 127.5 - 1.0
    depth = None
    if depth_source is not None:
        y1, y2, x1, x2 = crop.crop_box
        depth = resize_linear(pad_to_square(depth_source[y1:y2, x1:x2], 0), HINT_SIZE, HINT_SIZE)
        depth = (depth.to(torch.float64) / 255).to(torch.float32)
    return Hints(detail_hint, depth, crop, crop_hw, target)


def build_hints(background: torch.Tensor, target_mask: torch.Tensor, visible_in_box: torch.Tensor,
                fused_depth_u8: torch.Tensor, detail_map: torch.Tensor, crop_ratio: float,
                mask_growth: float | None) -> Hints:
    """BIFRÖST's detail (4-channel) and depth (3-channel) ControlNet hints for the crop around the object.

    background uint8 [H,W,3]; target_mask {0,1} [H,W] (the visible object); visible_in_box: the
    fusion's box-sized visibility; fused_depth_u8 [H,W]; detail_map: `high_frequency_map` output.
    """
    crop = hint_crop(target_mask, crop_ratio)
    y1, y2, x1, x2 = crop.crop_box
    cropped = background[y1:y2, x1:x2]
    cropped_mask = target_mask[y1:y2, x1:x2].to(torch.uint8)
    oy1, oy2, ox1, ox2 = crop.object_in_crop
    box_h, box_w = oy2 - oy1, ox2 - ox1
    detail = resize_linear(detail_map, box_w, box_h)
    occluded = resize_linear(visible_in_box.to(torch.uint8), box_w, box_h) == 0
    detail[occluded] = 0
    collage = cropped.clone()
    # The reference writes a float map into a uint8 array: every value below 1 becomes 0.
    collage[oy1:oy2, ox1:ox2] = detail.to(torch.uint8)
    if mask_growth is not None:
        cropped_mask = dilate_mask_boxes(cropped_mask, mask_growth)
    rows = torch.arange(cropped.shape[0])[:, None]
    cols = torch.arange(cropped.shape[1])[None, :]
    in_box = (rows >= oy1) & (rows < oy2) & (cols >= ox1) & (cols < ox2)
    collage = torch.where((cropped_mask == 0)[..., None], cropped, collage)
    collage = torch.where(((cropped_mask == 1) & ~in_box)[..., None], torch.zeros_like(collage), collage)
    return _square_hint(cropped, collage, cropped_mask, crop, depth_hint_source(fused_depth_u8))


def build_anydoor_hint(background: torch.Tensor, target_mask: torch.Tensor, detail_map: torch.Tensor,
                       crop_ratio: float) -> Hints:
    """AnyDoor's detail hint: the colour high-frequency map (uint8) resized into the object's box ×1.1,
    the whole box as the mask channel; no occlusion, no background restoration, no depth."""
    crop = hint_crop(target_mask, crop_ratio)
    y1, y2, x1, x2 = crop.crop_box
    cropped = background[y1:y2, x1:x2]
    oy1, oy2, ox1, ox2 = crop.object_in_crop
    collage = cropped.clone()
    collage[oy1:oy2, ox1:ox2] = resize_linear(detail_map, ox2 - ox1, oy2 - oy1)
    box_mask = torch.zeros(cropped.shape[:2], dtype=torch.uint8)
    box_mask[oy1:oy2, ox1:ox2] = 1
    return _square_hint(cropped, collage, box_mask, crop, None)


def paste_back(generated: torch.Tensor, background: torch.Tensor, crop_box: Box,
               padding: tuple[int, int, int, int]) -> torch.Tensor:
    """The reference's `crop_back`: the generated window (pixel values 0..255, float [h,w,3]) without
    its first row, resized to the padded crop, unpadded and pasted hard 5 px inside the crop box."""
    y1, y2, x1, x2 = crop_box
    crop_h, crop_w = y2 - y1, x2 - x1
    top, bottom, left, right = padding
    pred = resize_linear(generated.clamp(0, 255)[1:].contiguous(), crop_w + left + right, crop_h + top + bottom)
    pred = pred[top:top + crop_h, left:left + crop_w]
    out = background.clone()
    m = PASTE_MARGIN
    # Float to uint8 by truncation, as numpy assigns it.
    out[y1 + m:y2 - m, x1 + m:x2 - m] = pred[m:crop_h - m, m:crop_w - m].to(torch.uint8)
    return out


def fused_depth_png(depth: torch.Tensor) -> torch.Tensor:
    """The fused depth after the reference's PNG round trip (uint8, round half to even, saturated)."""
    return saturate_u8(depth)
