"""Training throughput: optimiser steps per second and peak memory of every registered recipe at tiny size
(the tests' tiny random models, rendered pairs), fp32, batch 2, on this machine's device (CPU: one thread),
each recipe in a fresh process.

Each recipe trains `WARMUP` steps (first-call allocations, kernel choice), then resumes from that
checkpoint for `steps` more; steps/s is over those. Peak memory is the largest resident set size of the
process sampled every 20 ms while the recipe trains (and CUDA's peak allocation on a GPU). Models are
written to a temporary ComfyUI base folder, so the user's model folders are untouched.
"""
from __future__ import annotations

import atexit
import gc
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
WARMUP = 2


def _imprint_stage1(models: Path) -> tuple[dict, dict]:
    import tiny_imprint
    import tiny_sd

    tiny_sd.write_example_models(models)
    tiny_imprint.write_example_models(models)
    return ({"checkpoint": tiny_sd.CHECKPOINT, "dinov2": tiny_imprint.DINOV2, "image_size": 56, "resolution": 64,
             "adapter": {"width": 64, "depth": 1, "heads": 2, "mlp_dim": 128, "num_queries": 8}},
            {"kind": "rendered", "count": 8, "size": 64, "seed": 0, "source_mode": "object"})


def _imprint_stage2(models: Path) -> tuple[dict, dict]:
    import tiny_imprint
    import tiny_sd

    tiny_sd.write_example_models(models)
    tiny_imprint.write_example_models(models)  # its random adapter stands in for stage 1's export
    return ({"checkpoint": tiny_sd.INPAINTING, "dinov2": tiny_imprint.DINOV2, "adapter": tiny_imprint.ADAPTER,
             "phase_steps": 1000, "resolution": 64},
            {"kind": "rendered", "count": 8, "size": 64, "seed": 0})


def _neural_assets(models: Path) -> tuple[dict, dict]:
    import tiny_neural_assets

    tiny_neural_assets.write_example_models(models)
    return ({"unet": tiny_neural_assets.UNET, "vae": tiny_neural_assets.VAE, "dino": tiny_neural_assets.DINO,
             "slots": 5, "image_size": 64},
            {"kind": "rendered", "count": 8, "size": 64, "seed": 0})


def _person(models: Path) -> tuple[dict, dict]:
    import tiny_person
    import tiny_sd

    tiny_sd.write_example_models(models)
    tiny_person.write_example_models(models)
    return ({"checkpoint": tiny_sd.INPAINTING, "image_encoder": tiny_person.DINOV2, "resolution": 64, "crop_size": 56},
            {"kind": "rendered", "count": 8, "size": 64, "seed": 0})


# Recipe name → writes its tiny models under models/ and returns (recipe section, data spec).
TINY_SETUPS = {"imprint_stage1": _imprint_stage1, "imprint_stage2": _imprint_stage2,
               "neural_assets": _neural_assets, "person": _person}


@dataclass(frozen=True)
class Measurement:
    recipe: str
    steps_per_second: float
    peak_rss_mib: float
    peak_cuda_mib: float | None


class PeakRss:
    """The process's largest RSS while the block runs, sampled by a thread."""

    def __enter__(self):
        self.peak, self._running = psutil.Process().memory_info().rss, True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        process = psutil.Process()
        while self._running:
            self.peak = max(self.peak, process.memory_info().rss)
            threading.Event().wait(0.02)

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()


def measure(name: str, models: Path, work: Path, steps: int, batch_size: int) -> Measurement:
    from diorama.training import recipes
    from diorama.training.config import TrainConfig
    from diorama.training.data.sources import open_source
    from diorama.training.trainer import resolve_device, train

    section, data_spec = TINY_SETUPS[name](models)
    source = open_source(data_spec)
    pairs = [source[i] for i in range(len(source))]
    config = TrainConfig(steps=WARMUP, batch_size=batch_size, progress=False)
    device = resolve_device(config)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with PeakRss() as rss:
        train(recipes.create(name, section, device, torch.float32), pairs, config, work / name)
        result = train(recipes.create(name, section, device, torch.float32), pairs,
                       TrainConfig(steps=WARMUP + steps, batch_size=batch_size, progress=False), work / name)
    cuda = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return Measurement(name, steps / result.seconds, rss.peak / 2**20, cuda)


def _boot_in_temporary_base() -> Path:
    from diorama.runner.boot import boot_comfyui

    sys.path.insert(0, str(REPO / "tests"))  # the tests' tiny model writers
    base = Path(tempfile.mkdtemp(prefix="diorama-bench-train-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    for folder in ("models", "input", "output", "temp", "user", "custom_nodes"):
        (base / folder).mkdir()
    (base / "custom_nodes" / "diorama").symlink_to(REPO)
    boot_comfyui(base_directory=str(base))
    return base


def print_row(m: Measurement) -> None:
    cuda = f"{m.peak_cuda_mib:.0f}" if m.peak_cuda_mib is not None else "-"
    print(f"{m.recipe:<18} {m.steps_per_second:>8.3f} {1 / m.steps_per_second:>8.2f} {m.peak_rss_mib:>13.0f} {cuda:>14}",
          flush=True)


def bench_train(steps: int, recipe: str | None = None, batch_size: int = 2, threads: int = 1) -> None:
    """Every registered recipe, each in a fresh `python -m bench train --recipe NAME` process (so each peak
    memory is that recipe's alone); with `recipe`, only that one, in this process."""
    # One intra-op thread: on the shared 2-core machines two made tiny training steps 10-25x slower (conftest).
    torch.set_num_threads(threads)
    base = _boot_in_temporary_base()
    if recipe is not None:
        print_row(measure(recipe, base / "models", base / "runs", steps, batch_size))
        return
    from diorama.training import recipes

    print(f"threads: {threads}; batch {batch_size}, {steps} steps after {WARMUP} warm-up steps, fp32")
    print(f"{'recipe':<18} {'steps/s':>8} {'s/step':>8} {'peak RSS MiB':>13} {'peak CUDA MiB':>14}", flush=True)
    for name in recipes.names():
        if name not in TINY_SETUPS:
            print(f"{name:<18} (no tiny set-up in bench/train.py)")
            continue
        subprocess.run([sys.executable, "-m", "bench", "train", "--recipe", name, "--steps", str(steps)], check=True,
                       stderr=subprocess.DEVNULL)
