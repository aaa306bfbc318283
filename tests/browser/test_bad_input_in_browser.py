"""Bad input through the UI: a Diorama node fed an empty mask, and a loader naming a model that is not
installed, queued from the page; ComfyUI's error dialog names the node and the problem, and the server
keeps serving (the unchanged workflow runs right after, from the same page)."""
from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import Page, expect

from frontend import load_workflow, queue_from_page, run_from_page, save_screenshot, set_widget

REPO = Path(__file__).resolve().parents[2]
PASTE = json.loads((REPO / "example_workflows" / "depth_aware_paste.json").read_text())
ESTIMATED_PASTE = json.loads((REPO / "example_workflows" / "estimated_depth_paste.json").read_text())


def feed_empty_mask(page: Page, node_id: int, input_name: str, size: int) -> None:
    """Add ComfyUI's SolidMask (value 0, size × size) and connect it to the node's mask input, as a user would."""
    page.evaluate(
        """([nodeId, inputName, size]) => {
            const mask = LiteGraph.createNode('SolidMask');
            window.app.graph.add(mask);
            for (const [name, value] of [['value', 0], ['width', size], ['height', size]])
                mask.widgets.find((w) => w.name === name).value = value;
            const target = window.app.graph.getNodeById(nodeId);
            mask.connect(0, target, target.findInputSlot(inputName));
        }""",
        [node_id, input_name, size],
    )


def error_dialog_after_queueing(page: Page, server):
    """Queue from the page; the prompt is accepted, fails while running, and the page shows an error dialog."""
    status, body = queue_from_page(page)
    assert status == 200, body
    assert server.wait_history(body["prompt_id"])["status"]["status_str"] == "error"
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    return dialog


def closes_and_serves_again(page: Page, server, dialog, workflow: dict) -> None:
    dialog.press("Escape")
    expect(dialog).to_be_hidden()
    load_workflow(page, workflow)
    assert run_from_page(page, server)["status"]["status_str"] == "success"


def test_empty_mask_shows_the_nodes_error_dialog_and_the_server_goes_on(page, frontend_server):
    load_workflow(page, PASTE)
    # Depth Fuse (node 2) gets an all-zero object mask at the bundled reference size (256²).
    feed_empty_mask(page, 2, "object_mask", 256)
    dialog = error_dialog_after_queueing(page, frontend_server)
    expect(dialog).to_contain_text("DioramaDepthFuse")
    expect(dialog).to_contain_text("object_mask: mask is empty")
    save_screenshot(page, "error_dialog_empty_mask")
    closes_and_serves_again(page, frontend_server, dialog, PASTE)


def test_missing_model_shows_the_loaders_error_dialog_and_the_server_goes_on(page, frontend_server):
    load_workflow(page, ESTIMATED_PASTE)
    set_widget(page, 2, "model_name", "Depth-Anything-V2-Large-hf")  # not installed
    dialog = error_dialog_after_queueing(page, frontend_server)
    expect(dialog).to_contain_text("DioramaDepthModelLoader")
    expect(dialog).to_contain_text("model folder 'Depth-Anything-V2-Large-hf'")
    expect(dialog).to_contain_text("was not found in the 'depth_estimation' model folders")
    save_screenshot(page, "error_dialog_missing_model")
    closes_and_serves_again(page, frontend_server, dialog, ESTIMATED_PASTE)
