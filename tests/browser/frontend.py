"""Driving ComfyUI's real frontend (comfyui-frontend-package) in Debian's Chromium through playwright:
launching the browser, opening the app, loading a workflow, the frontend's own UI → API conversion,
queueing from the page and screenshots. Facts these rely on are in DESIGN.md's last section."""
from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, Playwright

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
# Headless Debian Chromium as root, with every background service that would reach the network off.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Server-side user settings that keep first-run dialogs and overlays off the canvas.
QUIET_SETTINGS = {
    "Comfy.TutorialCompleted": True,  # else the Templates dialog opens over the canvas on first load
    "Comfy.Minimap.Visible": False,  # else the minimap covers the bottom-right of every screenshot
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.Workflow.Persist": False,  # each new tab starts from the default graph, not the last test's tabs
    "Comfy.Graph.CanvasInfo": False,  # the FPS/node-count corner text
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,  # draw titles and widgets at any zoom (screenshots of whole graphs)
}
# The "Introducing Nodes 2.0" banner is dismissed per browser, in local storage, not by a setting.
QUIET_LOCAL_STORAGE = "localStorage.setItem('vueNodesBannerDismissed', 'true');"
READY = "window.app?.vueAppReady && window.app.graph"
APP_TIMEOUT_MS = 60_000


def artifacts_dir() -> Path:
    """Where screenshots go: $DIORAMA_ARTIFACTS, else .artifacts/browser/ in the checkout (git-ignored)."""
    folder = Path(os.environ.get("DIORAMA_ARTIFACTS") or REPO / ".artifacts" / "browser")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def post_settings(server_url: str, settings: dict) -> None:
    """Merge `settings` into the default user's comfy.settings.json through the server's own API."""
    request = urllib.request.Request(f"{server_url}/api/settings", data=json.dumps(settings).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def launch_browser(playwright: Playwright, profile_dir: Path, server_url: str) -> BrowserContext:
    """A persistent Chromium context in a fresh profile folder that can reach only `server_url`: every other
    request (the frontend's release check, node docs on api.comfy.org) is aborted in the browser."""
    context = playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    context.route(re.compile(rf"^(?!{re.escape(server_url)}/)"), lambda route: route.abort())
    context.add_init_script(QUIET_LOCAL_STORAGE)
    return context


def open_app(context: BrowserContext, server_url: str, console: list[str] | None = None) -> Page:
    """A new tab with the ComfyUI app loaded and its graph ready; its console messages from the start
    are appended to `console` when given."""
    page = context.new_page()
    if console is not None:
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.goto(server_url)
    page.wait_for_function(READY, timeout=APP_TIMEOUT_MS)
    return page


def load_workflow(page: Page, workflow: dict, name: str | None = None) -> None:
    """Load a UI-format workflow as dropping its file would (app.loadGraphData opens it in a new tab,
    titled `name` when given)."""
    page.evaluate("async ([workflow, name]) => { await window.app.loadGraphData(workflow, true, true, name); }",
                  [workflow, name])


def without_meta(prompt: dict) -> dict:
    """An API prompt without the `_meta` titles (the executor ignores them; the frontend and the runner differ there)."""
    return {node_id: {key: value for key, value in node.items() if key != "_meta"} for node_id, node in prompt.items()}


def graph_to_prompt(page: Page) -> dict:
    """The API prompt the frontend itself would queue for the graph on the canvas, without `_meta`."""
    return without_meta(page.evaluate("async () => (await window.app.graphToPrompt()).output"))


def serialize_graph(page: Page) -> dict:
    """The UI-format workflow as the frontend saves/exports it."""
    return page.evaluate("() => window.app.graph.serialize()")


def node_rectangles(page: Page) -> dict[int, tuple[float, float, float, float]]:
    """node id → (x, y, width, height) on the canvas as the frontend draws the node (title bar included),
    after it has sized the node to its widgets."""
    return {int(node_id): tuple(rect) for node_id, rect in page.evaluate(
        "() => window.app.graph.nodes.map((n) => [n.id, [...n.boundingRect]])")}


def set_widget(page: Page, node_id: int | str, widget: str, value) -> None:
    """Set a widget of the node with id `node_id` as the user would (value + the widget's callback)."""
    page.evaluate(
        """([nodeId, name, value]) => {
            const node = window.app.graph.getNodeById(Number(nodeId));
            if (!node) throw new Error(`no node ${nodeId} in the graph`);
            const widget = node.widgets?.find((w) => w.name === name);
            if (!widget) throw new Error(`node ${nodeId} (${node.type}) has no widget ${name}`);
            widget.value = value;
            widget.callback?.(value, window.app.canvas, node);
            window.app.graph.setDirtyCanvas(true, true);
        }""",
        [node_id, widget, value],
    )


def queue_from_page(page: Page) -> tuple[int, dict]:
    """Press Run (app.queuePrompt): (HTTP status, body) of the POST /api/prompt the frontend sends;
    200 carries the prompt_id, 400 the validation errors the frontend then shows in its dialog."""
    with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as response:
        page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    return response.value.status, response.value.json()


def fit_view(page: Page, fill: float = 0.8) -> None:
    """Zoom the canvas so every node and group fills `fill` of the window (the margin keeps them clear of
    the tab bar and the Run toolbar over the canvas). The frontend's own Fit View command animates the
    zoom over 350 ms, so a screenshot right after it catches a half-zoomed canvas."""
    page.evaluate(
        """(fill) => {
            const rects = [...window.app.graph.nodes.map((n) => n.boundingRect), ...window.app.graph.groups.map((g) => g._bounding)];
            const left = Math.min(...rects.map((r) => r[0])), top = Math.min(...rects.map((r) => r[1]));
            const right = Math.max(...rects.map((r) => r[0] + r[2])), bottom = Math.max(...rects.map((r) => r[1] + r[3]));
            window.app.canvas.ds.fitToBounds([left, top, right - left, bottom - top], { zoom: fill });
            window.app.canvas.setDirty(true, true);
        }""",
        fill,
    )
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")


def save_screenshot(page: Page, name: str) -> Path:
    """The page as a PNG test artefact in artifacts_dir(); returns its path."""
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def run_from_page(page: Page, server, timeout: float = 600) -> dict:
    """Queue the canvas's graph from the page and wait for it to finish: the prompt's /history entry
    (`server` is a tests/comfy_server.py ComfyServer). A prompt the server refuses fails here with its errors."""
    status, body = queue_from_page(page)
    assert status == 200, f"the server refused the page's prompt ({status}): {json.dumps(body)[:2000]}"
    return server.wait_history(body["prompt_id"], timeout=timeout)
