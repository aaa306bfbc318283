"""Diorama Small Compositor Conditioning against the small compositor's training code path (what the model learned
to read), its absent inputs, its window cropping against Crop To Window, its input errors, one KSampler step in the
executor, and the evaluation's learned-compositor rows with a random-weight compositor, all with the real TAEF2."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import tiny_sd
from recipe_runs import rendered_pairs
from diorama.training.recipes import small_compositor as sc

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 64
RECIPE = {"taef2": "taef2", "image_size": SIZE, "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1}


@pytest.fixture(scope="module")
def recipe(taef2_models):
    return sc.create(RECIPE, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def pairs(one_torch_thread) -> list:
    return rendered_pairs({"kind": "rendered", "source_mode": "object", "count": 2, "size": SIZE, "seed": 0})


def write_random_compositor(path: Path, seed: int = 0) -> str:
    """A compositor of the recipe's layout (66 concat-image channels) with random weights everywhere (the recipe's
    own initial weights have zero output layers, which would predict ε = 0 whatever the inputs)."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from diorama.loaders.small_model import save_small_model, unet_arguments

    config = sc.model_config(sc.SmallCompositorSettings.from_config(RECIPE))
    unet = tiny_sd.initialise(UNetModel(**unet_arguments(config), operations=comfy.ops.disable_weight_init), seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_small_model(str(path), unet.state_dict(), config)
    return path.name


def node_inputs(node_class, pairs: list) -> dict:
    """Rendered pairs as the evaluation's graph gives them: the target's clean plate as background, the box of the
    object's projected 3D box as blend mask, Diorama Placement From Box at its centre depth and Diorama Depth
    Fuse's depth hint and visible mask (one pair per call: Depth Fuse scales a batch's hints together), the
    source frame and the object's mask there."""
    from diorama.ops.depth_map import DepthMap
    from diorama.ops.eval_metrics import box_mask
    from diorama.training.data.insertion import finite_depth, insertion_of

    def fused(pair) -> tuple[torch.Tensor, torch.Tensor]:
        insertion = insertion_of(pair)
        x0, y0, x1, y1 = insertion.box
        placement = node_class("DioramaPlacementFromBox").execute(
            pair.target.clean_plate.permute(1, 2, 0)[None], x0, y0, x1, y1, "pixels", "value", insertion.depth,
            "metric").result[0]
        _, visible, hint = node_class("DioramaDepthFuse").execute(
            DepthMap(insertion.background_depth[None], "metric"), DepthMap(finite_depth(pair.source.depth)[None], "metric"),
            pair.source.mask_of(pair.object_id).float()[None], placement).result
        return hint, visible

    depth = [fused(p) for p in pairs]
    return {
        "background": torch.stack([p.target.clean_plate.permute(1, 2, 0) for p in pairs]),
        "blend_mask": torch.stack([box_mask(insertion_of(p).box, SIZE, SIZE).float() for p in pairs]),
        "depth_hint": torch.cat([hint for hint, _ in depth]),
        "visible_mask": torch.cat([visible for _, visible in depth]),
        "reference": torch.stack([p.source.image.permute(1, 2, 0) for p in pairs]),
        "reference_mask": torch.stack([p.source.mask_of(p.object_id).float() for p in pairs]),
    }


def conditioning(node_class, vae, **inputs):
    return node_class("DioramaSmallCompositorConditioning").execute(vae, **inputs).result


def unet_concat(recipe, positive, latent_hw: tuple[int, int], batch: int) -> torch.Tensor:
    """What ComfyUI's BaseModel.concat_cond hands the UNet for this conditioning (the model's latent format
    applied, the mask resized to the latent grid)."""
    return recipe.unet.model.concat_cond(noise=torch.zeros(batch, 32, *latent_hw), device=torch.device("cpu"),
                                         **positive[0][1])


def test_concat_equals_the_training_concat_of_rendered_pairs(recipe, pairs, node_class):
    """Golden: the recipe's own training path (compositor_inputs → _encoded) for the same two pairs, as one batch."""
    positive, negative, latent = conditioning(node_class, recipe.vae, **node_inputs(node_class, pairs))
    _, trained, _ = recipe._encoded(recipe._inputs(pairs))
    torch.testing.assert_close(unet_concat(recipe, positive, (8, 8), 2), trained, atol=1e-5, rtol=0)
    assert positive[0][1]["concat_latent_image"].shape == (2, 66, 8, 8)
    # The LATENT is the background with the collage pasted in (what denoise < 1 starts from), without a noise mask.
    assert set(latent) == {"samples"}
    inputs = recipe._inputs(pairs)
    pasted = torch.stack([sc.collage(i.colour, i.collage_coverage(), i.background) for i in inputs])
    torch.testing.assert_close(latent["samples"], recipe.vae.encode(pasted), atol=1e-5, rtol=0)
    background = torch.stack([i.background for i in inputs])
    assert not torch.allclose(latent["samples"], recipe.vae.encode(background), atol=1e-3)


def test_absent_inputs_are_what_condition_dropout_trained(recipe, pairs, node_class):
    """No depth: the recipe's absent hint (all 0); no reference: an all-grey collage with zero coverage; the
    negative has both absent and the positive's background and mask."""
    from diorama.training.recipes.small_compositor import drop_conditions

    inputs = node_inputs(node_class, pairs[:1])
    given = {k: inputs[k] for k in ("background", "blend_mask")}
    positive, negative, _ = conditioning(node_class, recipe.vae, **given)
    both_dropped = drop_conditions(recipe._inputs(pairs[:1]), 1.0, torch.Generator().manual_seed(0))
    _, trained, _ = recipe._encoded(both_dropped)
    torch.testing.assert_close(unet_concat(recipe, positive, (8, 8), 1), trained, atol=1e-5, rtol=0)
    concat = positive[0][1]["concat_latent_image"]
    assert torch.equal(concat[:, 32], torch.zeros_like(concat[:, 32])) and torch.equal(concat[:, 65], concat[:, 32])
    torch.testing.assert_close(concat[:, 33:65], recipe.vae.encode(torch.full((1, SIZE, SIZE, 3), 0.5)), atol=1e-6, rtol=0)

    full_positive, full_negative, _ = conditioning(node_class, recipe.vae, **inputs)
    torch.testing.assert_close(full_negative[0][1]["concat_latent_image"], concat, atol=1e-6, rtol=0)
    assert not torch.allclose(full_positive[0][1]["concat_latent_image"][:, 32:], concat[:, 32:], atol=1e-3)
    assert torch.equal(full_negative[0][1]["concat_mask"], full_positive[0][1]["concat_mask"])


def test_window_crops_every_input_as_crop_to_window(recipe, pairs, node_class):
    """With a window the node equals the node without one fed Crop To Window's crops (Composite Sample's crop);
    the reference (another view, not on the background's canvas) is placed into the cropped blend mask's box."""
    inputs = node_inputs(node_class, pairs)
    big = {**inputs, **{k: torch.nn.functional.interpolate(inputs[k].movedim(-1, 1), size=(96, 128), mode="bilinear")
                        .movedim(1, -1) for k in ("background", "depth_hint")},
           **{k: torch.nn.functional.interpolate(inputs[k][:, None], size=(96, 128))[:, 0]
              for k in ("blend_mask", "visible_mask")}}
    window = node_class("DioramaCompositeWindow").execute(big["background"], 1.6, 64, mask=big["blend_mask"],
                                                          vae=recipe.vae).result[0]
    assert window.sample_hw != (96, 128)
    crop = node_class("DioramaCropToWindow")
    cropped = {"background": crop.execute(window, image=big["background"]).result[0],
               "blend_mask": crop.execute(window, mask=big["blend_mask"]).result[1],
               "depth_hint": crop.execute(window, image=big["depth_hint"]).result[0],
               "visible_mask": crop.execute(window, mask=big["visible_mask"]).result[1]}
    windowed = conditioning(node_class, recipe.vae, **big, window=window)
    plain = conditioning(node_class, recipe.vae, **{**big, **cropped})
    for index in (0, 1):
        for key in ("concat_latent_image", "concat_mask"):
            torch.testing.assert_close(windowed[index][0][1][key], plain[index][0][1][key], atol=1e-6, rtol=0)
    torch.testing.assert_close(windowed[2]["samples"], plain[2]["samples"], atol=1e-6, rtol=0)
    assert windowed[0][0][1]["concat_latent_image"].shape[-2:] == (window.sample_hw[0] // 8, window.sample_hw[1] // 8)


class FourChannelVae:
    latent_channels = 4


@pytest.mark.parametrize("change, message", [
    ({"background": torch.rand(2, 60, 64, 3), "blend_mask": torch.ones(2, 60, 64), "depth_hint": None,
      "visible_mask": None}, "multiples of 8"),
    ({"blend_mask": torch.ones(1, 32, 32)}, "they must have the same width and height"),
    ({"blend_mask": torch.zeros(1, SIZE, SIZE)}, "blend_mask: mask is empty"),
    ({"depth_hint": torch.rand(1, 32, 32, 3)}, "depth_hint is 32x32 px"),
    ({"visible_mask": torch.rand(1, 32, 32)}, "visible_mask is 32x32 px"),
    ({"visible_mask": None}, "connect both depth_hint and visible_mask"),
    ({"reference_mask": None}, "connect both reference and reference_mask"),
    ({"reference_mask": torch.zeros(1, SIZE, SIZE)}, "reference_mask: mask is empty"),
    ({"reference": torch.rand(3, SIZE, SIZE, 3), "reference_mask": torch.ones(3, SIZE, SIZE)}, "batch sizes do not match"),
    ({"vae": FourChannelVae()}, "4-channel latents"),
])
def test_bad_inputs_are_refused_naming_what_is_wrong(recipe, pairs, node_class, change, message):
    inputs = {"vae": recipe.vae, **node_inputs(node_class, pairs), **change}
    with pytest.raises(ValueError, match=message):
        node_class("DioramaSmallCompositorConditioning").execute(**inputs)


def test_blend_mask_outside_the_window_is_refused(recipe, pairs, node_class):
    inputs = node_inputs(node_class, pairs[:1])
    elsewhere = torch.zeros(1, SIZE, SIZE)
    elsewhere[0, :8, :8] = 1
    window = node_class("DioramaCompositeWindow").execute(inputs["background"], 1.0, 32, mask=elsewhere,
                                                          vae=recipe.vae).result[0]
    inputs["blend_mask"] = torch.zeros(1, SIZE, SIZE)
    inputs["blend_mask"][0, 40:60, 40:60] = 1
    with pytest.raises(ValueError, match="outside the window"):
        conditioning(node_class, recipe.vae, **inputs, window=window)


def test_one_ksampler_step_in_the_executor(taef2_models, base_dir, run_prompt):
    """Bundled scene → Depth Fuse → the node → Set Latent Noise Mask → KSampler with a random-weight compositor."""
    name = write_random_compositor(base_dir / "models" / "diorama_small_models" / "random_compositor.safetensors")
    prompt = {
        "scene": {"class_type": "DioramaBundledScene", "inputs": {"width": 96, "height": 64, "reference_size": 64}},
        "fuse": {"class_type": "DioramaDepthFuse", "inputs": {"background_depth": ["scene", 1], "object_depth": ["scene", 4],
                                                              "object_mask": ["scene", 3], "placement": ["scene", 5]}},
        "box": {"class_type": "DioramaShapeMask", "inputs": {"object_mask": ["scene", 3], "placement": ["scene", 5],
                                                             "level": 0}},
        "vae": {"class_type": "DioramaLoadTinyAutoencoder", "inputs": {"name": "taef2"}},
        "model": {"class_type": "DioramaLoadSmallModel", "inputs": {"model_name": name}},
        "cond": {"class_type": "DioramaSmallCompositorConditioning", "inputs": {
            "vae": ["vae", 0], "background": ["scene", 0], "blend_mask": ["box", 0], "depth_hint": ["fuse", 2],
            "visible_mask": ["fuse", 1], "reference": ["scene", 2], "reference_mask": ["scene", 3]}},
        "noise_mask": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["cond", 2], "mask": ["box", 0]}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["model", 0], "positive": ["cond", 0], "negative": ["cond", 1], "latent_image": ["noise_mask", 0],
            "seed": 0, "steps": 1, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "out": {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}},
    }
    report = run_prompt(prompt)
    assert len(report.outputs["out"]["images"]) == 1


def test_eval_rows_of_the_compositor_run_on_two_scenes(small_models_folder, monkeypatch):
    import diorama.evaluate as E
    from diorama.ops.eval_metrics import box_mask

    scenes, _ = E.held_out_scenes(2, SIZE)
    assert E.compositor_missing(SIZE) == "needs a trained model (diorama_compositor.safetensors)"
    write_random_compositor(small_models_folder / E.COMPOSITOR_MODEL)
    assert E.compositor_missing(SIZE) is None
    assert E.compositor_missing(60) == "needs --size a multiple of 8"

    outputs = {}

    def recorded(scenes_run):
        outputs.update(run_compositor(scenes_run))
        return outputs

    run_compositor = E.run_compositor
    monkeypatch.setattr(E, "run_compositor", recorded)
    rows = dict(E.evaluate(scenes, []))
    assert set(outputs) == set(E.COMPOSITOR_ROWS.values())
    for name, key in E.COMPOSITOR_ROWS.items():
        assert all(math.isfinite(rows[name][c]) for c in ("PSNR box", "PSNR all", "SSIM box", "SSIM all", "identity"))
        for scene, composite in zip(scenes, outputs[key]):
            outside = ~box_mask(scene.box, SIZE, SIZE)
            background = (scene.background * 255).round() / 255  # as the graph read it from its PNG
            assert torch.equal(composite[outside], background[outside]), name
            assert (composite[~outside] - background[~outside]).abs().amax() > 0.05, name  # the model painted the box
    # One graph per scene serves the four rows: the rows differ only in what the model was given.
    assert not torch.equal(outputs["learned"][0], outputs["no_reference"][0])
