"""Every example workflow in ComfyUI's real frontend: loaded in the page, the frontend's own UI → API
conversion (app.graphToPrompt) equals the runner's, queued from the page, /history success, and the
saved images on disk; a screenshot of each loaded graph is kept as an artefact."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from diorama.runner.workflow import to_api_prompt
from frontend import (fit_view, graph_to_prompt, load_workflow, node_rectangles, run_from_page, save_screenshot, set_widget,
                      without_meta)

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
# Sampling workflows sample 1 step of a 128² window (BIFRÖST/AnyDoor: their fixed 512²) instead of their
# own settings (the graph is the same); set through the widgets, as a user would.
QUICK_WIDGETS = {"DioramaCompositeSample": {"steps": 1}, "DioramaCompositeWindow": {"resolution": 128}}


def quick_settings(prompt: dict) -> dict[str, dict]:
    """node id → {widget: value} that make `prompt` run in seconds with the tiny models."""
    return {node_id: QUICK_WIDGETS[node["class_type"]] for node_id, node in prompt.items()
            if node["class_type"] in QUICK_WIDGETS}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_example_workflow_converts_and_runs_in_the_browser(path, page, frontend_server):
    workflow = json.loads(path.read_text())
    load_workflow(page, workflow, path.stem)
    fit_view(page)
    save_screenshot(page, path.stem)

    runner_prompt = without_meta(to_api_prompt(workflow))
    assert graph_to_prompt(page) == runner_prompt, "the frontend's UI → API conversion must equal the runner's"

    for node_id, widgets in quick_settings(runner_prompt).items():
        for name, value in widgets.items():
            set_widget(page, node_id, name, value)
            runner_prompt[node_id]["inputs"][name] = value
    entry = run_from_page(page, frontend_server)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert without_meta(entry["prompt"][2]) == runner_prompt, "the page must queue the graph as edited"
    saved = [image for output in entry["outputs"].values() for image in output.get("images", [])
             if image["type"] == "output"]
    assert saved, "every example workflow saves at least one image"
    for image in saved:
        assert (frontend_server.base_dir / "output" / image["subfolder"] / image["filename"]).is_file(), image


def overlapping_nodes(rectangles: dict[int, tuple[float, float, float, float]]) -> list[tuple[int, int]]:
    """Pairs of node ids whose drawn rectangles share area."""
    ids = sorted(rectangles)
    return [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]
            if _share_area(rectangles[a], rectangles[b])]


def _share_area(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_overlapping_nodes_finds_shared_area_only():
    assert overlapping_nodes({1: (0, 0, 10, 10), 2: (5, 5, 10, 10), 3: (10, 0, 5, 5), 4: (0, 20, 1, 1)}) == [(1, 2)]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_example_workflow_nodes_do_not_overlap_in_the_browser(path, page, frontend_server):
    """A shared workflow opens readable: no node drawn over another once the frontend has sized each to its
    widgets (the stored sizes can be smaller than the drawn ones)."""
    load_workflow(page, json.loads(path.read_text()), path.stem)
    rectangles = node_rectangles(page)
    assert not overlapping_nodes(rectangles), {pair: (rectangles[pair[0]], rectangles[pair[1]])
                                               for pair in overlapping_nodes(rectangles)}
