"""Peak memory of converting a BIFRÖST checkpoint of the released size (python -m bench conversion).

A synthetic checkpoint with the exact key/shape layout of the published manifest (fp16 zeros, the
real linear schedule; optionally fp32 AdamW-like moments for both ControlNets, as a training
checkpoint carries) is written once, then converted by `python -m diorama.convert` in a child
process that reports its own peak RSS. The conversion memory-maps the file and writes one part at
a time, so its peak should follow the largest part, not the file.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

MANIFEST = os.environ.get("DIORAMA_BIFROST_MANIFEST", "/work/shared/reference/bifrost/bifrost_state_dict_manifest.json")

CHILD = r"""
import json, os, sys, time
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
from diorama.convert import _import_comfyui, output_folders
_import_comfyui()
from diorama.loaders.bifrost_checkpoint import convert_checkpoint
import comfy.ldm.modules.diffusionmodules.openaimodel, comfy.cldm.cldm, comfy.image_encoders.dino2, comfy.ldm.models.autoencoder
def status_mib(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024
baseline = status_mib("VmRSS")
start = time.perf_counter()
written = convert_checkpoint(sys.argv[1], "bifrost", output_folders(sys.argv[2]))
# VmHWM, not ru_maxrss: Linux carries the parent's peak (at fork) into a child's ru_maxrss.
print(json.dumps({"baseline_mib": baseline, "peak_mib": status_mib("VmHWM"),
                  "seconds": time.perf_counter() - start, "parts": {w.spec.suffix: w.size_bytes for w in written}}))
"""


def synthetic_state(manifest: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    from diorama.loaders.bifrost_checkpoint import SCHEDULE_BUFFERS, linear_schedule

    schedule = linear_schedule()
    state = {}
    for key, shape in manifest.items():
        if key in SCHEDULE_BUFFERS:
            state[key] = schedule[key].float()  # stored float32 as the reference does; checked by the converter
        elif key == "logvar":
            state[key] = torch.zeros(shape)
        else:
            state[key] = torch.zeros(shape, dtype=torch.float16)
    return state


def bench_conversion(optimizer_state: bool = False, workdir: str | None = None) -> None:
    with open(MANIFEST) as f:
        manifest = json.load(f)
    folder = tempfile.mkdtemp(prefix="diorama-bench-conversion-", dir=workdir)
    try:
        path = os.path.join(folder, "bifrost-synthetic.ckpt")
        start = time.perf_counter()
        state = synthetic_state(manifest)
        checkpoint = {"state_dict": state, "epoch": 1}
        if optimizer_state:
            trained = [k for k in state if k.startswith(("control_model_detail.", "control_model_depth."))]
            checkpoint["optimizer_states"] = [{"state": {i: {"exp_avg": torch.zeros(state[k].shape), "exp_avg_sq": torch.zeros(state[k].shape)}
                                                         for i, k in enumerate(trained)}, "param_groups": [{"params": list(range(len(trained)))}]}]
        torch.save(checkpoint, path)
        del state, checkpoint
        size = os.path.getsize(path)
        print(f"synthetic BIFRÖST checkpoint (published layout, {len(manifest)} keys, fp16"
              f"{' + fp32 AdamW moments of both ControlNets' if optimizer_state else ''}): {size / 2**30:.2f} GiB, "
              f"written in {time.perf_counter() - start:.0f} s")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        result = subprocess.run([sys.executable, "-c", CHILD, path, os.path.join(folder, "models")], env=env,
                                 capture_output=True, text=True, check=False)
        if result.returncode:
            raise RuntimeError(f"conversion failed:\n{result.stderr[-4000:]}")
        report = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    parts = report["parts"]
    largest_name = max(parts, key=parts.get)
    largest = parts[largest_name] / 2**20
    peak, baseline = report["peak_mib"], report["baseline_mib"]
    print(f"converted in {report['seconds']:.1f} s; parts (MiB): " + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in parts.items()))
    print(f"peak RSS {peak:.0f} MiB (imports alone {baseline:.0f} MiB → conversion adds {peak - baseline:.0f} MiB)")
    print(f"  vs largest part ({largest_name}, {largest:.0f} MiB): {(peak - baseline) / largest:.2f}× added, {peak / largest:.2f}× total")
    print(f"  vs checkpoint file ({size / 2**20:.0f} MiB): {(peak - baseline) / (size / 2**20):.2f}× added, {peak / (size / 2**20):.2f}× total")
