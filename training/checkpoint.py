"""Resumable training checkpoints, written so that an interruption never loses the last complete one.

A checkpoint is a folder `checkpoints/step-NNNNNNNN/` holding `tensors.safetensors` (the recipe's
trained tensors under `model.`, the AdamW moments under `optimizer.<param index>.<name>`) and
`state.json` (step, seed, the optimiser's scalar settings per group, the recipe name). It is written
into a hidden temporary folder beside the others, each file flushed to disk, and only then renamed
to its final name in one `os.replace`, so a folder with the final name is always complete; older
checkpoints are removed only after that, keeping the newest `keep`.

No RNG state is stored: the trainer derives every random stream from (seed, step), so the step is
the whole RNG state (see trainer.py).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch

from ..loaders.model_folders import read_safetensors

log = logging.getLogger(__name__)

FOLDER = "checkpoints"
TENSORS = "tensors.safetensors"
STATE = "state.json"
FORMAT = "diorama_training_checkpoint"
NAME = re.compile(r"^step-(\d{8})$")
TEMPORARY_PREFIX = ".tmp-"
MODEL_PREFIX = "model."
OPTIMIZER_PREFIX = "optimizer."


@dataclass(frozen=True)
class Checkpoint:
    step: int  # optimiser steps completed when it was written
    model: dict[str, torch.Tensor]  # recipe.trainable_state()
    optimizer: dict  # torch.optim state_dict() of the AdamW
    state: dict  # the JSON: step, seed, recipe, param_groups


def checkpoint_folder(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / FOLDER / f"step-{step:08d}"


def complete_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoint folders under out_dir, oldest first (temporary folders are not listed)."""
    folder = Path(out_dir) / FOLDER
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and NAME.match(p.name))


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = complete_checkpoints(out_dir)
    return found[-1] if found else None


def _optimizer_tensors(optimizer_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split torch.optim's state_dict into tensors (moments, step counts) and its JSON-able groups."""
    tensors = {}
    for index, values in optimizer_state["state"].items():
        for name, value in values.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimizer state {index}.{name} is a {type(value).__name__}; only tensors are saved")
            tensors[f"{OPTIMIZER_PREFIX}{index}.{name}"] = value.detach().contiguous().cpu()
    groups = [{key: (list(value) if isinstance(value, tuple) else value) for key, value in group.items()}
              for group in optimizer_state["param_groups"]]
    return tensors, groups


def _write_file(path: Path, write) -> None:
    write(path)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(out_dir: Path, step: int, model: dict[str, torch.Tensor], optimizer_state: dict,
                    state: dict, keep: int) -> Path:
    """Write the checkpoint of `step` atomically, then drop all but the newest `keep` complete ones."""
    final = checkpoint_folder(out_dir, step)
    temporary = final.parent / f"{TEMPORARY_PREFIX}{final.name}-{os.getpid()}"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    optimizer_tensors, groups = _optimizer_tensors(optimizer_state)
    tensors = {f"{MODEL_PREFIX}{key}": value.detach().contiguous().cpu() for key, value in model.items()}
    tensors.update(optimizer_tensors)
    document = {"format": FORMAT, "version": 1, **state, "step": step, "param_groups": groups}
    try:
        _write_file(temporary / TENSORS,
                    lambda p: safetensors.torch.save_file(tensors, str(p), metadata={"format": FORMAT}))
        _write_file(temporary / STATE, lambda p: p.write_text(json.dumps(document, indent=1)))
        if final.exists():  # the same step written again (a resumed run that ends where it began)
            shutil.rmtree(final)
        os.replace(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_folder(final.parent)
    for old in complete_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old)
    log.info("checkpoint of step %d written to %s", step, final)
    return final


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX: the folder's entry list is flushed separately)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_checkpoint(folder: Path) -> Checkpoint:
    """Read a checkpoint folder; errors name the folder and what is wrong with it."""
    folder = Path(folder)
    state_path, tensors_path = folder / STATE, folder / TENSORS
    if not state_path.is_file() or not tensors_path.is_file():
        raise FileNotFoundError(f"{folder} is not a training checkpoint: expected {STATE} and {TENSORS} in it")
    try:
        document = json.loads(state_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{state_path} is not valid JSON ({error})") from None
    if document.get("format") != FORMAT or document.get("version") != 1:
        raise ValueError(f"{state_path}: format {document.get('format')!r} version {document.get('version')!r}, "
                         f"expected {FORMAT!r} version 1")
    tensors, _ = read_safetensors(str(tensors_path))
    model = {key[len(MODEL_PREFIX):]: value for key, value in tensors.items() if key.startswith(MODEL_PREFIX)}
    optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(OPTIMIZER_PREFIX):
            index, name = key[len(OPTIMIZER_PREFIX):].split(".", 1)
            optimizer_state.setdefault(int(index), {})[name] = value
    groups = [{key: (tuple(value) if key == "betas" else value) for key, value in group.items()}
              for group in document["param_groups"]]
    return Checkpoint(step=int(document["step"]), model=model,
                      optimizer={"state": optimizer_state, "param_groups": groups}, state=document)
