"""Sustained load on a real ComfyUI server: the depth-aware paste example workflow queued by 4 clients
for M minutes; prompts/minute and the server's RSS over time, as a table and a PNG plot (drawn with PIL).

Each client waits for its prompt to finish before queuing the next (a closed loop, so the queue never
grows without bound and the rate is what the server sustains). Prompts cycle through 8 background
widths so consecutive prompts do not share the executor's output cache and every node runs."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 4
WIDTHS = [512 + 8 * i for i in range(8)]


def plot(samples: list[tuple[float, int, float]], window_s: float, path: Path) -> None:
    """Two panels over time: prompts/minute in each window, and server RSS (MiB)."""
    width, height, margin = 720, 520, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    rates = rate_rows(samples, window_s)
    panels = [("prompts / minute", [(t, r) for t, _, r, _ in rates], (30, 90, 200)),
              ("server RSS (MiB)", [(t, rss) for t, _, rss in samples], (200, 60, 30))]
    end = max(samples[-1][0], 1e-6)
    panel_h = (height - 3 * margin) // 2
    for index, (title, points, colour) in enumerate(panels):
        top = margin + index * (panel_h + margin)
        left, right, bottom = margin + 20, width - 20, top + panel_h
        draw.rectangle([left, top, right, bottom], outline="black")
        draw.text((left, top - 16), title, fill="black")
        values = [v for _, v in points] or [0.0]
        low, high = min(0.0, min(values)), max(values) * 1.1 or 1.0
        for fraction in (0, 0.5, 1):
            y = bottom - fraction * (bottom - top)
            draw.line([left - 4, y, left, y], fill="black")
            draw.text((4, y - 6), f"{low + fraction * (high - low):.0f}", fill="black")
        xy = [(left + t / end * (right - left), bottom - (v - low) / (high - low) * (bottom - top)) for t, v in points]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy if len(xy) <= 40 else []:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((right - 60, bottom + 4), f"{end:.0f} s", fill="black")
        draw.text((left, bottom + 4), "0 s", fill="black")
    image.save(path)


def rate_rows(samples: list[tuple[float, int, float]], window_s: float) -> list[tuple[float, int, float, float]]:
    """(time s, prompts done, prompts/minute over the last window, RSS MiB) at each window's end."""
    rows, last_t, last_done = [], 0.0, 0
    for t, done, rss in samples:
        if t - last_t >= window_s - 1e-6:
            rows.append((t, done, (done - last_done) / (t - last_t) * 60, rss))
            last_t, last_done = t, done
    t, done, rss = samples[-1]
    if t - last_t > 1e-6 and (not rows or rows[-1][0] != t):  # the last, shorter window too
        rows.append((t, done, (done - last_done) / (t - last_t) * 60, rss))
    return rows


def bench_load(minutes: float, plot_path: Path) -> None:
    from diorama.runner.workflow import load_workflow, to_api_prompt

    template = to_api_prompt(load_workflow(REPO / "example_workflows" / "depth_aware_paste.json"))
    base_dir = Path(tempfile.mkdtemp(prefix="diorama-load-"))
    for folder in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (base_dir / folder).mkdir()
    (base_dir / "custom_nodes" / "diorama").symlink_to(REPO)
    # The tests' server harness (bench imports from tests/ as bench/composite.py does).
    sys.path.insert(0, str(REPO / "tests"))
    from comfy_server import ComfyServer

    done, failures, lock, stop = [0], [], threading.Lock(), threading.Event()
    duration = minutes * 60
    try:
        with ComfyServer(base_dir, base_dir) as server:
            process = psutil.Process(server.process.pid)

            def client(number: int) -> None:
                count = 0
                while not stop.is_set():
                    prompt = json.loads(json.dumps(template))
                    prompt["1"]["inputs"]["width"] = WIDTHS[(number + count * CLIENTS) % len(WIDTHS)]
                    prompt["4"]["inputs"]["filename_prefix"] = f"load_{number}_{count}"
                    count += 1
                    _, body = server.submit(prompt, f"bench-{number}")
                    entry = server.wait_history(body["prompt_id"], timeout=600, poll=0.02)
                    with lock:
                        done[0] += 1
                        if entry["status"]["status_str"] != "success":
                            failures.append(body["prompt_id"])

            threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            samples = [(0.0, 0, process.memory_info().rss / 2**20)]
            sample_every = max(1.0, duration / 120)
            while (elapsed := time.monotonic() - started) < duration:
                time.sleep(min(sample_every, duration - elapsed))
                with lock:
                    samples.append((time.monotonic() - started, done[0], process.memory_info().rss / 2**20))
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)

    window = max(10.0, duration / 10)
    print(f"depth-aware paste example ({WIDTHS[0]}..{WIDTHS[-1]}×384), {CLIENTS} clients, {minutes:g} min, "
          f"on {os.cpu_count()} cores")
    print(f"{'time s':>7} {'done':>6} {'prompts/min':>12} {'RSS MiB':>8}")
    rows = rate_rows(samples, window)
    for t, count, rate, rss in rows:
        print(f"{t:>7.0f} {count:>6d} {rate:>12.1f} {rss:>8.0f}")
    total_t, total_done = samples[-1][0], samples[-1][1]
    print(f"sustained: {total_done / total_t * 60:.1f} prompts/min over {total_t:.0f} s; failures: {len(failures)}; "
          f"RSS {samples[1][2] if len(samples) > 1 else samples[0][2]:.0f} → {samples[-1][2]:.0f} MiB")
    plot(samples, window, plot_path)
    print(f"plot: {plot_path}")
