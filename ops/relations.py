"""Spatial relations ("left of", "behind", "on", ...) turned into a placement box and depth.

Florence-2 only finds things that are in the picture; where a new object goes relative to such
an anchor is decided here by fixed rules (README "Locating with VLMs"):

object size  height = anchor height x the relation's scale, width = height x the object's aspect
             (from the reference object's mask/photo, 1:1 without one)
left of      bottom on the anchor's bottom, right edge a gap (5 % of the anchor's width) left of it
right of     the mirror image
next to      right of when it fits inside the image, else left of (beside, near: the same)
behind       scale 0.8, centred on the anchor, bottom 20 % of the anchor's height above its bottom
in front of  scale 1.0, centred, bottom 10 % of the anchor's height below its bottom
on           scale 0.5, centred, bottom 15 % of the anchor's height below its top (its top surface)
above        scale 0.5, centred, bottom a gap above the anchor's top
under        scale 0.5, centred, bottom on the anchor's bottom (below: the same)

A box larger than the image is shrunk (aspect kept); a box crossing the border is moved inside.
Depth: the background depth at the box's ground contact; behind / in front of are then forced
farther / nearer than the anchor's own ground contact (metric: x1.1 or /1.1 the anchor's metres;
disparity: 5 % of the map's range).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .depth_map import DepthMap
from .placement import ground_contact_depth

Box = tuple[float, float, float, float]

# Longest phrases first so "to the left of" wins over "left of" and "on top of" over "on".
RELATION_PHRASES: tuple[tuple[str, str], ...] = (
    ("to the left of", "left of"), ("on the left of", "left of"), ("left of", "left of"),
    ("to the right of", "right of"), ("on the right of", "right of"), ("right of", "right of"),
    ("in front of", "in front of"), ("behind", "behind"),
    ("on top of", "on"), ("on", "on"), ("onto", "on"),
    ("next to", "next to"), ("beside", "next to"), ("near", "next to"),
    ("above", "above"), ("under", "under"), ("underneath", "under"), ("below", "under"), ("beneath", "under"),
)
RELATIONS = ("left of", "right of", "next to", "behind", "in front of", "on", "above", "under")
SCALE = {"left of": 1.0, "right of": 1.0, "next to": 1.0, "behind": 0.8, "in front of": 1.0, "on": 0.5,
         "above": 0.5, "under": 0.5}
GAP = 0.05  # of the anchor's width (sideways) or height (above)
METRIC_STEP = 1.1  # behind/in front of in metric depth: this factor past the anchor
DISPARITY_STEP = 0.05  # behind/in front of in disparity: this share of the map's range past the anchor

_VERBS = r"(?:please\s+)?(?:place|put|add|insert|move|set|position|paste)\s+"
_ARTICLE = re.compile(r"^(?:the|a|an|this|that|some)(?:\s+|$)")


@dataclass(frozen=True)
class Relation:
    object_phrase: str  # what goes in ("" when the sentence does not say)
    relation: str  # one of RELATIONS
    anchor_phrase: str  # the thing in the picture it relates to


def _strip_article(text: str) -> str:
    return _ARTICLE.sub("", text.strip()).strip()


def parse_relation(instruction: str) -> Relation:
    """'Place the cat behind the bed, output ...' → Relation('cat', 'behind', 'bed').

    The first relation phrase in the sentence (the longest at that position) is taken; the anchor is
    what follows it up to punctuation or ' and '.
    """
    text = " ".join(instruction.lower().split())
    best = None
    for phrase, relation in RELATION_PHRASES:
        for match in re.finditer(rf"\b{re.escape(phrase)}\b", text):
            key = (match.start(), -len(phrase))
            if best is None or key < best[0]:
                best = (key, match, relation)
    if best is None:
        raise ValueError(f"the instruction {instruction!r} names no relation; expected one of "
                         f"{', '.join(p for p, _ in RELATION_PHRASES)} (e.g. 'Place the cat behind the bed')")
    _, match, relation = best
    anchor = re.split(r"[,.;:!?]|\s+and\s+|\s+then\s+", text[match.end():], maxsplit=1)[0]
    anchor = _strip_article(anchor)
    if not anchor:
        raise ValueError(f"the instruction {instruction!r} names no anchor after {match.group(0)!r}; "
                         "expected the thing in the picture, e.g. '... behind the bed'")
    before = re.sub(rf"^{_VERBS}", "", text[:match.start()].strip())
    return Relation(_strip_article(before), relation, anchor)


def _fit(x0: float, y0: float, w: float, h: float, width: int, height: int) -> tuple[float, float, float, float]:
    """Shrink (keeping the aspect) to fit the image, then move inside it."""
    shrink = min(1.0, width / w, height / h)
    if shrink < 1.0:
        cx, bottom = x0 + w / 2, y0 + h
        w, h = w * shrink, h * shrink
        x0, y0 = cx - w / 2, bottom - h
    x0 = min(max(x0, 0.0), width - w)
    y0 = min(max(y0, 0.0), height - h)
    return x0, y0, w, h


def relation_box(relation: str, anchor: Box, object_aspect: float, image_hw: tuple[int, int]) -> Box:
    """Where the object goes (fractions x0, y0, x1, y1) given the anchor's box (fractions), the object's
    width/height aspect and the image size, by the rules in this module's docstring."""
    if relation not in RELATIONS:
        raise ValueError(f"relation {relation!r} is unknown; expected one of {RELATIONS}")
    if not object_aspect > 0:
        raise ValueError(f"object aspect {object_aspect} must be > 0 (width / height)")
    height, width = image_hw
    ax0, ay0, ax1, ay1 = anchor[0] * width, anchor[1] * height, anchor[2] * width, anchor[3] * height
    # One pixel at least, so a degenerate grounding box still gives a usable size.
    aw, ah = max(ax1 - ax0, 1.0), max(ay1 - ay0, 1.0)
    h = SCALE[relation] * ah
    w = h * object_aspect
    cx = (ax0 + ax1) / 2
    if relation == "next to":
        relation = "right of" if ax1 + GAP * aw + w <= width else "left of"
    if relation == "left of":
        x0, bottom = ax0 - GAP * aw - w, ay1
    elif relation == "right of":
        x0, bottom = ax1 + GAP * aw, ay1
    elif relation == "behind":
        x0, bottom = cx - w / 2, ay1 - 0.2 * ah
    elif relation == "in front of":
        x0, bottom = cx - w / 2, ay1 + 0.1 * ah
    elif relation == "on":
        x0, bottom = cx - w / 2, ay0 + 0.15 * ah
    elif relation == "above":
        x0, bottom = cx - w / 2, ay0 - GAP * ah
    else:  # under
        x0, bottom = cx - w / 2, ay1
    x0, y0, w, h = _fit(x0, bottom - h, w, h, width, height)
    return x0 / width, y0 / height, (x0 + w) / width, (y0 + h) / height


def relation_depth(depth: DepthMap, box: Box, relation: str | None, anchor: Box | None) -> float:
    """The object's depth in the map's kind and scale: ground contact under the box, pushed past the
    anchor's ground contact for behind / in front of."""
    value = ground_contact_depth(depth, box)
    if relation not in ("behind", "in front of") or anchor is None:
        return value
    reference = ground_contact_depth(depth, anchor)
    behind = relation == "behind"
    if depth.kind == "metric":
        return max(value, reference * METRIC_STEP) if behind else min(value, reference / METRIC_STEP)
    step = DISPARITY_STEP * float(depth.values[0].max() - depth.values[0].min())
    return min(value, reference - step) if behind else max(value, reference + step)
