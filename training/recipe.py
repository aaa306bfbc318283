"""What a training recipe provides to the trainer (`training/trainer.py`), which owns everything
generic: config, seeding, precision, accumulation, the optimiser, checkpoints, progress and validation.

A recipe owns its modules and its maths: which parameters train at which learning rate (per step, so
schedules such as IMPRINT's sequential collaborative training live in the recipe), the loss of a
batch, validation images and metrics, and the export to the adapter format its node loads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from .data.frames import PairedFrames


class Recipe(Protocol):
    name: str  # the RECIPE argument of `python -m diorama.train`

    def parameter_groups(self) -> list[dict]:
        """torch.optim parameter groups, each with a unique "name" (the key of `learning_rates`)."""

    def learning_rates(self, step: int) -> dict[str, float]:
        """The learning rate of every parameter group at optimiser step `step` (0-based); 0 freezes a group."""

    def training_loss(self, batch: list[PairedFrames], generator: torch.Generator) -> torch.Tensor:
        """Scalar loss of one micro-batch; all randomness (noise, timesteps, dropout of conditions,
        augmentation) is drawn from `generator`, so a resumed run repeats the same steps."""

    @torch.no_grad()
    def validate(self, batch: list[PairedFrames], generator: torch.Generator) -> tuple[dict[str, float], torch.Tensor]:
        """Metrics and images [B, H, W, 3] in [0, 1] (ComfyUI's IMAGE layout) for one validation batch."""

    def checkpointed_modules(self) -> list[torch.nn.Module]:
        """Modules whose activations the trainer recomputes in the backward pass when the config's
        gradient_checkpointing is on (e.g. the trained UNet blocks); [] when nothing is worth it."""

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every trained tensor, for checkpoints (frozen weights are not saved)."""

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore `trainable_state()` exactly (resume)."""

    def export(self, directory: Path) -> list[Path]:
        """Write the trained parts in the formats the nodes load; returns the files written."""
