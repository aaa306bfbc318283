"""The real server under load (issue 12, part 2): 200 prompts from 4 concurrent clients, 20% of them bad
in different ways; every good one gives the single-run image, every bad one its error; /system_stats
answers throughout; no memory growth across prompts; /interrupt stops a long sampling within a step.

Prompts are the depth-aware paste workflow on the bundled scene at a small size. Each prompt varies the
scene width (8 variants) so consecutive prompts rarely share the executor's output cache and every
node really runs; the expected image of each variant comes from one in-process run."""
from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from comfy_server import ComfyServer, http_json

from diorama.runner.workflow import load_workflow, to_api_prompt

REPO = Path(__file__).resolve().parents[1]
PROMPTS, CLIENTS, BAD_EVERY = 200, 4, 5  # every 5th prompt is bad: 20%
WIDTHS = [96 + 8 * i for i in range(8)]


def paste_prompt(width: int, prefix: str) -> dict:
    """The depth-aware paste example at width×64, only its composite saved (previews dropped)."""
    prompt = to_api_prompt(load_workflow(REPO / "example_workflows" / "depth_aware_paste.json"))
    prompt = {k: v for k, v in prompt.items() if k in ("1", "2", "3", "4")}
    prompt["1"]["inputs"].update(width=width, height=64, reference_size=64)
    prompt["4"]["inputs"]["filename_prefix"] = prefix
    return prompt


def box_placement(x0: float, x1: float, depth: float) -> dict:
    return {"class_type": "DioramaPlacementFromBox",
            "inputs": {"background": ["1", 0], "x0": x0, "y0": 0.3, "x1": x1, "y1": 0.8, "unit": "fractions",
                       "depth_source": "value", "depth": depth, "depth_kind": "metric"}}


def bad_prompt(kind: str, width: int, prefix: str) -> tuple[dict, str, str | None]:
    """(prompt, text its error must contain, node id expected to fail or None for validation errors)."""
    prompt = paste_prompt(width, prefix)
    if kind == "missing input":
        del prompt["3"]["inputs"]["placement"]
        return prompt, "Required input is missing", None
    if kind == "wrong type":
        prompt["3"]["inputs"]["object"] = ["1", 1]  # a DIORAMA_DEPTH where an IMAGE is expected
        return prompt, "Return type mismatch", None
    if kind == "unknown node":
        prompt["9"] = {"class_type": "DioramaNoSuchNode", "inputs": {}}
        return prompt, "DioramaNoSuchNode", None
    if kind == "zero-area box":
        prompt["20"] = box_placement(0.5, 0.5, 4.0)
    elif kind == "NaN depth":
        prompt["20"] = box_placement(0.3, 0.6, math.nan)
    elif kind == "empty mask":
        prompt["21"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}}
        prompt["2"]["inputs"]["object_mask"] = ["21", 0]
        prompt["3"]["inputs"]["object_mask"] = ["21", 0]
        return prompt, "mask is empty", "2"
    else:
        raise ValueError(kind)
    for node in ("2", "3"):
        prompt[node]["inputs"]["placement"] = ["20", 0]
    return prompt, "zero or negative area" if kind == "zero-area box" else "depth must be > 0", "20"


BAD_KINDS = ["missing input", "wrong type", "unknown node", "zero-area box", "NaN depth", "empty mask"]


@pytest.fixture(scope="module")
def server(base_dir, tmp_path_factory, tiny_sd_models):
    with ComfyServer(base_dir, tmp_path_factory.mktemp("load-server")) as running:
        yield running


@pytest.fixture(scope="module")
def expected(run_prompt, base_dir):
    """Each width variant's composite from one in-process run (the single-run result)."""
    images = {}
    for width in WIDTHS:
        report = run_prompt(paste_prompt(width, f"single_{width}"))
        image = report.outputs["4"]["images"][0]
        images[width] = np.asarray(Image.open(base_dir / "output" / image["subfolder"] / image["filename"]))
    return images


def test_200_prompts_from_4_clients_with_20_percent_bad(server, expected, base_dir):
    stats_failures, stats_calls, stop = [], [0], threading.Event()

    def poll_stats():
        while not stop.is_set():
            try:
                http_json(f"{server.url}/system_stats", timeout=5)
                stats_calls[0] += 1
            except Exception as error:  # noqa: BLE001 — any failure to answer is what we record
                stats_failures.append(repr(error))
            time.sleep(0.2)

    jobs = []  # (index, width, kind or None, status, body, expected text, failing node)
    lock = threading.Lock()

    def client(number: int):
        for index in range(number, PROMPTS, CLIENTS):
            width = WIDTHS[index % len(WIDTHS)]
            prefix = f"load_{index:03d}"
            if index % BAD_EVERY == BAD_EVERY - 1:
                kind = BAD_KINDS[(index // BAD_EVERY) % len(BAD_KINDS)]
                prompt, text, node = bad_prompt(kind, width, prefix)
            else:
                kind, prompt, text, node = None, paste_prompt(width, prefix), None, None
            status, body = server.submit(prompt, client_id=f"client-{number}")
            with lock:
                jobs.append((index, width, kind, status, body, text, node))

    process = psutil.Process(server.process.pid)
    poller = threading.Thread(target=poll_stats, daemon=True)
    poller.start()
    started = time.monotonic()
    # The first 20 prompts alone, so the RSS baseline is taken after warm-up (imports, first allocations).
    warm = [(server.submit(paste_prompt(WIDTHS[i % len(WIDTHS)], f"warm_{i:02d}"))[1]["prompt_id"]) for i in range(20)]
    for prompt_id in warm:
        assert server.wait_history(prompt_id)["status"]["status_str"] == "success"
    rss_after_20 = process.memory_info().rss
    clients = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    entries = {}
    for index, width, kind, status, body, text, node in jobs:
        if status == 200:
            entries[index] = server.wait_history(body["prompt_id"], timeout=300)
    elapsed = time.monotonic() - started
    rss_after = process.memory_info().rss
    stop.set()
    poller.join()

    assert len(jobs) == PROMPTS
    bad = [job for job in jobs if job[2]]
    assert len(bad) == PROMPTS // BAD_EVERY and {job[2] for job in bad} == set(BAD_KINDS)
    for index, width, kind, status, body, text, node in sorted(jobs):
        if kind is None:
            entry = entries[index]
            assert entry["status"]["status_str"] == "success", (index, entry["status"])
            image = entry["outputs"]["4"]["images"][0]
            assert image["filename"].startswith(f"load_{index:03d}")
            saved = np.asarray(Image.open(base_dir / "output" / image["subfolder"] / image["filename"]))
            assert np.array_equal(saved, expected[width]), f"prompt {index} differs from the single run"
        elif node is None:
            # Validation errors are refused at /prompt (400) and never queued, so they have no /history entry.
            assert status == 400, (kind, status, body)
            assert text in str(body), (kind, body)
        else:
            assert status == 200, (kind, body)
            entry = entries[index]
            assert entry["status"]["status_str"] == "error", (kind, entry["status"])
            error = next(data for name, data in entry["status"]["messages"] if name == "execution_error")
            assert error["node_id"] == node and text in error["exception_message"], (kind, error)
    assert not stats_failures, stats_failures[:5]
    assert stats_calls[0] > 10
    growth = rss_after / rss_after_20 - 1
    print(f"{PROMPTS + 20} prompts in {elapsed:.1f} s; RSS after 20: {rss_after_20 / 2**20:.0f} MiB, "
          f"after all: {rss_after / 2**20:.0f} MiB ({growth:+.1%}); /system_stats answered {stats_calls[0]} times")
    assert abs(growth) <= 0.05, f"server RSS grew {growth:+.1%} over the run"


def sampling_prompt(steps: int, seed: int, prefix: str) -> dict:
    """txt2img with the tiny SD1.5 checkpoint (tests/tiny_sd.py) at 64²; cfg 1 runs one model call per step."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a crate", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                    "latent_image": ["4", 0], "seed": seed, "steps": steps, "cfg": 1.0,
                                                    "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def message_time(entry: dict, name: str) -> float:
    """Server-side timestamp (seconds) of a status message such as execution_start."""
    return next(data["timestamp"] for event, data in entry["status"]["messages"] if event == name) / 1000


def test_interrupt_stops_a_long_sampling_within_a_step(server):
    # One step's time: the difference between 6 and 2 steps; the first run loads the model (not timed),
    # and each run has its own seed so the executor's cache cannot answer it.
    durations = {}
    for seed, steps in enumerate((2, 2, 6)):
        entry = server.wait_history(server.submit(sampling_prompt(steps, seed, f"steps_{steps}"))[1]["prompt_id"])
        assert entry["status"]["status_str"] == "success", entry["status"]
        durations[steps] = message_time(entry, "execution_success") - message_time(entry, "execution_start")
    step = max((durations[6] - durations[2]) / 4, 1e-3)

    status, body = server.submit(sampling_prompt(10_000, 99, "long"))  # KSampler's maximum: hours here
    assert status == 200, body
    prompt_id = body["prompt_id"]
    deadline = time.monotonic() + 60
    while not any(item[1] == prompt_id for item in http_json(f"{server.url}/queue")["queue_running"]):
        assert time.monotonic() < deadline, "the long prompt never started"
        time.sleep(0.05)
    time.sleep(max(1.0, 5 * step))  # well into the sampling loop
    interrupted_at = time.time()
    http_json(f"{server.url}/interrupt", {})
    entry = server.wait_history(prompt_id, timeout=60)
    assert entry["status"]["status_str"] == "error"
    stopped = message_time(entry, "execution_interrupted")
    latency = stopped - interrupted_at
    print(f"one step {step * 1000:.1f} ms; stopped {latency * 1000:.1f} ms after /interrupt")
    # One step plus slack for the HTTP round trip and the executor's bookkeeping.
    assert latency <= step + 0.5, f"stopped {latency:.3f} s after /interrupt; one step takes {step:.3f} s"

    after = server.wait_history(server.submit(sampling_prompt(3, 7, "after_interrupt"))[1]["prompt_id"])
    assert after["status"]["status_str"] == "success", after["status"]
    assert after["outputs"]["7"]["images"][0]["filename"].startswith("after_interrupt")
