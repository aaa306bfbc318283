"""BIFRÖST placement data: instruction / answer pairs for fine-tuning a VLM as a 2.5D location predictor.

`python -m diorama.train bifrost-placement-data --config FILE.yaml` builds, from any data source whose
target frames carry instance masks and depth (the renderer, or a dataset with depth maps), what
BIFRÖST's `LLaVA_Bifrost/create_dataset.py` builds from COCO (REFERENCE.md §2):

- image: the scene with the object removed, by an inpainting workflow run through Diorama's runner
  (`training/workflows/object_removal.json` by default: the object's mask grown, an inpainting model
  sampled in a window around it, stitched back so pixels outside the mask stay exactly as they were);
- instruction: `Place the {object} {relation} the {anchor}[ and {relation} the {anchor} …], output the
  bounding box and the max, median and min depth values of the object.`;
- answer: `[x1, y1, x2, y2], max, median, min.` (`%.3f`): the object's box as fractions of the image,
  then the max / median / min of the disparity (1 / depth, min-max normalised over the whole image,
  1 = nearest) inside that box in the frame *with* the object, as the reference reads DPT's output.

With probability `replace_fraction` (the reference's 10 %) a pair also yields a "Replace the {object}
with the reference image, …" example on the unedited image with the same answer.

Relations (the reference decides them from COCO boxes alone; here the exact depth is used as well, so
"behind" means farther): object O, anchor A, boxes as fractions, depth = median metric depth in the mask.
  - boxes more than `max_gap` apart (either axis): no relation (the reference's 0.3);
  - boxes overlapping horizontally: O "behind" A when O is farther than `depth_ratio` × A, "in front
    of" when nearer than A / `depth_ratio`; at a similar depth O is "on" A when its bottom is within
    0.01 of A's top, "above" when higher, "under" when its top is at or below A's bottom;
  - side by side: "to the left of" / "to the right of".
One anchor per relation, at most `max_relations` relations, anchors named differently from the object
(the reference's rule), chosen in a seeded order. Every phrase is one `ops.relations.parse_relation`
knows, and every answer parses back with `ops.vlm_answers.parse_bifrost_answer`.

Instance names: `PairedFrames.extras["names"]` ({instance id: name}) from the source, overridden per
id by the recipe's `names:` mapping. Instances still unnamed are named by their colour ("red object",
`colour_name` of the mean colour of their pixels) when `unnamed: colour` (the default; the renderer
names nothing), or skipped when `unnamed: skip` (a sentence about "object 3" would teach the VLM nothing).

Output: `images/{id}.png` and `placement.jsonl` in the output folder; each line is
`{"id", "image" (relative to the JSONL), "instruction", "answer", "conversations", "origin", "object_id"}`
where `conversations` is LLaVA's fine-tune layout (`"<image>\\n" + instruction`, then the answer).
"""
from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from ...ops.checks import file_pixels
from ...ops.placement import mask_bounding_box
from ...ops.vlm_answers import bifrost_instruction
from ..data.frames import Frame, PairedFrames

LOG = logging.getLogger(__name__)

NAME = "bifrost-placement-data"
PACK = Path(__file__).resolve().parents[2]
DEFAULT_WORKFLOW = PACK / "training" / "workflows" / "object_removal.json"
# The titles of the removal workflow's nodes this builder fills in (a user's own workflow needs them too).
SCENE_NODE, MASK_NODE, NEGATIVE_NODE, SAMPLER_NODE, OUTPUT_NODE = "Scene", "Object mask", "Negative", "Sampler", "Removed"
INPUT_SUBFOLDER = "diorama_placement_data"
TOUCHING = 0.01  # the reference's tolerance (fractions of the image) for boxes that touch
Box = tuple[float, float, float, float]
UNNAMED = ("colour", "skip")
# Hue sectors (degrees, upper bounds) → colour words; below GREY_SATURATION a colour is white/grey/black.
HUE_NAMES = ((15, "red"), (45, "orange"), (70, "yellow"), (165, "green"), (195, "cyan"), (255, "blue"),
             (290, "purple"), (345, "pink"), (360, "red"))
GREY_SATURATION = 0.2


@dataclass(frozen=True)
class PlacementDataSettings:
    """The recipe's `recipe:` section of the YAML config."""

    seed: int = 0
    max_relations: int = 2
    min_box_area: float = 0.2  # the reference keeps objects whose box covers at least 20 % of the image
    max_gap: float = 0.3  # the reference's "too far away" distance between boxes, fractions of the image
    depth_ratio: float = 1.1  # farther than this factor = behind (ops.relations uses the same step)
    replace_fraction: float = 0.1  # the reference's share of "Replace the …" examples
    names: dict[int, str] = field(default_factory=dict)
    unnamed: str = "colour"  # name instances the source leaves unnamed by colour, or "skip" them
    workflow: str = str(DEFAULT_WORKFLOW)
    workflow_set: tuple[str, ...] = ()  # extra NODE.INPUT=VALUE overrides, as `python -m diorama.run --set`

    @staticmethod
    def from_config(section: dict | None) -> "PlacementDataSettings":
        section = dict(section or {})
        removal = section.pop("removal", {}) or {}
        known = {f.name for f in fields(PlacementDataSettings)} - {"workflow", "workflow_set"}
        unknown = sorted(set(section) - known) + sorted(f"removal.{k}" for k in set(removal) - {"workflow", "set"})
        if unknown:
            raise ValueError(f"recipe section of {NAME}: unknown keys {unknown}; expected {sorted(known)} and "
                             "removal: {workflow, set}")
        names = {int(k): str(v) for k, v in (section.pop("names", None) or {}).items()}
        settings = PlacementDataSettings(**section, names=names, workflow=str(removal.get("workflow", DEFAULT_WORKFLOW)),
                                         workflow_set=tuple(removal.get("set", ())))
        if settings.max_relations < 1:
            raise ValueError(f"max_relations is {settings.max_relations}; expected at least 1")
        if not 0 <= settings.replace_fraction <= 1 or not 0 <= settings.min_box_area <= 1:
            raise ValueError("replace_fraction and min_box_area are fractions; expected values in [0, 1]")
        if settings.unnamed not in UNNAMED:
            raise ValueError(f"unnamed is {settings.unnamed!r}; expected one of {UNNAMED}")
        if settings.depth_ratio < 1:
            raise ValueError(f"depth_ratio is {settings.depth_ratio}; expected at least 1")
        return settings


@dataclass(frozen=True)
class Instance:
    name: str
    box: Box  # fractions of the image, x1 y1 x2 y2
    depth: float  # median metric depth inside the mask


@dataclass(frozen=True)
class Example:
    id: str
    image: str  # relative to the JSONL
    instruction: str
    answer: str
    origin: str
    object_id: int

    def as_json(self) -> dict:
        return {"id": self.id, "image": self.image, "instruction": self.instruction, "answer": self.answer,
                "conversations": [{"from": "human", "value": "<image>\n" + self.instruction},
                                  {"from": "gpt", "value": self.answer}],
                "origin": self.origin, "object_id": self.object_id}


# ---------------------------------------------------------------- pure parts
def fraction_box(mask: torch.Tensor) -> Box:
    """The mask's bounding box (pixel ends exclusive) as fractions of its width and height."""
    height, width = mask.shape
    x0, y0, x1, y1 = mask_bounding_box(mask.float())
    return x0 / width, y0 / height, x1 / width, y1 / height


def normalised_disparity(depth: torch.Tensor) -> torch.Tensor:
    """Metric z-depth [H, W] (inf = no surface) → disparity min-max normalised over the image, 1 = nearest:
    the scale of DPT's output after the reference's cv2.NORM_MINMAX."""
    disparity = torch.where(torch.isfinite(depth) & (depth > 0), 1.0 / depth, torch.zeros_like(depth))
    low, high = disparity.min(), disparity.max()
    if not high > low:
        raise ValueError("the depth map is constant; a placement answer needs depth that varies over the image")
    return (disparity - low) / (high - low)


def box_depth_statistics(disparity: torch.Tensor, box: Box) -> tuple[float, float, float]:
    """(max, median, min) of the normalised disparity inside the box, cropped as the reference does
    (`result[int(y):int(y + h), int(x):int(x + w)]` on pixel coordinates); the median is numpy's (the
    mean of the two middle values for an even count)."""
    height, width = disparity.shape
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    values = disparity[int(y0):int(y0 + (y1 - y0)), int(x0):int(x0 + (x1 - x0))].flatten().double()
    return float(values.max()), float(torch.quantile(values, 0.5)), float(values.min())


def bifrost_answer(box: Box, depths: tuple[float, float, float]) -> str:
    """BIFRÖST's answer text, formatted as create_dataset.py formats it."""
    return "[%.3f, %.3f, %.3f, %.3f], %.3f, %.3f, %.3f." % (*box, *depths)


def _gap(a0: float, a1: float, b0: float, b1: float) -> float:
    """Distance between two intervals (negative when they overlap)."""
    return max(b0 - a1, a0 - b1)


def relation_phrase(obj: Instance, anchor: Instance, max_gap: float, depth_ratio: float) -> str | None:
    """The relation phrase that holds from the object to the anchor, or None (module docstring)."""
    (ox0, oy0, ox1, oy1), (ax0, ay0, ax1, ay1) = obj.box, anchor.box
    if _gap(ox0, ox1, ax0, ax1) > max_gap or _gap(oy0, oy1, ay0, ay1) > max_gap:
        return None
    if _gap(ox0, ox1, ax0, ax1) < 0:
        if obj.depth > anchor.depth * depth_ratio:
            return "behind"
        if obj.depth < anchor.depth / depth_ratio:
            return "in front of"
        if abs(oy1 - ay0) <= TOUCHING:
            return "on"
        if oy1 < ay0:
            return "above"
        if oy0 >= ay1 - TOUCHING:
            return "under"
        return None
    return "to the left of" if ox1 <= ax0 else "to the right of"


def place_instruction(object_name: str, relations: Sequence[tuple[str, str]]) -> str:
    """'Place the cat behind the bed and to the left of the lamp, output … of the object.'"""
    clauses = " and ".join(f"{phrase} the {anchor}" for phrase, anchor in relations)
    return bifrost_instruction(f"Place the {object_name} {clauses}")


def replace_instruction(object_name: str) -> str:
    return bifrost_instruction(f"Replace the {object_name} with the reference image")


def colour_name(rgb: torch.Tensor) -> str:
    """A colour word for a mean RGB in [0, 1] (hue sectors of HSV; shading scales value, not hue)."""
    red, green, blue = (float(c) for c in rgb)
    high, low = max(red, green, blue), min(red, green, blue)
    if high - low < GREY_SATURATION * max(high, 1e-6):
        return "white" if high > 0.8 else "black" if high < 0.25 else "grey"
    if high == red:
        hue = (60 * (green - blue) / (high - low)) % 360
    elif high == green:
        hue = 60 * (blue - red) / (high - low) + 120
    else:
        hue = 60 * (red - green) / (high - low) + 240
    return next(name for bound, name in HUE_NAMES if hue < bound)


def instance_names(pair: PairedFrames, settings: PlacementDataSettings) -> dict[int, str]:
    """{instance id: name} for the target frame: the source's names, the config's, then colours (if asked)."""
    names = {**{int(k): str(v) for k, v in (pair.extras.get("names") or {}).items()}, **settings.names}
    if settings.unnamed == "colour":
        frame = pair.target
        for index, instance_id in enumerate(frame.instance_ids):
            mask = frame.masks[index]
            if instance_id not in names and bool(mask.any()):
                names[instance_id] = f"{colour_name(frame.image[:, mask].mean(dim=1))} object"
    return names


def visible_instances(frame: Frame, names: dict[int, str]) -> dict[int, Instance]:
    """Named instances with at least one pixel in the frame."""
    found = {}
    for index, instance_id in enumerate(frame.instance_ids):
        mask = frame.masks[index]
        if instance_id not in names or not bool(mask.any()):
            continue
        found[instance_id] = Instance(names[instance_id], fraction_box(mask), float(frame.depth[mask].median()))
    return found


def choose_relations(obj: Instance, others: Sequence[Instance], settings: PlacementDataSettings,
                     rng: random.Random) -> list[tuple[str, str]]:
    """One anchor per relation phrase, anchors in a seeded random order, at most `max_relations`."""
    chosen: dict[str, str] = {}
    candidates = [other for other in others if other.name != obj.name]
    rng.shuffle(candidates)
    for anchor in candidates:
        phrase = relation_phrase(obj, anchor, settings.max_gap, settings.depth_ratio)
        if phrase is not None and phrase not in chosen:
            chosen[phrase] = anchor.name
        if len(chosen) == settings.max_relations:
            break
    return list(chosen.items())


@dataclass(frozen=True)
class PlannedExample:
    """An example before its image exists: what the builder will write and whether it needs a removal."""

    example: Example
    remove_object: bool
    object_name: str


def plan_examples(pair: PairedFrames, index: int, settings: PlacementDataSettings) -> list[PlannedExample]:
    """The examples one pair yields (none when the object is too small, unnamed or has no relation)."""
    pair.require("target.masks", "target.depth")
    names = instance_names(pair, settings)
    target = pair.target
    instances = visible_instances(target, names)
    obj = instances.pop(pair.object_id, None)
    if obj is None:
        LOG.info("%s: object %d is not visible or has no name; skipped", pair.origin, pair.object_id)
        return []
    x0, y0, x1, y1 = obj.box
    if (x1 - x0) * (y1 - y0) < settings.min_box_area:
        LOG.info("%s: object %d covers %.3f of the image (< min_box_area %.3f); skipped", pair.origin,
                 pair.object_id, (x1 - x0) * (y1 - y0), settings.min_box_area)
        return []
    rng = random.Random(f"{settings.seed}:{index}")
    answer = bifrost_answer(obj.box, box_depth_statistics(normalised_disparity(target.depth), obj.box))
    planned = []
    if rng.random() < settings.replace_fraction:
        planned.append(PlannedExample(Example(f"{index:06d}_replace", f"images/{index:06d}_replace.png",
                                              replace_instruction(obj.name), answer, pair.origin, pair.object_id),
                                      remove_object=False, object_name=obj.name))
    relations = choose_relations(obj, list(instances.values()), settings, rng)
    if relations:
        planned.append(PlannedExample(Example(f"{index:06d}_place", f"images/{index:06d}_place.png",
                                              place_instruction(obj.name, relations), answer, pair.origin,
                                              pair.object_id), remove_object=True, object_name=obj.name))
    else:
        LOG.info("%s: no relation between object %d and another named instance; no place example", pair.origin,
                 pair.object_id)
    return planned


def save_png(image: torch.Tensor, path: Path) -> None:
    """[3, H, W] or [H, W] in [0, 1] → 8-bit PNG."""
    pixels = file_pixels(image.permute(1, 2, 0) if image.ndim == 3 else image)
    Image.fromarray(pixels.cpu().numpy()).save(path)


# ---------------------------------------------------------------- the removal workflow
def removal_prompt(settings: PlacementDataSettings) -> dict:
    """The removal workflow as an API prompt with the user's overrides applied, checked for the nodes
    this builder fills in before any image is processed."""
    from ...runner.workflow import apply_overrides, load_workflow, to_api_prompt

    workflow = Path(settings.workflow)
    if not workflow.is_absolute() and not workflow.exists() and (PACK / workflow).exists():
        workflow = PACK / workflow  # a path inside the pack, as the shipped configs give it
    prompt = apply_overrides(to_api_prompt(load_workflow(workflow)), list(settings.workflow_set))
    titles = {node.get("_meta", {}).get("title") for node in prompt.values()}
    missing = [t for t in (SCENE_NODE, MASK_NODE, NEGATIVE_NODE, SAMPLER_NODE, OUTPUT_NODE) if t not in titles]
    if missing:
        raise ValueError(f"removal workflow {settings.workflow} has no nodes titled {missing}; it needs an image "
                         f"loader '{SCENE_NODE}', a mask loader '{MASK_NODE}', a text encoder '{NEGATIVE_NODE}', a "
                         f"sampler '{SAMPLER_NODE}' (with a seed input) and an image saver '{OUTPUT_NODE}'")
    return prompt


def remove_object(prompt: dict, image: torch.Tensor, mask: torch.Tensor, object_name: str, seed: int,
                  destination: Path, executor) -> None:
    """Run the removal workflow on one image and move its output to `destination`."""
    import folder_paths

    from ...runner.execute import execute_prompt
    from ...runner.workflow import apply_overrides

    inputs = Path(folder_paths.get_input_directory()) / INPUT_SUBFOLDER
    inputs.mkdir(parents=True, exist_ok=True)
    scene_file, mask_file = inputs / f"{destination.stem}_scene.png", inputs / f"{destination.stem}_mask.png"
    save_png(image, scene_file)
    save_png(mask.float(), mask_file)
    try:
        filled = apply_overrides(json.loads(json.dumps(prompt)), [
            f"{SCENE_NODE}.image={INPUT_SUBFOLDER}/{scene_file.name}",
            f"{MASK_NODE}.image={INPUT_SUBFOLDER}/{mask_file.name}",
            f"{NEGATIVE_NODE}.text={object_name}", f"{SAMPLER_NODE}.seed={seed}",
            f"{OUTPUT_NODE}.filename_prefix={INPUT_SUBFOLDER}/{destination.stem}",
        ])
        report = execute_prompt(filled, executor)
    finally:
        scene_file.unlink(missing_ok=True)
        mask_file.unlink(missing_ok=True)
    output_id = next(i for i, node in filled.items() if node.get("_meta", {}).get("title") == OUTPUT_NODE)
    images = report.outputs.get(output_id, {}).get("images", [])
    if len(images) != 1:
        raise RuntimeError(f"removal workflow node '{OUTPUT_NODE}' saved {len(images)} images; expected exactly 1")
    saved = Path(folder_paths.get_output_directory()) / images[0].get("subfolder", "") / images[0]["filename"]
    shutil.move(saved, destination)


# ---------------------------------------------------------------- the builder
@dataclass(frozen=True)
class PlacementData:
    jsonl: Path
    examples: int
    pairs_used: int
    pairs_skipped: int


def build_placement_data(data: Sequence[PairedFrames], settings: PlacementDataSettings, out_dir: Path) -> PlacementData:
    """Write `images/` and `placement.jsonl` under `out_dir` (the JSONL last, atomically: a folder
    without it is an interrupted run)."""
    from tqdm import tqdm

    from ...runner.boot import boot_comfyui
    from ...runner.execute import new_executor

    if len(data) == 0:
        raise ValueError(f"{NAME}: the data source is empty; expected pairs with instance masks and depth")
    boot_comfyui()
    prompt = removal_prompt(settings)
    # One executor for the whole data set: its CLASSIC cache keeps the outputs of nodes whose inputs did not
    # change since the previous image, so the inpainting model loads once.
    executor = new_executor()
    images = Path(out_dir) / "images"
    images.mkdir(parents=True, exist_ok=True)
    examples, used = [], 0
    for index in tqdm(range(len(data)), desc=NAME, unit="pair"):
        pair = data[index]
        planned = plan_examples(pair, index, settings)
        used += bool(planned)
        for item in planned:
            destination = Path(out_dir) / item.example.image
            if item.remove_object:
                remove_object(prompt, pair.target.image, pair.target.mask_of(pair.object_id), item.object_name,
                              seed=settings.seed + index, destination=destination, executor=executor)
            else:
                save_png(pair.target.image, destination)
            examples.append(item.example)
    if not examples:
        raise ValueError(f"{NAME}: none of the {len(data)} pairs gave an example (objects smaller than min_box_area "
                         f"{settings.min_box_area}, unnamed, or without a related named instance); see the log")
    jsonl = Path(out_dir) / "placement.jsonl"
    partial = jsonl.with_suffix(".jsonl.partial")
    partial.write_text("".join(json.dumps(e.as_json()) + "\n" for e in examples))
    partial.replace(jsonl)
    LOG.info("%s: %d examples from %d of %d pairs → %s", NAME, len(examples), used, len(data), jsonl)
    return PlacementData(jsonl, len(examples), used, len(data) - used)


SECTIONS = ("recipe", "data")


def build_from_config(path: Path, out_dir: Path | None = None) -> PlacementData:
    """`python -m diorama.train bifrost-placement-data --config FILE.yaml [--out DIR]`: the YAML's `recipe:`
    (PlacementDataSettings, `removal:` included) and `data:` (training.data.sources.open_source) sections;
    DIR defaults to <ComfyUI output>/training/bifrost-placement-data."""
    import yaml

    from ...runner.boot import boot_comfyui
    from ..data.sources import open_source

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    document = yaml.safe_load(path.read_text()) or {}
    if not isinstance(document, dict) or set(document) - set(SECTIONS) or "data" not in document:
        found = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise ValueError(f"{path}: {NAME} reads the sections {SECTIONS} (data required, no training), found {found}")
    settings = PlacementDataSettings.from_config(document.get("recipe"))
    boot_comfyui()
    if out_dir is None:
        import folder_paths

        out_dir = Path(folder_paths.get_output_directory()) / "training" / NAME
    return build_placement_data(open_source(document["data"]), settings, Path(out_dir))
