"""Diorama's example workflows in the frontend's Templates dialog: each is listed under the dialog's
extension section for the pack, shows its same-name .jpg thumbnail, and opening it loads its graph."""
from __future__ import annotations

import io
import json
import re
import urllib.request
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, expect

from diorama.runner.workflow import to_api_prompt
from frontend import graph_to_prompt, without_meta

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
# The server lists a pack's example_workflows/ under the pack's folder name in custom_nodes/.
PACK = "diorama"


def open_pack_templates(page: Page):
    """The Templates dialog (the frontend's own Browse Templates command) showing the pack's section."""
    page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name=PACK, exact=True).click()
    # "All Templates" shows ComfyUI's own hundreds of cards; the pack's section only the pack's workflows.
    expect(template_cards(dialog)).to_have_count(len(WORKFLOWS))
    return dialog


def template_cards(dialog):
    return dialog.locator("[data-testid^='template-workflow-']")


def test_every_example_workflow_is_a_template_with_its_thumbnail(page, frontend_server):
    dialog = open_pack_templates(page)
    cards = template_cards(dialog)
    listed = {card.get_attribute("data-testid").removeprefix("template-workflow-") for card in cards.all()}
    assert listed == {path.stem for path in WORKFLOWS}
    for path in WORKFLOWS:
        card = dialog.get_by_test_id(f"template-workflow-{path.stem}")
        card.scroll_into_view_if_needed()  # thumbnails load lazily, when their card is shown
        # The frontend fetches the .jpg and shows it from a blob: URL; without one it shows its placeholder.
        thumbnail = card.get_by_role("img", name=path.stem, exact=True)
        expect(thumbnail).to_have_attribute("src", re.compile("^blob:"), timeout=30_000)
        shown = thumbnail.evaluate("(img) => img.decode().then(() => [img.naturalWidth, img.naturalHeight])")
        assert tuple(shown) == Image.open(path.with_suffix(".jpg")).size, path.stem


def test_every_thumbnail_is_served_as_a_jpeg(frontend_server):
    for path in WORKFLOWS:
        url = f"{frontend_server.url}/api/workflow_templates/{PACK}/{path.stem}.jpg"
        with urllib.request.urlopen(url, timeout=10) as response:  # a missing file raises HTTPError 404
            picture = Image.open(io.BytesIO(response.read()))
        assert picture.format == "JPEG" and min(picture.size) >= 64, (path.stem, picture.format, picture.size)


def test_opening_each_template_loads_its_graph(page, frontend_server):
    for path in WORKFLOWS:
        dialog = open_pack_templates(page)
        dialog.get_by_test_id(f"template-workflow-{path.stem}").click()
        expect(dialog).to_be_hidden()
        # The dialog closes before the template's graph is in place: wait for its tab and its nodes.
        page.wait_for_function(
            "([name, count]) => window.app.extensionManager.workflow.activeWorkflow?.filename === name"
            " && window.app.graph.nodes.length === count",
            arg=[path.stem, len(json.loads(path.read_text())["nodes"])])
        expected = without_meta(to_api_prompt(json.loads(path.read_text())))
        assert graph_to_prompt(page) == expected, f"template {path.stem} did not open its own graph"
