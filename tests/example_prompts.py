"""Example workflows as API prompts for tests, made fast without changing the graph."""
from __future__ import annotations

from pathlib import Path

from diorama.runner.workflow import load_workflow, to_api_prompt

EXAMPLES = Path(__file__).resolve().parents[1] / "example_workflows"
QUICK_SAMPLING = {"DioramaCompositeSample": {"steps": 2}, "DioramaCompositeWindow": {"resolution": 128}}


def quick_example_prompt(name: str, inputs_by_class: dict[str, dict] | None = None) -> dict:
    """`example_workflows/<name>.json` as the frontend would queue it, sampling 2 steps of a 128² window
    instead of 20 at 512² (the graph is the same); `inputs_by_class` sets inputs on every node of a class
    (e.g. the model names a test wrote)."""
    prompt = to_api_prompt(load_workflow(EXAMPLES / f"{name}.json"))
    for node in prompt.values():
        for overrides in (QUICK_SAMPLING, inputs_by_class or {}):
            node["inputs"].update(overrides.get(node["class_type"], {}))
    return prompt
