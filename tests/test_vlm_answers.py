"""Prompts and strict answer parsing for LocatePlacement (no model needed).

Goldens: BIFRÖST's two real prompts and its answer formats are the reference's own text
(REFERENCE.md §2, run_llava.py); expected numbers are read off the canned answers by hand.
"""
from __future__ import annotations

import pytest

from diorama.ops.vlm_answers import (AnswerError, bifrost_depth_range, bifrost_instruction, bifrost_prompt,
                                     bifrost_reference_depth_quirk, florence_prompt, largest_box,
                                     parse_bifrost_answer, parse_florence_boxes, parse_qwen_answer, qwen_user_text)

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")


def test_bifrost_real_prompts_byte_exact():
    # The two prompts in BIFRÖST's run_llava.py, wrapped in LLaVA's v1 template (REFERENCE.md §2).
    cat = "Place the cat behind the bed, output the bounding box and the depth value of the center point."
    vase = "Replace the vase with the reference image, output the bounding box and the depth value of the center point."
    assert bifrost_prompt(cat) == SYSTEM + " USER: <image>\n" + cat + " ASSISTANT:"
    assert bifrost_prompt(vase).encode() == (
        b"A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        b"detailed, and polite answers to the user's questions. USER: <image>\nReplace the vase with the reference "
        b"image, output the bounding box and the depth value of the center point. ASSISTANT:")
    # Instructions that already ask for an answer format are passed on untouched.
    assert bifrost_instruction(cat) == cat and bifrost_instruction(vase) == vase


def test_bifrost_instruction_appends_trained_request():
    assert bifrost_instruction("Place the backpack to the left of the vase") == (
        "Place the backpack to the left of the vase, output the bounding box and the max, median and min depth "
        "values of the object.")
    assert bifrost_instruction("  Place the cup on the table.  ").endswith("table, output the bounding box and the "
                                                                           "max, median and min depth values of the object.")
    with pytest.raises(ValueError, match="empty"):
        bifrost_instruction("   ")


B = "[0.338, 0.521, 0.538, 0.841]"
BOX = (0.338, 0.521, 0.538, 0.841)
BIFROST_GOOD = [
    (B + ", 0.220, 0.160, 0.100.", BOX, (0.22, 0.16, 0.1)),  # REFERENCE.md's constructed example
    (B + ", 0.220, 0.160, 0.100", BOX, (0.22, 0.16, 0.1)),  # no full stop
    (B + ", 0.5.", BOX, (0.5,)),  # older format
    (B + ", 0.5", BOX, (0.5,)),
    ("  " + B + ", 0.220, 0.160, 0.100.\n", BOX, (0.22, 0.16, 0.1)),  # whitespace around
    ("[0.338,0.521,0.538,0.841],0.220,0.160,0.100.", BOX, (0.22, 0.16, 0.1)),  # no spaces
    ("[ 0.338 , 0.521 , 0.538 , 0.841 ] , 0.22 , 0.16 , 0.10 .", BOX, (0.22, 0.16, 0.1)),
    ("[0, 0, 1, 1], 1, 0.5, 0.", (0.0, 0.0, 1.0, 1.0), (1.0, 0.5, 0.0)),  # whole image, integer forms
    ("[0.000, 0.000, 1.000, 1.000], 1.000, 1.000, 1.000.", (0.0, 0.0, 1.0, 1.0), (1.0, 1.0, 1.0)),  # equal depths
    ("[.1, .2, .3, .4], .5.", (0.1, 0.2, 0.3, 0.4), (0.5,)),  # leading-dot decimals
    ("[0.1, 0.2, 0.3, 0.4], 0.0.", (0.1, 0.2, 0.3, 0.4), (0.0,)),
    ("[0.10000, 0.20000, 0.30000, 0.40000], 0.30000, 0.20000, 0.10000.", (0.1, 0.2, 0.3, 0.4), (0.3, 0.2, 0.1)),
    ("[1e-1, 0.2, 0.3, 0.4], 0.5.", (0.1, 0.2, 0.3, 0.4), (0.5,)),  # exponent
    ("[0.1, 0.2, 0.3, 0.4], 0.9, 0.9, 0.1.", (0.1, 0.2, 0.3, 0.4), (0.9, 0.9, 0.1)),
    ("[0.1, 0.2, 0.3, 0.4], 0.5.  ", (0.1, 0.2, 0.3, 0.4), (0.5,)),
    ("[0.998, 0.998, 0.999, 0.999], 0.001.", (0.998, 0.998, 0.999, 0.999), (0.001,)),  # tiny box at the corner
]
BIFROST_BAD = [
    ("", "no box"),
    ("I cannot answer that.", "no box"),
    ("0.338, 0.521, 0.538, 0.841, 0.2.", "no box"),  # brackets missing
    ("Sure! " + B + ", 0.220, 0.160, 0.100.", "not in BIFRÖST's answer format"),  # chatter before
    (B + ", 0.220, 0.160, 0.100. Hope this helps!", "not a number"),  # chatter after
    ("[0.338, 0.521, 0.538], 0.2.", "not in BIFRÖST's answer format"),  # three coordinates
    ("[0.3, 0.5, 0.5, 0.8, 0.9], 0.2.", "not in BIFRÖST's answer format"),  # five coordinates
    (B, "not in BIFRÖST's answer format"),  # no depth
    (B + ", 0.220, 0.160.", "not in BIFRÖST's answer format"),  # two depths
    (B + ", 0.3, 0.2, 0.1, 0.0.", "not in BIFRÖST's answer format"),  # four depths
    (B + ", deep.", "not a number"),
    (B + ", 0.2, high, 0.1.", "not a number"),
    (B + ", nan.", "not a number"),
    (B + ", 1.5.", "outside \\[0, 1\\]"),
    (B + ", -0.1.", "outside \\[0, 1\\]"),
    (B + ", 0.100, 0.160, 0.220.", "out of order"),  # min, median, max
    ("[0.538, 0.521, 0.338, 0.841], 0.2.", "inverted"),  # x2 < x1
    ("[0.338, 0.841, 0.538, 0.521], 0.2.", "inverted"),  # y2 < y1
    ("[0.3, 0.5, 0.3, 0.8], 0.2.", "inverted"),  # zero width
    ("[0.3, 0.5, 1.2, 0.8], 0.2.", "outside the image"),
    ("[-0.1, 0.5, 0.3, 0.8], 0.2.", "outside the image"),
    ("[338, 521, 538, 841], 0.2.", "outside the image"),  # pixels, not fractions
    ("[a, b, c, d], 0.2.", "not in BIFRÖST's answer format"),
    ("[0.3; 0.5; 0.4; 0.8], 0.2.", "not in BIFRÖST's answer format"),
    ("{0.3, 0.5, 0.4, 0.8}, 0.2.", "no box"),
]


def test_bifrost_table_is_large_enough():
    assert len(BIFROST_GOOD) + len(BIFROST_BAD) >= 30


@pytest.mark.parametrize("text,box,depth", BIFROST_GOOD)
def test_bifrost_good_answers(text, box, depth):
    answer = parse_bifrost_answer(text)
    assert answer.box == pytest.approx(box) and answer.depth == pytest.approx(depth)


@pytest.mark.parametrize("text,why", BIFROST_BAD)
def test_bifrost_bad_answers_quote_the_raw_text(text, why):
    with pytest.raises(AnswerError, match=why) as error:
        parse_bifrost_answer(text)
    assert repr(text) in str(error.value)


def test_bifrost_depth_range_and_documented_quirk():
    three = parse_bifrost_answer(B + ", 0.220, 0.160, 0.100.")
    assert bifrost_depth_range(three) == pytest.approx((0.1, 0.22))  # depth=[min, max]
    assert bifrost_depth_range(parse_bifrost_answer(B + ", 0.5.")) == (0.5, 0.5)
    # BIFRÖST's own older-format parser reads the max with its last digit cut off from a 3-value answer,
    # and the centre depth right from the older format (REFERENCE.md §2).
    assert bifrost_reference_depth_quirk(B + ", 0.220, 0.160, 0.100.") == "0.22"
    assert bifrost_reference_depth_quirk(B + ", 0.5.") == "0.5"


HW_IN, HW_IMG = (280, 420), (600, 900)  # Qwen2.5-VL input (h, w) and the original image
Q = '{"bbox_2d": [42, 56, 210, 280], "label": "cat"}'
QBOX = (0.1, 0.2, 0.5, 1.0)
QWEN_GOOD = [
    (Q, QBOX),
    ("[" + Q + "]", QBOX),
    ("```json\n[" + Q + "]\n```", QBOX),
    ("```json\n" + Q + "\n```", QBOX),
    ("```\n" + Q + "\n```", QBOX),
    ("Here is the box:\n```json\n[" + Q + "]\n```\nThe cat fits there.", QBOX),  # chatter around one block
    ("The answer: " + Q, QBOX),
    ('{"bbox_2d": [42.0, 56.0, 210.0, 280.0]}', QBOX),  # floats, no label
    ('{"label": "cat", "bbox_2d": [42, 56, 210, 280]}', QBOX),  # keys in another order
    ('{"bbox_2d": [0, 0, 420, 280], "label": "cat"}', (0.0, 0.0, 1.0, 1.0)),  # whole input
    ('  {"bbox_2d":[42,56,210,280]}  ', QBOX),
    ('[{"bbox_2d": [21, 28, 63, 84], "label": "cup"}]', (0.05, 0.1, 0.15, 0.3)),
    ('{"bbox_2d": [419, 279, 420, 280]}', (419 / 420, 279 / 280, 1.0, 1.0)),  # one pixel at the corner
    ('{"bbox_2d": [42, 56, 210, 280], "label": "the [red] cat"}', QBOX),  # brackets inside the label
]
QWEN_BAD = [
    ("", "no box"),
    ("I think the cat should go on the bed.", "no box"),
    ('{"bbox_2d": [42, 56, 210, 280]', "not valid JSON"),  # unterminated
    ("{'bbox_2d': [42, 56, 210, 280]}", "not valid JSON"),  # Python dict, not JSON
    ('{"box": [42, 56, 210, 280]}', "no 'bbox_2d'"),
    ("[1, 2, 3, 4]", "no 'bbox_2d'"),  # a bare list of numbers is not the grounding format
    ('[{"bbox_2d": [1, 2, 30, 40]}, {"bbox_2d": [50, 60, 70, 80]}]', "has 2 boxes"),
    ("[]", "has 0 boxes"),
    ('{"bbox_2d": [42, 56, 210]}', "not four numbers"),
    ('{"bbox_2d": [42, 56, 210, 280, 3]}', "not four numbers"),
    ('{"bbox_2d": ["42", "56", "210", "280"]}', "not four numbers"),
    ('{"bbox_2d": [42, 56, 210, null]}', "not four numbers"),
    ('{"bbox_2d": [true, 56, 210, 280]}', "not four numbers"),
    ('{"bbox_2d": "42, 56, 210, 280"}', "not four numbers"),
    ('{"bbox_2d": [210, 56, 42, 280]}', "inverted"),  # x2 < x1
    ('{"bbox_2d": [42, 280, 210, 56]}', "inverted"),
    ('{"bbox_2d": [42, 56, 42, 280]}', "inverted"),
    ('{"bbox_2d": [42, 56, 421, 280]}', "outside"),  # right edge past the resized input
    ('{"bbox_2d": [42, 56, 210, 281]}', "outside"),
    ('{"bbox_2d": [-1, 56, 210, 280]}', "outside"),
    ('{"bbox_2d": [42, 56, 1e999, 280]}', "not finite|outside"),
    ("```json\n" + Q + "\n```\n```json\n" + Q + "\n```", "several JSON blocks"),
]


def test_qwen_table_is_large_enough():
    assert len(QWEN_GOOD) + len(QWEN_BAD) >= 30


@pytest.mark.parametrize("text,box", QWEN_GOOD)
def test_qwen25_good_answers(text, box):
    assert parse_qwen_answer(text, "qwen2_5_vl", HW_IN, HW_IMG).box == pytest.approx(box)


@pytest.mark.parametrize("text,why", QWEN_BAD)
def test_qwen25_bad_answers_quote_the_raw_text(text, why):
    with pytest.raises(AnswerError, match=why) as error:
        parse_qwen_answer(text, "qwen2_5_vl", HW_IN, HW_IMG)
    assert repr(text) in str(error.value)


def test_qwen3_uses_the_1000_grid():
    answer = parse_qwen_answer('{"bbox_2d": [100, 200, 500, 1000]}', "qwen3_vl", HW_IN, HW_IMG)
    assert answer.box == pytest.approx((0.1, 0.2, 0.5, 1.0))
    with pytest.raises(AnswerError, match="outside the 1000x1000 grid"):
        parse_qwen_answer('{"bbox_2d": [100, 200, 500, 1001]}', "qwen3_vl", HW_IN, HW_IMG)
    with pytest.raises(ValueError, match="not a Qwen-VL family"):
        parse_qwen_answer(Q, "florence2", HW_IN, HW_IMG)


def test_qwen_user_text():
    text = qwen_user_text("Place the cat behind the bed", "cat")
    assert text == ('Place the cat behind the bed\nWhere should the cat be placed in this image? Output its '
                    'bounding box in JSON format as {"bbox_2d": [x1, y1, x2, y2], "label": "cat"}.')
    assert qwen_user_text("Place it", "", strict=True).endswith(
        '"label": "object"}. Answer with exactly one JSON object and nothing else.')


def L(*bins):
    return "".join(f"<loc_{b}>" for b in bins)


def F(*bins):
    return tuple((b + 0.5) / 1000 for b in bins)


FLORENCE_GOOD = [
    ("bed" + L(100, 200, 300, 400), [F(100, 200, 300, 400)]),
    ("</s><s>bed" + L(100, 200, 300, 400) + "</s>", [F(100, 200, 300, 400)]),  # special tokens kept in the raw text
    ("bed" + L(100, 200, 300, 400) + "<pad><pad>", [F(100, 200, 300, 400)]),
    ("the bed" + L(0, 0, 999, 999), [F(0, 0, 999, 999)]),  # whole image
    ("bed" + L(100, 200, 300, 400) + L(500, 600, 700, 800), [F(100, 200, 300, 400), F(500, 600, 700, 800)]),
    ("bed" + L(1, 2, 3, 4) + "lamp" + L(5, 6, 7, 8), [F(1, 2, 3, 4), F(5, 6, 7, 8)]),
    (L(100, 200, 300, 400), [F(100, 200, 300, 400)]),  # no phrase
    ("bed" + L(300, 400, 300, 400), [F(300, 400, 300, 400)]),  # one-bin box
    ("  bed " + L(100, 200, 300, 400) + "  ", [F(100, 200, 300, 400)]),
    ("wooden bed" + L(10, 20, 30, 40), [F(10, 20, 30, 40)]),
    ("bed" + L(998, 998, 999, 999), [F(998, 998, 999, 999)]),
    ("bed" + L(0, 0, 1, 1), [F(0, 0, 1, 1)]),
    ("bed" + L(7, 8, 9, 10) + "</s>", [F(7, 8, 9, 10)]),
    ("a bed" + L(10, 20, 30, 40) + "a bed" + L(50, 60, 70, 80), [F(10, 20, 30, 40), F(50, 60, 70, 80)]),
    ("bed" + L(0, 500, 999, 999), [F(0, 500, 999, 999)]),
]
FLORENCE_BAD = [
    ("", "no box"),
    ("bed", "no box"),
    ("a cat on a bed", "no box"),
    ("bed" + L(100, 200, 300), "groups of four"),  # three tokens
    ("bed" + L(100, 200, 300, 400, 500), "groups of four"),  # five tokens
    ("bed" + L(100, 200, 300, 400) + " trailing", "groups of four"),
    ("bed<loc_1><loc_2><loc_x><loc_4>", "groups of four"),
    ("bed<loc_1><loc_2><loc_3>4", "groups of four"),
    ("bed<loc_-1><loc_2><loc_3><loc_4>", "groups of four"),
    ("bed" + L(100, 200, 1000, 400), "outside the image"),
    ("bed" + L(100, 200, 300, 4000), "outside the image"),
    ("bed" + L(300, 200, 100, 400), "inverted"),  # x2 < x1
    ("bed" + L(100, 400, 300, 200), "inverted"),
    ("bed" + L(1, 2, 3, 4) + L(3, 2, 1, 4), "inverted"),  # second box bad
    ("bed<loc_1> <loc_2><loc_3><loc_4>", "groups of four"),  # space inside a box
]


def test_florence_table_is_large_enough():
    assert len(FLORENCE_GOOD) + len(FLORENCE_BAD) >= 30


@pytest.mark.parametrize("text,boxes", FLORENCE_GOOD)
def test_florence_good_answers(text, boxes):
    got = parse_florence_boxes(text, (480, 640))
    assert len(got) == len(boxes)
    for g, e in zip(got, boxes):
        assert g == pytest.approx(e)


@pytest.mark.parametrize("text,why", FLORENCE_BAD)
def test_florence_bad_answers_quote_the_raw_text(text, why):
    with pytest.raises(AnswerError, match=why) as error:
        parse_florence_boxes(text, (480, 640))
    assert repr(text) in str(error.value)


def test_florence_prompt_and_largest_box():
    assert florence_prompt(" the bed ") == "<CAPTION_TO_PHRASE_GROUNDING>the bed"
    with pytest.raises(ValueError, match="anchor phrase is empty"):
        florence_prompt(" ")
    assert largest_box([(0, 0, 0.1, 0.1), (0.2, 0.2, 0.6, 0.6), (0.6, 0.6, 0.9, 0.9)]) == (0.2, 0.2, 0.6, 0.6)
    assert largest_box([(0, 0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)]) == (0, 0, 0.5, 0.5)  # ties: the first
