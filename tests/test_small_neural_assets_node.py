"""Diorama Small Neural Assets Conditioning against the small Neural Assets recipe's training code path (what the
model learned to read) on the renderer's "moved" pairs, its camera handling (one view only; a camera of another
image size scaled), its window cropping, batches, its input errors, one KSampler step in the executor, and the
evaluation's learned Neural Assets row with a random-weight model, all with the real TAEF2."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import tiny_sd
from recipe_runs import rendered_pairs
from diorama.ops import assets as A
from diorama.training.recipes import small_neural_assets as na

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 64
# margin_px 4 at 64² is the node's default 8 at 128²
RECIPE = {"taef2": "taef2", "image_size": SIZE, "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
          "margin_px": 4}
MOVED = {"kind": "rendered", "source_mode": "moved", "count": 2, "seed": 0}


@pytest.fixture(scope="module")
def recipe(taef2_models):
    return na.create(RECIPE, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def pairs(one_torch_thread) -> list:
    return rendered_pairs({**MOVED, "size": SIZE})


def scene_of(pair) -> tuple[A.Assets, int]:
    """The pair as a graph gives it: every object at its target pose with its box in the source frame, the one
    camera as source and target; and the moved object's index."""
    objects = tuple(replace(after, source_box=before.source_box)
                    for before, after in zip(pair.source.boxes3d, pair.target.boxes3d))
    camera = pair.target.camera
    return A.Assets(objects, camera, camera), pair.target.instance_ids.index(pair.object_id)


def source_image(pair) -> torch.Tensor:
    return pair.source.image.permute(1, 2, 0)[None]


def conditioning(node_class, vae, source, assets, index, margin_px=8.0, window=None):
    return node_class("DioramaSmallNeuralAssetsConditioning").execute(vae, source, assets, index, margin_px,
                                                                       window=window).result


def unet_concat(recipe, positive, latent_hw: tuple[int, int], batch: int) -> torch.Tensor:
    """What ComfyUI's BaseModel.concat_cond hands the UNet for this conditioning (the model's latent format
    applied, the mask resized to the latent grid)."""
    return recipe.unet.model.concat_cond(noise=torch.zeros(batch, 32, *latent_hw), device=torch.device("cpu"),
                                         **positive[0][1])


def write_random_model(path: Path, seed: int = 0) -> str:
    """A small Neural Assets model of the recipe's layout with random weights everywhere (the recipe's own initial
    weights have zero output layers, which would predict ε = 0 whatever the inputs)."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from diorama.loaders.small_model import save_small_model, unet_arguments
    from diorama.training.recipes.small_unet import conv_unet_config

    config = conv_unet_config(na.SmallNeuralAssetsSettings.from_config(RECIPE), na.CONCAT_IMAGE_CHANNELS, na.NAME)
    unet = tiny_sd.initialise(UNetModel(**unet_arguments(config), operations=comfy.ops.disable_weight_init), seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_small_model(str(path), unet.state_dict(), config)
    return path.name


def test_concat_equals_the_training_concat_of_moved_pairs(recipe, pairs, node_class):
    """Golden: the recipe's own training path (neural_assets_inputs → _encoded) for the same pairs."""
    for pair in pairs:
        assets, index = scene_of(pair)
        positive, negative, latent, blend = conditioning(node_class, recipe.vae, source_image(pair), assets, index)
        inputs = recipe._inputs([pair])
        _, trained, _ = recipe._encoded(inputs)
        torch.testing.assert_close(unet_concat(recipe, positive, (8, 8), 1), trained, atol=1e-5, rtol=0)
        assert positive[0][1]["concat_latent_image"].shape == (1, 66, 8, 8)
        # The model learned no absent input: the negative is the same inputs (cfg has nothing else to push from).
        for key in ("concat_latent_image", "concat_mask"):
            assert torch.equal(negative[0][1][key], positive[0][1][key])
        torch.testing.assert_close(blend, inputs[0].planes.blend[None], atol=0, rtol=0)
        # The LATENT is the encoded source frame, without a noise mask.
        assert set(latent) == {"samples"}
        torch.testing.assert_close(latent["samples"], recipe.vae.encode(source_image(pair)), atol=1e-5, rtol=0)


def test_resize_camera_keeps_every_projection_and_matches_a_render_at_that_size(pairs):
    """Closed form: (u, v) fractions are unchanged; and the renderer's own camera of the same scene at half the size."""
    camera = pairs[0].target.camera
    half = A.resize_camera(camera, SIZE // 2, SIZE // 2)
    corners = A.to_camera(A.box_corners(pairs[0].target.boxes3d[0]), camera)
    torch.testing.assert_close(A.project(corners, half), A.project(corners, camera), atol=1e-12, rtol=0)
    small = rendered_pairs({**MOVED, "count": 1, "size": SIZE // 2})[0]
    assert small.target.camera.world_to_camera == camera.world_to_camera  # the same scene drawn at both sizes
    torch.testing.assert_close(torch.tensor(half.intrinsics), torch.tensor(small.target.camera.intrinsics))
    wide = A.resize_camera(camera, SIZE, 2 * SIZE)
    assert wide.image_hw == (SIZE, 2 * SIZE) and wide.intrinsics[0][0] == 2 * camera.intrinsics[0][0]


def test_a_camera_of_another_image_size_is_scaled_to_the_source(recipe, pairs, node_class):
    """The scene's camera written for 128² (e.g. Assets From JSON) and a 64² photo: the same inputs as its 64² camera."""
    assets, index = scene_of(pairs[0])
    big = A.resize_camera(assets.target_camera, 2 * SIZE, 2 * SIZE)
    expected = conditioning(node_class, recipe.vae, source_image(pairs[0]), assets, index)
    scaled = conditioning(node_class, recipe.vae, source_image(pairs[0]), replace(assets, source_camera=big,
                                                                                  target_camera=big), index)
    for key in ("concat_latent_image", "concat_mask"):
        torch.testing.assert_close(scaled[0][0][1][key], expected[0][0][1][key], atol=1e-6, rtol=0)
    torch.testing.assert_close(scaled[3], expected[3], atol=0, rtol=0)


def test_a_batch_of_photos_equals_each_photo_alone(recipe, pairs, node_class):
    assets, index = scene_of(pairs[0])
    photos = torch.cat((source_image(pairs[0]), source_image(pairs[0]).flip(2)))
    batched = conditioning(node_class, recipe.vae, photos, assets, index)
    assert batched[3].shape == (2, SIZE, SIZE)
    for item in (0, 1):
        alone = conditioning(node_class, recipe.vae, photos[item:item + 1], assets, index)
        for key in ("concat_latent_image", "concat_mask"):
            torch.testing.assert_close(batched[0][0][1][key][item:item + 1], alone[0][0][1][key], atol=1e-5, rtol=0)
        torch.testing.assert_close(batched[2]["samples"][item:item + 1], alone[2]["samples"], atol=1e-5, rtol=0)


def test_whole_image_window_at_the_trained_size_reads_as_the_training_at_that_size(recipe, pairs, node_class):
    """The same scene rendered at 128² and sampled through a 'whole image' window at 64²: the planes the model
    reads match the training path's planes of the 64² render (the renderer draws each size itself, so the
    planes' edges may differ by a pixel), and the source latent is the window crop's (Crop To Window)."""
    pair, big = pairs[0], rendered_pairs({**MOVED, "count": 1, "size": 2 * SIZE})[0]
    assert big.target.camera.world_to_camera == pair.target.camera.world_to_camera  # the same scene at both sizes
    assets, index = scene_of(big)
    window = node_class("DioramaCompositeWindow").execute(source_image(big), 1.0, SIZE, vae=recipe.vae,
                                                          area="whole image").result[0]
    assert window.sample_hw == (SIZE, SIZE)
    positive, _, latent, blend = conditioning(node_class, recipe.vae, source_image(big), assets, index, window=window)
    assert blend.shape == (1, 2 * SIZE, 2 * SIZE)
    concat = unet_concat(recipe, positive, (8, 8), 1)
    _, trained, _ = recipe._encoded(recipe._inputs([pair]))
    assert (concat[:, 0] != trained[:, 0]).float().mean() < 0.05  # the latent blend mask
    assert (concat[:, 33:35] - trained[:, 33:35]).abs().mean() < 0.02  # source box and pose hint, area-averaged
    cropped = node_class("DioramaCropToWindow").execute(window, image=source_image(big)).result[0]
    torch.testing.assert_close(latent["samples"], recipe.vae.encode(cropped), atol=1e-5, rtol=0)


def test_window_around_the_object_crops_the_planes_as_crop_to_window(recipe, pairs, node_class):
    """A window made from the node's own blend_mask: the concat_mask is Crop To Window's crop of the blend_mask the
    node gives with this window (0/1), the latent the crop's, the size the window's sampling size. The margin
    follows the sampled region: a window smaller than the photo has a narrower blend region in photo pixels."""
    pair = pairs[1]
    assets, index = scene_of(pair)
    *_, blend = conditioning(node_class, recipe.vae, source_image(pair), assets, index)
    window = node_class("DioramaCompositeWindow").execute(source_image(pair), 1.2, 48, mask=blend,
                                                          vae=recipe.vae).result[0]
    positive, _, latent, windowed_blend = conditioning(node_class, recipe.vae, source_image(pair), assets, index,
                                                       window=window)
    crop = node_class("DioramaCropToWindow")
    assert window.area.shape[0] * window.area.shape[1] < SIZE * SIZE
    assert bool((windowed_blend <= blend).all()) and windowed_blend.sum() < blend.sum()
    expected_mask = (crop.execute(window, mask=windowed_blend).result[1] > 0.5).float()
    torch.testing.assert_close(positive[0][1]["concat_mask"][:, 0], expected_mask, atol=0, rtol=0)
    torch.testing.assert_close(latent["samples"], recipe.vae.encode(crop.execute(window, image=source_image(pair))
                                                                    .result[0]), atol=1e-5, rtol=0)
    factor = 8
    assert positive[0][1]["concat_latent_image"].shape[-2:] == (window.sample_hw[0] // factor,
                                                                window.sample_hw[1] // factor)


class FourChannelVae:
    latent_channels = 4


def bad_cases(pair) -> list:
    assets, index = scene_of(pair)
    moved_camera = A.move_camera(assets, (0.5, 0.0, 0.0), 0.1, 0.0, 0.0)
    transferred = A.transfer_object(assets, assets, index, source_image(pair)[0])
    pose = torch.tensor(assets.target_camera.world_to_camera, dtype=torch.float64)
    behind = A.camera_position(assets.target_camera) - 5 * pose[2, :3]  # 5 m behind the camera, not in the photo
    off_view = replace(assets, objects=(A.Asset(tuple(behind.tolist()), (1.0, 1.0, 1.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
                                                (0, 0, 0, 0)),))
    return [
        ({"assets": moved_camera}, "source and target cameras differ"),
        ({"index": len(assets.objects)}, "out of range"),
        ({"assets": transferred, "index": len(transferred.objects) - 1}, "takes its appearance from another image"),
        ({"source": torch.rand(1, 60, 64, 3)}, "multiples of 8"),
        ({"vae": FourChannelVae()}, "4-channel latents"),
        ({"assets": off_view, "index": 0}, "nothing to move"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_bad_inputs_are_refused_naming_what_is_wrong(recipe, pairs, node_class, case):
    change, message = bad_cases(pairs[0])[case]
    assets, index = scene_of(pairs[0])
    inputs = {"vae": recipe.vae, "source": source_image(pairs[0]), "assets": assets, "index": index,
              "margin_px": 8.0, **change}
    with pytest.raises(ValueError, match=message):
        node_class("DioramaSmallNeuralAssetsConditioning").execute(**inputs)


def test_blend_region_outside_the_window_is_refused(recipe, pairs, node_class):
    pair = pairs[0]
    assets, index = scene_of(pair)
    *_, blend = conditioning(node_class, recipe.vae, source_image(pair), assets, index)
    elsewhere = torch.zeros(1, SIZE, SIZE)
    corner = (slice(0, 8), slice(0, 8)) if not bool(blend[0, :16, :16].any()) else (slice(56, 64), slice(56, 64))
    elsewhere[(0, *corner)] = 1
    assert not bool(blend[0][corner].any())
    window = node_class("DioramaCompositeWindow").execute(source_image(pair), 1.0, 32, mask=elsewhere,
                                                          vae=recipe.vae).result[0]
    with pytest.raises(ValueError, match="outside the window"):
        conditioning(node_class, recipe.vae, source_image(pair), assets, index, window=window)


def test_one_ksampler_step_in_the_executor(taef2_models, base_dir, run_prompt, pairs):
    """Load Image + Assets From JSON → the node → Set Latent Noise Mask → KSampler with a random-weight model →
    VAE Decode → Image Composite Masked through blend_mask: outside the blend region the photo is unchanged."""
    import folder_paths
    from diorama.evaluate import assets_json, _save_png

    pair = pairs[0]
    assets, index = scene_of(pair)
    name = write_random_model(base_dir / "models" / "diorama_small_models" / "random_neural_assets.safetensors")
    photo = _save_png(source_image(pair)[0], Path(folder_paths.get_input_directory()) / "na_node_test.png")
    prompt = {
        "photo": {"class_type": "LoadImage", "inputs": {"image": photo}},
        "assets": {"class_type": "DioramaAssetsFromJSON",
                   "inputs": {"json": assets_json(assets.target_camera, assets.objects[index])}},
        "vae": {"class_type": "DioramaLoadTinyAutoencoder", "inputs": {"name": "taef2"}},
        "model": {"class_type": "DioramaLoadSmallModel", "inputs": {"model_name": name}},
        "cond": {"class_type": "DioramaSmallNeuralAssetsConditioning", "inputs": {
            "vae": ["vae", 0], "source": ["photo", 0], "assets": ["assets", 0], "index": 0, "margin_px": 8.0}},
        "noise_mask": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["cond", 2], "mask": ["cond", 3]}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["model", 0], "positive": ["cond", 0], "negative": ["cond", 1], "latent_image": ["noise_mask", 0],
            "seed": 0, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "paste": {"class_type": "ImageCompositeMasked", "inputs": {
            "destination": ["photo", 0], "source": ["decode", 0], "x": 0, "y": 0, "resize_source": False,
            "mask": ["cond", 3]}},
        "out": {"class_type": "PreviewImage", "inputs": {"images": ["paste", 0]}},
    }
    report = run_prompt(prompt)
    assert len(report.outputs["out"]["images"]) == 1


def test_eval_row_of_the_learned_neural_assets_runs_on_two_scenes(small_models_folder, monkeypatch):
    import diorama.evaluate as E
    from diorama.ops.neural_asset_planes import pose_planes

    _, scenes = E.held_out_scenes(3, SIZE)
    assert len(scenes) == 2
    assert E.neural_assets_missing(SIZE) == f"needs a trained model ({E.NEURAL_ASSETS_MODEL})"
    write_random_model(small_models_folder / E.NEURAL_ASSETS_MODEL)
    assert E.neural_assets_missing(SIZE) is None

    outputs = []
    run_neural_assets = E.run_neural_assets

    def recorded(scenes_run):
        outputs.extend(run_neural_assets(scenes_run))
        return outputs

    monkeypatch.setattr(E, "run_neural_assets", recorded)
    monkeypatch.setattr(E, "compositor_missing", lambda size: "not run here")
    rows = dict(E.evaluate(scenes[:1], scenes))
    for name in ("learned Neural Assets", "reuse source frame"):
        # inf where the rest of the frame is exactly the target's (no shadow moved out there)
        assert not any(math.isnan(rows[name][c]) for c in ("NA box PSNR", "NA rest PSNR")), name
    assert len(outputs) == 2
    for scene, frame in zip(scenes, outputs):
        blend = pose_planes(scene.neural_asset, scene.camera, round(E.NEURAL_ASSETS_MARGIN_PX * SIZE / 128)).blend > 0.5
        source = (scene.source_frame * 255).round() / 255  # as the graph read it from its PNG
        assert torch.equal(frame[~blend], source[~blend])
        assert (frame[blend] - source[blend]).abs().amax() > 0.05  # the model painted the blend region
