"""The training YAML: `train:` (the trainer's settings, `TrainConfig`), `recipe:` (handed to the recipe's
factory as a dict), `data:` and optionally `validation:` (handed to `training.data.sources.open_source`).

Unknown keys and wrong types are errors naming the file, the section and the key, so a typo never
silently trains with a default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PRECISIONS = ("fp32", "bf16")
SECTIONS = ("train", "recipe", "data", "validation")


@dataclass(frozen=True)
class TrainConfig:
    steps: int  # optimiser steps in total (a resumed run continues up to this count)
    batch_size: int = 1  # pairs per micro-batch
    accumulation: int = 1  # micro-batches whose gradients add up to one optimiser step
    precision: str = "fp32"  # fp32, or bf16 autocast over fp32 master weights
    gradient_checkpointing: bool = False  # recompute the recipe's checkpointed modules in the backward pass
    seed: int = 0
    checkpoint_every: int = 0  # steps between checkpoints; 0: only at the end
    keep_checkpoints: int = 2  # complete checkpoints kept (the newest ones); at least 1
    validate_every: int = 0  # steps between validations; 0: never
    validation_batches: int = 1  # micro-batches of the validation set per validation
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float = 0.0  # clip the gradient norm of all trained parameters; 0: no clipping
    device: str = "auto"  # auto: ComfyUI's torch device (its --cpu and CUDA choice); or a torch device string
    progress: bool = True  # tqdm bar with loss and ETA

    def check(self, where: str = "train") -> None:
        positive = ("steps", "batch_size", "accumulation", "keep_checkpoints", "validation_batches")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{where}.{name} = {getattr(self, name)}, expected a positive integer")
        for name in ("checkpoint_every", "validate_every", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{where}.{name} = {getattr(self, name)}, expected 0 or a positive integer")
        if self.precision not in PRECISIONS:
            raise ValueError(f"{where}.precision = {self.precision!r}, expected one of {PRECISIONS}")
        if self.weight_decay < 0 or self.max_grad_norm < 0 or not self.eps > 0:
            raise ValueError(f"{where}: weight_decay and max_grad_norm must be ≥ 0 and eps > 0, got "
                             f"{self.weight_decay}, {self.max_grad_norm}, {self.eps}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"{where}.betas = {self.betas}, expected two numbers in [0, 1)")


@dataclass(frozen=True)
class RunConfig:
    train: TrainConfig
    recipe: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    validation: dict | None = None


def _coerce(value, annotation: str, where: str):
    """YAML value → the field's type; ints are accepted for floats, nothing else is converted."""
    kind = annotation.split("[")[0]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{where} = {value!r}, expected true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} = {value!r}, expected an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} = {value!r}, expected a number")
        return float(value)
    if kind == "tuple":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) for v in value):
            raise ValueError(f"{where} = {value!r}, expected a list of numbers")
        return tuple(float(v) for v in value)
    if not isinstance(value, str):
        raise ValueError(f"{where} = {value!r}, expected text")
    return value


def train_config(section: dict, where: str = "train") -> TrainConfig:
    """A `train:` mapping → TrainConfig, refusing unknown keys and wrong types."""
    if not isinstance(section, dict):
        raise ValueError(f"{where} must be a mapping of settings, got {type(section).__name__}")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(fields)}")
    if "steps" not in section:
        raise ValueError(f"{where}.steps is missing: how many optimiser steps to train")
    values = {name: _coerce(value, str(fields[name].type), f"{where}.{name}") for name, value in section.items()}
    config = TrainConfig(**values)
    config.check(where)
    return config


def load_config(path: Path) -> RunConfig:
    """Read a training YAML; errors name the file and the offending section or key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} does not exist")
    document = yaml.safe_load(path.read_text()) or {}
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping with sections {SECTIONS}, got {type(document).__name__}")
    unknown = sorted(set(document) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; expected {SECTIONS}")
    if "train" not in document:
        raise ValueError(f"{path}: the train: section is missing (at least train.steps)")
    for name in ("recipe", "data", "validation"):
        if document.get(name) is not None and not isinstance(document[name], dict):
            raise ValueError(f"{path}: section {name}: must be a mapping, got {type(document[name]).__name__}")
    return RunConfig(train=train_config(document["train"], f"{path.name}: train"),
                     recipe=dict(document.get("recipe") or {}), data=dict(document.get("data") or {}),
                     validation=document.get("validation"))
