"""BIFRÖST placement data: answers parse back to the object's exact box and depth, instructions name
relations that hold in the rendered scene, the object is removed by the inpainting workflow (pixels
outside the grown mask untouched), and bad inputs fail naming what is wrong."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage
import torch
import yaml
from PIL import Image

from diorama.ops import bundled_scene
from diorama.ops.relations import RELATIONS, parse_relation
from diorama.ops.vlm_answers import parse_bifrost_answer
from diorama.training.data.frames import Frame, PairedFrames
from diorama.training.recipes import bifrost_placement as bp

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAMES = {3: "table", 4: "ball", 5: "cabinet", bundled_scene.CRATE_INSTANCE: "crate"}
WIDTH, HEIGHT = 64, 48
GROW = 2
TINY_REMOVAL = ["Window.resolution=64", "Sampler.steps=1", f"Grow mask.expand={GROW}"]


def scene_pair(names: dict | None = None, with_depth: bool = True) -> PairedFrames:
    shot = bundled_scene.render_truth(WIDTH, HEIGHT)
    ids = tuple(sorted(int(i) for i in shot.instance.unique() if i >= 0))
    frame = Frame(image=shot.rgb.permute(2, 0, 1).contiguous(), masks=torch.stack([shot.instance == i for i in ids]),
                  instance_ids=ids, depth=shot.depth if with_depth else None)
    return PairedFrames(frame, frame, bundled_scene.CRATE_INSTANCE, "bundled scene (test)",
                        extras={"names": NAMES if names is None else names})


def settings(**changes) -> bp.PlacementDataSettings:
    section = {"min_box_area": 0.01, "max_relations": 3, "replace_fraction": 0.0, "unnamed": "skip",
               "removal": {"set": TINY_REMOVAL}, **changes}
    return bp.PlacementDataSettings.from_config(section)


def numpy_truth(pair: PairedFrames) -> tuple[list[float], list[float]]:
    """Box and (max, median, min) computed independently with numpy, as create_dataset.py does."""
    mask = pair.target.mask_of(pair.object_id).numpy()
    height, width = mask.shape
    rows, cols = np.nonzero(mask)
    x, y, w, h = cols.min(), rows.min(), cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()
    depth = pair.target.depth.numpy().astype(np.float64)
    disparity = np.where(np.isfinite(depth), 1 / depth, 0.0)
    disparity = (disparity - disparity.min()) / (disparity.max() - disparity.min())
    crop = disparity[y:y + h, x:x + w]
    return [x / width, y / height, (x + w) / width, (y + h) / height], [crop.max(), np.median(crop), crop.min()]


def test_relation_rules_on_hand_made_boxes():
    table = bp.Instance("table", (0.4, 0.5, 0.7, 0.8), 4.0)
    cases = [
        (bp.Instance("cat", (0.1, 0.5, 0.3, 0.8), 4.0), "to the left of"),
        (bp.Instance("cat", (0.75, 0.5, 0.9, 0.8), 4.0), "to the right of"),
        (bp.Instance("cat", (0.5, 0.3, 0.6, 0.6), 5.0), "behind"),  # farther than 1.1 x 4
        (bp.Instance("cat", (0.5, 0.3, 0.6, 0.9), 3.0), "in front of"),
        (bp.Instance("cat", (0.5, 0.3, 0.6, 0.505), 4.1), "on"),
        (bp.Instance("cat", (0.5, 0.1, 0.6, 0.3), 4.1), "above"),
        (bp.Instance("cat", (0.5, 0.8, 0.6, 0.95), 4.1), "under"),
        (bp.Instance("cat", (0.5, 0.55, 0.6, 0.75), 4.1), None),  # inside the table's box at its depth
        (bp.Instance("cat", (0.0, 0.0, 0.05, 0.1), 4.0), None),  # more than 0.3 away
    ]
    for obj, expected in cases:
        assert bp.relation_phrase(obj, table, max_gap=0.3, depth_ratio=1.1) == expected, obj
        if expected is not None:
            parsed = parse_relation(bp.place_instruction("cat", [(expected, "table")]))
            assert (parsed.object_phrase, parsed.anchor_phrase) == ("cat", "table")
            assert parsed.relation in RELATIONS


def test_answer_and_instruction_of_the_rendered_scene():
    pair = scene_pair()
    planned = bp.plan_examples(pair, 0, settings())
    assert [p.remove_object for p in planned] == [True]
    example = planned[0].example
    box, depths = numpy_truth(pair)
    answer = parse_bifrost_answer(example.answer)
    np.testing.assert_allclose(answer.box, box, atol=5e-4 + 1e-9)
    np.testing.assert_allclose(answer.depth, depths, atol=5e-4 + 1e-9)
    assert parse_relation(example.instruction).object_phrase == "crate"
    # The bundled crate stands behind the table and in front of the cabinet (ops/bundled_scene.py).
    assert "behind the table" in example.instruction and "in front of the cabinet" in example.instruction
    assert example.instruction.endswith(", output the bounding box and the max, median and min depth values of the object.")


def test_built_data_set_removes_the_object_through_the_workflow(tiny_sd_models, tmp_path):
    pairs = [scene_pair()]
    result = bp.build_placement_data(pairs, settings(replace_fraction=1.0), tmp_path)
    lines = [json.loads(line) for line in result.jsonl.read_text().splitlines()]
    assert result.examples == len(lines) and result.pairs_used == 1
    assert sorted(line["id"] for line in lines) == ["000000_place", "000000_replace"]
    original = (pairs[0].target.image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    mask = pairs[0].target.mask_of(bundled_scene.CRATE_INSTANCE).numpy()
    # GrowMask dilates with a cross; a square of one more pixel contains it and the feathered seam.
    outside = ~scipy.ndimage.binary_dilation(mask, np.ones((3, 3), bool), iterations=GROW + 1)
    for line in lines:
        image = np.asarray(Image.open(tmp_path / line["image"]).convert("RGB"))
        assert image.shape == (HEIGHT, WIDTH, 3)
        assert line["conversations"][0]["value"] == "<image>\n" + line["instruction"]
        assert parse_bifrost_answer(line["conversations"][1]["value"]).box == parse_bifrost_answer(line["answer"]).box
        if line["id"].endswith("_replace"):
            assert line["instruction"].startswith("Replace the crate with the reference image")
            np.testing.assert_array_equal(image, original)
        else:
            np.testing.assert_array_equal(image[outside], original[outside])
            assert np.abs(image[mask].astype(int) - original[mask]).mean() > 1  # the crate was painted over
    assert not list((tmp_path).glob("*.partial"))


def test_bad_inputs_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match=r"bundled scene \(test\) has no target.depth"):
        bp.plan_examples(scene_pair(with_depth=False), 0, settings())
    with pytest.raises(ValueError, match=r"unknown keys \['max_relation'\]"):
        bp.PlacementDataSettings.from_config({"max_relation": 2})
    workflow = tmp_path / "removal.json"
    workflow.write_text(json.dumps({"1": {"class_type": "LoadImage", "_meta": {"title": "Scene"},
                                          "inputs": {"image": "x.png"}}}))
    with pytest.raises(ValueError, match=r"has no nodes titled \['Object mask', 'Negative', 'Sampler', 'Removed'\]"):
        bp.removal_prompt(settings(removal={"workflow": str(workflow)}))
    with pytest.raises(ValueError, match="none of the 1 pairs gave an example"):
        bp.build_placement_data([scene_pair(names={})], settings(), tmp_path)


def test_command_line_builds_from_the_renderer(tiny_sd_models, tmp_path):
    """`python -m diorama.train bifrost-placement-data --config FILE.yaml`: rendered pairs, every answer the
    object's exact box and depths, every place instruction a relation phrase about named instances."""
    from diorama.train import main
    from diorama.training.data.sources import open_source

    data = {"kind": "rendered", "count": 2, "size": 64, "seed": 1}
    config = tmp_path / "placement.yaml"
    config.write_text(yaml.safe_dump({"data": data, "recipe": {"min_box_area": 0.0, "replace_fraction": 0.0,
                                                               "removal": {"set": TINY_REMOVAL}}}))
    assert main(["bifrost-placement-data", "--config", str(config), "--out", str(tmp_path / "out")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "out" / "placement.jsonl").read_text().splitlines()]
    assert lines, "the rendered groups stand close together: every pair has a related neighbour"
    source = open_source(data)
    for line in lines:
        pair = source[int(line["id"].split("_")[0])]
        box, depths = numpy_truth(pair)
        answer = parse_bifrost_answer(line["answer"])
        np.testing.assert_allclose(answer.box, box, atol=5e-4 + 1e-9)
        np.testing.assert_allclose(answer.depth, depths, atol=5e-4 + 1e-9)
        relation = parse_relation(line["instruction"])
        names = pair.extras.get("names") or {}
        assert relation.object_phrase == names.get(pair.object_id, relation.object_phrase)
        assert relation.anchor_phrase in names.values() or relation.anchor_phrase.endswith(" object")
        assert (tmp_path / "out" / line["image"]).is_file()


def test_colour_names():
    expected = {(0.9, 0.1, 0.1): "red", (0.9, 0.5, 0.1): "orange", (0.8, 0.8, 0.1): "yellow", (0.1, 0.7, 0.2): "green",
                (0.1, 0.7, 0.7): "cyan", (0.1, 0.2, 0.8): "blue", (0.5, 0.1, 0.8): "purple", (0.8, 0.1, 0.5): "pink",
                (0.95, 0.95, 0.9): "white", (0.5, 0.5, 0.5): "grey", (0.1, 0.1, 0.12): "black"}
    for rgb, name in expected.items():
        assert bp.colour_name(torch.tensor(rgb)) == name, rgb
        assert bp.colour_name(torch.tensor(rgb) * 0.5 + 0.0) in (name, "grey", "black")  # shading keeps the hue


def test_shipped_config_reads():
    from diorama.training.data.sources import open_source

    document = yaml.safe_load((bp.PACK / "training" / "configs" / "bifrost_placement_data.yaml").read_text())
    assert set(document) == {"data", "recipe"}
    settings = bp.PlacementDataSettings.from_config(document["recipe"])
    assert bp.removal_prompt(settings)["8"]["inputs"]["steps"] == 20
    assert len(open_source(document["data"])) == document["data"]["count"]
