"""What the recipe tests do alike: render the training pairs once, train a short run from scratch with a
checkpoint half-way, and check that resuming from that checkpoint repeats the next losses bit for bit."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from diorama.training.checkpoint import checkpoint_folder
from diorama.training.config import TrainConfig
from diorama.training.data.frames import PairedFrames
from diorama.training.data.sources import open_source
from diorama.training.recipe import Recipe
from diorama.training.trainer import TrainResult, train


def rendered_pairs(spec: dict) -> list[PairedFrames]:
    """Every pair of a data source, read once (the rendered source renders on every access)."""
    source = open_source(spec)
    return [source[i] for i in range(len(source))]


@dataclass(frozen=True)
class ShortRun:
    steps: int
    checkpoint_every: int
    batch_size: int

    def config(self, steps: int | None = None) -> TrainConfig:
        return TrainConfig(steps=self.steps if steps is None else steps, batch_size=self.batch_size,
                           checkpoint_every=self.checkpoint_every, seed=0, progress=False)

    def train(self, recipe: Recipe, pairs: list[PairedFrames], out: Path) -> TrainResult:
        return train(recipe, pairs, self.config(), out)

    def assert_checkpoints_written(self, out: Path, result: TrainResult) -> None:
        assert len(result.losses) == self.steps
        assert checkpoint_folder(out, self.checkpoint_every).is_dir()
        assert result.checkpoint == checkpoint_folder(out, self.steps)

    def assert_resume_repeats_the_next_losses(self, new_recipe: Callable[[], Recipe], pairs: list[PairedFrames],
                                              out: Path, result: TrainResult, resumed_out: Path) -> None:
        middle = self.checkpoint_every
        resumed = train(new_recipe(), pairs, self.config(middle + 2), resumed_out,
                        resume_from=checkpoint_folder(out, middle))
        assert resumed.start_step == middle
        assert resumed.losses == result.losses[middle:middle + 2]
