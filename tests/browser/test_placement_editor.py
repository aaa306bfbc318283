"""The placement editor (web/placement_editor.js) in the real frontend: real mouse drags and wheel turns on
the canvas change the placement nodes' and the Neural Assets edit nodes' widgets by the amounts the drag
distance gives in closed form; the queued prompt carries the new values and the nodes compute with them;
the editor survives a workflow reload and a change of background; the browser's projection of 3D boxes
is ops/assets.py's.

Screen positions: a point of the editor's drawing (fractions u, v of the layout the editor reports in
node-local graph units) is at client = (node.pos + layout.xy + (u, v)·layout.wh + ds.offset)·ds.scale +
the canvas element's corner. Widget values are rounded by ComfyUI's own float widgets to their step
(schema step 0.001 → 3 decimals, 0.01 → 2, 0.5 → 1), so the expectations are rounded the same way."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diorama.ops import assets as geometry
from diorama.ops.asset_json import parse_assets
from diorama.ops.asset_preview import draw_assets
from diorama.ops.bifrost_reference import box_rows_cols
from diorama.ops.drawing import draw_box
from diorama.ops.editor_scene import editor_scene
from diorama.ops.placement import Placement
from frontend import (REPO, artifacts_dir, fit_view, graph_to_prompt, load_workflow, open_app, run_from_page, save_screenshot,
                      serialize_graph, set_widget)

# Two backgrounds of different sizes and aspect ratios (smooth, so a drawn box stands out).
IMAGE_A = ("editor_a.png", 128, 96)
IMAGE_B = ("editor_b.png", 160, 64)
WHEEL_NOTCH = 100
DEPTH_FACTOR = 1.05  # web/placement_editor.js: one notch away multiplies metric depth by this
RANGE_STEP = 0.01  # and lowers a BIFRÖST depth range by this


def gradient(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 96)], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def page(browser_context, frontend_server):
    """The harness's ready app tab, but one for the whole module (opening one costs seconds): every test
    loads its own workflow into it."""
    page = open_app(browser_context, frontend_server.url)
    yield page
    page.close()


@pytest.fixture(scope="module")
def editor_images(frontend_server):
    folder = Path(frontend_server.base_dir) / "input"
    for name, width, height in (IMAGE_A, IMAGE_B):
        Image.fromarray(gradient(width, height)).save(folder / name)
    return folder


def widget_round(value: float, decimals: int) -> float:
    """What ComfyUI's float widget stores: Number((Math.round(v / r) * r).toFixed(decimals)), r = 10^-decimals."""
    step = 10.0 ** -decimals
    return round(math.floor(value / step + 0.5) * step, decimals)


def node_link(nodes: list[dict], links: list[list]) -> dict:
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": max((l[0] for l in links), default=0),
            "nodes": nodes, "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def placement_workflow(node_type: str, widgets_values: list, image: str) -> dict:
    """Load Image → the placement node → Preview Image of its preview output."""
    inputs = [{"name": "background", "type": "IMAGE", "link": 1}]
    if node_type == "DioramaPlacementFromBox":
        inputs.append({"name": "background_depth", "type": "DIORAMA_DEPTH", "link": None})
    nodes = [
        {"id": 1, "type": "LoadImage", "pos": [0, 0], "size": [260, 300], "flags": {}, "order": 0, "mode": 0,
         "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]},
                                   {"name": "MASK", "type": "MASK", "links": None}],
         "properties": {}, "widgets_values": [image, "image"]},
        {"id": 2, "type": node_type, "pos": [300, 0], "size": [360, 600], "flags": {}, "order": 1, "mode": 0,
         "inputs": inputs, "outputs": [{"name": "placement", "type": "DIORAMA_PLACEMENT", "links": None},
                                       {"name": "preview", "type": "IMAGE", "links": [2]}],
         "properties": {}, "widgets_values": widgets_values},
        {"id": 3, "type": "PreviewImage", "pos": [700, 0], "size": [260, 260], "flags": {}, "order": 2, "mode": 0,
         "inputs": [{"name": "images", "type": "IMAGE", "link": 2}], "outputs": [], "properties": {},
         "widgets_values": []},
    ]
    return node_link(nodes, [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 1, 3, 0, "IMAGE"]])


def example_subgraph(name: str, keep: set[int]) -> dict:
    """An example workflow cut down to the nodes `keep` (links to other nodes dropped)."""
    workflow = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    nodes = [copy.deepcopy(n) for n in workflow["nodes"] if n["id"] in keep]
    links = [l for l in workflow["links"] if l[1] in keep and l[3] in keep]
    kept = {l[0] for l in links}
    for node in nodes:
        for output in node.get("outputs", []):
            output["links"] = [l for l in output.get("links") or [] if l in kept]
        for slot in node.get("inputs", []):
            if slot.get("link") not in kept:
                slot["link"] = None
    return node_link(nodes, links)


def widgets(page, node_id: int) -> dict:
    return page.evaluate("(id) => Object.fromEntries(app.graph.getNodeById(id).widgets.map((w) => [w.name, w.value]))",
                         node_id)


def view(page, node_id: int) -> dict:
    """The editor's drawing (node-local graph units), the node's position, the canvas transform and corner."""
    return page.evaluate("""(id) => {
        const node = app.graph.getNodeById(id);
        const rect = app.canvas.canvas.getBoundingClientRect();
        return {layout: node.dioramaEditor.layout, pos: [...node.pos], offset: [...app.canvas.ds.offset],
                scale: app.canvas.ds.scale, corner: [rect.left, rect.top]};
    }""", node_id)


def to_screen(v: dict, u: float, w: float) -> tuple[float, float]:
    layout = v["layout"]
    graph = (v["pos"][0] + layout["x"] + u * layout["w"], v["pos"][1] + layout["y"] + w * layout["h"])
    return tuple((g + o) * v["scale"] + c for g, o, c in zip(graph, v["offset"], v["corner"]))


def to_fractions(v: dict, x: float, y: float) -> tuple[float, float]:
    layout = v["layout"]
    graph = [(s - c) / v["scale"] - o for s, c, o in zip((x, y), v["corner"], v["offset"])]
    return ((graph[0] - v["pos"][0] - layout["x"]) / layout["w"], (graph[1] - v["pos"][1] - layout["y"]) / layout["h"])


def drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=6)
    page.mouse.up()


def wheel(page, at: tuple[float, float], notches_away: int) -> None:
    page.mouse.move(*at)
    for _ in range(abs(notches_away)):
        page.mouse.wheel(0, -WHEEL_NOTCH if notches_away > 0 else WHEEL_NOTCH)
    page.wait_for_function("() => true")  # let the page handle the wheel events


def wait_for_background(page, node_id: int, size: tuple[int, int]) -> None:
    page.wait_for_function("""([id, w, h]) => { const e = app.graph.getNodeById(id).dioramaEditor;
        return e.image?.naturalWidth === w && e.image?.naturalHeight === h && e.layout !== null; }""",
                           arg=[node_id, *size], timeout=10_000)


def image_pixels(screen_delta: int, v: dict, image_size: int, axis: str) -> float:
    return screen_delta / (v["layout"][axis] * v["scale"]) * image_size


def pixel_step(screen_delta: int, v: dict, image_size: int, axis: str) -> int:
    """Whole image pixels a drag of `screen_delta` CSS px spans (the editor rounds the drag to them)."""
    return round(image_pixels(screen_delta, v, image_size, axis))


def clear_delta(screen_delta: int, v: dict, image_size: int, axis: str) -> int:
    """The nearest drag distance (CSS px, same sign) whose image-pixel span is not near a rounding tie."""
    step = 1 if screen_delta > 0 else -1
    while abs(image_pixels(screen_delta, v, image_size, axis) % 1 - 0.5) < 0.15:
        screen_delta += step
    return screen_delta


def corner_of_viewport(page, towards: str) -> tuple[int, int]:
    """A point of the page far past any drawing: its top-left or bottom-right corner."""
    size = page.viewport_size
    return (1, 1) if towards == "top-left" else (size["width"] - 1, size["height"] - 1)


def saved_image(base_dir: Path, entry: dict, node_id: str) -> np.ndarray:
    image = entry["outputs"][node_id]["images"][0]
    return np.asarray(Image.open(Path(base_dir) / image["type"] / image["subfolder"] / image["filename"]).convert("RGB"))


def as_image_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.astype(np.float32) / 255.0)[None]  # as LoadImage reads it


def as_pixels(image: torch.Tensor) -> np.ndarray:
    return np.clip(255.0 * image[0].numpy(), 0, 255).astype(np.uint8)  # as ComfyUI saves it


def test_box_drag_resize_and_wheel_round_trip(page, frontend_server, editor_images):
    name, width, height = IMAGE_A
    load_workflow(page, placement_workflow("DioramaPlacementFromBox", [0.25, 0.25, 0.5, 0.75, "fractions", "value", 3.0,
                                                                        "metric"], name))
    fit_view(page)
    wait_for_background(page, 2, (width, height))
    v = view(page, 2)

    # Move: grab the box's centre, drag by a whole number of CSS pixels.
    start = tuple(round(c) for c in to_screen(v, 0.375, 0.5))
    delta = (clear_delta(23, v, width, "w"), clear_delta(11, v, height, "h"))
    drag(page, start, (start[0] + delta[0], start[1] + delta[1]))
    dx, dy = pixel_step(delta[0], v, width, "w") / width, pixel_step(delta[1], v, height, "h") / height
    assert dx != 0 and dy != 0
    moved = widgets(page, 2)
    expected = {"x0": 0.25 + dx, "y0": 0.25 + dy, "x1": 0.5 + dx, "y1": 0.75 + dy}
    assert {k: moved[k] for k in expected} == pytest.approx({k: widget_round(x, 3) for k, x in expected.items()}, abs=1e-9)

    # Move far past the right/bottom edges: the box stops at the image border, its size kept.
    start = tuple(round(c) for c in to_screen(v, (moved["x0"] + moved["x1"]) / 2, (moved["y0"] + moved["y1"]) / 2))
    drag(page, start, corner_of_viewport(page, "bottom-right"))
    clamped = widgets(page, 2)
    box_w, box_h = moved["x1"] - moved["x0"], moved["y1"] - moved["y0"]
    assert clamped["x1"] == pytest.approx(1.0, abs=1e-9) and clamped["y1"] == pytest.approx(1.0, abs=1e-9)
    assert clamped["x0"] == pytest.approx(widget_round(1 - box_w, 3), abs=1e-9)
    assert clamped["y0"] == pytest.approx(widget_round(1 - box_h, 3), abs=1e-9)

    # Resize: the top-left corner handle, dragged up-left past the image corner, stops at (0, 0); then
    # dragged back in by a known distance.
    start = tuple(round(c) for c in to_screen(v, clamped["x0"], clamped["y0"]))
    drag(page, start, corner_of_viewport(page, "top-left"))
    resized = widgets(page, 2)
    assert (resized["x0"], resized["y0"], resized["x1"], resized["y1"]) == pytest.approx((0, 0, 1, 1), abs=1e-9)
    start = tuple(round(c) for c in to_screen(v, 0, 0))
    delta = (clear_delta(37, v, width, "w"), clear_delta(29, v, height, "h"))
    drag(page, start, (start[0] + delta[0], start[1] + delta[1]))
    final = widgets(page, 2)
    x0 = widget_round(pixel_step(delta[0], v, width, "w") / width, 3)
    y0 = widget_round(pixel_step(delta[1], v, height, "h") / height, 3)
    assert (final["x0"], final["y0"], final["x1"], final["y1"]) == pytest.approx((x0, y0, 1, 1), abs=1e-9)

    # Depth: two wheel notches away from the viewer over the picture, one back (metric: ×1.05 per notch).
    wheel(page, to_screen(v, 0.5, 0.5), 2)
    depth = widget_round(widget_round(3.0 * DEPTH_FACTOR, 2) * DEPTH_FACTOR, 2)
    assert widgets(page, 2)["depth"] == pytest.approx(depth, abs=1e-9)
    wheel(page, to_screen(v, 0.5, 0.5), -1)
    depth = widget_round(depth * DEPTH_FACTOR ** -1, 2)
    assert widgets(page, 2)["depth"] == pytest.approx(depth, abs=1e-9)
    assert view(page, 2)["scale"] == v["scale"]  # the wheel did not zoom the canvas

    prompt = graph_to_prompt(page)["2"]["inputs"]
    assert {k: prompt[k] for k in ("x0", "y0", "x1", "y1", "depth")} == {**{k: final[k] for k in ("x0", "y0", "x1", "y1")},
                                                                          "depth": depth}
    assert "diorama_editor" not in prompt

    # The node computes with them: its preview is the background with that box drawn.
    entry = run_from_page(page, frontend_server)
    assert entry["status"]["status_str"] == "success", entry["status"]
    background = as_image_tensor(np.asarray(Image.open(editor_images / name).convert("RGB")))
    box = Placement((x0, y0, 1.0, 1.0), depth, "metric", (height, width)).pixel_box(height, width)
    expected_preview = as_pixels(draw_box(background, box))
    assert np.abs(saved_image(frontend_server.base_dir, entry, "3").astype(int) - expected_preview).max() <= 1
    # The run also sent the background to the editor (used when no Load Image feeds the node).
    sent = page.evaluate("() => app.graph.getNodeById(2).properties.diorama_background")
    assert sent["type"] == "temp" and sent["filename"].endswith(".png")


def test_pixel_units_reload_and_background_change(page, editor_images):
    name_a, width_a, height_a = IMAGE_A
    name_b, width_b, height_b = IMAGE_B
    load_workflow(page, placement_workflow("DioramaPlacementFromBox", [32.0, 24.0, 64.0, 72.0, "pixels", "value", 3.0,
                                                                        "metric"], name_a))
    fit_view(page)
    wait_for_background(page, 2, (width_a, height_a))

    # Reload what the UI saves: same prompt, editor back, still editing.
    before = graph_to_prompt(page)
    saved = serialize_graph(page)
    assert all(len(n["widgets_values"]) == 8 for n in saved["nodes"] if n["type"] == "DioramaPlacementFromBox")
    load_workflow(page, saved)
    fit_view(page)
    wait_for_background(page, 2, (width_a, height_a))
    assert graph_to_prompt(page) == before

    # Another background (another size): the editor shows it; pixel widgets now move in its pixels.
    set_widget(page, 1, "image", name_b)
    wait_for_background(page, 2, (width_b, height_b))
    v = view(page, 2)
    assert v["layout"]["w"] / v["layout"]["h"] == pytest.approx(width_b / height_b, rel=1e-6)
    start = tuple(round(c) for c in to_screen(v, 48 / width_b, 48 / height_b))  # inside the 32..64 × 24..72 px box
    delta = (clear_delta(-19, v, width_b, "w"), clear_delta(-13, v, height_b, "h"))
    drag(page, start, (start[0] + delta[0], start[1] + delta[1]))
    dx, dy = pixel_step(delta[0], v, width_b, "w"), pixel_step(delta[1], v, height_b, "h")
    # 72 px tall box in a 64 px tall image: the move keeps it where it already reaches past the edge.
    got = widgets(page, 2)
    assert got["x0"] == pytest.approx(32 + dx, abs=1e-9) and got["x1"] == pytest.approx(64 + dx, abs=1e-9)
    y0 = min(max(24 + dy, 0), 24)  # movedBox: y0 ∈ [min(0, y0), max(H − h, y0)] with h = 48 px
    assert got["y0"] == pytest.approx(y0, abs=1e-9) and got["y1"] == pytest.approx(y0 + 48, abs=1e-9)


def test_depth_range_node(page, frontend_server, editor_images):
    name, width, height = IMAGE_A
    load_workflow(page, placement_workflow("DioramaPlacementDepthRange", [0.338, 0.521, 0.2, 0.32, 0.1, 0.22], name))
    fit_view(page)
    wait_for_background(page, 2, (width, height))
    v = view(page, 2)
    start = tuple(round(c) for c in to_screen(v, 0.338 + 0.2, 0.521 + 0.32))  # bottom-right handle
    delta = (clear_delta(-31, v, width, "w"), clear_delta(17, v, height, "h"))
    drag(page, start, (start[0] + delta[0], start[1] + delta[1]))
    got = widgets(page, 2)
    x1 = 0.338 + 0.2 + pixel_step(delta[0], v, width, "w") / width
    y1 = min(0.521 + 0.32 + pixel_step(delta[1], v, height, "h") / height, 1.0)
    assert (got["x"], got["y"]) == (0.338, 0.521)
    assert got["width"] == pytest.approx(widget_round(x1 - 0.338, 3), abs=1e-9)
    assert got["height"] == pytest.approx(widget_round(y1 - 0.521, 3), abs=1e-9)
    wheel(page, to_screen(v, 0.1, 0.1), 3)  # away: 3 × 0.01 lower, the range's width kept
    got = widgets(page, 2)
    assert (got["depth_far"], got["depth_near"]) == pytest.approx((0.07, 0.19), abs=1e-9)
    wheel(page, to_screen(v, 0.1, 0.1), 9)  # stops at the far end (0)
    got = widgets(page, 2)
    assert (got["depth_far"], got["depth_near"]) == pytest.approx((0.0, 0.12), abs=1e-9)
    entry = run_from_page(page, frontend_server)
    assert entry["status"]["status_str"] == "success", entry["status"]
    background = as_image_tensor(np.asarray(Image.open(editor_images / name).convert("RGB")))
    row0, rows, col0, cols = box_rows_cols((got["x"], got["y"], got["width"], got["height"]), height, width)
    expected_preview = as_pixels(draw_box(background, (col0, row0, col0 + cols, row0 + rows)))
    assert np.abs(saved_image(frontend_server.base_dir, entry, "3").astype(int) - expected_preview).max() <= 1


def node_screenshot(page, node_id: int, name: str) -> Path:
    """A PNG artefact of one node at 100 % zoom (the README's pictures come from these); moves the view."""
    box = page.evaluate("""async (id) => {
        const node = app.graph.getNodeById(id);
        const ds = app.canvas.ds;
        const title = LiteGraph.NODE_TITLE_HEIGHT;
        ds.scale = 1;
        ds.offset[0] = 120 - node.pos[0];
        ds.offset[1] = 120 - node.pos[1];
        app.canvas.setDirty(true, true);
        await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
        const rect = app.canvas.canvas.getBoundingClientRect();
        return {x: 120 + rect.left, y: 120 - title + rect.top, width: node.size[0], height: node.size[1] + title};
    }""", node_id)
    page.mouse.move(page.viewport_size["width"] - 10, page.viewport_size["height"] - 10)  # no tooltip over the node
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), clip=box)
    return path


def test_background_from_the_last_run_and_reload(page, frontend_server):
    # The bundled scene feeds the placement node directly (no Load Image): the editor waits for a run,
    # then shows the background the node saw.
    workflow = example_subgraph("person_insert", {1, 6})
    workflow["nodes"].append({"id": 20, "type": "PreviewImage", "pos": [800, 0], "size": [260, 260], "flags": {},
                              "order": 2, "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 100}],
                              "outputs": [], "properties": {}, "widgets_values": []})
    next(n for n in workflow["nodes"] if n["id"] == 6)["outputs"][1]["links"] = [100]
    workflow["links"].append([100, 6, 1, 20, 0, "IMAGE"])
    load_workflow(page, workflow)
    fit_view(page)
    assert page.evaluate("() => app.graph.getNodeById(6).dioramaEditor.layout") is None
    entry = run_from_page(page, frontend_server)
    assert entry["status"]["status_str"] == "success", entry["status"]
    wait_for_background(page, 6, (512, 384))
    node_screenshot(page, 6, "placement_editor_box")
    load_workflow(page, serialize_graph(page))
    fit_view(page)
    wait_for_background(page, 6, (512, 384))


def ground_point(camera: geometry.Camera, u: float, v: float, height: float) -> np.ndarray:
    """Independent of the editor: the pixel's viewing ray K⁻¹·(u·W, v·H, 1) in world axes, from the camera
    centre −Rᵀt, meets the plane z = height."""
    k = np.array(camera.intrinsics)
    pose = np.array(camera.world_to_camera)
    rotation, translation = pose[:3, :3], pose[:3, 3]
    image_h, image_w = camera.image_hw
    ray = rotation.T @ np.linalg.solve(k, [u * image_w, v * image_h, 1.0])
    origin = -rotation.T @ translation
    return origin + (height - origin[2]) / ray[2] * ray


def image_fractions(point, camera: geometry.Camera) -> tuple[float, float]:
    """(u, v) of a world point in the camera's image (ops/assets.py's projection)."""
    uvd = geometry.project(geometry.to_camera(torch.tensor(point, dtype=torch.float64), camera), camera)
    return float(uvd[0]), float(uvd[1])


def test_neural_assets_move_and_rotate_handles(page, frontend_server):
    # Bundled scene → Assets From JSON → Rotate Asset (object 0, yaw 30) → Move Asset (object 1, dx −1.2)
    # → Preview Assets → Preview Image, as in the example workflow.
    workflow = example_subgraph("neural_assets_edit", {1, 2, 3, 4, 5, 15})
    # and the bundled photo itself, to draw the expected boxes on
    workflow["nodes"].append({"id": 16, "type": "PreviewImage", "pos": [1400, 400], "size": [260, 260], "flags": {},
                              "order": 15, "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 100}],
                              "outputs": [], "properties": {}, "widgets_values": []})
    next(n for n in workflow["nodes"] if n["id"] == 1)["outputs"][0]["links"].append(100)
    workflow["links"].append([100, 1, 0, 16, 0, "IMAGE"])
    load_workflow(page, workflow)
    fit_view(page)
    assert page.evaluate("() => app.graph.getNodeById(4).dioramaEditor.layout") is None  # nothing before a run
    entry = run_from_page(page, frontend_server)
    assert entry["status"]["status_str"] == "success", entry["status"]
    page.wait_for_function("() => [3, 4].every((id) => app.graph.getNodeById(id).dioramaEditor.layout)")
    scene_json = next(n for n in workflow["nodes"] if n["id"] == 2)["widgets_values"][0]
    scene = parse_assets(scene_json)
    camera = scene.target_camera

    # Move: drag object 1's handle (its centre) across the ground plane through its centre.
    moved_before = geometry.move_object(geometry.rotate_object(scene, 0, math.radians(30), 0, 0), 1, (-1.2, 0, 0))
    centre = np.array(moved_before.objects[1].centre)
    v = view(page, 4)
    start = tuple(round(c) for c in to_screen(v, *image_fractions(centre, camera)))
    end = (start[0] + 41, start[1] + 9)
    drag(page, start, end)
    offset = ground_point(camera, *to_fractions(v, *end), centre[2]) - ground_point(camera, *to_fractions(v, *start), centre[2])
    got = widgets(page, 4)
    assert got["dx"] == pytest.approx(widget_round(-1.2 + offset[0], 2), abs=1e-9)
    assert got["dy"] == pytest.approx(widget_round(offset[1], 2), abs=1e-9)
    assert got["dz"] == 0 and abs(offset[0]) > 0.1 and abs(offset[1]) > 0.1

    # The same drag with axes = camera writes the ground-plane offset in the camera's axes (R·Δ).
    for name, value in (("axes", "camera"), ("dx", 0.0), ("dy", 0.0), ("dz", 0.0)):
        set_widget(page, 4, name, value)
    centre = np.array(scene.objects[1].centre)  # no offset: the object is where the scene has it
    start = tuple(round(c) for c in to_screen(v, *image_fractions(centre, camera)))
    end = (start[0] - 27, start[1] + 14)
    drag(page, start, end)
    offset = ground_point(camera, *to_fractions(v, *end), centre[2]) - ground_point(camera, *to_fractions(v, *start), centre[2])
    in_camera = np.array(camera.world_to_camera)[:3, :3] @ offset
    in_camera_got = widgets(page, 4)
    assert [in_camera_got[n] for n in ("dx", "dy", "dz")] == pytest.approx([widget_round(c, 2) for c in in_camera], abs=1e-9)
    assert np.count_nonzero(np.abs(in_camera) > 0.05) >= 2
    for name, value in (("axes", "world"), ("dx", got["dx"]), ("dy", got["dy"]), ("dz", 0.0)):
        set_widget(page, 4, name, value)

    # Rotate: drag object 0's ring knob about its vertical axis.
    rotated = geometry.rotate_object(scene, 0, math.radians(30), 0, 0).objects[0]
    radius = 0.75 * max(rotated.size[:2])
    heading = math.atan2(rotated.rotation[1][0], rotated.rotation[0][0])
    knob = np.array(rotated.centre) + radius * np.array([math.cos(heading), math.sin(heading), 0.0])
    v = view(page, 3)
    start = tuple(round(c) for c in to_screen(v, *image_fractions(knob, camera)))
    end = (start[0] - 35, start[1] - 6)
    drag(page, start, end)
    centre = np.array(rotated.centre)
    p0 = ground_point(camera, *to_fractions(v, *start), centre[2]) - centre
    p1 = ground_point(camera, *to_fractions(v, *end), centre[2]) - centre
    turned = math.degrees(math.atan2(p1[1], p1[0]) - math.atan2(p0[1], p0[0]))
    yaw = widget_round((30 + turned + 180) % 360 - 180, 1)
    assert widgets(page, 3)["yaw"] == pytest.approx(yaw, abs=1e-9) and abs(turned) > 5

    # Clicking another object's dot selects it.
    v = view(page, 4)
    page.mouse.click(*to_screen(v, *image_fractions(moved_before.objects[0].centre, camera)))
    assert widgets(page, 4)["index"] == 0
    set_widget(page, 4, "index", 1)

    # The queued prompt carries the edits and the scene is rendered with them.
    prompt = graph_to_prompt(page)
    assert prompt["3"]["inputs"]["yaw"] == yaw and prompt["4"]["inputs"]["dx"] == got["dx"]
    entry = run_from_page(page, frontend_server)
    assert entry["status"]["status_str"] == "success", entry["status"]
    expected_assets = geometry.move_object(geometry.rotate_object(scene, 0, math.radians(yaw), 0, 0), 1,
                                           (got["dx"], got["dy"], 0.0))
    bundled = as_image_tensor(saved_image(frontend_server.base_dir, entry, "16"))
    drawn = saved_image(frontend_server.base_dir, entry, "15").astype(int)
    assert np.abs(drawn - as_pixels(draw_assets(bundled, expected_assets, camera))).max() <= 1
    assert np.abs(drawn - as_pixels(draw_assets(bundled, moved_before, camera))).max() > 100  # not the old boxes
    save_screenshot(page, "placement_editor_neural_assets")
    node_screenshot(page, 3, "placement_editor_rotate_asset")

    # Reload what the UI saves: the scenes travel in the nodes' properties, so the editors draw at once.
    before = graph_to_prompt(page)
    load_workflow(page, serialize_graph(page))
    page.wait_for_function("() => [3, 4].every((id) => app.graph.getNodeById(id).dioramaEditor.layout)")
    assert graph_to_prompt(page) == before


def test_extension_served_and_js_projection_equals_python(page):
    listed = page.evaluate("() => fetch('/api/extensions').then((r) => r.json())")
    assert "/extensions/diorama/placement_editor.js" in listed
    assert "Diorama.PlacementEditor" in page.evaluate("() => app.extensions.map((e) => e.name)")

    camera_json = {"image_size": [384, 512], "fov_deg": 70.0, "position": [1.0, -6.0, 2.5], "look_at": [0, 0, 0.3]}
    objects = [
        {"centre": [0, 0, 0.5], "size": [1, 1, 1], "yaw_pitch_roll": [0, 0, 0]},
        {"centre": [1.5, 2.0, 0.4], "size": [0.6, 1.8, 0.8], "yaw_pitch_roll": [37, -12, 5]},
        {"centre": [-2.0, -1.0, 1.2], "size": [2.0, 0.3, 0.5], "yaw_pitch_roll": [-120, 40, 170]},
        {"centre": [1.0, -6.5, 2.5], "size": [0.5, 0.5, 0.5], "yaw_pitch_roll": [10, 0, 0]},  # around the camera
    ]
    scene = parse_assets(json.dumps({"camera": camera_json, "objects": [dict(o, source_box=[0, 0, 0, 0]) for o in objects]}))
    camera = scene.target_camera
    python = [geometry.project(geometry.to_camera(geometry.box_corners(a), camera), camera).tolist() for a in scene.objects]
    ypr = [[math.radians(a) for a in o["yaw_pitch_roll"]] for o in objects]
    # The scene as the nodes send it to the page (nodes/editor.py), projected by the page's code; and the
    # page's own yaw/pitch/roll rotation (what Rotate Asset's preview applies) against ops/assets.py's.
    browser = page.evaluate("""async ([scene, ypr]) => {
        const g = await import('/extensions/diorama/diorama_geometry.js');
        return {corners: scene.objects.map((o) => g.projectBox(o, scene.camera)),
                rotations: ypr.map((angles) => g.rotationFromYpr(...angles))};
    }""", [editor_scene(scene), ypr])
    assert np.array(browser["corners"]) == pytest.approx(np.array(python), rel=1e-9, abs=1e-9)
    assert min(d for corners in python for _, _, d in corners) < 0  # a corner behind the camera, reflected alike
    assert np.array(browser["rotations"]) == pytest.approx(np.array([a.rotation for a in scene.objects]), abs=1e-12)
