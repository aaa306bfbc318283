"""BIFRÖST / AnyDoor checkpoint conversion: layouts, exactness of the two rewrites, end to end, bad input.

Goldens: the published state-dict manifests and the float64 DDIM schedule of the reference
(/work/shared/reference/bifrost), ComfyUI's own modules and loaders, a hand-written DINOv2 forward
from the facebookresearch weights, and a hand-written loop of the reference ControlNet forward.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import tiny_bifrost

REFERENCE = Path(os.environ.get("DIORAMA_BIFROST_REFERENCE", "/work/shared/reference/bifrost"))
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"reference data not found at {REFERENCE}")


def manifest(variant: str) -> dict[str, list[int]]:
    with open(REFERENCE / f"{variant}_state_dict_manifest.json") as f:
        return json.load(f)


def meta(shapes) -> dict[str, torch.Tensor]:
    return {k: torch.empty(tuple(s), device="meta") for k, s in shapes.items()}


# ------------------------------------------------------------------ published layouts (meta tensors)

@needs_reference
@pytest.mark.parametrize("variant", ["bifrost", "anydoor"])
def test_manifest_fully_mapped_and_loadable_by_comfyui(variant, monkeypatch):
    import comfy.clip_vision
    import comfy.cldm.cldm
    import comfy.model_management
    import comfy.ops
    import comfy.sd
    import comfy.supported_models
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    from diorama.loaders.bifrost_checkpoint import controlnet_config, convert_part, plan_conversion, unet_model_config

    shapes = manifest(variant)
    plan = plan_conversion(shapes, variant)
    mapped = {k for p in plan.parts for k in p.keys} | set(plan.schedule_keys)
    assert mapped == set(shapes) and sum(len(p.keys) for p in plan.parts) + len(plan.schedule_keys) == len(shapes)
    expected_parts = {"bifrost": ["unet", "control_detail", "control_depth", "dinov2_g", "identity", "vae"],
                      "anydoor": ["unet", "control", "dinov2_g", "identity", "vae"]}[variant]
    assert [p.spec.suffix for p in plan.parts] == expected_parts
    assert len(plan.schedule_keys) == 13
    tensors = meta(shapes)
    converted = {p.spec.suffix: convert_part(p, {k: tensors[k] for k in p.keys}, variant)[0] for p in plan.parts}

    # UNet: ComfyUI's detection says SD2.x (the published SD2.1 config), and its UNetModel takes every key.
    unet = converted["unet"]
    config = unet_model_config(unet)
    assert type(config) is comfy.supported_models.SD20
    assert (config.unet_config["channel_mult"], config.unet_config["num_res_blocks"], config.unet_config["context_dim"]) == ([1, 2, 4, 4], [2, 2, 2, 2], 1024)
    UNetModel(**config.unet_config, device="meta", operations=comfy.ops.disable_weight_init).load_state_dict(unet, strict=True, assign=True)

    # ControlNets: the configuration ComfyUI's ControlNetLoader derives, every key under control_model.
    for suffix, hint in {"bifrost": {"control_detail": 4, "control_depth": 3}, "anydoor": {"control": 4}}[variant].items():
        control = {k[len("control_model."):]: v for k, v in converted[suffix].items()}
        assert len(control) == len(converted[suffix]) == 340
        cfg = controlnet_config(control)
        assert cfg["hint_channels"] == hint
        net = comfy.cldm.cldm.ControlNet(**cfg, device="meta", operations=comfy.ops.disable_weight_init)
        net.load_state_dict(control, strict=True, assign=True)

    # DINOv2: ComfyUI's own CLIP-vision loader picks the giant config, built here on the meta device.
    monkeypatch.setattr(comfy.model_management, "text_encoder_offload_device", lambda: torch.device("meta"))
    clip = comfy.clip_vision.load_clipvision_from_sd(dict(converted["dinov2_g"]))
    assert clip is not None and clip.model.encoder.layer[0].mlp.weights_in.weight.shape == (8192, 1536)
    missing, unexpected = clip.load_sd(converted["dinov2_g"])
    assert (missing, unexpected) == ([], [])
    assert set(clip.model.state_dict()) == set(converted["dinov2_g"])

    # VAE: comfy.sd.VAE's own detection and module, on meta.
    with torch.device("meta"):
        vae = comfy.sd.VAE(sd=dict(converted["vae"]))
    assert set(vae.first_stage_model.state_dict()) == set(converted["vae"])
    for key, value in vae.first_stage_model.state_dict().items():
        assert value.shape == converted["vae"][key].shape, key

    assert {k: tuple(v.shape) for k, v in converted["identity"].items()} == {"projection.weight": (1024, 1536), "projection.bias": (1024,)}


@needs_reference
def test_manifest_with_a_wrong_shape_or_missing_key_is_refused():
    from diorama.loaders.bifrost_checkpoint import CheckpointError, plan_conversion

    shapes = manifest("bifrost")
    bad = dict(shapes, **{"control_model_depth.input_hint_block.0.weight": [16, 4, 3, 3]})
    with pytest.raises(CheckpointError, match="hint has 4 channels, expected 3"):
        plan_conversion(bad, "bifrost")
    bad = dict(shapes, **{"cond_stage_model.model.blocks.7.mlp.w3.weight": [1536, 4000]})
    with pytest.raises(CheckpointError, match=r"blocks\.7\.mlp\.w3\.weight \(1536, 4000\) \(expected \(1536, 4096\)\)"):
        plan_conversion(bad, "bifrost")
    bad = {k: v for k, v in shapes.items() if k != "first_stage_model.decoder.conv_out.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys: decoder\.conv_out\.bias"):
        plan_conversion(bad, "bifrost")
    bad = dict(shapes, **{"cond_stage_model.model.register_tokens": [1, 4, 1536]})
    with pytest.raises(CheckpointError, match="unexpected keys: register_tokens"):
        plan_conversion(bad, "bifrost")
    bad = dict(shapes, ema_decay=[])
    with pytest.raises(CheckpointError, match=r"unknown keys: ema_decay \(1 in all\)"):
        plan_conversion(bad, "bifrost")
    with pytest.raises(CheckpointError, match=r"looks like a BIFRÖST checkpoint, not AnyDoor: control_model\.\* missing \(convert it with 'bifrost'\)"):
        plan_conversion(shapes, "anydoor")
    with pytest.raises(CheckpointError, match=r"looks like an AnyDoor checkpoint, not BIFRÖST: control_model_detail\.\*, control_model_depth\.\* missing"):
        plan_conversion(manifest("anydoor"), "bifrost")


# ------------------------------------------------------------------------------- UNet: EPS for certain

@needs_reference
def test_unet_loads_as_eps_with_the_reference_schedule_even_when_the_v_prediction_guess_would_fire(tmp_path):
    import comfy.model_sampling
    import comfy.ops
    import comfy.sd
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    from diorama.loaders.bifrost_checkpoint import V_PRED_PROBE, keep_eps_guess, write_safetensors

    unet = tiny_bifrost.unet_state_dict(seed=7, config=tiny_bifrost.UNET_12_OUTPUT_BLOCKS)
    # A bias whose std trips ComfyUI's SD2 guess (> 0.09): as loaded, ComfyUI would pick v-prediction.
    unet[V_PRED_PROBE] = torch.randn(unet[V_PRED_PROBE].shape, generator=torch.Generator().manual_seed(3)) * 0.3
    as_released = comfy.sd.load_diffusion_model_state_dict(dict(unet))
    assert isinstance(as_released.model.model_sampling, comfy.model_sampling.V_PREDICTION)

    converted = dict(unet)
    notes = keep_eps_guess(converted, None)
    assert "diorama_rescaled" in notes
    path = tmp_path / "unet.safetensors"
    write_safetensors(str(path), converted, notes)
    patcher = comfy.sd.load_diffusion_model(str(path))
    sampling = patcher.model.model_sampling
    assert isinstance(sampling, comfy.model_sampling.EPS) and not isinstance(sampling, comfy.model_sampling.V_PREDICTION)
    golden = np.load(REFERENCE / "ddim_schedule.npz")["alphas_cumprod"]
    # ComfyUI keeps the schedule as float32 sigmas, sigma² = (1 − ᾱ) / ᾱ.
    alphas_cumprod = 1 / (1 + sampling.sigmas.double() ** 2)
    np.testing.assert_allclose(alphas_cumprod.numpy(), golden, rtol=1e-6)

    # The rewrite is exact: the loaded (converted) network and the released weights give the same output.
    reference = UNetModel(operations=comfy.ops.disable_weight_init, **tiny_bifrost.UNET_12_OUTPUT_BLOCKS)
    reference.load_state_dict(unet)
    generator = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 4, 16, 16, generator=generator), torch.randn(1, 5, 1024, generator=generator)
    t = torch.tensor([500.0])
    with torch.no_grad():
        expected = reference(x, t, context)
        actual = patcher.model.diffusion_model(x, t, context)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_unet_with_a_small_probe_std_is_left_untouched():
    from diorama.loaders.bifrost_checkpoint import V_PRED_PROBE, keep_eps_guess

    unet = {V_PRED_PROBE: torch.full((320,), 0.5) + 0.01 * torch.randn(320)}
    before = unet[V_PRED_PROBE].clone()
    assert keep_eps_guess(unet, None) == {} and torch.equal(unet[V_PRED_PROBE], before)


# ------------------------------------------------------------------- ControlNet: the latent never enters

def test_converted_controlnet_ignores_the_noisy_latent_and_equals_the_reference_forward(tmp_path):
    import comfy.controlnet
    from comfy.ldm.modules.diffusionmodules.util import timestep_embedding

    from diorama.loaders.bifrost_checkpoint import PartPlan, convert_part, variant_parts, write_safetensors

    released = tiny_bifrost.controlnet_state_dict(hint_channels=4, seed=11)
    spec = next(s for s in variant_parts("bifrost") if s.suffix == "control_detail")
    tensors, _ = convert_part(PartPlan(spec, []), {spec.prefix + k: v for k, v in released.items()}, "bifrost")
    write_safetensors(str(tmp_path / "converted.safetensors"), tensors)
    write_safetensors(str(tmp_path / "released.safetensors"), {"control_model." + k: v for k, v in released.items()})
    converted = comfy.controlnet.load_controlnet(str(tmp_path / "converted.safetensors")).control_model.float()
    as_released = comfy.controlnet.load_controlnet(str(tmp_path / "released.safetensors")).control_model.float()

    generator = torch.Generator().manual_seed(1)
    hint = torch.randn(1, 4, 64, 64, generator=generator)
    context = torch.randn(1, 3, 1024, generator=generator)
    t = torch.tensor([321.0])
    x1, x2 = torch.randn(2, 1, 4, 8, 8, generator=generator)

    def outputs(net, x):
        with torch.no_grad():
            out = net(x, hint, t, context)
        return out["output"] + out["middle"]

    # Before conversion ComfyUI's forward depends on x_noisy; after it does not, at all.
    assert not torch.allclose(outputs(as_released, x1)[0], outputs(as_released, x2)[0])
    for a, b in zip(outputs(converted, x1), outputs(converted, x2)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # The reference loop (cldm.py ControlNet.forward): block 0's output is replaced by the hint features.
    net = as_released
    with torch.no_grad():
        emb = net.time_embed(timestep_embedding(t, net.model_channels))
        h = net.input_hint_block(hint, emb, context)
        expected = [net.zero_convs[0](h, emb, context)]
        for module, zero_conv in zip(list(net.input_blocks)[1:], list(net.zero_convs)[1:]):
            h = module(h, emb, context)
            expected.append(zero_conv(h, emb, context))
        expected.append(net.middle_block_out(net.middle_block(h, emb, context), emb, context))
    for a, b in zip(outputs(converted, x1), expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- DINOv2: numerically the same

def facebook_dinov2_forward(sd: dict[str, torch.Tensor], pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """DINOv2 ViT forward written out from the facebookresearch weights (no interpolation: 518² input)."""
    F = torch.nn.functional
    x = F.conv2d(pixels, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14).flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + sd["pos_embed"]
    dim = x.shape[-1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        p = lambda name: sd[f"blocks.{i}.{name}"]  # noqa: E731
        y = F.layer_norm(x, (dim,), p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        qkv = F.linear(y, p("attn.qkv.weight"), p("attn.qkv.bias")).reshape(x.shape[0], x.shape[1], 3, heads, dim // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-1, -2) / (dim // heads) ** 0.5, dim=-1) @ v
        y = F.linear(attention.transpose(1, 2).reshape(x.shape), p("attn.proj.weight"), p("attn.proj.bias"))
        x = x + p("ls1.gamma") * y
        y = F.layer_norm(x, (dim,), p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        gate, up = F.linear(y, p("mlp.w12.weight"), p("mlp.w12.bias")).chunk(2, dim=-1)
        x = x + p("ls2.gamma") * F.linear(F.silu(gate) * up, p("mlp.w3.weight"), p("mlp.w3.bias"))
    return F.layer_norm(x, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)


def test_converted_dinov2_in_comfyui_equals_the_facebookresearch_forward(tmp_path):
    import comfy.clip_vision

    from diorama.loaders.bifrost_checkpoint import dinov2_config, map_dinov2

    # Values exactly representable in fp16: ComfyUI stores CLIP-vision weights in fp16 on CPU.
    source = {k: v.half().float() for k, v in tiny_bifrost.dinov2_state_dict(seed=5).items()}
    config = dinov2_config(source)
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (128, 2, 2)
    config_path = tmp_path / "tiny_dinov2.json"
    config_path.write_text(json.dumps(config))
    clip = comfy.clip_vision.ClipVisionModel(str(config_path))
    missing, unexpected = clip.load_sd(map_dinov2(source))
    assert (missing, unexpected) == ([], [])

    pixels = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        comfy_tokens = clip.model(pixel_values=pixels)[0]
        expected = facebook_dinov2_forward(source, pixels, heads=2)
    torch.testing.assert_close(comfy_tokens.float(), expected, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------- end to end (CLI)

@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_ckpt")
    return {variant: tiny_bifrost.write_tiny_bifrost_ckpt(folder / f"{variant}.ckpt", variant, seed=i)
            for i, variant in enumerate(("bifrost", "anydoor"))}


def test_tiny_bifrost_converted_by_the_cli_and_loaded_by_comfyuis_loader_nodes(tiny_checkpoints, base_dir, node_class, caplog):
    import comfy.clip_vision
    import comfy.model_sampling

    from diorama.convert import main

    caplog.set_level(logging.INFO)
    assert main(["bifrost", str(tiny_checkpoints["bifrost"]), "--name", "tiny-bifrost"]) == 0
    summary = caplog.text
    models = base_dir / "models"
    files = {suffix: models / folder / f"tiny-bifrost_{suffix}.safetensors" for suffix, folder in {
        "unet": "diffusion_models", "control_detail": "controlnet", "control_depth": "controlnet",
        "dinov2_g": "clip_vision", "identity": "identity_adapters", "vae": "vae"}.items()}
    for path in files.values():
        assert path.is_file() and str(path) in summary
    source = torch.load(tiny_checkpoints["bifrost"], weights_only=True, mmap=True)["state_dict"]

    model = node_class("UNETLoader")().load_unet("tiny-bifrost_unet.safetensors", "default")[0]
    assert isinstance(model.model.model_sampling, comfy.model_sampling.EPS)
    assert type(model.model.model_config).__name__ == "SD20"
    loaded = model.model.diffusion_model.state_dict()
    assert torch.equal(loaded["out.2.weight"], source["model.diffusion_model.out.2.weight"])

    for suffix, hint, prefix in (("control_detail", 4, "control_model_detail."), ("control_depth", 3, "control_model_depth.")):
        control = node_class("ControlNetLoader")().load_controlnet(f"tiny-bifrost_{suffix}.safetensors")[0]
        state = control.control_model.state_dict()
        assert state["input_hint_block.0.weight"].shape[1] == hint
        assert torch.equal(state["input_hint_block.0.weight"], source[prefix + "input_hint_block.0.weight"])
        assert torch.equal(state["middle_block_out.0.weight"], source[prefix + "middle_block_out.0.weight"])
        assert not state["input_blocks.0.0.weight"].any() and not state["input_blocks.0.0.bias"].any()

    vae = node_class("VAELoader")().load_vae("tiny-bifrost_vae.safetensors")[0]
    assert torch.equal(vae.first_stage_model.state_dict()["decoder.conv_out.weight"].half(), source["first_stage_model.decoder.conv_out.weight"])
    with safe_open(str(files["vae"]), "pt") as f:  # stored as in the source: the VAE is fp16, the rest fp32
        assert f.get_tensor("decoder.conv_out.weight").dtype == torch.float16

    # ComfyUI's CLIPVisionLoader only knows the DINOv2-L/-g configs: the tiny encoder is refused there,
    # and loads into the same ClipVisionModel from a config json read off its metadata.
    with pytest.raises(RuntimeError, match="does not contain a valid vision model"):
        node_class("CLIPVisionLoader")().load_clip("tiny-bifrost_dinov2_g.safetensors")
    with safe_open(str(files["dinov2_g"]), "pt") as f:
        metadata = f.metadata()
        dino = {k: f.get_tensor(k) for k in f.keys()}
    config = {k: json.loads(v) for k, v in metadata.items() if not k.startswith("diorama_")}
    assert (config["hidden_size"], config["num_hidden_layers"], config["model_type"]) == (128, 2, "dinov2")
    config_path = base_dir / "tiny_dinov2_config.json"
    config_path.write_text(json.dumps(config))
    clip = comfy.clip_vision.ClipVisionModel(str(config_path))
    assert clip.load_sd(dino) == ([], [])
    q = source["cond_stage_model.model.blocks.1.attn.qkv.weight"]
    assert torch.equal(dino["encoder.layer.1.attention.attention.value.weight"], q[256:])

    with safe_open(str(files["identity"]), "pt") as f:
        assert f.metadata() == {"diorama_format": "identity_adapter", "diorama_format_version": "1", "architecture": "linear",
                                "encoder": "dinov2", "tokens": "cls+patch", "image_size": "224", "negative": "zero_image",
                                "source": "bifrost"}
        assert set(f.keys()) == {"projection.weight", "projection.bias"}
        assert torch.equal(f.get_tensor("projection.weight"), source["cond_stage_model.projector.weight"])


def test_tiny_anydoor_converted_with_a_cast_to_fp16(tiny_checkpoints, tmp_path):
    import comfy.controlnet
    import comfy.sd

    from diorama.convert import main

    assert main(["anydoor", str(tiny_checkpoints["anydoor"]), "--models-dir", str(tmp_path), "--dtype", "fp16"]) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["clip_vision/anydoor_dinov2_g.safetensors", "controlnet/anydoor_control.safetensors",
                       "diffusion_models/anydoor_unet.safetensors", "identity_adapters/anydoor_identity.safetensors",
                       "vae/anydoor_vae.safetensors"]
    for path in tmp_path.rglob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}, path
    assert comfy.controlnet.load_controlnet(str(tmp_path / "controlnet/anydoor_control.safetensors")) is not None
    assert comfy.sd.load_diffusion_model(str(tmp_path / "diffusion_models/anydoor_unet.safetensors")) is not None


# ------------------------------------------------------------------------------------------ bad input

def test_sd_checkpoint_is_refused_naming_what_is_missing(tmp_path, capsys):
    from diorama.convert import main

    state = {f"model.diffusion_model.{k}": v for k, v in tiny_bifrost.unet_state_dict(seed=0).items()}
    state["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] = torch.zeros(3, 1)
    state["first_stage_model.decoder.conv_out.bias"] = torch.zeros(3)
    path = tmp_path / "sd21.ckpt"
    torch.save({"state_dict": state}, path)
    assert main(["bifrost", str(path), "--models-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "looks like a Stable Diffusion checkpoint" in error and "not BIFRÖST" in error
    assert "control_model_detail.*, control_model_depth.*, cond_stage_model.projector.* missing" in error
    assert not (tmp_path / "out").exists()


def test_truncated_checkpoint_is_refused_naming_the_file(tiny_checkpoints, tmp_path, capsys):
    from diorama.convert import main

    data = tiny_checkpoints["anydoor"].read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[: len(data) // 2])
    assert main(["anydoor", str(path), "--models-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "truncated, corrupt" in error
    assert not (tmp_path / "out").exists()


class _Payload:
    """Unpickling this would call os.makedirs(marker): code, not weights."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_pickle_that_needs_code_is_refused_and_never_run(tmp_path, capsys):
    from diorama.convert import main

    marker = tmp_path / "payload-ran"
    path = tmp_path / "malicious.ckpt"
    torch.save({"state_dict": {"betas": torch.zeros(3)}, "hyper_parameters": _Payload(str(marker))}, path)
    with zipfile.ZipFile(path) as archive:  # the payload really is in the pickle
        assert any(b"makedirs" in archive.read(n) for n in archive.namelist() if n.endswith(".pkl"))
    assert main(["bifrost", str(path), "--models-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "only weights are loaded" in error
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # the same refusal straight from torch
        torch.load(path, weights_only=True)
    assert not marker.exists()


def test_existing_output_is_not_overwritten_unless_asked(tiny_checkpoints, tmp_path, capsys):
    from diorama.convert import main

    existing = tmp_path / "vae" / "anydoor_vae.safetensors"
    existing.parent.mkdir()
    existing.write_bytes(b"user's file")
    assert main(["anydoor", str(tiny_checkpoints["anydoor"]), "--models-dir", str(tmp_path)]) == 2
    assert str(existing) in capsys.readouterr().err and existing.read_bytes() == b"user's file"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["anydoor_vae.safetensors"]  # nothing else written
    assert main(["anydoor", str(tiny_checkpoints["anydoor"]), "--models-dir", str(tmp_path), "--overwrite"]) == 0
    with safe_open(str(existing), "pt") as f:
        assert "decoder.conv_out.weight" in f.keys()
    assert not list(tmp_path.rglob("*.partial"))


def test_schedule_that_is_not_the_linear_one_is_refused():
    from diorama.loaders.bifrost_checkpoint import CheckpointError, check_schedule

    buffers = tiny_bifrost.linear_schedule_buffers()
    check_schedule(buffers)
    steps = torch.arange(1001, dtype=torch.float64) / 1000
    cosine = torch.cos((steps + 0.008) / 1.008 * torch.pi / 2) ** 2
    buffers["alphas_cumprod"] = (cosine[1:] / cosine[0]).float()
    with pytest.raises(CheckpointError, match=r"not the linear β.*alphas_cumprod\[\d+\]"):
        check_schedule(buffers)
