"""Prompts for the vision-language models that place objects, and strict parsers for their answers.

Pure text in, numbers out: regular expressions and `json.loads` only (never `eval`), every
rejection quotes the raw answer so a user can see what the model said.

Families (the loader's `VisionLanguageModel.family`):
- `llava` — BIFRÖST's fine-tuned LLaVA-1.5: LLaVA's v1 conversation template around the
  instruction; answers `[x1, y1, x2, y2], max, median, min.` (fractions of the original
  width/height; depths are fractions of the background's min-max disparity, 1 = nearest) or, in
  the older format, `[x1, y1, x2, y2], d.` (the depth of the box centre).
- `qwen2_5_vl` / `qwen3_vl` — a grounding request answered as JSON `{"bbox_2d": [...]}`; Qwen2.5-VL
  answers absolute pixels of its resized input, Qwen3-VL a 0..1000 grid.
- `florence2` — `<CAPTION_TO_PHRASE_GROUNDING>` of an anchor phrase, answered with
  `<loc_0..999>` tokens; the relation to the anchor becomes a box in ops/relations.py.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

Box = tuple[float, float, float, float]

# LLaVA's `llava_v1` conversation (system line, "USER: ", " ASSISTANT:"), with the image token on
# its own line before the question as run_llava.py builds it when mm_use_im_start_end is off.
LLAVA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                "helpful, detailed, and polite answers to the user's questions.")
# The two answer requests BIFRÖST's data uses: the trained three-value one and the older centre-point one.
BIFROST_THREE_DEPTHS = ", output the bounding box and the max, median and min depth values of the object."
BIFROST_CENTRE_DEPTH = ", output the bounding box and the depth value of the center point."
FLORENCE_GROUNDING = "<CAPTION_TO_PHRASE_GROUNDING>"
QWEN_FAMILIES = ("qwen2_5_vl", "qwen3_vl")
QWEN3_GRID = 1000.0  # Qwen3-VL answers boxes on a 0..1000 grid whatever the image size
FLORENCE_BINS = 1000  # Florence-2 quantises coordinates into 1000 bins per axis


@dataclass(frozen=True)
class ParsedAnswer:
    box: Box  # x1, y1, x2, y2 as fractions of the original image's width/height
    depth: tuple[float, ...]  # BIFRÖST: (max, median, min) or (d,); other families: ()


class AnswerError(ValueError):
    """A model answer that does not parse; the message quotes the raw answer."""


def _reject(raw: str, why: str, expected: str) -> AnswerError:
    return AnswerError(f"the model's answer {raw!r} {why}; expected {expected}")


# ---------------------------------------------------------------- BIFRÖST LLaVA
def bifrost_prompt(instruction: str) -> str:
    """The complete text BIFRÖST's LLaVA sees (its image token expanded later by the processor)."""
    return f"{LLAVA_SYSTEM} USER: <image>\n{instruction} ASSISTANT:"


def bifrost_instruction(sentence: str) -> str:
    """The sentence with BIFRÖST's answer request: kept if it already asks for one (either format),
    otherwise the trained three-value request is appended."""
    text = sentence.strip()
    if ", output the bounding box" in text:
        return text
    if not text:
        raise ValueError("the instruction is empty; expected e.g. 'Place the cat behind the bed'")
    return text.rstrip(".") + BIFROST_THREE_DEPTHS


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# The whole answer, nothing before or after but whitespace and one optional full stop: the fine-tuned
# model never chats, so anything else means the answer cannot be trusted.
_BIFROST = re.compile(
    rf"\s*\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]"
    rf"\s*,\s*([^,]+?)(?:\s*,\s*([^,]+?)\s*,\s*([^,]+?))?\s*\.?\s*")
_NUMBER_ONLY = re.compile(rf"\s*{_NUMBER}\s*")


def _fraction_box(raw: str, values: list[float], expected: str) -> Box:
    x1, y1, x2, y2 = values
    if not all(math.isfinite(v) for v in values):
        raise _reject(raw, "has a box coordinate that is not finite", expected)
    if min(values) < 0 or max(values) > 1:
        raise _reject(raw, f"has box coordinates {tuple(values)} outside the image", "fractions in [0, 1]")
    if x2 <= x1 or y2 <= y1:
        raise _reject(raw, f"has an empty or inverted box (x1={x1}, y1={y1}, x2={x2}, y2={y2})",
                      "x2 > x1 and y2 > y1")
    return x1, y1, x2, y2


def _depth_value(raw: str, text: str) -> float:
    if not _NUMBER_ONLY.fullmatch(text):
        raise _reject(raw, f"has a depth {text!r} that is not a number", "depth fractions in [0, 1]")
    value = float(text)
    if not 0 <= value <= 1:
        raise _reject(raw, f"has a depth {value} outside [0, 1]", "depth fractions of the disparity range in [0, 1]")
    return value


def parse_bifrost_answer(text: str) -> ParsedAnswer:
    """`[x1, y1, x2, y2], max, median, min.` or `[x1, y1, x2, y2], d.` → box and depth(s).

    BIFRÖST's own test parser (run_llava_test.py) reads the older format by string splitting
    (`split(']')[1].split(', ')[1][:-1]`); fed a three-value answer it returns the max with its last
    digit cut off. Here each format is parsed for what it is, so that quirk is not reproduced: see
    `bifrost_reference_depth_quirk` for what the reference code would have read.
    """
    expected = "'[x1, y1, x2, y2], max, median, min.' or '[x1, y1, x2, y2], d.' with fractions in [0, 1]"
    match = _BIFROST.fullmatch(text)
    if match is None:
        if "[" not in text:
            raise _reject(text, "has no box", expected)
        raise _reject(text, "is not in BIFRÖST's answer format", expected)
    box = _fraction_box(text, [float(match.group(i)) for i in range(1, 5)], expected)
    depth_texts = [g for g in match.group(5, 6, 7) if g is not None]
    depth = tuple(_depth_value(text, d) for d in depth_texts)
    if len(depth) == 3 and not depth[0] >= depth[1] >= depth[2]:
        raise _reject(text, f"has depths max={depth[0]}, median={depth[1]}, min={depth[2]} out of order",
                      "max >= median >= min")
    return ParsedAnswer(box, depth)


def bifrost_reference_depth_quirk(text: str) -> str:
    """What BIFRÖST's run_llava_test.py reads as the depth (documented behaviour, for the record and the
    tests; never used for placing): the second ', '-separated field after ']' minus its last character."""
    return text.split("]")[1].split(", ")[1][:-1]


def bifrost_depth_range(answer: ParsedAnswer) -> tuple[float, float]:
    """(far, near) fractions as BIFRÖST's depth fusion takes them: depth=[min, max]; a single centre
    depth becomes a flat range."""
    if len(answer.depth) == 3:
        return answer.depth[2], answer.depth[0]
    if len(answer.depth) == 1:
        return answer.depth[0], answer.depth[0]
    raise ValueError(f"answer has {len(answer.depth)} depth values; expected 1 or 3")


# ---------------------------------------------------------------- Qwen-VL
def qwen_user_text(instruction: str, object_name: str, strict: bool = False) -> str:
    """The user message of the grounding request (the loader applies the chat template)."""
    label = object_name.strip() or "object"
    text = (f"{instruction.strip()}\nWhere should the {label} be placed in this image? Output its bounding box "
            f'in JSON format as {{"bbox_2d": [x1, y1, x2, y2], "label": "{label}"}}.')
    if strict:
        text += " Answer with exactly one JSON object and nothing else."
    return text


_JSON_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_JSON_BLOCK = re.compile(r"[\[{].*[\]}]", re.DOTALL)


def _qwen_json(text: str):
    fences = _JSON_FENCE.findall(text)
    if len(fences) > 1:
        raise _reject(text, "has several JSON blocks", "one JSON answer")
    candidate = fences[0] if fences else (m.group(0) if (m := _JSON_BLOCK.search(text)) else None)
    if candidate is None:
        raise _reject(text, "has no box", 'JSON like {"bbox_2d": [x1, y1, x2, y2], "label": "..."}')
    try:
        return json.loads(candidate)
    except json.JSONDecodeError as error:
        raise _reject(text, f"is not valid JSON ({error.msg})", 'JSON like {"bbox_2d": [x1, y1, x2, y2]}') from None


def parse_qwen_answer(text: str, family: str, input_hw: tuple[int, int], image_hw: tuple[int, int]) -> ParsedAnswer:
    """`{"bbox_2d": [x1, y1, x2, y2], ...}` (a one-element list, a ```json fence and chatter around it
    are accepted) → fractions of the image. `input_hw` is the size the processor resized the image to:
    Qwen2.5-VL's boxes are pixels of it; Qwen3-VL's are on a 0..1000 grid. `image_hw` is kept for the
    error message (fractions are the same for both sizes)."""
    if family not in QWEN_FAMILIES:
        raise ValueError(f"family {family!r} is not a Qwen-VL family; expected one of {QWEN_FAMILIES}")
    expected = 'one JSON object {"bbox_2d": [x1, y1, x2, y2], "label": "..."}'
    data = _qwen_json(text)
    if isinstance(data, list):
        if not all(isinstance(item, dict) for item in data):
            raise _reject(text, "has no 'bbox_2d'", expected)
        if len(data) != 1:
            raise _reject(text, f"has {len(data)} boxes", expected)
        data = data[0]
    if not isinstance(data, dict) or "bbox_2d" not in data:
        raise _reject(text, "has no 'bbox_2d'", expected)
    coords = data["bbox_2d"]
    if (not isinstance(coords, list) or len(coords) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in coords)):
        raise _reject(text, "has a 'bbox_2d' that is not four numbers", expected)
    height, width = (QWEN3_GRID, QWEN3_GRID) if family == "qwen3_vl" else map(float, input_hw)
    x1, y1, x2, y2 = (float(v) for v in coords)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise _reject(text, "has a box coordinate that is not finite", expected)
    if min(x1, y1, x2, y2) < 0 or max(x1, x2) > width or max(y1, y2) > height:
        raise _reject(text, f"has box coordinates outside the {width:g}x{height:g} "
                            f"{'grid' if family == 'qwen3_vl' else 'model input'} "
                            f"(image {image_hw[1]}x{image_hw[0]})", "coordinates inside it")
    if x2 <= x1 or y2 <= y1:
        raise _reject(text, f"has an empty or inverted box (x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g})",
                      "x2 > x1 and y2 > y1")
    return ParsedAnswer((x1 / width, y1 / height, x2 / width, y2 / height), ())


# ---------------------------------------------------------------- Florence-2
def florence_prompt(anchor_phrase: str) -> str:
    phrase = anchor_phrase.strip()
    if not phrase:
        raise ValueError("the anchor phrase is empty; Florence-2 grounding needs the name of a thing in the picture")
    return FLORENCE_GROUNDING + phrase


_LOC_BOX = re.compile(r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>")
_FLORENCE_ANSWER = re.compile(r"(?:\s*[^<]*?\s*(?:<loc_\d+>){4}(?:(?:<loc_\d+>){4})*)+\s*")


def parse_florence_boxes(text: str, image_hw: tuple[int, int]) -> list[Box]:
    """Every `<loc_x1><loc_y1><loc_x2><loc_y2>` box in a grounding answer, as fractions of the image.

    Florence-2 bins each axis into 1000 bins; a bin's centre ((k + 0.5) / 1000) is taken, as Florence's
    own post-processing does. Tokens outside groups of four, bins > 999 or inverted boxes are errors.
    `image_hw` only names the image in errors: fractions do not depend on it.
    """
    cleaned = text.replace("</s>", "").replace("<s>", "").replace("<pad>", "")
    if "<loc_" not in cleaned:
        raise _reject(text, "has no box", "'phrase<loc_x1><loc_y1><loc_x2><loc_y2>'")
    if _FLORENCE_ANSWER.fullmatch(cleaned) is None:
        raise _reject(text, "has location tokens that are not in groups of four after a phrase",
                      "'phrase<loc_x1><loc_y1><loc_x2><loc_y2>'")
    boxes = []
    for match in _LOC_BOX.finditer(cleaned):
        bins = [int(v) for v in match.groups()]
        if max(bins) >= FLORENCE_BINS:
            raise _reject(text, f"has a location bin {max(bins)} outside the image "
                                f"({image_hw[1]}x{image_hw[0]})", f"bins 0..{FLORENCE_BINS - 1}")
        x1, y1, x2, y2 = ((b + 0.5) / FLORENCE_BINS for b in bins)
        if x2 < x1 or y2 < y1:
            raise _reject(text, f"has an inverted box (bins {bins})", "x2 >= x1 and y2 >= y1")
        boxes.append((x1, y1, x2, y2))
    return boxes


def largest_box(boxes: list[Box]) -> Box:
    """The largest box (first on ties): the most prominent instance of an anchor named once."""
    return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
