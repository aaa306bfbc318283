"""The trainer on a toy recipe (a 1×1 convolution learning a known colour map, with dropout and noise so
every random stream matters): the loss falls, checkpoints are written, resuming is bit-identical, an
interrupted checkpoint write leaves the previous one intact, accumulation equals a larger batch, bf16
and gradient checkpointing run, the CLI trains and exports, and bad configs fail naming the key."""
from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.utils.checkpoint

from diorama.training import checkpoint as checkpoint_module
from diorama.training import recipes
from diorama.training.checkpoint import complete_checkpoints, latest_checkpoint, load_checkpoint
from diorama.training.config import TrainConfig, load_config, train_config
from diorama.training.data.frames import Frame, PairedFrames
from diorama.training.trainer import batch_indices, enable_gradient_checkpointing, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
# The colour map the toy model must learn: target = MAP · source + OFFSET per pixel.
MAP = torch.tensor([[0.2, 0.7, 0.1], [0.5, -0.3, 0.4], [0.1, 0.1, 0.9]])
OFFSET = torch.tensor([0.1, -0.2, 0.05])


def toy_pairs(count: int, seed: int = 0, size: int = 8) -> list[PairedFrames]:
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    for index in range(count):
        source = torch.rand(3, size, size, generator=generator)
        target = torch.einsum("ij,jhw->ihw", MAP, source) + OFFSET[:, None, None]
        empty = torch.zeros(0, size, size, dtype=torch.bool)
        pairs.append(PairedFrames(source=Frame(source, empty, ()), target=Frame(target, empty, ()), object_id=0,
                                  origin=f"toy #{index}"))
    return pairs


class ToyRecipe:
    """weight and bias as two groups with their own schedules; dropout (global RNG) and input noise
    (the trainer's generator), so a resume that got any stream wrong would not repeat its losses."""

    name = "toy"

    def __init__(self, config: dict, device: torch.device, dtype: torch.dtype):
        torch.manual_seed(config.get("init_seed", 0))
        self.layer = torch.nn.Conv2d(3, 3, 1)
        self.middle = torch.nn.Sequential(torch.nn.Identity())
        self.dropout = torch.nn.Dropout(config.get("dropout", 0.1))
        self.rate = config.get("rate", 0.05)

    def parameter_groups(self):
        return [{"name": "weight", "params": [self.layer.weight]}, {"name": "bias", "params": [self.layer.bias]}]

    def learning_rates(self, step):
        return {"weight": self.rate, "bias": self.rate / 2 if step % 2 else self.rate}

    def _predict(self, batch, generator):
        source = torch.stack([pair.source.image for pair in batch])
        noisy = source + 0.01 * torch.randn(source.shape, generator=generator)
        return self.middle(self.layer(self.dropout(noisy))), torch.stack([pair.target.image for pair in batch])

    def training_loss(self, batch, generator):
        prediction, target = self._predict(batch, generator)
        return torch.nn.functional.mse_loss(prediction, target)

    def validate(self, batch, generator):
        prediction, target = self._predict(batch, generator)
        images = torch.cat((prediction, target), dim=-1).clamp(0, 1).permute(0, 2, 3, 1)
        return {"mse": float(torch.nn.functional.mse_loss(prediction, target))}, images

    def checkpointed_modules(self):
        return [self.middle]

    def trainable_state(self):
        return {key: value.detach().clone() for key, value in self.layer.state_dict().items()}

    def load_trainable_state(self, state):
        self.layer.load_state_dict(state)

    def export(self, directory: Path):
        path = directory / "toy.safetensors"
        safetensors.torch.save_file(self.trainable_state(), str(path))
        return [path]


recipes.register("toy", ToyRecipe)
CPU = torch.device("cpu")


def config(**changes) -> TrainConfig:
    return replace(TrainConfig(steps=12, batch_size=2, seed=3, checkpoint_every=4, keep_checkpoints=5,
                               progress=False, device="cpu"), **changes)


def test_loss_falls_and_checkpoints_and_export_are_written(tmp_path):
    data = toy_pairs(10)
    result = train(ToyRecipe({}, CPU, torch.float32), data, config(steps=30, validate_every=10), tmp_path,
                   validation=toy_pairs(4, seed=9))
    assert len(result.losses) == 30
    assert sum(result.losses[-5:]) / 5 < 0.5 * sum(result.losses[:5]) / 5
    assert [p.name for p in complete_checkpoints(tmp_path)] == [f"step-{s:08d}" for s in (12, 16, 20, 24, 28, 30)][-5:]
    assert result.checkpoint == latest_checkpoint(tmp_path)
    assert [p.name for p in result.exported] == ["toy.safetensors"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(30))
    validation = [r for r in rows if r["split"] == "validation"]
    assert [r["step"] for r in validation] == [0, 10, 20, 30] and validation[-1]["mse"] < 0.5 * validation[0]["mse"]
    assert (tmp_path / validation[0]["images"]).is_file()
    # The checkpoint holds the trained tensors and AdamW's moments for both groups.
    saved = load_checkpoint(result.checkpoint)
    assert saved.step == 30 and torch.equal(saved.model["weight"], result_weight(tmp_path))
    assert set(saved.optimizer["state"]) == {0, 1} and set(saved.optimizer["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


def result_weight(out_dir: Path) -> torch.Tensor:
    return safetensors.torch.load_file(str(out_dir / "export" / "toy.safetensors"))["weight"]


def test_resume_repeats_the_same_steps_bit_for_bit(tmp_path):
    data = toy_pairs(7)  # 7 pairs, batch 2: epochs and batches do not line up, so the order must be exact
    straight = train(ToyRecipe({}, CPU, torch.float32), data, config(), tmp_path / "a")
    resumed_dir = tmp_path / "b"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step-00000004", resumed_dir / "checkpoints" / "step-00000004")
    # A recipe built with another initialisation: everything must come from the checkpoint.
    resumed = train(ToyRecipe({"init_seed": 99}, CPU, torch.float32), data, config(), resumed_dir)
    assert resumed.start_step == 4 and len(resumed.losses) == 8
    assert resumed.losses == straight.losses[4:]
    assert torch.equal(result_weight(tmp_path / "a"), result_weight(resumed_dir))


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    data = toy_pairs(6)
    train(ToyRecipe({}, CPU, torch.float32), data, config(steps=4), tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints" / "step-00000004").iterdir()}
    real_save = safetensors.torch.save_file

    def fail_half_way(tensors, path, metadata=None):
        real_save(tensors, path, metadata=metadata)
        with open(path, "r+b") as f:  # the process dies with half the file on disk
            f.truncate(os.path.getsize(path) // 2)
        raise KeyboardInterrupt("interrupted while writing")

    monkeypatch.setattr(checkpoint_module.safetensors.torch, "save_file", fail_half_way)
    with pytest.raises(KeyboardInterrupt):
        train(ToyRecipe({}, CPU, torch.float32), data, config(steps=8), tmp_path)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000004"], "no partial folder is left"
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoints" / "step-00000004").iterdir()} == before
    # And the run continues from it.
    assert train(ToyRecipe({}, CPU, torch.float32), data, config(steps=8), tmp_path).start_step == 4


class NoiselessToy(ToyRecipe):
    def _predict(self, batch, generator):
        return (self.layer(torch.stack([p.source.image for p in batch])),
                torch.stack([p.target.image for p in batch]))


def test_accumulation_equals_one_larger_batch(tmp_path):
    """Two micro-batches of 2 = one batch of 4 with the same samples in the same order (up to rounding)."""
    data = toy_pairs(8)
    four = config(steps=3, batch_size=4, accumulation=1, checkpoint_every=0)
    two_by_two = replace(four, batch_size=2, accumulation=2)
    for step in range(3):
        assert batch_indices(8, 3, step, 0, four) == (batch_indices(8, 3, step, 0, two_by_two)
                                                      + batch_indices(8, 3, step, 1, two_by_two))
    one = train(NoiselessToy({}, CPU, torch.float32), data, four, tmp_path / "four")
    two = train(NoiselessToy({}, CPU, torch.float32), data, two_by_two, tmp_path / "two")
    assert one.losses == pytest.approx(two.losses, rel=1e-5)
    assert torch.allclose(result_weight(tmp_path / "four"), result_weight(tmp_path / "two"), atol=1e-6)


def test_data_order_covers_every_pair_once_per_epoch():
    cfg = config(batch_size=3)
    seen = [i for step in range(7) for i in batch_indices(7, 3, step, 0, cfg)]  # 21 positions = 3 epochs
    for epoch in range(3):
        assert sorted(seen[7 * epoch:7 * epoch + 7]) == list(range(7))
    assert seen[:7] != seen[7:14], "each epoch draws its own order"


def test_bf16_and_gradient_checkpointing_train(tmp_path):
    data = toy_pairs(6)
    plain = train(NoiselessToy({}, CPU, torch.float32), data, config(steps=3), tmp_path / "plain")
    recipe = NoiselessToy({}, CPU, torch.float32)
    checkpointed = train(recipe, data, config(steps=3, gradient_checkpointing=True), tmp_path / "checkpointed")
    assert checkpointed.losses == plain.losses, "recomputing activations changes no number"
    assert recipe.middle.forward.func is torch.utils.checkpoint.checkpoint
    enable_gradient_checkpointing(recipe.checkpointed_modules())  # a second call does not wrap twice
    assert not isinstance(recipe.middle.forward.args[0], functools.partial)
    bf16 = train(NoiselessToy({}, CPU, torch.float32), data, config(steps=3, precision="bf16"), tmp_path / "bf16")
    assert bf16.losses != plain.losses and bf16.losses == pytest.approx(plain.losses, rel=0.05)
    assert load_checkpoint(latest_checkpoint(tmp_path / "bf16")).model["weight"].dtype == torch.float32


def test_schedule_and_groups_are_checked_before_training(tmp_path):
    class MissingGroup(ToyRecipe):
        def learning_rates(self, step):
            return {"weight": 0.1}

    with pytest.raises(ValueError, match=r"learning_rates\(0\) names \['weight'\].*\['bias', 'weight'\]"):
        train(MissingGroup({}, CPU, torch.float32), toy_pairs(2), config(), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()
    with pytest.raises(ValueError, match="training data is empty"):
        train(ToyRecipe({}, CPU, torch.float32), [], config(), tmp_path)


def test_config_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  steps: 10\n  batch_sise: 2\n")
    with pytest.raises(ValueError, match=r"run.yaml: train: unknown setting\(s\) \['batch_sise'\]"):
        load_config(path)
    path.write_text("train:\n  steps: 10\n  precision: fp16\n")
    with pytest.raises(ValueError, match=r"precision = 'fp16', expected one of \('fp32', 'bf16'\)"):
        load_config(path)
    path.write_text("train:\n  steps: ten\n")
    with pytest.raises(ValueError, match=r"train.steps = 'ten', expected an integer"):
        load_config(path)
    path.write_text("train: {steps: 1}\nmodel: {}\n")
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['model'\]"):
        load_config(path)
    assert train_config({"steps": 5, "betas": [0.9, 0.99], "weight_decay": 0}).betas == (0.9, 0.99)


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown recipe 'nope'; known recipes: .*toy"):
        recipes.create("nope", {}, CPU, torch.float32)


def test_command_line_trains_resumes_and_reports_errors(tmp_path, capsys):
    from diorama.train import main

    config_path = tmp_path / "toy.yaml"
    config_path.write_text("train: {steps: 3, batch_size: 2, checkpoint_every: 2, progress: false, device: cpu}\n"
                           "recipe: {rate: 0.01}\n"
                           "data: {kind: rendered, count: 2, size: 32, seed: 0}\n")
    out = tmp_path / "out"
    assert main(["toy", "--config", str(config_path), "--out", str(out)]) == 0
    assert [p.name for p in complete_checkpoints(out)] == ["step-00000002", "step-00000003"]
    assert (out / "export" / "toy.safetensors").is_file()
    config_path.write_text(config_path.read_text().replace("steps: 3", "steps: 4"))
    assert main(["toy", "--config", str(config_path), "--out", str(out)]) == 0  # continues from step 3
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    capsys.readouterr()
    assert main(["toyy", "--config", str(config_path), "--out", str(out)]) == 2
    assert "unknown recipe 'toyy'; known recipes:" in capsys.readouterr().err
    config_path.write_text("train: {steps: 0}\n")
    assert main(["toy", "--config", str(config_path)]) == 2
    assert "train.steps = 0, expected a positive integer" in capsys.readouterr().err
