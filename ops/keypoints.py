"""Human skeletons: COCO-17 keypoints, conversions from OpenPose/DWPose, retargeting and drawing.

Diorama keeps a skeleton as `Keypoints`: points [B, 17, 3] in COCO-17 order, x and y as fractions
of the width and height of the image they belong to (`image_hw`), and a visibility/confidence in
0..1 (0 = not labelled). Fractions need the image size to stay meaningful when a skeleton moves
between images of different aspect (retargeting keeps proportions in pixels, not in fractions).

Policy for points outside the image: hand-written numbers are refused (a typo is likelier than
intent); points that end up outside after retargeting or cropping to a window are kept but marked
invisible, as COCO leaves out-of-frame joints unlabelled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .checks import file_pixels

COCO17 = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
          "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
          "right_knee", "left_ankle", "right_ankle")
# OpenPose's COCO-18 body model (also what comfyui_controlnet_aux's OpenPose and DWPose write in
# pose_keypoints_2d): COCO's joints in another order plus the neck.
OPENPOSE18 = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
              "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
              "right_eye", "left_eye", "right_ear", "left_ear")
# OpenPose BODY_25: the 18 above with a mid-hip inserted at 8, then six foot points.
BODY25 = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
          "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
          "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel",
          "right_big_toe", "right_small_toe", "right_heel")
WHOLEBODY133 = 133  # COCO-WholeBody (DWPose's raw output): the first 17 are COCO-17, in COCO order

LAYOUTS = {len(OPENPOSE18): OPENPOSE18, len(BODY25): BODY25}


def coco_indices(names: tuple[str, ...]) -> list[int]:
    """For each COCO-17 joint, its index in a skeleton whose joints are `names`."""
    return [names.index(name) for name in COCO17]


# OpenPose draws these limbs (pairs of OpenPose-18 joints), limb i in COLOURS[i]; joint j in COLOURS[j].
OPENPOSE_LIMBS = (("neck", "right_shoulder"), ("neck", "left_shoulder"), ("right_shoulder", "right_elbow"),
                  ("right_elbow", "right_wrist"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
                  ("neck", "right_hip"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
                  ("neck", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
                  ("neck", "nose"), ("nose", "right_eye"), ("right_eye", "right_ear"), ("nose", "left_eye"),
                  ("left_eye", "left_ear"))
OPENPOSE_COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
LIMB_SHADE = 0.6  # limbs are drawn at 60 % of their colour, joints at full colour
STICK_HALF_WIDTH = 4
JOINT_RADIUS = 4


@dataclass(frozen=True)
class Keypoints:
    points: torch.Tensor  # [B, 17, 3]: x, y as fractions of image_hw, visibility 0..1 (COCO-17 order)
    image_hw: tuple[int, int]  # (height, width) of the image the fractions refer to

    @property
    def pixels(self) -> torch.Tensor:
        """x, y in pixels of image_hw, [B, 17, 2]."""
        height, width = self.image_hw
        return self.points[..., :2] * self.points.new_tensor([width, height])


def validate(points: torch.Tensor, name: str = "keypoints") -> torch.Tensor:
    """[B,17,3] (or [17,3]) float keypoints, checked; every item needs one visible point."""
    if points.ndim == 2:
        points = points.unsqueeze(0)
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"{name}: expected keypoints [batch, 17, 3] (x, y, visibility), got shape {tuple(points.shape)}")
    if points.shape[1] != len(COCO17):
        raise ValueError(f"{name}: {points.shape[1]} keypoints given, expected the 17 COCO keypoints "
                         f"({', '.join(COCO17)}); mark missing ones with visibility 0")
    if points.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty; expected at least one skeleton")
    if not bool(torch.isfinite(points).all()):
        raise ValueError(f"{name}: contains NaN or infinite values; expected finite numbers")
    visibility = points[..., 2]
    if bool((visibility < 0).any()) or bool((visibility > 1).any()):
        raise ValueError(f"{name}: visibility/confidence must lie in 0..1, got values from "
                         f"{float(visibility.min()):.3g} to {float(visibility.max()):.3g}")
    invisible = [i for i in range(points.shape[0]) if not bool((visibility[i] > 0).any())]
    if invisible:
        raise ValueError(f"{name}: every keypoint of skeleton(s) {invisible} is invisible (visibility 0); "
                         "expected at least one visible keypoint per skeleton")
    return points.float()


def outside_image(points: torch.Tensor) -> torch.Tensor:
    """[B,17] bool: visible points whose x or y lies outside 0..1."""
    xy = points[..., :2]
    return (points[..., 2] > 0) & ((xy < 0) | (xy > 1)).any(-1)


def require_inside(points: torch.Tensor, name: str = "keypoints") -> None:
    outside = outside_image(points)
    if bool(outside.any()):
        item, joint = (int(v) for v in torch.nonzero(outside)[0])
        x, y = (float(v) for v in points[item, joint, :2])
        raise ValueError(f"{name}: {int(outside.sum())} visible keypoint(s) lie outside the image, e.g. "
                         f"{COCO17[joint]} of skeleton {item} at x={x:.4g}, y={y:.4g} (fractions); expected 0..1, "
                         "or visibility 0 for joints out of frame")


def hide_outside(points: torch.Tensor) -> torch.Tensor:
    """A copy with points outside the image marked invisible (COCO's rule for out-of-frame joints)."""
    out = points.clone()
    out[..., 2] = torch.where(outside_image(points), torch.zeros_like(out[..., 2]), out[..., 2])
    return out


def from_numbers(values, height: int, width: int, unit: str) -> Keypoints:
    """One or more skeletons from plain numbers: 17 [x, y] or [x, y, v] rows, or 34/51 flat numbers,
    or a list of such skeletons. `unit` is 'fractions' or 'pixels' (of a width x height image)."""
    if unit not in ("fractions", "pixels"):
        raise ValueError(f"unit {unit!r} is unknown; expected 'fractions' or 'pixels'")
    if min(height, width) < 1:
        raise ValueError(f"image size {width}x{height} must be positive")
    tensor = torch.as_tensor(values, dtype=torch.float64)
    if tensor.ndim == 1 or (tensor.ndim == 2 and tensor.shape[-1] not in (2, 3)):
        tensor = tensor.reshape(1, -1) if tensor.ndim == 1 else tensor
        flat = tensor.shape[-1]
        if flat % 3 == 0 and flat // 3 == len(COCO17):
            tensor = tensor.reshape(tensor.shape[0], len(COCO17), 3)
        elif flat % 2 == 0 and flat // 2 == len(COCO17):
            tensor = tensor.reshape(tensor.shape[0], len(COCO17), 2)
        else:
            raise ValueError(f"{flat} numbers per skeleton given; expected 17 keypoints as 51 numbers "
                             "(x, y, visibility) or 34 numbers (x, y)")
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 3 or tensor.shape[-1] not in (2, 3):
        raise ValueError(f"keypoints of shape {tuple(tensor.shape)}; expected 17 rows of [x, y] or [x, y, visibility]")
    if tensor.shape[1] != len(COCO17):
        raise ValueError(f"{tensor.shape[1]} keypoints given, expected the 17 COCO keypoints "
                         f"({', '.join(COCO17)}); mark missing ones with visibility 0")
    if tensor.shape[-1] == 2:
        tensor = torch.cat([tensor, torch.ones_like(tensor[..., :1])], dim=-1)
    if unit == "pixels":
        tensor = tensor / tensor.new_tensor([width, height, 1.0])
    points = validate(tensor.float())
    require_inside(points)
    return Keypoints(points, (height, width))


def _unit_is_pixels(triples: list[torch.Tensor], coordinates: str) -> bool:
    if coordinates in ("normalised", "pixels"):
        return coordinates == "pixels"
    if coordinates != "auto":
        raise ValueError(f"coordinates {coordinates!r} is unknown; expected 'auto', 'normalised' or 'pixels'")
    # OpenPose in comfyui_controlnet_aux writes fractions, DWPose writes pixels. A real person seen in
    # pixels has some coordinate above 2; fractions stay near 0..1 even for joints slightly out of frame.
    visible = [t[t[:, 2] > 0, :2] for t in triples]
    largest = max((float(v.abs().max()) for v in visible if v.numel()), default=0.0)
    return largest > 2.0


def from_pose_keypoint(frames, person: int = 0, coordinates: str = "auto") -> Keypoints:
    """comfyui_controlnet_aux's POSE_KEYPOINT (a list per image of {"people": [{"pose_keypoints_2d":
    [x, y, c]*N, ...}], "canvas_width", "canvas_height"}) → COCO-17, one skeleton per image.

    N = 18 (OpenPose/DWPose body order), 25 (OpenPose BODY_25) or 133 (COCO-WholeBody, whose first
    17 are COCO-17). Missing joints are written as (0, 0, 0) and stay invisible here.
    """
    if isinstance(frames, dict):
        frames = [frames]
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ValueError("pose_keypoint: expected a list of pose dicts (one per image), got "
                         f"{type(frames).__name__}{' (empty)' if not frames else ''}")
    if person < 0:
        raise ValueError(f"person index {person} must be >= 0")
    triples, sizes = [], set()
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict) or "people" not in frame:
            raise ValueError(f"pose_keypoint item {index}: expected a dict with 'people', 'canvas_width' and "
                             f"'canvas_height', got {type(frame).__name__} with keys "
                             f"{sorted(frame) if isinstance(frame, dict) else '-'}")
        try:
            height, width = int(frame["canvas_height"]), int(frame["canvas_width"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"pose_keypoint item {index}: canvas_width/canvas_height missing or not numbers") from None
        if min(height, width) < 1:
            raise ValueError(f"pose_keypoint item {index}: canvas {width}x{height} must be positive")
        sizes.add((height, width))
        people = frame["people"] or []
        if person >= len(people):
            raise ValueError(f"pose_keypoint item {index} has {len(people)} people; person index {person} does not "
                             "exist (people are numbered from 0)")
        flat = people[person].get("pose_keypoints_2d") if isinstance(people[person], dict) else None
        if not flat:
            raise ValueError(f"pose_keypoint item {index}, person {person}: no body keypoints (pose_keypoints_2d)")
        values = torch.tensor([float(v) for v in flat], dtype=torch.float64)
        if values.numel() % 3:
            raise ValueError(f"pose_keypoint item {index}, person {person}: {values.numel()} numbers in "
                             "pose_keypoints_2d, expected x, y, confidence triples")
        table = values.reshape(-1, 3)
        count = table.shape[0]
        if count == WHOLEBODY133:
            table = table[:len(COCO17)]
        elif count in LAYOUTS:
            table = table[coco_indices(LAYOUTS[count])]
        else:
            raise ValueError(f"pose_keypoint item {index}, person {person}: {count} body keypoints, expected 18 "
                             f"(OpenPose/DWPose body), 25 (OpenPose BODY_25) or 133 (COCO-WholeBody); fewer than "
                             "17 cannot make a COCO-17 skeleton")
        triples.append(table)
    if len(sizes) != 1:
        raise ValueError(f"pose_keypoint images have different canvas sizes {sorted(sizes)}; expected one size")
    height, width = sizes.pop()
    pixels = _unit_is_pixels(triples, coordinates)
    points = torch.stack(triples)
    points[..., 2] = points[..., 2].clamp(0, 1)
    if pixels:
        points[..., :2] = points[..., :2] / points.new_tensor([width, height])
    # Missing joints carry (0, 0, 0); keep them exactly zero whatever the unit.
    points[..., :2] = torch.where(points[..., 2:] > 0, points[..., :2], torch.zeros_like(points[..., :2]))
    return Keypoints(validate(points.float(), "pose_keypoint"), (height, width))


def visible_pixel_bounds(keypoints: Keypoints) -> torch.Tensor:
    """[B, 4] (x0, y0, x1, y1) pixel bounds of the visible points of each skeleton."""
    pixels = keypoints.pixels.double()
    visible = keypoints.points[..., 2] > 0
    inf = torch.tensor(math.inf, dtype=torch.float64)
    low = torch.where(visible[..., None], pixels, inf).amin(1)
    high = torch.where(visible[..., None], pixels, -inf).amax(1)
    return torch.cat([low, high], dim=-1)


ANCHORS = ("bottom", "center")


def retarget(keypoints: Keypoints, box: tuple[float, float, float, float], target_hw: tuple[int, int],
             anchor: str = "bottom") -> Keypoints:
    """Move and scale each skeleton uniformly (in pixels) so its visible points fit the box
    (x0, y0, x1, y1 fractions of a target_hw image), centred horizontally; `bottom` stands the
    lowest point on the box's bottom edge, `center` centres it vertically too."""
    if anchor not in ANCHORS:
        raise ValueError(f"anchor {anchor!r} is unknown; expected one of {ANCHORS}")
    height, width = target_hw
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"target box (x0={x0:.4g}, y0={y0:.4g}, x1={x1:.4g}, y1={y1:.4g}) has zero or negative area")
    bx0, by0, bx1, by1 = x0 * width, y0 * height, x1 * width, y1 * height
    bounds = visible_pixel_bounds(keypoints)
    span = bounds[:, 2:] - bounds[:, :2]  # [B, 2] (w, h)
    if bool((span.amax(-1) <= 0).any()):
        raise ValueError("a skeleton has all its visible keypoints at one point; retargeting needs at least two "
                         "distinct visible keypoints to know its size")
    # Fit inside the box: the tighter of the two axes sets the one scale; a zero-width (or zero-height)
    # skeleton is scaled by the other axis alone.
    scales = torch.stack([(bx1 - bx0) / span[:, 0], (by1 - by0) / span[:, 1]], dim=-1)
    scale = torch.where(span > 0, scales, torch.full_like(scales, math.inf)).amin(-1)  # [B]
    centre_x = (bounds[:, 0] + bounds[:, 2]) / 2
    new_x = (bx0 + bx1) / 2
    if anchor == "bottom":
        ref_y, new_y = bounds[:, 3], torch.full_like(scale, by1)
    else:
        ref_y, new_y = (bounds[:, 1] + bounds[:, 3]) / 2, torch.full_like(scale, (by0 + by1) / 2)
    pixels = keypoints.pixels.double()
    moved_x = (pixels[..., 0] - centre_x[:, None]) * scale[:, None] + new_x
    moved_y = (pixels[..., 1] - ref_y[:, None]) * scale[:, None] + new_y[:, None]
    points = keypoints.points.clone()
    points[..., 0] = (moved_x / width).float()
    points[..., 1] = (moved_y / height).float()
    return Keypoints(points, (height, width))


def crop_to_area(keypoints: Keypoints, area_fractions: tuple[float, float, float, float]) -> Keypoints:
    """Re-express in a sub-rectangle (y0, x0, y1, x1 fractions of the image, e.g. a sampling window);
    points outside it become invisible. The new image size is the area's size in pixels (rounded)."""
    y0, x0, y1, x1 = area_fractions
    height, width = keypoints.image_hw
    points = keypoints.points.clone()
    points[..., 0] = (points[..., 0] - x0) / (x1 - x0)
    points[..., 1] = (points[..., 1] - y0) / (y1 - y0)
    area_hw = (max(1, round((y1 - y0) * height)), max(1, round((x1 - x0) * width)))
    return Keypoints(hide_outside(points), area_hw)


def pose_vector(points: torch.Tensor) -> torch.Tensor:
    """[B,17,3] → [B,51] (x, y, visibility per joint, COCO order); invisible joints are (0, 0, 0),
    COCO's encoding of unlabelled joints, so their stale coordinates carry no signal."""
    visible = points[..., 2:] > 0
    return torch.where(visible, points, torch.zeros_like(points)).flatten(1)


def to_openpose18(points: torch.Tensor) -> torch.Tensor:
    """[B,17,3] COCO → [B,18,3] OpenPose-18; the neck is the shoulders' midpoint, visible only when
    both shoulders are (as DWPose derives it), with the smaller of their confidences."""
    left, right = points[:, COCO17.index("left_shoulder")], points[:, COCO17.index("right_shoulder")]
    neck = torch.cat([(left[:, :2] + right[:, :2]) / 2, torch.minimum(left[:, 2:], right[:, 2:])], dim=-1)
    neck[:, 2] = torch.where((left[:, 2] > 0) & (right[:, 2] > 0), neck[:, 2], torch.zeros_like(neck[:, 2]))
    out = points.new_zeros(points.shape[0], len(OPENPOSE18), 3)
    for index, name in enumerate(OPENPOSE18):
        out[:, index] = neck if name == "neck" else points[:, COCO17.index(name)]
    return out


def _stick_polygon(xa: float, ya: float, xb: float, yb: float, half_width: float) -> list[tuple[float, float]]:
    """The filled ellipse OpenPose draws for a limb: long axis the limb, short half-axis half_width,
    outlined at 1° steps (whole-pixel centre, half-length and angle, as OpenPose's renderer rounds)."""
    cx, cy = int((xa + xb) / 2), int((ya + yb) / 2)
    half_length = int(math.hypot(xa - xb, ya - yb) / 2)
    angle = math.radians(int(math.degrees(math.atan2(ya - yb, xa - xb))))
    cos, sin = math.cos(angle), math.sin(angle)
    outline = []
    for degree in range(0, 361):
        t = math.radians(degree)
        ex, ey = half_length * math.cos(t), half_width * math.sin(t)
        outline.append((round(cx + ex * cos - ey * sin), round(cy + ex * sin + ey * cos)))
    return outline


def draw_openpose(keypoints: Keypoints, height: int, width: int, min_confidence: float = 0.3,
                  canvas: torch.Tensor | None = None) -> torch.Tensor:
    """OpenPose-style skeleton images [B, H, W, 3] float 0..1: limbs as ellipses at 60 % colour,
    then joints as radius-4 discs at full colour, in OpenPose-18 order and colours, on black (or
    on `canvas` [B|1, H, W, 3]). Joints below min_confidence are left out with their limbs."""
    from PIL import Image, ImageDraw

    if min(height, width) < 1:
        raise ValueError(f"drawing size {width}x{height} must be positive")
    body = to_openpose18(keypoints.points)
    batch = body.shape[0] if canvas is None else max(body.shape[0], canvas.shape[0])
    images = []
    for item in range(batch):
        skeleton = min(item, body.shape[0] - 1)
        if canvas is None:
            image = Image.new("RGB", (width, height))
        else:
            base = canvas[min(item, canvas.shape[0] - 1)]
            image = Image.fromarray(file_pixels(base).cpu().numpy())
        draw = ImageDraw.Draw(image)
        xy = (body[skeleton, :, :2].double() * torch.tensor([width, height], dtype=torch.float64)).tolist()
        confidence = body[skeleton, :, 2]
        shown = (confidence >= min_confidence if min_confidence > 0 else confidence > 0).tolist()
        for (name_a, name_b), colour in zip(OPENPOSE_LIMBS, OPENPOSE_COLOURS):
            a, b = OPENPOSE18.index(name_a), OPENPOSE18.index(name_b)
            if shown[a] and shown[b]:
                polygon = _stick_polygon(*xy[a], *xy[b], STICK_HALF_WIDTH)
                draw.polygon(polygon, fill=tuple(int(c * LIMB_SHADE) for c in colour))
        for joint, colour in enumerate(OPENPOSE_COLOURS):
            if shown[joint]:
                x, y = int(xy[joint][0]), int(xy[joint][1])
                draw.ellipse((x - JOINT_RADIUS, y - JOINT_RADIUS, x + JOINT_RADIUS, y + JOINT_RADIUS), fill=colour)
        images.append(torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(height, width, 3))
    return torch.stack(images).float() / 255.0
