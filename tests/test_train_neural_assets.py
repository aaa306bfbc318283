"""Neural Assets training on renderer pairs with tiny models: the loss falls, a checkpoint is written,
resuming gives bit-identically the same next loss, null-condition dropout and frame swapping are the
reference's, and the exported adapter + DINO + UNet run in the neural_assets_edit example workflow."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tiny_neural_assets
from example_prompts import quick_example_prompt
from recipe_runs import ShortRun, rendered_pairs
from diorama.training.config import TrainConfig
from diorama.training.data.sources import open_source
from diorama.training.recipes import neural_assets as na
from diorama.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
RUN = ShortRun(steps=24, checkpoint_every=12, batch_size=2)
DATA = {"kind": "rendered", "count": 8, "size": 32, "seed": 0}


def recipe_section(**changes) -> dict:
    return {"unet": tiny_neural_assets.UNET, "vae": tiny_neural_assets.VAE, "dino": tiny_neural_assets.DINO,
            "slots": 5, "image_size": 32, "learning_rates": {"adapter": 1e-3, "dino": 1e-4, "unet": 1e-4}, **changes}


def new_recipe(**changes):
    return na.create(recipe_section(**changes), torch.device("cpu"), torch.float32)



@pytest.fixture(scope="module")
def pairs(one_torch_thread) -> list:
    return rendered_pairs(DATA)


@pytest.fixture(scope="module")
def trained(one_torch_thread, tiny_neural_assets_models, pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("neural_assets")
    return out, RUN.train(new_recipe(), pairs, out)


def test_loss_falls_and_a_checkpoint_is_written(trained):
    out, result = trained
    first, last = sum(result.losses[:6]) / 6, sum(result.losses[-6:]) / 6
    assert last < 0.8 * first, result.losses
    RUN.assert_checkpoints_written(out, result)


def test_the_unet_and_dino_are_fine_tuned(trained, base_dir):
    _, result = trained
    _, dino, unet = result.exported
    before = load_file(base_dir / "models" / "diffusion_models" / tiny_neural_assets.UNET)
    after = load_file(unet)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    before = load_file(base_dir / "models" / "dino" / tiny_neural_assets.DINO / "model.safetensors")
    after = load_file(dino / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "embeddings.patch_embeddings.projection.weight" in changed


def test_resume_gives_the_same_next_loss(trained, pairs, tmp_path):
    out, result = trained
    RUN.assert_resume_repeats_the_next_losses(new_recipe, pairs, out, result, tmp_path)


def test_null_condition_is_the_network_on_zero_inputs_and_frames_swap(tiny_neural_assets_models, pairs):
    recipe = new_recipe(null_condition_probability=1.0, swap_probability=1.0)
    pair = pairs[0]
    context, latents = recipe._conditioned_batch([pair], torch.Generator().manual_seed(0))
    with torch.no_grad():
        null = recipe.adapter.tokens(torch.zeros(1, recipe.adapter.config.num_tokens, recipe.adapter.config.feature_dim),
                                     torch.zeros(1, 6, 12))
        torch.testing.assert_close(context, null, rtol=0, atol=0)
        torch.testing.assert_close(latents, recipe._latents([pair.source]), rtol=0, atol=0)  # target ↔ source
        assert not torch.equal(null, torch.zeros_like(null)), "the null condition is bias-driven tokens, not zeros"
    kept = new_recipe(null_condition_probability=0.0, swap_probability=0.0)
    kept.load_trainable_state(recipe.trainable_state())
    context, latents = kept._conditioned_batch([pair], torch.Generator().manual_seed(0))
    assert not torch.allclose(context, null)
    torch.testing.assert_close(latents, kept._latents([pair.target]), rtol=0, atol=0)
    metrics, images = kept.validate(pairs[:2], torch.Generator().manual_seed(0))
    assert set(metrics) == {"loss", "null_condition_loss"} and images.shape == (2, 32, 3 * 32, 3)


def test_bad_config_and_data_are_named(tiny_neural_assets_models, pairs):
    with pytest.raises(ValueError, match=r"unknown keys \['slot'\], missing keys \['dino'\]"):
        na.NeuralAssetsSettings.from_config({"unet": "u", "vae": "v", "slot": 3})
    with pytest.raises(ValueError, match=r"learning_rates"):
        na.NeuralAssetsSettings.from_config(recipe_section(learning_rates={"adapter": 1e-4}))
    pair = pairs[0]
    broken = type(pair)(pair.source, type(pair.target)(**{**pair.target.__dict__, "camera": None}), pair.object_id,
                        "broken pair")
    with pytest.raises(ValueError, match="broken pair has no target.camera"):
        new_recipe().training_loss([broken], torch.Generator().manual_seed(0))


def test_exported_adapter_runs_in_the_example_workflow(trained, base_dir, run_prompt):
    out, result = trained
    adapter, dino, unet = result.exported
    models = base_dir / "models"
    shutil.copy(adapter, models / "neural_assets" / "trained_neural_assets.safetensors")
    shutil.copytree(dino, models / "dino" / "trained-dino", dirs_exist_ok=True)
    shutil.copy(unet, models / "diffusion_models" / "trained_neural_assets_unet.safetensors")
    report = run_prompt(quick_example_prompt("neural_assets_edit", {
        "DioramaDinoLoader": {"model_name": "trained-dino"},
        "DioramaNeuralAssetsAdapterLoader": {"adapter_name": "trained_neural_assets.safetensors"},
        "UNETLoader": {"unet_name": "trained_neural_assets_unet.safetensors"}}))
    assert any(output.get("images") for output in report.outputs.values())


def test_shipped_config_reads():
    from diorama.training.config import load_config

    run = load_config(REPO / "training" / "configs" / "neural_assets.yaml")
    settings = na.NeuralAssetsSettings.from_config(run.recipe)
    assert (settings.slots, settings.null_condition_probability, settings.swap_probability) == (10, 0.1, 0.5)
    assert len(open_source(run.data)) == run.data["count"]


def test_gradient_checkpointing_and_bf16(trained, pairs, tmp_path):
    """Recomputing the UNet's transformer blocks and DINO's layers changes no number; bf16 autocast trains."""
    _, result = trained
    checkpointed = train(new_recipe(), pairs, TrainConfig(steps=2, batch_size=2, seed=0, progress=False,
                                                          gradient_checkpointing=True), tmp_path / "checkpointed")
    assert checkpointed.losses[0] == result.losses[0]
    assert checkpointed.losses[1] == pytest.approx(result.losses[1], rel=1e-5)
    half = train(new_recipe(), pairs, TrainConfig(steps=1, batch_size=2, seed=0, progress=False, precision="bf16"),
                 tmp_path / "bf16")
    assert half.losses[0] == pytest.approx(result.losses[0], rel=0.1)
