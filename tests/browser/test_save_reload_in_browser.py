"""A workflow edited in the UI and saved through the frontend's own Export reloads identically:
save → load → graphToPrompt equal, and the runner reads the saved file to the same prompt."""
from __future__ import annotations

import json
from pathlib import Path

from diorama.runner.workflow import to_api_prompt
from frontend import graph_to_prompt, load_workflow, open_app, set_widget, without_meta

REPO = Path(__file__).resolve().parents[2]
# Composite Sample's seed carries the frontend's extra control_after_generate value in widgets_values,
# the case where positional widget values most easily shift.
WORKFLOW = REPO / "example_workflows" / "composite_inpaint.json"
EDITS = [(9, "seed", 1234), (9, "control_after_generate", "increment"), (9, "sampler_name", "ddim"),
         (9, "denoise", 0.45), (6, "text", "a red crate on the floor"), (8, "area", "whole image")]


def set_setting(page, setting_id: str, value) -> None:
    page.evaluate("async ([id, value]) => { await window.app.extensionManager.setting.set(id, value); }", [setting_id, value])


def test_workflow_edited_in_the_ui_saves_and_reloads_identically(page, browser_context, frontend_server):
    load_workflow(page, json.loads(WORKFLOW.read_text()))
    for node_id, widget, value in EDITS:
        set_widget(page, node_id, widget, value)
    edited = graph_to_prompt(page)
    assert edited["9"]["inputs"]["seed"] == 1234 and edited["6"]["inputs"]["text"] == "a red crate on the floor"
    assert edited["8"]["inputs"]["area"] == "whole image" and edited["9"]["inputs"]["sampler_name"] == "ddim"

    # The frontend's own Export (the file a user shares), without its file-name prompt.
    set_setting(page, "Comfy.PromptFilename", False)
    try:
        with page.expect_download() as download:
            page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.ExportWorkflow'); }")
        saved = json.loads(Path(download.value.path()).read_text())
    finally:  # settings are stored on the server: the rest of the session keeps the default
        set_setting(page, "Comfy.PromptFilename", True)
    assert [n["widgets_values"] for n in saved["nodes"] if n["id"] == 9] == [
        [1234, "increment", 20, 5.0, "ddim", "normal", 0.45, 1, 4.0, True, "blend"]]

    reloaded = open_app(browser_context, frontend_server.url)
    try:
        load_workflow(reloaded, saved)
        assert graph_to_prompt(reloaded) == edited
    finally:
        reloaded.close()
    assert without_meta(to_api_prompt(saved)) == edited, "the runner must read the UI's saved file the same way"
