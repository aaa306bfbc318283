"""Locate Placement: a vision-language model answers where an object goes (box + depth) for a sentence."""
from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..loaders import vlm as vlm_loader
from ..ops.checks import as_mask_batch, as_rgb_batch
from ..ops.depth_map import DepthMap, nearness
from ..ops.locate_preview import locate_preview
from ..ops.placement import Placement, mask_bounding_box
from ..ops.relations import parse_relation, relation_box, relation_depth
from ..ops.vlm_answers import (QWEN_FAMILIES, AnswerError, ParsedAnswer, bifrost_depth_range, bifrost_instruction,
                               bifrost_prompt, florence_prompt, largest_box, parse_bifrost_answer,
                               parse_florence_boxes, parse_qwen_answer, qwen_user_text)
from .common import CATEGORY, DepthSocket, PlacementSocket, intermediate
from .vlm import VlmSocket

log = logging.getLogger(__name__)

# The stricter retry for BIFRÖST's LLaVA restates its trained answer layout after the request.
BIFROST_STRICT = " Answer only as [x1, y1, x2, y2], max, median, min."


def object_aspect(reference: torch.Tensor | None, reference_mask: torch.Tensor | None) -> float:
    """Width / height of the reference object: its mask's bounding box, else the photo, else 1:1."""
    if reference_mask is not None:
        x0, y0, x1, y1 = mask_bounding_box(as_mask_batch(reference_mask, "reference_mask")[0])
        return (x1 - x0) / (y1 - y0)
    if reference is not None:
        reference = as_rgb_batch(reference, "reference")
        return reference.shape[2] / reference.shape[1]
    return 1.0


def map_fraction(depth: DepthMap, fraction: float) -> float:
    """A fraction of the map's nearness range (0 = farthest, 1 = nearest, as BIFRÖST's min-max
    normalised disparity) as a depth in the map's own kind and scale."""
    near = nearness(DepthMap(depth.values[:1], depth.kind))
    value = float(near.min() + fraction * (near.max() - near.min()))
    return 1.0 / value if depth.kind == "metric" else value


def legend_marks(depth: DepthMap | None, placement: Placement) -> tuple[float, float] | None:
    """Where the placement's depth sits on the preview's far → near legend."""
    if placement.relative_depth_range is not None:
        return placement.relative_depth_range
    if depth is None:
        return None
    near = nearness(DepthMap(depth.values[:1], depth.kind))
    low, high = float(near.min()), float(near.max())
    value = 1.0 / placement.depth if placement.depth_kind == "metric" else placement.depth
    mark = (value - low) / (high - low) if high > low else 0.5
    return mark, mark


def ask(vlm, image: torch.Tensor, prompts: list[str], parse, max_new_tokens: int, seed: int) -> tuple[ParsedAnswer, str]:
    """Ask with the first prompt; on an unparseable answer try the next (the stricter retry) once.
    Returns the parse and the raw answer it came from; every answer is quoted if all fail."""
    answers = []
    for prompt in prompts:
        answer = vlm_loader.generate(vlm, image, prompt, max_new_tokens=max_new_tokens, seed=seed)
        answers.append(answer)
        try:
            return parse(answer), answer
        except AnswerError as error:
            if len(answers) == len(prompts):
                if len(answers) == 1:
                    raise
                raise AnswerError(f"{error} (the stricter retry's answer; the first was {answers[0]!r})") from None
            log.warning("LocatePlacement: %s; retrying with a stricter prompt", error)
    raise AssertionError("no prompt given")


class LocatePlacement(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaLocatePlacement",
            display_name="Diorama Locate Placement",
            category=f"{CATEGORY}/placement",
            description="Asks a vision-language model where the object goes: BIFRÖST's LLaVA answers a box and "
                        "depths; Qwen-VL answers a box (JSON); Florence-2 finds the anchor named in the instruction "
                        "and the relation (left of, behind, on, ...) places the box. Depth the model does not give "
                        "comes from background_depth at the box's ground contact. Answers are parsed strictly.",
            inputs=[
                VlmSocket.Input("vlm", tooltip="From Diorama VLM Loader (BIFRÖST LLaVA, Qwen2.5-VL/Qwen3-VL, Florence-2)."),
                io.Image.Input("background", tooltip="The photo the object goes into; one image (a placement is "
                                                     "per image)."),
                io.String.Input("instruction", default="Place the cat behind the bed", multiline=True,
                                tooltip="Where the object goes, e.g. 'Place the cat behind the bed'. BIFRÖST: its "
                                        "answer request is appended unless the sentence already has one. Florence-2: "
                                        "needs a relation (left of, right of, next to, behind, in front of, on, "
                                        "above, under) and the thing in the picture after it."),
                io.String.Input("object_name", default="", optional=True,
                                tooltip="The object's name for the Qwen prompt's label (default: from the "
                                        "instruction, else 'object')."),
                io.Image.Input("reference", optional=True,
                               tooltip="The object's photo: its aspect sizes Florence-2 relation boxes (1:1 without)."),
                io.Mask.Input("reference_mask", optional=True,
                              tooltip="The object's silhouette in the reference: its bounding box gives the aspect."),
                DepthSocket.Input("background_depth", optional=True,
                                  tooltip="Background depth. Needed for Qwen-VL and Florence-2 (depth at the box's "
                                          "ground contact); for BIFRÖST it puts the answered depth into this map's "
                                          "kind and scale."),
                io.Int.Input("max_new_tokens", default=64, min=8, max=1024,
                             tooltip="Most tokens the model may answer (a box answer needs ~20-40)."),
                io.Boolean.Input("retry_strict", default=False,
                                 tooltip="On an unparseable answer, ask once more with a stricter prompt "
                                         "(off: the first bad answer is an error)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF,
                             tooltip="Seed of the model's private random stream (answers are greedy)."),
            ],
            outputs=[
                PlacementSocket.Output("placement", tooltip="Box and depth; for BIFRÖST also its box + depth range "
                                                            "(for Diorama BIFRÖST Depth Fuse)."),
                io.Image.Output("preview", tooltip="The background with the box, above a far → near depth legend "
                                                   "with the placement's depth marked."),
                io.String.Output("answer", tooltip="The model's raw answer (the one that was parsed)."),
            ],
        )

    @classmethod
    def execute(cls, vlm, background, instruction: str, max_new_tokens: int, retry_strict: bool, seed: int,
                object_name: str = "", reference=None, reference_mask=None,
                background_depth: DepthMap | None = None) -> io.NodeOutput:
        background = as_rgb_batch(background, "background")
        if background.shape[0] != 1:
            raise ValueError(f"background is a batch of {background.shape[0]} images; Locate Placement makes one "
                             "placement for one image: split the batch (e.g. ImageFromBatch) first")
        image_hw = tuple(background.shape[1:3])
        family = vlm.family
        if family != "llava" and background_depth is None:
            raise ValueError(f"{vlm.name} ({family}) answers no depth: connect background_depth so the depth can be "
                             "read at the box's ground contact")
        if not instruction.strip():
            raise ValueError("instruction is empty; expected e.g. 'Place the cat behind the bed'")
        image = background[0]

        if family == "llava":
            request = bifrost_instruction(instruction)
            prompts = [bifrost_prompt(request), bifrost_prompt(request + BIFROST_STRICT)]
            parsed, answer = ask(vlm, image, prompts[:1 + retry_strict], parse_bifrost_answer, max_new_tokens, seed)
            placement = bifrost_placement(parsed, background_depth, image_hw)
        elif family in QWEN_FAMILIES:
            label = object_name.strip() or _object_from(instruction)
            prompts = [qwen_user_text(instruction, label), qwen_user_text(instruction, label, strict=True)]
            input_hw = vlm_loader.qwen_input_size(vlm, *image_hw)
            parsed, answer = ask(vlm, image, prompts[:1 + retry_strict],
                                 lambda text: parse_qwen_answer(text, family, input_hw, image_hw), max_new_tokens, seed)
            depth = relation_depth(background_depth, parsed.box, None, None)
            placement = Placement(parsed.box, depth, background_depth.kind, image_hw)
        elif family == "florence2":
            relation = parse_relation(instruction)  # before the model: a sentence without a relation fails fast
            aspect = object_aspect(reference, reference_mask)
            # The stricter retry grounds only the anchor's last word ("wooden bed" → "bed").
            prompts = [florence_prompt(relation.anchor_phrase), florence_prompt(relation.anchor_phrase.split()[-1])]
            parsed, answer = ask(vlm, image, prompts[:1 + retry_strict],
                                 lambda text: ParsedAnswer(largest_box(parse_florence_boxes(text, image_hw)), ()),
                                 max_new_tokens, seed)
            box = relation_box(relation.relation, parsed.box, aspect, image_hw)
            depth = relation_depth(background_depth, box, relation.relation, parsed.box)
            placement = Placement(box, depth, background_depth.kind, image_hw)
        else:
            raise ValueError(f"{vlm.name}: family {family!r} is not supported here; expected llava, "
                             f"{', '.join(QWEN_FAMILIES)} or florence2")
        preview = locate_preview(background, placement.pixel_box(*image_hw), legend_marks(background_depth, placement))
        return io.NodeOutput(placement, intermediate(preview), answer)


def _object_from(instruction: str) -> str:
    try:
        return parse_relation(instruction).object_phrase
    except ValueError:
        return ""


def bifrost_placement(parsed: ParsedAnswer, depth: DepthMap | None, image_hw: tuple[int, int]) -> Placement:
    """BIFRÖST's answer as a placement: xywh + (far, near) = (min, max) for its depth fusion, and the
    median (or the centre depth) as the placement depth, in background_depth's kind and scale when given."""
    x1, y1, x2, y2 = parsed.box
    far, near = bifrost_depth_range(parsed)
    middle = parsed.depth[1] if len(parsed.depth) == 3 else parsed.depth[0]
    value, kind = (map_fraction(depth, middle), depth.kind) if depth is not None else (middle, "disparity")
    return Placement(parsed.box, value, kind, image_hw, xywh=(x1, y1, x2 - x1, y2 - y1), relative_depth_range=(far, near))
