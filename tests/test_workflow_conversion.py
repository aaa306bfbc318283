"""The runner's UI → API conversion, checked against prompts written out by hand."""
import copy
import json
from pathlib import Path

import pytest

from diorama.runner.workflow import apply_overrides, to_api_prompt, ui_to_api

WORKFLOWS = Path(__file__).resolve().parents[1] / "example_workflows"


def strip_meta(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def test_example_workflow_converts_to_the_expected_prompt():
    ui = json.loads((WORKFLOWS / "depth_aware_paste.json").read_text())
    expected = {
        "1": {"class_type": "DioramaBundledScene", "inputs": {"width": 512, "height": 384, "reference_size": 256}},
        "2": {"class_type": "DioramaDepthFuse", "inputs": {
            "background_depth": ["1", 1], "object_depth": ["1", 4], "object_mask": ["1", 3], "placement": ["1", 5]}},
        "3": {"class_type": "DioramaDepthAwarePaste", "inputs": {
            "background": ["1", 0], "object": ["1", 2], "object_mask": ["1", 3], "placement": ["1", 5],
            "visible_mask": ["2", 1], "feather_px": 2.0, "colour_match": 0.4}},
        "4": {"class_type": "SaveImage", "inputs": {"filename_prefix": "depth_aware_paste", "images": ["3", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["2", 2]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["1", 6]}},
        "8": {"class_type": "DioramaShapeMask", "inputs": {"object_mask": ["1", 3], "placement": ["1", 5], "level": 1}},
        "9": {"class_type": "MaskToImage", "inputs": {"mask": ["8", 0]}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
        "11": {"class_type": "DioramaDetailMap", "inputs": {"image": ["1", 2], "mask": ["1", 3],
                                                           "threshold": 50 / 255, "erode_px": 2}},
        "12": {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}},
    }
    assert strip_meta(ui_to_api(ui)) == expected


def hand_made_ui() -> dict:
    """Scene → reroute → paste, width from a primitive, object through a bypassed ImageInvert,
    a muted SaveImage, a seed widget with its control value, a group and a note."""
    def n(id, type, widgets=None, inputs=(), outputs=(), mode=0):
        return {"id": id, "type": type, "mode": mode, "pos": [0, 0], "size": [200, 100], "flags": {}, "order": id,
                "inputs": list(inputs), "outputs": list(outputs), "properties": {}, "widgets_values": widgets or []}
    return {
        "last_node_id": 9, "last_link_id": 14, "version": 0.4, "config": {}, "extra": {},
        "groups": [{"id": 1, "title": "ignored", "bounding": [0, 0, 10, 10]}],
        "nodes": [
            n(1, "DioramaBundledScene", [512, 384, 64],
              inputs=[{"name": "width", "type": "INT", "widget": {"name": "width"}, "link": 10}],
              outputs=[{"name": "background", "type": "IMAGE", "links": [1]},
                       {"name": "background_depth", "type": "DIORAMA_DEPTH", "links": []},
                       {"name": "object", "type": "IMAGE", "links": [3]},
                       {"name": "object_mask", "type": "MASK", "links": [4]},
                       {"name": "object_depth", "type": "DIORAMA_DEPTH", "links": []},
                       {"name": "true_placement", "type": "DIORAMA_PLACEMENT", "links": [5]},
                       {"name": "ground_truth", "type": "IMAGE", "links": [12]}]),
            n(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}], outputs=[{"name": "", "type": "IMAGE", "links": [2]}]),
            n(3, "ImageInvert", inputs=[{"name": "image", "type": "IMAGE", "link": 3}],
              outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [6]}], mode=4),
            n(4, "DioramaDepthAwarePaste", [0.0, 0.0],
              inputs=[{"name": "background", "type": "IMAGE", "link": 2}, {"name": "object", "type": "IMAGE", "link": 6},
                      {"name": "object_mask", "type": "MASK", "link": 4},
                      {"name": "placement", "type": "DIORAMA_PLACEMENT", "link": 5},
                      {"name": "visible_mask", "type": "MASK", "link": None}],
              outputs=[{"name": "image", "type": "IMAGE", "links": [7]}, {"name": "alpha", "type": "MASK", "links": []}]),
            n(5, "SaveImage", ["hand_made"], inputs=[{"name": "images", "type": "IMAGE", "link": 7}]),
            n(6, "SaveImage", ["muted"], inputs=[{"name": "images", "type": "IMAGE", "link": 12}], mode=2),
            n(7, "PrimitiveNode", [96, "fixed"],
              outputs=[{"name": "INT", "type": "INT", "links": [10], "widget": {"name": "width"}}]),
            n(8, "RandomNoise", [1234, "randomize"], outputs=[{"name": "NOISE", "type": "NOISE", "links": []}]),
            n(9, "Note", ["a note"]),
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 4, 0, "IMAGE"], [3, 1, 2, 3, 0, "IMAGE"], [4, 1, 3, 4, 2, "MASK"],
                  [5, 1, 5, 4, 3, "DIORAMA_PLACEMENT"], [6, 3, 0, 4, 1, "IMAGE"], [7, 4, 0, 5, 0, "IMAGE"],
                  [10, 7, 0, 1, 0, "INT"], [12, 1, 6, 6, 0, "IMAGE"]],
    }


def test_reroute_primitive_bypass_mute_seed_and_note():
    expected = {
        "1": {"class_type": "DioramaBundledScene", "inputs": {"width": 96, "height": 384, "reference_size": 64}},
        "4": {"class_type": "DioramaDepthAwarePaste", "inputs": {
            "background": ["1", 0], "object": ["1", 2], "object_mask": ["1", 3], "placement": ["1", 5],
            "feather_px": 0.0, "colour_match": 0.0}},
        "5": {"class_type": "SaveImage", "inputs": {"filename_prefix": "hand_made", "images": ["4", 0]}},
        "8": {"class_type": "RandomNoise", "inputs": {"noise_seed": 1234}},
    }
    assert strip_meta(ui_to_api(hand_made_ui())) == expected


def test_hand_made_ui_workflow_runs_like_its_api_prompt(run_prompt, base_dir):
    import numpy as np
    from PIL import Image

    api = {k: v for k, v in ui_to_api(hand_made_ui()).items() if k != "8"}
    report = run_prompt(api)
    image = np.asarray(Image.open(base_dir / "output" / report.outputs["5"]["images"][0]["filename"]))
    assert image.shape == (384, 96, 3)


def test_api_prompts_pass_through_and_garbage_is_refused():
    prompt = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}
    assert to_api_prompt(copy.deepcopy(prompt)) == prompt
    with pytest.raises(ValueError, match="not a ComfyUI workflow"):
        to_api_prompt({"hello": "world"})


def test_overrides_by_id_and_title_with_json_values():
    prompt = {"1": {"class_type": "A", "inputs": {"x": 1}, "_meta": {"title": "Scene"}},
              "2": {"class_type": "B", "inputs": {}, "_meta": {"title": "Paste"}}}
    apply_overrides(prompt, ["1.x=5", "Paste.name=crate", "Scene.size=[1, 2]"])
    assert prompt["1"]["inputs"] == {"x": 5, "size": [1, 2]} and prompt["2"]["inputs"] == {"name": "crate"}
    with pytest.raises(ValueError, match="matches no node"):
        apply_overrides(prompt, ["9.x=1"])
    with pytest.raises(ValueError, match="expected NODE.INPUT=VALUE"):
        apply_overrides(prompt, ["novalue"])


def test_preview_any_carries_the_frontends_preview_widget_and_still_runs(run_prompt):
    """The frontend's PreviewAny extension sends its read-only `preview` text box in the prompt (measured
    with app.graphToPrompt in tests/browser/); the runner sends it too, and the executor ignores it."""
    ui = {"nodes": [
        {"id": 1, "type": "PrimitiveNode", "outputs": [{"name": "INT", "type": "INT", "links": [1]}], "widgets_values": [7]},
        {"id": 2, "type": "PreviewAny", "inputs": [{"name": "source", "type": "*", "link": 1}], "widgets_values": []},
    ], "links": [[1, 1, 0, 2, 0, "INT"]]}
    prompt = ui_to_api(ui)
    assert strip_meta(prompt) == {"2": {"class_type": "PreviewAny", "inputs": {"preview": "", "source": 7}}}
    assert run_prompt(prompt).outputs["2"]["text"] == ["7"]
