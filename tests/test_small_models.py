"""TAEF2 as a ComfyUI VAE (the real pretrained files) and Diorama small models (config in the safetensors
metadata) loaded through their nodes and sampled by ComfyUI's own KSampler and Composite Sample."""
from __future__ import annotations

import json
from pathlib import Path

import numpy
import pytest
import safetensors.torch
import torch

import shared_models
import tiny_sd

TINY_UNET = dict(model_channels=32, num_res_blocks=[1], channel_mult=[1], transformer_depth=[1],
                 transformer_depth_output=[1, 1], transformer_depth_middle=1, num_heads=4, context_dim=768)
INPAINT_KEYS = ["mask", "masked_image"]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def render(size: int) -> torch.Tensor:
    from diorama.ops import bundled_scene

    return bundled_scene.render_truth(size, size).rgb[None]


CONCAT_IMAGE_KEYS = ["mask", "concat_image"]  # as the shipped models, with a 4-channel concat image
CONCAT_IMAGE_CHANNELS = 4
IN_CHANNELS = {(): 32, tuple(INPAINT_KEYS): 32 + 1 + 32, tuple(CONCAT_IMAGE_KEYS): 32 + 1 + CONCAT_IMAGE_CHANNELS}


def small_config(concat_keys: list[str] | None = None) -> dict:
    keys = concat_keys or []
    config = {"unet": {**TINY_UNET, "in_channels": IN_CHANNELS[tuple(keys)], "out_channels": 32}, "model_type": "eps",
              "latent_format": "taef2", "latent_scale": 1.35, "concat_keys": keys}
    if "concat_image" in keys:
        config["concat_image_channels"] = CONCAT_IMAGE_CHANNELS
    return config


def random_unet_state(config: dict, seed: int) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from diorama.loaders.small_model import parse_config, unet_arguments

    unet = UNetModel(**unet_arguments(parse_config(config)), operations=comfy.ops.disable_weight_init)
    return tiny_sd.initialise(unet, seed).state_dict()


@pytest.fixture(scope="module")
def vae_approx(base_dir) -> Path:
    return shared_models.link_taef2(base_dir / "models" / "vae_approx")


@pytest.fixture(scope="module")
def taef2(vae_approx, node_class):
    return node_class("DioramaLoadTinyAutoencoder").execute("taef2").result[0]


@pytest.fixture(scope="module")
def small_models(base_dir) -> dict[str, str]:
    from diorama.loaders.small_model import save_small_model

    folder = base_dir / "models" / "diorama_small_models"
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for kind, keys in (("plain", None), ("inpaint", INPAINT_KEYS), ("concat_image", CONCAT_IMAGE_KEYS)):
        config = small_config(keys)
        save_small_model(str(folder / f"tiny_{kind}.safetensors"), random_unet_state(config, 3), config)
        names[kind] = f"tiny_{kind}.safetensors"
    return names


def test_taef2_layout_matches_the_real_files():
    """Every key and shape of the real encoder/decoder, and ComfyUI's TAESD lacks exactly the pooled branches."""
    from comfy.taesd.taesd import Decoder, Encoder
    from diorama.loaders.model_folders import read_safetensors_layout
    from diorama.loaders.taef2 import expected_layout

    root = shared_models.taef2_dir()
    for part, stock in (("encoder", Encoder(32)), ("decoder", Decoder(32))):
        real = {k: tuple(v.shape) for k, v in read_safetensors_layout(str(root / f"taef2_{part}.safetensors")).items()}
        assert expected_layout(part) == real
        assert len(real) == 79
        pooled = {k for k in real if ".pool." in k}
        assert {k.split(".")[0] for k in pooled} == ({"11", "12", "13"} if part == "encoder" else {"3", "4", "5"})
        assert set(real) - set(stock.state_dict()) == pooled


def test_real_taef2_round_trips_a_render_and_random_weights_do_not(taef2, node_class):
    """README of the weights: ~31 dB on a 256² image, ~5 dB for random weights of the same architecture."""
    import comfy.sd
    from diorama.loaders.taef2 import Taef2, Taef2VAE

    image = render(256)
    with torch.inference_mode():
        latent = node_class("VAEEncode")().encode(taef2, image)[0]["samples"]
        decoded = node_class("VAEDecode")().decode(taef2, {"samples": latent})[0]
    assert latent.shape == (1, 32, 32, 32)
    assert decoded.shape == image.shape
    assert psnr(decoded, image) >= 28.0

    random_vae = Taef2VAE(tiny_sd.initialise(Taef2(), 0))
    with torch.inference_mode():
        random_decoded = random_vae.decode(random_vae.encode(image[:, 64:192, 64:192]))
    assert psnr(random_decoded, image[:, 64:192, 64:192]) <= 10.0

    # Everything ComfyUI's own VAE constructor sets for an image VAE is set here too.
    stock = comfy.sd.VAE(sd=tiny_sd.taesd_state_dict(0))
    assert set(vars(stock)) <= set(vars(taef2))
    assert taef2.spacial_compression_encode() == 8 and taef2.latent_channels == 32


def test_taef2_loader_lists_pairs_and_refuses_wrong_files(vae_approx, node_class, base_dir):
    loader = node_class("DioramaLoadTinyAutoencoder")
    spec = loader.INPUT_TYPES()["required"]["name"]
    assert "taef2" in (spec[1]["options"] if spec[0] == "COMBO" else spec[0])
    # A half pair is not listed and, asked for by name, is refused naming what is missing.
    lonely = vae_approx / "taef2_lonely_encoder.safetensors"
    lonely.symlink_to(shared_models.taef2_dir() / "taef2_encoder.safetensors")
    swapped = {"taef2_swapped_encoder": "taef2_decoder", "taef2_swapped_decoder": "taef2_encoder"}
    for name, source in swapped.items():
        (vae_approx / f"{name}.safetensors").symlink_to(shared_models.taef2_dir() / f"{source}.safetensors")
    try:
        with pytest.raises(FileNotFoundError, match="taef2_lonely_decoder.safetensors"):
            loader.execute("taef2_lonely")
        with pytest.raises(ValueError, match="not a TAEF2 encoder"):
            loader.execute("taef2_swapped")
        with pytest.raises(ValueError, match="refused"):
            loader.execute("../taef2")
    finally:
        lonely.unlink()
        for name in swapped:
            (vae_approx / f"{name}.safetensors").unlink()


def test_latent_preview_of_a_render_resembles_it(taef2, small_models, node_class, monkeypatch):
    """The previewer KSampler picks for a small model, on a render not used to fit its factors."""
    import latent_preview
    from comfy.cli_args import LatentPreviewMethod
    from diorama.ops import bundled_scene

    model = node_class("DioramaLoadSmallModel").execute(small_models["plain"]).result[0]
    fmt = model.model.latent_format  # scale 1.35: previews see model-space latents, the scale is folded in
    monkeypatch.setattr(latent_preview.args, "preview_method", LatentPreviewMethod.Auto)  # as with --preview-method auto
    previewer = latent_preview.get_previewer(model.load_device, fmt)
    assert type(previewer).__name__ == "Latent2RGBPreviewer"
    image = bundled_scene.render_background(192, 128).rgb[None]
    with torch.inference_mode():
        model_space = fmt.process_in(taef2.encode(image))
    preview = torch.from_numpy(numpy.array(previewer.decode_latent_to_preview(model_space))).float() / 255
    target = torch.nn.functional.avg_pool2d(image.movedim(-1, 1), 8)[0].movedim(0, -1)
    assert preview.shape == target.shape
    best_flat = psnr(target.mean((0, 1)).expand_as(target), target)  # the best a one-colour preview can do
    assert psnr(preview, target) > best_flat + 3.0


def sampling_prompt(model_name: str, taef2_name: str, checkpoint: str) -> dict:
    return {
        "1": {"class_type": "DioramaLoadSmallModel", "inputs": {"model_name": model_name}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": "a striped crate"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": ""}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "seed": 1, "steps": 1, "cfg": 3.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "7": {"class_type": "DioramaLoadTinyAutoencoder", "inputs": {"name": taef2_name}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["7", 0]}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "small_model_test"}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


def test_small_model_samples_one_step_with_ksampler_in_the_executor(small_models, vae_approx, tiny_sd_models,
                                                                     run_prompt, base_dir):
    report = run_prompt(sampling_prompt(small_models["plain"], "taef2", tiny_sd_models["checkpoint"]))
    saved = report.outputs["9"]["latents"][0]
    latent = safetensors.torch.load_file(str(base_dir / "output" / saved["subfolder"] / saved["filename"]))
    # EmptyLatentImage's 4 zero channels are widened to the model's 32 by ComfyUI (fix_empty_latent_channels).
    assert latent["latent_tensor"].shape == (1, 32, 6, 8)
    assert torch.isfinite(latent["latent_tensor"]).all() and latent["latent_tensor"].abs().amax() > 0
    assert len(report.outputs["10"]["images"]) == 1


def test_small_model_names_a_conditioning_made_for_another_model(small_models, vae_approx, tiny_sd_models,
                                                                  run_prompt):
    """Text conditioning carries no concat image, so ComfyUI concatenates the 32-channel latent (+ the mask
    channel): the model must say what it reads instead of failing inside its first convolution."""
    from diorama.runner.execute import WorkflowError

    with pytest.raises(WorkflowError, match=r"reads 5 concatenated channels \(mask \+ concat_image\) but its "
                                            r"conditioning gives 33: connect the positive and negative"):
        run_prompt(sampling_prompt(small_models["concat_image"], "taef2", tiny_sd_models["checkpoint"]))


def test_small_model_is_a_comfy_model_with_its_config(small_models, node_class):
    model = node_class("DioramaLoadSmallModel").execute(small_models["inpaint"]).result[0]
    latent_format = model.get_model_object("latent_format")
    # By name: ComfyUI imports the pack under its folder path, so the class object differs from `diorama.…`'s.
    assert type(latent_format).__name__ == "Taef2LatentFormat" and latent_format.latent_channels == 32
    assert latent_format.scale_factor == 1.35
    assert model.model.concat_keys == ("mask", "masked_image")
    assert model.model.diffusion_model.input_blocks[0][0].weight.shape[1] == 65
    assert model.model.model_type.name == "EPS"


def test_inpainting_small_model_in_composite_sample_reads_the_masked_window(small_models, taef2, node_class):
    """Composite Sample sees concat_keys with masked_image and conditions the small model like an SD inpainter;
    pixels outside the blend mask come back exactly."""
    model = node_class("DioramaLoadSmallModel").execute(small_models["inpaint"]).result[0]
    seen = []

    def wrapper(apply_model, args):
        seen.append(args["c"].get("c_concat"))
        return apply_model(args["input"], args["timestep"], **args["c"])

    model = model.clone()
    model.set_model_unet_function_wrapper(wrapper)
    generator = torch.Generator().manual_seed(0)
    positive, negative = ([[torch.randn(1, 8, 768, generator=generator), {}]] for _ in range(2))  # token conditioning
    background = render(96)
    blend = torch.zeros(1, 96, 96)
    blend[0, 40:72, 30:60] = 1.0
    window = node_class("DioramaCompositeWindow").execute(background, 1.5, 64, mask=blend, vae=taef2).result[0]
    image = node_class("DioramaCompositeSample").execute(
        model, positive, negative, taef2, background, window, blend, 0, 1, 3.0, "euler", "normal", 1.0, 1, 2.0,
        True).result[0]
    assert torch.equal(image[blend == 0], background[blend == 0])
    assert seen and seen[0] is not None and seen[0].shape[1] == 33  # 1 mask + 32 masked-image latent channels


def write_model(path: Path, state: dict, metadata: dict) -> str:
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata)
    return path.name


@pytest.mark.parametrize("metadata, state_change, message", [
    ({"diorama_format": "identity_adapter"}, None, "not a Diorama small model"),
    ({"diorama_format_version": "7"}, None, "format version '7' is not supported"),
    ({"config": "{not json"}, None, "not valid JSON"),
    ({"config": json.dumps({**small_config(), "latent_format": "sd15"})}, None, "latent_format 'sd15'"),
    ({"config": json.dumps({**small_config(), "model_type": "flow"})}, None, "model_type 'flow'"),
    ({"config": json.dumps({**small_config(), "scale": 2})}, None, "unknown small model config fields"),
    ({"config": json.dumps({**small_config(), "concat_keys": ["mask"]})}, None, "needs unet.in_channels = 33"),
    ({"config": json.dumps({**small_config(), "unet": {"in_channels": 32, "out_channels": 32}})}, None,
     "lacks"),
    ({"config": json.dumps({**small_config(), "unet": {**small_config()["unet"], "num_heads": -1}})}, None,
     "does not build a ComfyUI UNetModel"),
    ({}, "drop", "1 missing"),
    ({}, "extra", "1 unknown"),
])
def test_bad_small_model_files_are_refused_clearly(small_models, base_dir, node_class, metadata, state_change, message):
    from diorama.loaders.small_model import FORMAT, FORMAT_VERSION

    config = small_config()
    state = random_unet_state(config, 1)
    if state_change == "drop":
        state.pop("out.2.bias")
    elif state_change == "extra":
        state["adapter.weight"] = torch.zeros(2)
    base = {"diorama_format": FORMAT, "diorama_format_version": FORMAT_VERSION, "config": json.dumps(config)}
    path = base_dir / "models" / "diorama_small_models" / "bad.safetensors"
    name = write_model(path, state, {**base, **metadata})
    try:
        with pytest.raises(ValueError, match=message):
            node_class("DioramaLoadSmallModel").execute(name)
    finally:
        path.unlink()


def test_saver_refuses_what_the_loader_would_refuse(tmp_path):
    from diorama.loaders.small_model import save_small_model

    config = small_config()
    state = random_unet_state(config, 2)
    with pytest.raises(ValueError, match="needs unet.in_channels = 65"):
        save_small_model(str(tmp_path / "m.safetensors"), state, {**config, "concat_keys": INPAINT_KEYS})
    state.pop("input_blocks.0.0.weight")
    with pytest.raises(ValueError, match="1 missing"):
        save_small_model(str(tmp_path / "m.safetensors"), state, config)
    assert not (tmp_path / "m.safetensors").exists()
