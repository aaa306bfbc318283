"""The generic training loop every recipe runs in: seeding, data order, precision, gradient
accumulation and checkpointing, AdamW with per-group learning rates from the recipe, resumable
checkpoints, a progress bar, periodic validation and the final export.

Determinism: every random stream is derived from (config.seed, step) — the data order from the epoch
a sample position falls in, the generator handed to `recipe.training_loss` from (step, micro-batch),
and Python's, numpy's and torch's global generators are reseeded at the start of every step. The
step number is therefore the whole RNG state, and a run resumed from the checkpoint of step k makes
exactly the steps k, k+1, … the uninterrupted run made.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.utils.checkpoint
from PIL import Image
from tqdm import tqdm

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data.frames import PairedFrames
from .recipe import Recipe

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
VALIDATION_FOLDER = "validation"
EXPORT_FOLDER = "export"
# Stream numbers of the random streams derived from (seed, step); micro-batch m uses LOSS + m.
GLOBAL, DATA_ORDER, VALIDATION, LOSS = 0, 1, 2, 16


@dataclass(frozen=True)
class TrainResult:
    start_step: int  # 0, or the step of the checkpoint this run resumed from
    steps: int  # optimiser steps completed in total
    losses: list[float]  # training loss of each step this run made (step start_step + i), mean over micro-batches
    checkpoint: Path | None  # the last checkpoint written
    exported: list[Path]  # files recipe.export wrote
    validation: list[dict] = field(default_factory=list)  # the validation rows appended to metrics.jsonl
    seconds: float = 0.0  # wall time of the steps this run made (without validation and export)


def stream_seed(seed: int, key: int, stream: int) -> int:
    """A 63-bit seed for one random stream, independent across (seed, key, stream) triples."""
    return int(np.random.SeedSequence([seed, key, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@functools.lru_cache(maxsize=4)
def _epoch_order(count: int, seed: int, epoch: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(stream_seed(seed, epoch, DATA_ORDER))
    return tuple(torch.randperm(count, generator=generator).tolist())


def batch_indices(count: int, seed: int, step: int, micro: int, config: TrainConfig) -> list[int]:
    """Dataset indices of one micro-batch: position p = ((step·accumulation) + micro)·batch_size + i in an
    endless sequence of epochs, each a permutation of the data drawn from (seed, epoch)."""
    first = (step * config.accumulation + micro) * config.batch_size
    return [_epoch_order(count, seed, p // count)[p % count] for p in range(first, first + config.batch_size)]


def seed_global_generators(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(config: TrainConfig) -> torch.device:
    """The config's device; "auto" is the device ComfyUI chose (CUDA when present, CPU with --cpu)."""
    if config.device != "auto":
        return torch.device(config.device)
    import comfy.model_management

    return comfy.model_management.get_torch_device()


def precision_dtype(config: TrainConfig) -> torch.dtype:
    """The compute dtype: bf16 runs the forward under autocast; trained parameters stay float32."""
    return torch.bfloat16 if config.precision == "bf16" else torch.float32


def enable_gradient_checkpointing(modules: Sequence[torch.nn.Module]) -> None:
    """Recompute each module's forward in the backward pass instead of keeping its activations.

    The instance's forward is wrapped (not the class), so modules dispatched by type, such as
    ComfyUI's UNet blocks, keep working; non-tensor arguments pass through (use_reentrant=False).
    """
    for module in modules:
        forward = module.forward
        if isinstance(forward, functools.partial) and forward.func is torch.utils.checkpoint.checkpoint:
            continue  # already wrapped (the same recipe trained again): recomputing twice gains nothing
        module.forward = functools.partial(torch.utils.checkpoint.checkpoint, forward, use_reentrant=False)


def _optimizer(recipe: Recipe, config: TrainConfig) -> tuple[torch.optim.AdamW, list[str]]:
    groups = recipe.parameter_groups()
    names = [group.get("name") for group in groups]
    if not groups or None in names or len(set(names)) != len(names):
        raise ValueError(f"recipe {recipe.name}: parameter_groups() must return at least one group, each with a "
                         f"unique 'name'; got names {names}")
    for group in groups:
        frozen = [i for i, p in enumerate(group["params"]) if not p.requires_grad]
        if frozen or not group["params"]:
            raise ValueError(f"recipe {recipe.name}: group {group['name']!r} is empty or holds parameters that do "
                             f"not require gradients (indices {frozen[:5]})")
    optimizer = torch.optim.AdamW([{**group, "lr": 0.0} for group in groups], lr=0.0, betas=config.betas,
                                  eps=config.eps, weight_decay=config.weight_decay)
    return optimizer, names


def _check_schedule(recipe: Recipe, names: list[str], config: TrainConfig) -> None:
    """The schedule covers every group on the first and last step (fails before any heavy work)."""
    for step in (0, config.steps - 1):
        rates = recipe.learning_rates(step)
        if set(rates) != set(names):
            raise ValueError(f"recipe {recipe.name}: learning_rates({step}) names {sorted(rates)}, but the parameter "
                             f"groups are {sorted(names)}")
        if any(not (rate >= 0 and math.isfinite(rate)) for rate in rates.values()):
            raise ValueError(f"recipe {recipe.name}: learning_rates({step}) = {rates}; rates must be finite and ≥ 0")


def _append_row(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _save_grid(images: list[torch.Tensor], path: Path) -> None:
    """Validation images ([B,H,W,3] in 0..1, same width) stacked top to bottom into one PNG."""
    grid = torch.cat([image.detach().float().cpu() for image in images], dim=0)
    grid = torch.cat(list(grid), dim=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()).save(path)


def validate(recipe: Recipe, validation: Sequence[PairedFrames], config: TrainConfig, step: int, out_dir: Path,
             device: torch.device) -> dict:
    """Run recipe.validate on the first validation batches with the same noise every time; PNG + metrics row."""
    totals: dict[str, float] = {}
    images, batches = [], 0
    generator = torch.Generator().manual_seed(stream_seed(config.seed, 0, VALIDATION))
    for start in range(0, min(len(validation), config.validation_batches * config.batch_size), config.batch_size):
        batch = [validation[i] for i in range(start, min(start + config.batch_size, len(validation)))]
        with torch.no_grad(), torch.autocast(device.type, precision_dtype(config), enabled=config.precision == "bf16"):
            metrics, batch_images = recipe.validate(batch, generator)
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + float(value)
        images.append(batch_images)
        batches += 1
    image_path = out_dir / VALIDATION_FOLDER / f"step-{step:08d}.png"
    _save_grid(images, image_path)
    row = {"split": "validation", "step": step, **{k: v / batches for k, v in totals.items()},
           "images": str(image_path.relative_to(out_dir))}
    _append_row(out_dir / METRICS, row)
    log.info("validation at step %d: %s", step, {k: round(v / batches, 6) for k, v in totals.items()})
    return row


def train(recipe: Recipe, data: Sequence[PairedFrames], config: TrainConfig, out_dir: Path,
          validation: Sequence[PairedFrames] | None = None, resume_from: Path | None = None) -> TrainResult:
    """Train `recipe` on `data` for config.steps optimiser steps, writing checkpoints, validation images
    and metrics under out_dir and the recipe's export under out_dir/export.

    Resumes from `resume_from` (a checkpoint folder) or else from the newest checkpoint in out_dir.
    """
    config.check()
    out_dir = Path(out_dir)
    if len(data) == 0:
        raise ValueError("the training data is empty: the data source yielded no pairs")
    if config.validate_every and not validation:
        raise ValueError("train.validate_every is set but no validation data was given (add a validation: section)")
    device = resolve_device(config)
    optimizer, names = _optimizer(recipe, config)
    _check_schedule(recipe, names, config)
    out_dir.mkdir(parents=True, exist_ok=True)

    start = 0
    folder = Path(resume_from) if resume_from else latest_checkpoint(out_dir)
    if folder is not None:
        checkpoint = load_checkpoint(folder)
        if checkpoint.state.get("recipe") != recipe.name:
            raise ValueError(f"{folder} was written by recipe {checkpoint.state.get('recipe')!r}, not {recipe.name!r}")
        recipe.load_trainable_state(checkpoint.model)
        try:
            optimizer.load_state_dict(checkpoint.optimizer)
        except ValueError as error:
            raise ValueError(f"{folder}: its optimiser state does not fit this recipe's parameter groups ({error})") from None
        start = checkpoint.step
        log.info("resuming %s from %s (step %d of %d)", recipe.name, folder, start, config.steps)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(recipe.checkpointed_modules())

    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    losses, rows, written = [], [], None
    autocast = functools.partial(torch.autocast, device.type, precision_dtype(config),
                                 enabled=config.precision == "bf16")
    seconds = 0.0
    if config.validate_every and start == 0:  # the baseline later validations are compared with
        rows.append(validate(recipe, validation, config, 0, out_dir, device))
    bar = tqdm(total=config.steps, initial=start, desc=recipe.name, unit="step", disable=not config.progress,
               dynamic_ncols=True)
    for step in range(start, config.steps):
        began = time.perf_counter()
        seed_global_generators(stream_seed(config.seed, step, GLOBAL))
        rates = recipe.learning_rates(step)
        for group in optimizer.param_groups:
            group["lr"] = rates[group["name"]]
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(config.accumulation):
            batch = [data[i] for i in batch_indices(len(data), config.seed, step, micro, config)]
            generator = torch.Generator().manual_seed(stream_seed(config.seed, step, LOSS + micro))
            with torch.enable_grad(), autocast():
                loss = recipe.training_loss(batch, generator)
            if loss.ndim != 0 or not torch.isfinite(loss):
                raise FloatingPointError(f"recipe {recipe.name}: step {step} gave loss {loss.detach().cpu()} "
                                         f"(expected a finite scalar); batch from {[pair.origin for pair in batch]}")
            (loss.float() / config.accumulation).backward()
            total += loss.detach().float().item()
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        seconds += time.perf_counter() - began
        losses.append(total / config.accumulation)
        _append_row(out_dir / METRICS, {"split": "train", "step": step, "loss": losses[-1], "lr": rates})
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        bar.update(1)
        done = step + 1
        if config.validate_every and done % config.validate_every == 0:
            rows.append(validate(recipe, validation, config, done, out_dir, device))
        if done == config.steps or (config.checkpoint_every and done % config.checkpoint_every == 0):
            written = save_checkpoint(out_dir, done, recipe.trainable_state(), optimizer.state_dict(),
                                      {"recipe": recipe.name, "seed": config.seed}, config.keep_checkpoints)
    bar.close()
    (out_dir / EXPORT_FOLDER).mkdir(exist_ok=True)
    exported = recipe.export(out_dir / EXPORT_FOLDER)
    log.info("%s: %d steps (%d this run, %.2f steps/s), exported %s", recipe.name, config.steps,
             config.steps - start, (config.steps - start) / seconds if seconds else 0.0,
             ", ".join(str(p) for p in exported))
    return TrainResult(start_step=start, steps=config.steps, losses=losses, checkpoint=written, exported=exported,
                       validation=rows, seconds=seconds)
