"""Person insertion training on renderer pairs (the object stands in for the person) with the tiny
inpainting SD and tiny DINOv2: the loss falls, a checkpoint is written, resuming gives the same next
loss bit-identically, and the exported adapter runs in the person_insert example workflow and in
Person Insert Conditioning with every subset of image / caption / pose."""
from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
import torch

import tiny_person
import tiny_sd
from diorama.ops import keypoints as kp
from example_prompts import quick_example_prompt
from recipe_runs import ShortRun, rendered_pairs
from diorama.training.config import TrainConfig
from diorama.training.data.sources import open_source
from diorama.training.recipes import person
from diorama.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
RUN = ShortRun(steps=24, checkpoint_every=12, batch_size=2)
DATA = {"kind": "rendered", "count": 8, "size": 32, "seed": 2}


def recipe_section(**changes) -> dict:
    return {"checkpoint": tiny_sd.INPAINTING, "image_encoder": tiny_person.DINOV2, "resolution": 32, "crop_size": 56,
            "learning_rates": {"adapter": 1e-2, "unet": 1e-4}, **changes}


def new_recipe(**changes):
    return person.create(recipe_section(**changes), torch.device("cpu"), torch.float32)



@pytest.fixture(scope="module")
def pairs(one_torch_thread) -> list:
    return rendered_pairs(DATA)


@pytest.fixture(scope="module")
def trained(one_torch_thread, tiny_sd_models, tiny_person_models, pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("person")
    return out, RUN.train(new_recipe(), pairs, out)


def test_loss_falls_and_a_checkpoint_is_written(trained):
    out, result = trained
    first, last = sum(result.losses[:6]) / 6, sum(result.losses[-6:]) / 6
    assert last < 0.7 * first, result.losses
    RUN.assert_checkpoints_written(out, result)


def test_resume_gives_the_same_next_loss(trained, pairs, tmp_path):
    out, result = trained
    RUN.assert_resume_repeats_the_next_losses(new_recipe, pairs, out, result, tmp_path)


def test_stand_in_person_and_sequences(tiny_sd_models, tiny_person_models, pairs):
    pair = pairs[0]
    points = person.stand_in_keypoints((10, 20, 30, 60))
    assert points.shape == (17, 3) and bool((points[:, 2] == 1).all())
    assert float(points[:, 0].min()) >= 10 and float(points[:, 0].max()) <= 30
    assert float(points[:, 1].min()) >= 20 and float(points[:, 1].max()) <= 60
    assert points[kp.COCO17.index("nose"), 1] < points[kp.COCO17.index("left_hip"), 1] < points[kp.COCO17.index("left_ankle"), 1]
    assert person.stand_in_caption(pair).startswith("a ")
    recipe = new_recipe()
    m, k = recipe.adapter.config.image_tokens, recipe.adapter.config.pose_tokens
    for size in (1, 2, 3):
        for subset in itertools.combinations(person.MODALITIES, size):
            tokens = recipe.sequence(pair, subset, null=False)
            assert tokens.shape[1] == ("image" in subset) * m + ("caption" in subset) * 77 + ("pose" in subset) * k
    null = recipe.sequence(pair, ("image", "pose"), null=True)
    torch.testing.assert_close(null[0], torch.cat([recipe.adapter.image_null, recipe.adapter.pose_null]))
    metrics, images = recipe.validate(pairs[:2], torch.Generator().manual_seed(0))
    assert set(metrics) == {"loss", "null_loss"} and images.shape == (2, 32, 3 * 32, 3)


def test_bad_config_is_named(tiny_sd_models):
    with pytest.raises(ValueError, match=r"unknown keys \['drops'\], missing keys \['image_encoder'\]"):
        person.PersonSettings.from_config({"checkpoint": "x", "drops": {}})
    with pytest.raises(ValueError, match="not an inpainting checkpoint"):
        new_recipe(checkpoint=tiny_sd.CHECKPOINT)


def test_exported_adapter_runs_with_every_subset(trained, base_dir, run_prompt, node_class, pairs):
    _, result = trained
    adapter, unet = result.exported
    assert (adapter.name, unet.name) == (person.ADAPTER_FILE, person.UNET_FILE)
    shutil.copy(adapter, base_dir / "models" / "person_adapters" / "trained_person.safetensors")
    report = run_prompt(quick_example_prompt(
        "person_insert", {"DioramaPersonAdapterLoader": {"adapter_name": "trained_person.safetensors"}}))
    assert any(output.get("images") for output in report.outputs.values())

    loaded = node_class("DioramaPersonAdapterLoader").execute("trained_person.safetensors").result[0]
    encoder = node_class("DioramaDinoV2Loader").execute(tiny_person.DINOV2).result[0]
    clip = node_class("CheckpointLoaderSimple")().load_checkpoint(tiny_sd.INPAINTING)[1]
    caption = node_class("CLIPTextEncode")().encode(clip, "a person waving")[0]
    pair = pairs[0]
    parts = {"image": {"clip_vision": encoder, "reference": pair.source.image.permute(1, 2, 0)[None]},
             "caption": {"caption": caption},
             "pose": {"keypoints": kp.Keypoints(person.stand_in_keypoints((8, 4, 24, 30))[None] / torch.tensor([32, 32, 1]),
                                                (32, 32))}}
    config = loaded.config
    for size in (1, 2, 3):
        for subset in itertools.combinations(person.MODALITIES, size):
            inputs = {key: value for name in subset for key, value in parts[name].items()}
            positive, negative, _ = node_class("DioramaPersonInsertConditioning").execute(loaded, **inputs).result
            expected = ("image" in subset) * config.image_tokens + ("caption" in subset) * 77 + ("pose" in subset) * config.pose_tokens
            assert positive[0][0].shape == (1, expected, 768) and negative[0][0].shape == (1, expected, 768), subset


def test_shipped_config_reads():
    from diorama.training.config import load_config

    run = load_config(REPO / "training" / "configs" / "person.yaml")
    assert person.PersonSettings.from_config(run.recipe).learning_rates == {"adapter": 1e-4, "unet": 0.0}
    assert len(open_source(run.data)) == run.data["count"]


def test_gradient_checkpointing_and_frozen_unet(trained, pairs, tmp_path):
    _, result = trained
    checkpointed = train(new_recipe(), pairs, TrainConfig(steps=2, batch_size=2, seed=0, progress=False,
                                                          gradient_checkpointing=True), tmp_path / "checkpointed")
    assert checkpointed.losses[0] == result.losses[0]
    assert checkpointed.losses[1] == pytest.approx(result.losses[1], rel=1e-5)
    frozen = train(new_recipe(learning_rates={"adapter": 1e-2, "unet": 0.0}), pairs,
                   TrainConfig(steps=1, batch_size=2, seed=0, progress=False), tmp_path / "frozen")
    assert [p.name for p in frozen.exported] == [person.ADAPTER_FILE]  # the default: only the adapter trains
    assert frozen.losses[0] == result.losses[0]  # the same first step: only what is trained differs
