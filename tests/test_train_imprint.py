"""IMPRINT's training (training/recipes/imprint.py, ops/augment.py) on tiny models and rendered pairs.

- the augmentation keeps the mask on the object: a disk of known colour and radius is warped, and the
  warped mask is checked against the closed-form transformed disk and against the warped image;
- the colour LUT reproduces an affine colour map exactly (trilinear interpolation is exact on it);
- sequential collaborative training's rates, written out from the paper's sentence, step by step;
- stage 1 (view synthesis) and stage 2 (compositing) each train a few dozen steps: the loss falls,
  checkpoints are written, resuming from one repeats the next loss bit for bit; stage 2 starts from
  stage 1's export, and its adapter (with stage 1's DINOv2) runs in example_workflows/imprint_composite.json.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diorama.ops.augment import AffineRanges, apply_lut, augment_object, lattice_lut, random_affine, warp
from diorama.training import recipes
from diorama.training.config import TrainConfig
from diorama.training.data.frames import Frame, PairedFrames
from diorama.training.data.sources import open_source
from diorama.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
# The paper (§3.4): "in the first n epochs, we assign the adapter a larger learning rate of 4 × 10⁻⁵, and
# assign the UNet a smaller learning rate of 4 × 10⁻⁶; in the next n epochs, we swap the learning rate of
# these two components (and the training finishes)."
PAPER_LARGER, PAPER_SMALLER = 4e-5, 4e-6
STEPS = 24  # per stage, batch 2; checkpoints at STEPS / 2 and STEPS
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def disk(size: int, centre: tuple[float, float], radius: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    return (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius ** 2


@pytest.mark.parametrize("seed", range(6))
def test_affine_warp_keeps_the_mask_on_the_transformed_object(seed):
    size, centre, radius = 64, (30.0, 34.0), 12.5
    colour = torch.tensor([0.9, 0.4, 0.2])
    mask = disk(size, centre, radius)
    image = colour[:, None, None] * mask  # the object on black, as IMPRINT's I ⊗ M
    matrix = random_affine(torch.Generator().manual_seed(seed), size, size,
                           AffineRanges(rotation_deg=30, scale=(0.7, 1.3), shear_deg=10, shift=0.1, mirror=0.5))
    warped, warped_mask = warp(image, mask, matrix)
    # Closed form: output pixel p shows the object iff A⁻¹p lies in the disk. Nearest sampling may differ
    # only where A⁻¹p is within half a source pixel (diagonal) of the circle.
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    source = torch.stack((xs, ys, torch.ones_like(xs)), -1) @ torch.linalg.inv(matrix).T
    distance = ((source[..., 0] - centre[0]) ** 2 + (source[..., 1] - centre[1]) ** 2).sqrt() - radius
    expected = distance <= 0
    assert expected.sum() > 200
    disagree = warped_mask != expected
    assert (distance[disagree].abs() <= math.sqrt(0.5) + 1e-9).all(), "mask pixels off the transformed object"
    # The image went through the same grid: away from the edge it is the object's colour exactly where
    # the mask is set and black where it is not.
    interior, exterior = distance < -1.5, distance > 1.5
    assert torch.allclose(warped[:, interior], colour[:, None].expand(-1, int(interior.sum())), atol=1e-5)
    assert warped[:, exterior].abs().max() < 1e-6
    assert warped_mask[interior].all() and not warped_mask[exterior].any()


def test_augment_object_keeps_background_removed_and_changes_colour_inside():
    size = 48
    mask = disk(size, (24.0, 24.0), 10.0)
    image = torch.tensor([0.5, 0.6, 0.3])[:, None, None] * mask
    generator = torch.Generator().manual_seed(4)
    augmented, augmented_mask = augment_object(image, mask, generator)
    assert augmented[:, ~augmented_mask].abs().max() == 0, "outside the transformed mask stays black (I ⊗ M)"
    assert augmented_mask.sum() > 100
    inside = augmented[:, augmented_mask]
    assert not torch.allclose(inside.mean(1), torch.tensor([0.5, 0.6, 0.3]), atol=0.01), "the LUT changed the colour"
    # Same generator seed, same result (augmentation draws only from the generator it is given).
    again, again_mask = augment_object(image, mask, torch.Generator().manual_seed(4))
    assert torch.equal(again, augmented) and torch.equal(again_mask, augmented_mask)


def test_lut_is_exact_for_an_affine_colour_map():
    """Trilinear interpolation reproduces any map affine in r, g, b; the identity LUT changes nothing."""
    matrix = torch.tensor([[0.7, 0.2, 0.05], [0.1, 0.6, 0.2], [0.05, 0.1, 0.8]], dtype=torch.float64)
    offset = torch.tensor([0.05, 0.02, 0.1], dtype=torch.float64)
    image = torch.rand(3, 20, 30, generator=torch.Generator().manual_seed(0))
    mapped = apply_lut(image, lattice_lut(lambda rgb: rgb @ matrix.T + offset, 9))
    expected = (image.permute(1, 2, 0).double() @ matrix.T + offset).permute(2, 0, 1)
    assert torch.allclose(mapped.double(), expected, atol=1e-5)
    assert torch.allclose(apply_lut(image, lattice_lut(lambda rgb: rgb, 5)), image, atol=1e-6)


def test_sequential_collaborative_schedule_follows_the_paper():
    from diorama.training.recipes.imprint import sequential_collaborative_rates

    n = 5
    for step in range(2 * n):
        phase_one = step < n  # "the first n epochs"
        expected = ({"adapter": PAPER_LARGER, "unet": PAPER_SMALLER} if phase_one
                    else {"adapter": PAPER_SMALLER, "unet": PAPER_LARGER})  # "we swap the learning rate"
        assert sequential_collaborative_rates(step, n) == expected, step
    with pytest.raises(ValueError, match=r"step 10 is outside \(set train.steps ≤ 10\)"):
        sequential_collaborative_rates(2 * n, n)  # "and the training finishes"


def test_a_pair_without_the_object_is_refused_naming_it():
    from diorama.training.recipes.imprint import masked_object

    frame = Frame(torch.rand(3, 32, 32), torch.zeros(1, 32, 32, dtype=torch.bool), (7,))
    pair = PairedFrames(frame, frame, object_id=7, origin="clip 12 frames 3/9")
    with pytest.raises(ValueError, match=r"clip 12 frames 3/9: object 7 has no pixels in the source frame"):
        masked_object(pair, frame, "source", 56)


@pytest.fixture(scope="module")
def object_views():
    """Two views of one rendered object without background (what multi-view datasets give stage 1)."""
    pairs = open_source({"kind": "rendered", "count": 8, "size": 64, "seed": 0, "source_mode": "object"})
    return [pairs[i] for i in range(len(pairs))]


@pytest.fixture(scope="module")
def scenes():
    pairs = open_source({"kind": "rendered", "count": 8, "size": 64, "seed": 1})
    return [pairs[i] for i in range(len(pairs))]


def train_config(**changes) -> TrainConfig:
    values = dict(steps=STEPS, batch_size=2, seed=5, checkpoint_every=STEPS // 2, progress=False, device="cpu")
    return TrainConfig(**{**values, **changes})


def trains_and_resumes(name: str, metric: str, section: dict, data, out_dir: Path):
    """STEPS steps; the loss falls; a fresh recipe resumed from the half-way checkpoint repeats step STEPS/2."""
    result = train(recipes.create(name, section, CPU, torch.float32), data,
                   train_config(validate_every=STEPS, validation_batches=len(data)), out_dir / "run", validation=data)
    # Training losses draw a new timestep and noise (and, in stage 2, mask level) every step: compare means.
    first, last = np.mean(result.losses[:4]), np.mean(result.losses[-4:])
    assert last < 0.8 * first, f"{name}: loss {result.losses}"
    # Validation draws the same timesteps and noise every time: the loss on them must fall clearly.
    before, after = (row[metric] for row in result.validation)
    assert after < 0.7 * before, f"{name}: validation {metric} {before} → {after}"
    checkpoints = sorted(p.name for p in (out_dir / "run" / "checkpoints").iterdir())
    assert checkpoints == [f"step-{STEPS // 2:08d}", f"step-{STEPS:08d}"]
    assert (out_dir / "run" / "validation" / f"step-{STEPS:08d}.png").is_file()
    resumed_dir = out_dir / "resumed" / "checkpoints"
    shutil.copytree(out_dir / "run" / "checkpoints" / checkpoints[0], resumed_dir / checkpoints[0])
    resumed = train(recipes.create(name, section, CPU, torch.float32), data, train_config(steps=STEPS // 2 + 1),
                    out_dir / "resumed")
    assert resumed.start_step == STEPS // 2 and resumed.losses == [result.losses[STEPS // 2]]
    return result


@pytest.fixture(scope="module")
def stage1_section(tiny_sd_models, tiny_imprint_models) -> dict:
    from tiny_imprint import DINOV2

    return {"checkpoint": tiny_sd_models["checkpoint"], "dinov2": DINOV2, "image_size": 56, "resolution": 32,
            "adapter": {"width": 64, "depth": 1, "heads": 2, "mlp_dim": 128, "num_queries": 8},
            "learning_rates": {"dinov2": 1e-4, "adapter": 1e-3, "unet_decoder": 1e-3}}


@pytest.fixture(scope="module")
def stage1(stage1_section, object_views, tmp_path_factory):
    return trains_and_resumes("imprint_stage1", "loss", stage1_section, object_views,
                              tmp_path_factory.mktemp("imprint_stage1"))


def test_stage1_trains_resumes_and_exports_the_encoder(stage1, stage1_section, object_views, tmp_path):
    from diorama.loaders.identity_adapter import load_identity_adapter
    from diorama.loaders.identity_encoder import load_dinov2

    # bf16 autocast and gradient checkpointing of the UNet's transformer blocks run through ComfyUI's UNet.
    result = train(recipes.create("imprint_stage1", stage1_section, CPU, torch.bfloat16), object_views,
                   train_config(steps=1, precision="bf16", gradient_checkpointing=True), tmp_path)
    assert math.isfinite(result.losses[0])

    adapter_path, dinov2_path = stage1.exported
    adapter = load_identity_adapter(str(adapter_path))
    assert adapter.architecture == "imprint_content_adapter" and adapter.negative == "null_tokens"
    assert (adapter.image_size, adapter.input_tokens, adapter.output_dim) == (56, 17, 768)
    load_dinov2(str(dinov2_path))  # ComfyUI's CLIP-vision layout, as Diorama DINOv2 Loader reads it


def test_stage2_trains_resumes_and_its_adapter_runs_in_the_example_workflow(stage1, scenes, tiny_sd_models,
                                                                           tmp_path_factory, base_dir, run_prompt):
    from example_prompts import quick_example_prompt

    adapter_path, dinov2_path = stage1.exported
    section = {"checkpoint": tiny_sd_models["inpainting"], "dinov2": str(dinov2_path), "adapter": str(adapter_path),
               "phase_steps": STEPS // 2, "resolution": 32, "rates": [3e-4, 3e-5]}
    recipe = recipes.create("imprint_stage2", section, CPU, torch.float32)
    assert [recipe.learning_rates(s) for s in (0, STEPS // 2 - 1, STEPS // 2, STEPS - 1)] == [
        {"adapter": 3e-4, "unet": 3e-5}] * 2 + [{"adapter": 3e-5, "unet": 3e-4}] * 2
    result = trains_and_resumes("imprint_stage2", "masked_loss", section, scenes, tmp_path_factory.mktemp("imprint_stage2"))
    adapter_file, unet_file = result.exported
    assert unet_file.is_file()

    # The trained adapter and stage 1's DINOv2 in the model folders, under their own names.
    shutil.copy(adapter_file, base_dir / "models" / "identity_adapters" / "trained_imprint.safetensors")
    shutil.copy(dinov2_path, base_dir / "models" / "clip_vision" / "trained_imprint_dinov2.safetensors")
    outputs = []
    for adapter_name, clip_name in (("trained_imprint.safetensors", "trained_imprint_dinov2.safetensors"),
                                    (None, None)):
        trained_models = {"DioramaIdentityAdapterLoader": {"adapter_name": adapter_name},
                          "DioramaDinoV2Loader": {"clip_name": clip_name}} if adapter_name else {}
        report = run_prompt(quick_example_prompt(
            "imprint_composite", {**trained_models, "SaveImage": {"filename_prefix": f"imprint_trained_{len(outputs)}"}}))
        image = next(o["images"][0] for o in report.outputs.values() if o.get("images") and
                     o["images"][0]["filename"].startswith(f"imprint_trained_{len(outputs)}"))
        outputs.append(np.asarray(Image.open(base_dir / "output" / image.get("subfolder", "") / image["filename"])))
    assert outputs[0].shape == outputs[1].shape
    assert not np.array_equal(outputs[0], outputs[1]), "the trained adapter must change the composite"


@pytest.mark.parametrize("stage", ["imprint_stage1", "imprint_stage2"])
def test_shipped_configs_are_valid(stage):
    from diorama.training.config import load_config
    from diorama.training.recipes import imprint

    run = load_config(REPO / "training" / "configs" / f"{stage}.yaml")
    if stage == "imprint_stage1":
        settings = imprint._settings(imprint.Stage1Settings, run.recipe, stage, ("checkpoint", "dinov2"))
        assert settings.embedding_drop == 0.05 and settings.learning_rates["dinov2"] == 4e-6  # the paper's
    else:
        settings = imprint._settings(imprint.Stage2Settings, run.recipe, stage, ("checkpoint", "dinov2", "adapter",
                                                                                 "phase_steps"))
        assert settings.embedding_drop == 0.1 and tuple(settings.rates) == (PAPER_LARGER, PAPER_SMALLER)
        assert run.train.steps == 2 * settings.phase_steps, "the schedule ends after two phases"
    assert open_source(run.data)[0].origin.startswith("render")
