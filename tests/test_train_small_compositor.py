"""The small compositor recipe (issue 9) on renderer pairs at tiny size with the real TAEF2: the loss falls,
a checkpoint is written, resuming gives bit-identically the same next losses, the export loads through
Diorama Load Small Model and samples one KSampler step in the executor, and the ablation switches change the
model's input channels."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch

from recipe_runs import ShortRun, rendered_pairs
from diorama.training.recipes import small_compositor as sc
from diorama.training.recipes.small_unet import initial_unet_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
RUN = ShortRun(steps=20, checkpoint_every=10, batch_size=4)
DATA = {"kind": "rendered", "source_mode": "object", "count": 8, "size": 64, "seed": 0}


def recipe_section(**changes) -> dict:
    return {"taef2": "taef2", "image_size": 64, "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
            "learning_rate": 3e-3, **changes}


def new_recipe(**changes):
    return sc.create(recipe_section(**changes), torch.device("cpu"), torch.float32)



@pytest.fixture(scope="module")
def pairs(one_torch_thread) -> list:
    return rendered_pairs(DATA)


@pytest.fixture(scope="module")
def trained(one_torch_thread, taef2_models, pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("small_compositor")
    return out, RUN.train(new_recipe(), pairs, out)


def test_loss_falls_and_a_checkpoint_is_written(trained):
    out, result = trained
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    # A model that learns nothing stays at ‖ε‖² ≈ 1 (the zero-initialised output predicts ε̂ = 0), within ~2% over
    # 5 × 4 × 8 × 8 × 32 noise values; measured here: 0.89× after 20 steps from scratch.
    assert last < 0.93 * first, result.losses
    RUN.assert_checkpoints_written(out, result)


def test_resume_gives_the_same_next_losses(trained, pairs, tmp_path):
    out, result = trained
    RUN.assert_resume_repeats_the_next_losses(new_recipe, pairs, out, result, tmp_path)


@pytest.mark.parametrize("depth_hint, identity, channels", [(True, True, 32 + 1 + 32 + 1 + 32 + 1), (False, True, 98),
                                                             (True, False, 66), (False, False, 65)])
def test_ablation_switches_change_the_input_channels(depth_hint, identity, channels, taef2_models, pairs):
    """in = 32 noisy latent + 1 mask + 32 background + (1 depth hint) + (32 collage latent + 1 coverage); the UNet
    and the concat it trains with have them, and the export is named as the evaluation expects the variant."""
    recipe = new_recipe(depth_hint=depth_hint, identity=identity)
    assert recipe.config.unet["in_channels"] == channels
    assert recipe.config.concat_keys == ("mask", "concat_image")
    assert recipe.config.concat_image_channels == channels - 33
    assert recipe.network.input_blocks[0][0].weight.shape[1] == channels
    _, concat, _ = recipe._encoded(recipe._inputs(pairs[:1]))
    assert concat.shape[1] == channels - 32
    expected = {(True, True): "diorama_compositor", (False, True): "diorama_compositor_no_depth",
                (True, False): "diorama_compositor_no_identity"}.get((depth_hint, identity))
    if expected:
        assert sc.export_name(depth_hint, identity) == f"{expected}.safetensors"


def test_inputs_place_the_reference_in_the_box_and_cut_it_where_hidden(pairs):
    """The background is the clean plate (the target wherever the object is not); the blend box holds the
    object's whole silhouette in the target; the collage shows the object's source colours only inside the box
    (grey elsewhere) and never where Depth Fuse hides it; the hint is near = white."""
    for pair in pairs:
        inputs = sc.compositor_inputs(pair, 64)
        inside = inputs.blend > 0.5
        object_pixels = pair.target.mask_of(pair.object_id)
        assert bool(inside[object_pixels].all())  # the projected 3D box contains the silhouette
        torch.testing.assert_close(inputs.background, pair.target.clean_plate.permute(1, 2, 0))
        coverage = inputs.collage_coverage()
        assert coverage.amax() > 0.5 and not bool((coverage[~inside] > 0).any())
        assert bool((inputs.coverage >= coverage).all()) and inputs.visible.amin() >= 0 and inputs.visible.amax() <= 1
        image = sc.collage(inputs.colour, coverage)
        torch.testing.assert_close(image[coverage == 0], torch.full_like(image[coverage == 0], 0.5))
        source_colour = pair.source.image[:, pair.source.mask_of(pair.object_id)].mean(1)
        assert (inputs.colour[inputs.coverage > 0.99].mean(0) - source_colour).abs().amax() < 0.1
        assert inputs.hint.amin() >= 0 and 0.9 < inputs.hint.amax() <= 1


def test_an_object_hidden_in_front_is_cut_out_of_the_collage(pairs):
    """On the most occluded pair, Depth Fuse cuts part of the placed reference out of the collage, and where it
    does the target (the object really there) shows something else: what hides it."""
    pair = min(pairs, key=lambda p: p.extras["target_visible_fraction"])
    assert pair.extras["target_visible_fraction"] < 0.9  # the data holds an occluded placement
    inputs = sc.compositor_inputs(pair, 64)
    cut = (inputs.coverage > 0.99) & (inputs.visible < 0.01)
    assert cut.any()
    # ≥ 90%: the reference is another view, so its silhouette placed in the box differs at the edges
    assert (~pair.target.mask_of(pair.object_id))[cut].float().mean() >= 0.9


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"unknown keys \['depth'\]"):
        sc.SmallCompositorSettings.from_config({"depth": True})
    with pytest.raises(ValueError, match="expected a multiple of 16"):
        sc.SmallCompositorSettings.from_config(recipe_section(image_size=40))
    with pytest.raises(ValueError, match="expected true or false"):
        sc.SmallCompositorSettings.from_config(recipe_section(identity="yes"))


class CompositorConditioning:
    """Test-only graph node: one rendered pair's training inputs (compositor_inputs, as the recipe computed them) on
    the conditioning, so the executor samples the export on exactly what it trained on. Diorama Small Compositor
    Conditioning, which builds them from a graph's images, is checked against the same in
    test_small_compositor_node.py."""
    pair = None  # set by the test before the prompt runs

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "vae": ("VAE",)}}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    FUNCTION = "apply"
    CATEGORY = "testing"

    def apply(self, positive, negative, vae):
        import node_helpers

        inputs = sc.compositor_inputs(self.pair, 64)
        values = {"concat_latent_image": sc.concat_latent_image(vae, vae.encode(inputs.background[None]), inputs.hint[None],
                                                                inputs.colour[None], inputs.collage_coverage()[None]),
                  "concat_mask": inputs.blend[None, None]}
        return (node_helpers.conditioning_set_values(positive, values),
                node_helpers.conditioning_set_values(negative, values))


def test_export_loads_and_samples_one_step_in_the_executor(trained, pairs, base_dir, run_prompt, tiny_sd_models,
                                                           monkeypatch):
    """Through Diorama Load Small Model and KSampler in ComfyUI's executor; ComfyUI's concat_cond builds the UNet's
    extra channels from the conditioning exactly as the recipe trained them (the same tensor, checked)."""
    import nodes
    from test_small_models import sampling_prompt

    _, result = trained
    (exported,) = result.exported
    assert exported.name == "diorama_compositor.safetensors"
    folder = base_dir / "models" / "diorama_small_models"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(exported, folder / "trained_small_compositor.safetensors")
    monkeypatch.setattr(CompositorConditioning, "pair", pairs[0])
    monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, "TestCompositorConditioning", CompositorConditioning)
    prompt = sampling_prompt("trained_small_compositor.safetensors", "taef2", tiny_sd_models["checkpoint"])
    prompt["11"] = {"class_type": "TestCompositorConditioning",
                    "inputs": {"positive": ["3", 0], "negative": ["4", 0], "vae": ["7", 0]}}
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["6"]["inputs"].update(positive=["11", 0], negative=["11", 1])
    report = run_prompt(prompt)
    saved = report.outputs["9"]["latents"][0]
    latent = safetensors.torch.load_file(str(base_dir / "output" / saved["subfolder"] / saved["filename"]))
    assert latent["latent_tensor"].shape == (1, 32, 8, 8)
    assert torch.isfinite(latent["latent_tensor"]).all()

    # What the sampler hands the UNet as c_concat equals the recipe's training concat for the same pair.
    recipe = new_recipe()
    model = nodes.NODE_CLASS_MAPPINGS["DioramaLoadSmallModel"]().execute("trained_small_compositor.safetensors").result[0]
    (positive, negative) = CompositorConditioning().apply([[torch.zeros(1, 1, 768), {}]], [[torch.zeros(1, 1, 768), {}]],
                                                         recipe.vae)
    concat = model.model.concat_cond(noise=torch.zeros(1, 32, 8, 8), device=torch.device("cpu"),
                                     **positive[0][1])
    _, trained_concat, _ = recipe._encoded(recipe._inputs([pairs[0]]))
    torch.testing.assert_close(concat, trained_concat, atol=1e-5, rtol=0)


def test_shipped_config_reads_and_fits_the_size_limit():
    from diorama.training.config import load_config

    run = load_config(REPO / "training" / "configs" / "small_compositor.yaml")
    settings = sc.SmallCompositorSettings.from_config(run.recipe)
    config = sc.model_config(settings)
    state = initial_unet_state(config, settings.init_seed)
    assert sum(v.numel() for v in state.values()) * 4 <= 25 * 2**20
    assert settings.depth_hint and settings.identity
    assert run.data["seed"] != 90001 and run.validation["seed"] != 90001  # the evaluation's held-out seed


def test_condition_dropout_makes_inputs_absent_at_its_rate(pairs):
    """p = 1: every hint is all 0 with nothing cut from the collage, and nothing is placed (the evaluation's
    ablation inputs); p = 0: nothing changes; p = 0.5 over 400 draws: about half of each, independently."""
    inputs = [sc.compositor_inputs(pair, 64) for pair in pairs[:2]]

    def no_depth(item) -> bool:
        return bool((item.hint == 0).all()) and bool((item.visible == 1).all())

    def no_reference(item) -> bool:
        return bool((item.coverage == 0).all())

    dropped = sc.drop_conditions(inputs, 1.0, torch.Generator().manual_seed(0))
    assert all(no_depth(d) and no_reference(d) for d in dropped)
    assert all(torch.equal(d.background, i.background) for d, i in zip(dropped, inputs))
    kept = sc.drop_conditions(inputs, 0.0, torch.Generator().manual_seed(0))
    assert all(torch.equal(k.hint, i.hint) and torch.equal(k.visible, i.visible) and torch.equal(k.coverage, i.coverage)
               for k, i in zip(kept, inputs))
    many = sc.drop_conditions(inputs * 200, 0.5, torch.Generator().manual_seed(0))
    depth_absent = torch.tensor([no_depth(d) for d in many])
    reference_absent = torch.tensor([no_reference(d) for d in many])
    assert 0.4 < depth_absent.float().mean() < 0.6 and 0.4 < reference_absent.float().mean() < 0.6
    assert 0.15 < (depth_absent & reference_absent).float().mean() < 0.35
