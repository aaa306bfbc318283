"""Relation words → placement boxes and depths (ops/relations.py), checked against the documented
rules worked out by hand on round numbers."""
from __future__ import annotations

import pytest
import torch

from diorama.ops.depth_map import DepthMap
from diorama.ops.relations import Relation, parse_relation, relation_box, relation_depth

HW = (100, 200)  # height, width
ANCHOR = (0.4, 0.4, 0.6, 0.8)  # pixels x 80..120, y 40..80: 40 wide, 40 high


@pytest.mark.parametrize("sentence,expected", [
    ("Place the cat behind the bed", Relation("cat", "behind", "bed")),
    ("Place the cat behind the bed, output the bounding box and the depth value of the center point.",
     Relation("cat", "behind", "bed")),
    ("Put a lamp to the left of the sofa.", Relation("lamp", "left of", "sofa")),
    ("place the backpack to the right of the vase and the chair", Relation("backpack", "right of", "vase")),
    ("Add the cup on top of the wooden table", Relation("cup", "on", "wooden table")),
    ("The cup on the table", Relation("cup", "on", "table")),
    ("Insert a dog in front of the car", Relation("dog", "in front of", "car")),
    ("Place the chair next to the window", Relation("chair", "next to", "window")),
    ("Place the chair beside the window", Relation("chair", "next to", "window")),
    ("Move the cat under the table", Relation("cat", "under", "table")),
    ("Place the man on the right of the tree", Relation("man", "right of", "tree")),
    ("Place the clock above the fireplace", Relation("clock", "above", "fireplace")),
    ("behind the bed", Relation("", "behind", "bed")),
])
def test_parse_relation(sentence, expected):
    assert parse_relation(sentence) == expected


@pytest.mark.parametrize("sentence", ["Place the cat", "Place the cat behind", "Place the cat behind the, now"])
def test_parse_relation_errors(sentence):
    with pytest.raises(ValueError, match="names no"):
        parse_relation(sentence)


@pytest.mark.parametrize("relation,aspect,pixels", [
    # h = scale * 40, w = h * aspect; gap = 0.05 * 40 = 2 px
    ("left of", 1.0, (38, 40, 78, 80)),  # right edge 80 - 2, bottom 80
    ("left of", 0.5, (58, 40, 78, 80)),
    ("right of", 1.0, (122, 40, 162, 80)),
    ("next to", 1.0, (122, 40, 162, 80)),  # fits on the right
    ("behind", 1.0, (84, 40, 116, 72)),  # h 32, bottom 80 - 8
    ("in front of", 1.0, (80, 44, 120, 84)),  # h 40, bottom 80 + 4
    ("on", 2.0, (80, 26, 120, 46)),  # h 20, w 40, bottom 40 + 6
    ("above", 1.0, (90, 18, 110, 38)),  # h 20, bottom 40 - 2
    ("under", 1.0, (90, 60, 110, 80)),
])
def test_relation_box_rules(relation, aspect, pixels):
    box = relation_box(relation, ANCHOR, aspect, HW)
    got = (box[0] * 200, box[1] * 100, box[2] * 200, box[3] * 100)
    assert got == pytest.approx(pixels)


def test_next_to_goes_left_when_the_right_is_full_and_boxes_stay_inside():
    anchor = (0.7, 0.4, 0.9, 0.8)  # x 140..180
    box = relation_box("next to", anchor, 1.0, HW)
    assert [box[0] * 200, box[2] * 200] == pytest.approx([98, 138])
    # Off the left edge: moved inside, size kept.
    box = relation_box("left of", (0.05, 0.4, 0.25, 0.8), 1.0, HW)
    assert box[0] == 0.0 and (box[2] - box[0]) * 200 == pytest.approx(40)
    # Larger than the image: shrunk with the aspect kept, inside.
    box = relation_box("in front of", (0.0, 0.0, 1.0, 1.0), 4.0, HW)
    w, h = (box[2] - box[0]) * 200, (box[3] - box[1]) * 100
    assert w / h == pytest.approx(4.0) and 0 <= box[0] and box[2] <= 1 + 1e-9 and 0 <= box[1] and box[3] <= 1 + 1e-9
    with pytest.raises(ValueError, match="unknown"):
        relation_box("inside", ANCHOR, 1.0, HW)


def ramp(kind: str) -> DepthMap:
    """Depth that changes with the row only: metric 10 m at the top to 1 m at the bottom; disparity 0 → 1."""
    rows = torch.linspace(0, 1, 100).view(100, 1).expand(100, 200)
    values = 10 - 9 * rows if kind == "metric" else rows
    return DepthMap(values.unsqueeze(0).contiguous(), kind)


def test_relation_depth_ground_contact_and_order():
    metric, disparity = ramp("metric"), ramp("disparity")
    # Bottom row 99; the 5x5 ground-contact patch is clipped to rows 97..99, whose median is row 98.
    near_box = (0.4, 0.5, 0.6, 1.0)
    near_m, near_d = 10 - 9 * 98 / 99, 98 / 99
    assert relation_depth(metric, near_box, None, None) == pytest.approx(near_m, rel=1e-5)
    assert relation_depth(disparity, near_box, None, None) == pytest.approx(near_d, rel=1e-5)
    # "behind" a far anchor (bottom row 20) but the box reaches lower (nearer): pushed past the anchor.
    anchor = (0.4, 0.1, 0.6, 0.21)
    anchor_m = 10 - 9 * 20 / 99
    assert relation_depth(metric, near_box, "behind", anchor) == pytest.approx(anchor_m * 1.1, rel=1e-4)
    assert relation_depth(disparity, near_box, "behind", anchor) == pytest.approx(20 / 99 - 0.05, rel=1e-4)
    # "in front of" already nearer: kept.
    assert relation_depth(metric, near_box, "in front of", anchor) == pytest.approx(near_m, rel=1e-5)
    # "in front of" a nearer anchor: pulled in front of it.
    assert relation_depth(metric, anchor, "in front of", near_box) == pytest.approx(near_m / 1.1, rel=1e-4)
    assert relation_depth(disparity, anchor, "in front of", near_box) == pytest.approx(near_d + 0.05, rel=1e-4)
