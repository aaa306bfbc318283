"""Every example workflow end to end: in this process, through the runner's command line, and
once through a real ComfyUI server (/prompt → /history → output file)."""
import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diorama.ops import bundled_scene
from diorama.runner.boot import find_comfyui_root
from diorama.runner.workflow import load_workflow, to_api_prompt
from comfy_server import ComfyServer, http_json
from example_prompts import quick_example_prompt

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))


def saved_image(base_dir: Path, report_outputs: dict, node_id: str) -> np.ndarray:
    image = report_outputs[node_id]["images"][0]
    return np.asarray(Image.open(base_dir / "output" / image.get("subfolder", "") / image["filename"]))


@pytest.fixture(scope="module")
def paste_result(run_prompt, base_dir):
    report = run_prompt(to_api_prompt(load_workflow(REPO / "example_workflows" / "depth_aware_paste.json")))
    return report, saved_image(base_dir, report.outputs, "4")


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_every_example_workflow_runs_and_has_a_thumbnail(path, run_prompt, tiny_sd_models, tiny_depth_models,
                                                         tiny_bifrost_models, tiny_neural_assets_models,
                                                         tiny_imprint_models, tiny_person_models, tiny_vlm_models,
                                                         taef2_models):
    """Workflows load the tiny models written under the names they use (the learned compositor: the model shipped
    in small_models/ and the real TAEF2); sampling workflows sample 2 steps of a 128² window instead of their 20
    steps at 512² (the graph is the same)."""
    report = run_prompt(quick_example_prompt(path.stem))
    assert any(output.get("images") for output in report.outputs.values())
    assert path.with_suffix(".jpg").is_file(), "the template browser shows a same-name .jpg"


def test_the_runner_works_under_a_running_event_loop(paste_result, run_prompt, base_dir):
    """A Jupyter kernel, an async application or Playwright's sync API already runs an event loop in the
    calling thread, where ComfyUI's own asyncio.run calls cannot start."""
    prompt = to_api_prompt(load_workflow(REPO / "example_workflows" / "depth_aware_paste.json"))
    prompt["4"]["inputs"]["filename_prefix"] = "under_a_loop"

    async def from_a_coroutine():
        return run_prompt(prompt)

    # The loop runs in a thread of its own: this thread may already run Playwright's (browser tests first).
    with ThreadPoolExecutor(max_workers=1) as thread:
        report = thread.submit(asyncio.run, from_a_coroutine()).result()
    assert np.array_equal(saved_image(base_dir, report.outputs, "4"), paste_result[1])


def test_paste_workflow_hides_the_crate_behind_the_table(paste_result):
    _, composite = paste_result
    truth = bundled_scene.render_truth(512, 384)
    # SaveImage truncates 255·x to uint8.
    room = np.clip(bundled_scene.render_background(512, 384).rgb.numpy() * 255, 0, 255).astype(np.uint8)
    crate = (truth.instance == bundled_scene.CRATE_INSTANCE).numpy()
    changed = np.abs(composite.astype(int) - room.astype(int)).max(-1) > 0
    intersection, union = (changed & crate).sum(), (changed | crate).sum()
    # The reference photo shows the crate from another viewpoint, so its silhouette differs from the
    # true one by perspective; the exact-geometry bound (IoU >= 0.98) is in test_depth_fuse.py.
    assert intersection / union > 0.8, "the pasted crate must cover what the true render shows, and no more"
    table = (bundled_scene.render_background(512, 384).instance == 3).numpy()
    assert not (changed & table).any(), "the table is nearer: not one of its pixels may change"


def test_runner_command_line_writes_output_and_times_nodes(tmp_path):
    env = dict(os.environ, DIORAMA_COMFYUI=str(find_comfyui_root()))
    result = subprocess.run(
        [sys.executable, "-m", "diorama.run", str(REPO / "example_workflows" / "depth_aware_paste.json"),
         "--set", "1.width=256", "--set", "Save composite.filename_prefix=cli", "--output", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=REPO.parent if REPO.name == "diorama" else None, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "DioramaDepthFuse" in result.stdout and "total" in result.stdout
    written = list(tmp_path.glob("cli_*.png"))
    assert len(written) == 1 and Image.open(written[0]).size == (256, 384)


def test_runner_exits_non_zero_naming_the_failing_node(tmp_path):
    env = dict(os.environ, DIORAMA_COMFYUI=str(find_comfyui_root()))
    result = subprocess.run(
        [sys.executable, "-m", "diorama.run", str(REPO / "example_workflows" / "depth_aware_paste.json"),
         "--set", "3.feather_px=-5", "--output", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode != 0
    assert "3" in result.stderr and "DioramaDepthAwarePaste" in result.stderr and "feather_px" in result.stderr


def test_real_server_produces_the_same_composite(paste_result, base_dir, tmp_path):
    _, in_process = paste_result
    with ComfyServer(base_dir, tmp_path) as server:
        url = server.url
        prompt = to_api_prompt(load_workflow(REPO / "example_workflows" / "depth_aware_paste.json"))
        prompt["4"]["inputs"]["filename_prefix"] = "server"
        prompt_id = http_json(f"{url}/prompt", {"prompt": prompt, "client_id": "diorama-test"})["prompt_id"]
        for _ in range(240):
            history = http_json(f"{url}/history/{prompt_id}")
            if prompt_id in history and history[prompt_id]["status"].get("completed"):
                break
            time.sleep(0.5)
        entry = history[prompt_id]
        assert entry["status"]["status_str"] == "success", entry["status"]
        from_server = saved_image(base_dir, entry["outputs"], "4")
        assert entry["outputs"]["4"]["images"][0]["filename"].startswith("server")
        assert np.array_equal(from_server, in_process)
