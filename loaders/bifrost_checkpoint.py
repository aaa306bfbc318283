"""BIFRÖST / AnyDoor Lightning checkpoints → ComfyUI model files (an explicit conversion step).

The released checkpoints are one pickled Lightning `.ckpt` holding a whole `DoubleControlLDM`
(AnyDoor: `ControlLDM`): UNet, ControlNet(s), VAE, a DINOv2-g encoder and its projector, the DDPM
schedule buffers and, in training checkpoints, the optimizer state. This module maps every key of
such a file onto the parts ComfyUI's own loaders read, checks every shape against the modules
those loaders build, and writes each part as safetensors, one part at a time.

Two places where the released weights would not mean the same thing in ComfyUI are rewritten
(both exact, see `rescale_norm1` and `skip_noisy_latent`):
- ComfyUI guesses v-prediction for an SD2 UNet from the std of one LayerNorm bias;
- the reference ControlNet never feeds the noisy latent through `input_blocks.0`.
"""
from __future__ import annotations

import json
import logging
import math
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

from .state_layout import layout_differences

log = logging.getLogger(__name__)

SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)
LOGVAR = "logvar"
# configs/bifrost.yaml and AnyDoor's anydoor.yaml: linear_start, linear_end, timesteps.
LINEAR_START, LINEAR_END, TIMESTEPS = 0.00085, 0.012, 1000

# ComfyUI (supported_models.SD20.model_type) calls an SD2 UNet with 4 input channels v-prediction
# when the std of this bias exceeds 0.09; nothing else in a UNet-only file decides it.
V_PRED_PROBE = "output_blocks.11.1.transformer_blocks.0.norm1.bias"
V_PRED_THRESHOLD = 0.09
RESCALED_STD_TARGET = 0.05

IDENTITY_METADATA = {
    "diorama_format": "identity_adapter", "diorama_format_version": "1", "architecture": "linear",
    "encoder": "dinov2", "tokens": "cls+patch", "image_size": "224", "negative": "zero_image",
}
# Head width of every published DINOv2 (S/B/L/g: 384/6, 768/12, 1024/16, 1536/24); the state dict
# does not record the head count.
DINOV2_HEAD_DIM = 64
DINOV2_LAYER_NORM_EPS = 1e-6

SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class CheckpointError(ValueError):
    """The input is not a checkpoint this converter can read, or not the model it was asked for."""


@dataclass(frozen=True)
class PartSpec:
    suffix: str  # output file: <name>_<suffix>.safetensors
    prefix: str  # source key prefix in the checkpoint
    folder: str  # ComfyUI model folder name
    loader: str  # what reads the written file
    kind: str  # unet | controlnet | dinov2 | identity | vae
    hint_channels: int | None = None


def _parts(control: tuple[PartSpec, ...]) -> tuple[PartSpec, ...]:
    from .model_folders import IDENTITY_ADAPTER_FOLDER

    return (
        PartSpec("unet", "model.diffusion_model.", "diffusion_models", "UNETLoader (Load Diffusion Model)", "unet"),
        *control,
        PartSpec("dinov2_g", "cond_stage_model.model.", "clip_vision", "CLIPVisionLoader (Load CLIP Vision)", "dinov2"),
        PartSpec("identity", "cond_stage_model.projector.", IDENTITY_ADAPTER_FOLDER, "Diorama's identity adapter loader", "identity"),
        PartSpec("vae", "first_stage_model.", "vae", "VAELoader (Load VAE)", "vae"),
    )


def variant_parts(variant: str) -> tuple[PartSpec, ...]:
    control_loader = "ControlNetLoader (Load ControlNet Model)"
    if variant == "bifrost":
        return _parts((PartSpec("control_detail", "control_model_detail.", "controlnet", control_loader, "controlnet", 4),
                       PartSpec("control_depth", "control_model_depth.", "controlnet", control_loader, "controlnet", 3)))
    if variant == "anydoor":
        return _parts((PartSpec("control", "control_model.", "controlnet", control_loader, "controlnet", 4),))
    raise CheckpointError(f"unknown model {variant!r}; expected 'bifrost' or 'anydoor'")


@dataclass
class PartPlan:
    spec: PartSpec
    keys: list[str]  # source keys, in file order
    config: dict = field(default_factory=dict)  # what was detected (logged, partly written as metadata)


@dataclass
class ConversionPlan:
    variant: str
    parts: list[PartPlan]
    schedule_keys: list[str]


# ---------------------------------------------------------------------------------------- reading

def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict, tensors memory-mapped (nothing is read until a tensor is used).

    weights_only=True: a pickle that names any code to run is refused by torch before it runs.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused to load: the file's pickle asks for code to be run or imported, and only weights are "
            f"loaded (torch.load weights_only=True). Detail from torch: {str(error).splitlines()[0]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint (truncated, corrupt, or saved in the legacy non-zip "
            f"format that cannot be memory-mapped): {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(data).__name__}, not a state dict (a dict of tensors, "
                              "optionally under 'state_dict' as Lightning saves it)")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: the state dict holds non-tensor entries: {_listing(not_tensors)}")
    return state


def _listing(keys: Iterable[str], limit: int = 20) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown} … ({len(keys)} in all)" if len(keys) > limit else f"{shown} ({len(keys)} in all)"


DESCRIPTIONS = {"bifrost": "a BIFRÖST checkpoint", "anydoor": "an AnyDoor checkpoint"}


def describe_checkpoint(keys: Iterable[str]) -> str:
    """A guess at what a checkpoint is, from its key prefixes, for error messages."""
    keys = set(keys)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("control_model_detail.") or has("control_model_depth."):
        return DESCRIPTIONS["bifrost"]
    if has("control_model.") and has("cond_stage_model.projector."):
        return DESCRIPTIONS["anydoor"]
    if has("control_model.") or has("zero_convs.") or has("input_hint_block."):
        return "a ControlNet checkpoint"
    if has("conditioner.embedders."):
        return "an SDXL checkpoint"
    if has("model.diffusion_model.") and (has("cond_stage_model.transformer.") or has("cond_stage_model.model.transformer.")):
        return "a Stable Diffusion checkpoint (UNet + VAE + CLIP text encoder)"
    if has("model.diffusion_model."):
        return "a diffusion model checkpoint of unknown kind"
    if has("input_blocks.") and has("output_blocks."):
        return "a bare UNet state dict"
    return "not a latent-diffusion checkpoint"


# ------------------------------------------------------------------------------ layout checks

def _meta(shapes: Mapping[str, Iterable[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(tuple(s), device="meta") for k, s in shapes.items()}


def _compare_layout(label: str, expected: Mapping[str, torch.Size], actual: Mapping[str, torch.Size]) -> None:
    differences = layout_differences(expected, actual)
    problems = []
    if differences.missing:
        problems.append(f"missing keys: {_listing(differences.missing)}")
    if differences.unknown:
        problems.append(f"unexpected keys: {_listing(differences.unknown)}")
    if differences.wrong:
        problems.append(f"wrong shapes: {_listing(differences.wrong)}")
    if problems:
        raise CheckpointError(f"{label} does not have the layout ComfyUI's module expects; " + "; ".join(problems))


def _module_shapes(module: torch.nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in module.state_dict().items()}


def unet_model_config(unet: Mapping[str, torch.Tensor]):
    """ComfyUI's model config for a prefix-less UNet state dict; it must be detected as SD2.x."""
    import comfy.model_detection
    import comfy.supported_models

    config = comfy.model_detection.model_config_from_unet(dict(unet), "")
    if not isinstance(config, comfy.supported_models.SD20) or type(config) is not comfy.supported_models.SD20:
        found = type(config).__name__ if config is not None else "no known model"
        raise CheckpointError(f"model.diffusion_model.* is not an SD2.x UNet (320 channels, 1024-wide linear "
                              f"cross-attention) as BIFRÖST/AnyDoor use; ComfyUI detects {found}")
    return config


def _check_unet(unet: Mapping[str, torch.Tensor]) -> dict:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    config = unet_model_config(unet)
    module = UNetModel(**config.unet_config, device="meta", operations=comfy.ops.disable_weight_init)
    _compare_layout("model.diffusion_model.* (UNet)", _module_shapes(module), {k: v.shape for k, v in unet.items()})
    return dict(config.unet_config)


STRUCTURE_KEYS = ("model_channels", "channel_mult", "num_res_blocks", "transformer_depth", "context_dim",
                  "use_linear_in_transformer", "transformer_depth_middle")


def controlnet_config(control: Mapping[str, torch.Tensor]) -> dict:
    """The ControlNet configuration ComfyUI's ControlNetLoader derives from a prefix-less state dict."""
    import comfy.model_detection

    config = dict(comfy.model_detection.model_config_from_unet(dict(control), "", True).unet_config)
    config.pop("out_channels", None)
    config["hint_channels"] = control["input_hint_block.0.weight"].shape[1]
    return config


def _check_controlnet(label: str, control: Mapping[str, torch.Tensor], spec: PartSpec, unet_config: dict) -> dict:
    import comfy.cldm.cldm
    import comfy.ops

    if "input_hint_block.0.weight" not in control or "input_blocks.0.0.weight" not in control:
        raise CheckpointError(f"{label}: not a ControlNet (input_hint_block.0.weight / input_blocks.0.0.weight missing)")
    config = controlnet_config(control)
    if config["hint_channels"] != spec.hint_channels:
        raise CheckpointError(f"{label}: hint has {config['hint_channels']} channels, expected {spec.hint_channels}")
    differs = [f"{k}={config.get(k)} (UNet: {unet_config.get(k)})" for k in STRUCTURE_KEYS if config.get(k) != unet_config.get(k)]
    if differs:
        raise CheckpointError(f"{label}: does not match the UNet it controls: {', '.join(differs)}")
    module = comfy.cldm.cldm.ControlNet(**config, device="meta", operations=comfy.ops.disable_weight_init)
    _compare_layout(label, _module_shapes(module), {k: v.shape for k, v in control.items()})
    return config


def sd_vae_module(device: str | torch.device = "meta") -> torch.nn.Module:
    """ComfyUI's SD1/SD2 VAE, as VAELoader builds it for an `encoder.*`/`decoder.*` state dict."""
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    with torch.device(device):
        return AutoencoderKL(ddconfig=ddconfig, embed_dim=4)


def _check_vae(vae: Mapping[str, torch.Tensor]) -> dict:
    # VAELoader knows one AutoencoderKL shape for SD1/SD2 files, so that is the only one accepted.
    _compare_layout("first_stage_model.* (VAE)", _module_shapes(sd_vae_module()), {k: v.shape for k, v in vae.items()})
    return {}


def swiglu_hidden(dim: int) -> int:
    # DINOv2's SwiGLUFFNFused and ComfyUI's SwiGLUFFN both size the hidden layer this way.
    return (int(dim * 4 * 2 / 3) + 7) // 8 * 8


def dinov2_source_layout(dim: int, depth: int, positions: int, patch: int) -> dict[str, tuple[int, ...]]:
    """facebookresearch/dinov2 ViT (SwiGLU, no registers) state dict layout."""
    hidden = swiglu_hidden(dim)
    layout = {"cls_token": (1, 1, dim), "pos_embed": (1, positions, dim), "mask_token": (1, dim),
              "patch_embed.proj.weight": (dim, 3, patch, patch), "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}."
        layout.update({
            b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
            b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,), b + "ls1.gamma": (dim,),
            b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
            b + "mlp.w12.weight": (2 * hidden, dim), b + "mlp.w12.bias": (2 * hidden,),
            b + "mlp.w3.weight": (dim, hidden), b + "mlp.w3.bias": (dim,), b + "ls2.gamma": (dim,),
        })
    layout.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return layout


def dinov2_config(dino: Mapping[str, torch.Tensor]) -> dict:
    """Width, depth and patch grid of a facebookresearch-layout DINOv2, read from shapes."""
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if key not in dino:
            raise CheckpointError(f"cond_stage_model.model.* is not a facebookresearch DINOv2: {key} missing")
    dim = dino["cls_token"].shape[-1]
    depth = len({k.split(".")[1] for k in dino if k.startswith("blocks.")})
    return {"model_type": "dinov2", "hidden_size": dim, "num_hidden_layers": depth,
            "num_attention_heads": max(1, dim // DINOV2_HEAD_DIM), "patch_size": dino["patch_embed.proj.weight"].shape[-1],
            "num_positions": dino["pos_embed"].shape[1], "layer_norm_eps": DINOV2_LAYER_NORM_EPS, "use_swiglu_ffn": True,
            "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def comfy_dinov2_module(config: dict, device: str | torch.device = "meta", dtype=torch.float32) -> torch.nn.Module:
    import comfy.image_encoders.dino2
    import comfy.ops

    return comfy.image_encoders.dino2.Dinov2Model(config, dtype, device, comfy.ops.disable_weight_init)


def _check_dinov2(dino: Mapping[str, torch.Tensor]) -> dict:
    config = dinov2_config(dino)
    expected = dinov2_source_layout(config["hidden_size"], config["num_hidden_layers"], config["num_positions"], config["patch_size"])
    _compare_layout("cond_stage_model.model.* (DINOv2, facebookresearch layout)", {k: torch.Size(s) for k, s in expected.items()},
                    {k: v.shape for k, v in dino.items()})
    # ComfyUI's Dinov2Model has a fixed 14-pixel patch and a 37×37 (518²) position grid.
    if config["patch_size"] != 14 or config["num_positions"] != 37 * 37 + 1:
        raise CheckpointError(f"cond_stage_model.model.*: patch {config['patch_size']}, {config['num_positions']} positions; "
                              "ComfyUI's DINOv2 needs patch 14 and 1370 positions (518² pretraining grid)")
    if config["hidden_size"] % DINOV2_HEAD_DIM:
        raise CheckpointError(f"cond_stage_model.model.*: width {config['hidden_size']} is not a multiple of DINOv2's head width 64")
    target = {k: torch.Size(s) for k, s in dinov2_target_shapes(expected).items()}
    _compare_layout("DINOv2 in ComfyUI's layout", _module_shapes(comfy_dinov2_module(config)), target)
    return config


def _check_identity(projector: Mapping[str, torch.Tensor], context_dim: int, dino_dim: int) -> dict:
    expected = {"weight": torch.Size((context_dim, dino_dim)), "bias": torch.Size((context_dim,))}
    _compare_layout("cond_stage_model.projector.* (identity projection)", expected, {k: v.shape for k, v in projector.items()})
    return {"in_features": dino_dim, "out_features": context_dim}


def plan_conversion(shapes: Mapping[str, Iterable[int]], variant: str) -> ConversionPlan:
    """Assign every key to a part and check every shape, from shapes alone (meta tensors, no data)."""
    specs = variant_parts(variant)
    keys = list(shapes)
    what = describe_checkpoint(keys)
    other = {"bifrost": "anydoor", "anydoor": "bifrost"}[variant]
    missing_parts = [s.prefix + "*" for s in specs if not any(k.startswith(s.prefix) for k in keys)]
    if missing_parts:
        hint = f" (convert it with '{other}')" if what == DESCRIPTIONS[other] else ""
        raise CheckpointError(f"this looks like {what}, not {_display(variant)}: {', '.join(missing_parts)} missing{hint}")

    assigned: dict[str, list[str]] = {s.suffix: [] for s in specs}
    schedule, unknown = [], []
    # Longest prefix first: AnyDoor's "control_model." must not swallow "control_model_detail.".
    by_length = sorted(specs, key=lambda s: -len(s.prefix))
    for key in keys:
        spec = next((s for s in by_length if key.startswith(s.prefix)), None)
        if spec is not None:
            assigned[spec.suffix].append(key)
        elif key in SCHEDULE_BUFFERS or key == LOGVAR:
            schedule.append(key)
        else:
            unknown.append(key)
    absent = [k for k in (*SCHEDULE_BUFFERS, LOGVAR) if k not in schedule]
    if unknown or absent:
        problems = ([f"unknown keys: {_listing(unknown)}"] if unknown else []) + ([f"missing keys: {_listing(absent)}"] if absent else [])
        raise CheckpointError(f"this looks like {what}; as {_display(variant)} it has " + "; ".join(problems))
    wrong = [f"{k} {tuple(shapes[k])}" for k in schedule if tuple(shapes[k]) != (TIMESTEPS,)]
    if wrong:
        raise CheckpointError(f"schedule buffers must hold {TIMESTEPS} steps: {_listing(wrong)}")

    meta = _meta(shapes)
    plans = []
    configs: dict[str, dict] = {}
    for spec in specs:  # UNet first: the ControlNets and the projector are checked against it
        part = {k[len(spec.prefix):]: meta[k] for k in assigned[spec.suffix]}
        if spec.kind == "unet":
            config = _check_unet(part)
        elif spec.kind == "controlnet":
            config = _check_controlnet(f"{spec.prefix}* (ControlNet)", part, spec, configs["unet"])
        elif spec.kind == "dinov2":
            config = _check_dinov2(part)
        elif spec.kind == "identity":
            config = _check_identity(part, configs["unet"]["context_dim"], configs["dinov2"]["hidden_size"])
        else:
            config = _check_vae(part)
        configs[spec.kind] = config
        plans.append(PartPlan(spec, assigned[spec.suffix], config))
    return ConversionPlan(variant, plans, schedule)


def _display(variant: str) -> str:
    return {"bifrost": "BIFRÖST", "anydoor": "AnyDoor"}[variant]


# ---------------------------------------------------------------------------------- schedule

def linear_schedule(timesteps: int = TIMESTEPS) -> dict[str, torch.Tensor]:
    """The 12 buffers latent diffusion's DDPM registers for the "linear" β schedule (float64).

    "linear" is linear in sqrt(β); v_posterior = 0 in these configs.
    """
    betas = torch.linspace(LINEAR_START ** 0.5, LINEAR_END ** 0.5, timesteps, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    cumprod = torch.cumprod(alphas, 0)
    prev = torch.cat([cumprod.new_ones(1), cumprod[:-1]])
    posterior_variance = betas * (1.0 - prev) / (1.0 - cumprod)
    return {
        "betas": betas, "alphas_cumprod": cumprod, "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": cumprod.sqrt(), "sqrt_one_minus_alphas_cumprod": (1.0 - cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - cumprod).log(), "sqrt_recip_alphas_cumprod": (1.0 / cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / cumprod - 1).sqrt(), "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp_min(1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - prev) * alphas.sqrt() / (1.0 - cumprod),
    }


def check_schedule(buffers: Mapping[str, torch.Tensor]) -> None:
    """The schedule buffers must be the linear β 0.00085→0.012 schedule ComfyUI rebuilds for SD2."""
    expected = linear_schedule()
    wrong = []
    for name in SCHEDULE_BUFFERS:
        if name not in buffers:
            continue
        value = buffers[name].to(torch.float64)
        # Stored float32 in the released files; fp16/bf16 copies round more.
        rtol = 1e-5 if buffers[name].dtype in (torch.float32, torch.float64) else 1e-2
        # The first posterior log-variance is log(1e-20): compare it with the same relative tolerance.
        if not torch.allclose(value, expected[name], rtol=rtol, atol=1e-9):
            worst = int(((value - expected[name]).abs() / expected[name].abs().clamp_min(1e-12)).argmax())
            wrong.append(f"{name}[{worst}] = {value[worst].item():.6g} (linear schedule: {expected[name][worst].item():.6g})")
    if wrong:
        raise CheckpointError("the schedule buffers are not the linear β 0.00085→0.012 schedule that ComfyUI uses for "
                              "SD2 models, so sampling in ComfyUI would not match the weights: " + "; ".join(wrong))


# ---------------------------------------------------------------------------------- key mapping

def dinov2_target_shapes(source: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    out = {}
    for key, shape in source.items():
        for target, part in _dinov2_targets(key):
            out[target] = (shape[0] // 3, *shape[1:]) if part is not None else tuple(shape)
    return out


DINOV2_NAMES = {
    "cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
    "mask_token": "embeddings.mask_token", "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias",
}
DINOV2_BLOCK_NAMES = {
    "norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.output.dense", "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1", "mlp.w12": "mlp.weights_in", "mlp.w3": "mlp.weights_out",
}


def _dinov2_targets(key: str) -> list[tuple[str, int | None]]:
    """ComfyUI names for one facebookresearch key; (name, third of qkv) for the fused attention input."""
    if key in DINOV2_NAMES:
        return [(DINOV2_NAMES[key], None)]
    _, index, rest = key.split(".", 2)
    block = f"encoder.layer.{index}."
    if rest.startswith("attn.qkv."):
        # The fused projection's rows are q, then k, then v (reshape(B, N, 3, heads, head_dim)).
        leaf = rest[len("attn.qkv."):]
        return [(f"{block}attention.attention.{name}.{leaf}", i) for i, name in enumerate(("query", "key", "value"))]
    for source, target in DINOV2_BLOCK_NAMES.items():
        if rest == source or rest.startswith(source + "."):
            return [(block + target + rest[len(source):], None)]
    raise CheckpointError(f"cond_stage_model.model.{key}: no ComfyUI DINOv2 counterpart")


def map_dinov2(dino: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in dino.items():
        for target, third in _dinov2_targets(key):
            out[target] = tensor if third is None else tensor.chunk(3, dim=0)[third]
    return out


def rescale_norm1(unet: dict[str, torch.Tensor], block: str, factor: float) -> None:
    """Divide the block's norm1 (weight, bias) by `factor` and multiply attn1's q/k/v weights by it.

    norm1 feeds only attn1's bias-free to_q/to_k/to_v, so W·(n/f)·f is the same product; with a power
    of two f every rounding step scales exactly too, so the outputs are bit-identical.
    """
    for name in ("norm1.weight", "norm1.bias"):
        unet[block + name] = unet[block + name] / factor
    for name in ("attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight"):
        unet[block + name] = unet[block + name] * factor


def keep_eps_guess(unet: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, str]:
    """Make ComfyUI's v-prediction guess come out EPS, as the model was trained (returns metadata notes)."""
    bias = unet.get(V_PRED_PROBE)
    if bias is None or bias.is_meta:
        return {}
    std = float(bias.to(dtype or bias.dtype).double().std(unbiased=False))
    if std <= RESCALED_STD_TARGET:
        return {}
    factor = 2.0 ** math.ceil(math.log2(std / RESCALED_STD_TARGET))
    block = V_PRED_PROBE[: -len("norm1.bias")]
    rescale_norm1(unet, block, factor)
    log.info("UNet: %s has std %.4f (> %.2f would make ComfyUI pick v-prediction); norm1 divided and attn1 q/k/v "
             "multiplied by %g (exact)", V_PRED_PROBE, std, V_PRED_THRESHOLD, factor)
    return {"diorama_rescaled": f"{block}norm1 /{factor:g}, {block}attn1.to_q/to_k/to_v *{factor:g} "
                                "(exact; keeps ComfyUI's SD2 v-prediction guess off)"}


def skip_noisy_latent(control: dict[str, torch.Tensor]) -> None:
    """Zero input_blocks.0 so ComfyUI's ControlNet computes what the reference computes.

    The reference (cldm.py ControlNet.forward) replaces input_blocks.0's output by the hint features;
    ComfyUI adds them: conv(x) + hint. With a zero conv that sum is the hint alone.
    """
    for name in ("input_blocks.0.0.weight", "input_blocks.0.0.bias"):
        control[name] = torch.zeros_like(control[name])


def convert_part(part: PartPlan, tensors: Mapping[str, torch.Tensor], variant: str,
                 dtype: torch.dtype | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Source tensors of one part (full keys) → (tensors under the target names, safetensors metadata)."""
    spec = part.spec
    local = {k[len(spec.prefix):]: v for k, v in tensors.items()}
    metadata = {"diorama_source": variant, "diorama_part": spec.suffix}
    if spec.kind == "unet":
        out = dict(local)
        metadata.update(prediction="eps", schedule=f"linear {LINEAR_START}-{LINEAR_END}, {TIMESTEPS} steps")
        metadata.update(keep_eps_guess(out, dtype))
    elif spec.kind == "controlnet":
        skip_noisy_latent(local)
        out = {"control_model." + k: v for k, v in local.items()}
        metadata.update(hint_channels=str(spec.hint_channels),
                        diorama_note="input_blocks.0 zeroed: the reference ControlNet never sees the noisy latent")
    elif spec.kind == "dinov2":
        out = map_dinov2(local)
        # The config (JSON values) ComfyUI's ClipVisionModel takes; the file's shapes do not give the head count.
        metadata.update({k: json.dumps(v) for k, v in part.config.items()})
    elif spec.kind == "identity":
        out = {"projection.weight": local["weight"], "projection.bias": local["bias"]}
        metadata = {**IDENTITY_METADATA, "source": variant}
    else:
        out = dict(local)
    return out, metadata


# ---------------------------------------------------------------------------------- writing

def _stored(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    return tensor.contiguous()


def write_safetensors(path: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                      dtype: torch.dtype | None = None) -> int:
    """Stream tensors into a safetensors file, one tensor in memory at a time; returns bytes written.

    Written to a temporary file beside `path` and renamed into place, so a failed run leaves nothing.
    """
    names = sorted(tensors)
    header: dict[str, dict] = {}
    offset = 0
    for name in names:
        tensor = tensors[name]
        out_dtype = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        if out_dtype not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{name}: dtype {out_dtype} cannot be stored in safetensors here")
        size = tensor.numel() * torch.empty((), dtype=out_dtype).element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[out_dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned

    temporary = f"{path}.{os.getpid()}.partial"
    try:
        with open(temporary, "wb") as f:
            f.write(struct.pack("<Q", len(encoded)))
            f.write(encoded)
            for name in names:
                tensor = _stored(tensors[name], dtype)
                if tensor.numel():
                    f.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
                del tensor
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return 8 + len(encoded) + offset


# ---------------------------------------------------------------------------------- conversion

@dataclass(frozen=True)
class WrittenPart:
    spec: PartSpec
    path: str
    size_bytes: int
    tensors: int


def output_paths(plan: ConversionPlan, name: str, folders: Mapping[str, str]) -> dict[str, str]:
    return {p.spec.suffix: os.path.join(folders[p.spec.folder], f"{name}_{p.spec.suffix}.safetensors") for p in plan.parts}


def convert_checkpoint(path: str, variant: str, folders: Mapping[str, str], name: str | None = None,
                       dtype: torch.dtype | None = None, overwrite: bool = False) -> list[WrittenPart]:
    """Convert a BIFRÖST/AnyDoor checkpoint into ComfyUI model files.

    `folders` maps ComfyUI folder names (diffusion_models, controlnet, clip_vision, identity_adapters,
    vae) to the directories to write into. Each part is read, written and released before the next,
    and the checkpoint is re-opened per part so its memory-mapped pages are released too.
    """
    name = name or variant
    state = read_state_dict(path)
    plan = plan_conversion({k: v.shape for k, v in state.items()}, variant)
    check_schedule({k: state[k] for k in plan.schedule_keys})
    del state
    paths = output_paths(plan, name, folders)
    existing = [p for p in paths.values() if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(f"not overwriting existing files (pass --overwrite to replace them): {', '.join(existing)}")

    written = []
    for part in plan.parts:
        os.makedirs(os.path.dirname(paths[part.spec.suffix]), exist_ok=True)
        state = read_state_dict(path)
        tensors = {k: state[k] for k in part.keys}
        del state  # the other parts' tensors: never touched, so never read from disk
        converted, metadata = convert_part(part, tensors, variant, dtype)
        size = write_safetensors(paths[part.spec.suffix], converted, metadata, dtype)
        written.append(WrittenPart(part.spec, paths[part.spec.suffix], size, len(converted)))
        log.info("wrote %s (%s, %d tensors, %.1f MB) → read by %s", paths[part.spec.suffix], part.spec.suffix,
                 len(converted), size / 1e6, part.spec.loader)
        del tensors, converted
    return written
