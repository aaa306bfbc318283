"""Diorama's small diffusion models: an SD-style UNet in TAEF2's latent space, stored with its config.

A small model is one .safetensors file (in the `diorama_small_models` model folder) holding ComfyUI's
openaimodel UNetModel weights (keys as `UNetModel.state_dict()`, no `model.diffusion_model.` prefix)
and this metadata:

    diorama_format          "small_model"
    diorama_format_version  "1"
    config                  JSON (below)

    {"unet": {UNetModel keyword arguments: in_channels, out_channels, model_channels, num_res_blocks,
              channel_mult, num_heads | num_head_channels, transformer_depth (one entry per input
              block: 0 = no attention there, which is how attention resolutions are expressed),
              transformer_depth_middle, transformer_depth_output, context_dim, ...},
     "model_type": "eps" | "v_prediction",
     "latent_format": "taef2",            32 channels at 1/8, decoded by loaders.taef2
     "latent_scale": 1.0, "latent_shift": 0.0,   model space = (raw TAEF2 latent - shift) * scale
     "concat_keys": [],                   extra input channels, ComfyUI's vocabulary in this order:
                                          "mask" (1), "mask_inverted" (1), "masked_image" (32: the
                                          inpaint pair, read from concat_latent_image/concat_mask or the
                                          LATENT noise_mask), "concat_image" (concat_image_channels,
                                          read from the conditioning's concat_latent_image)
     "concat_image_channels": 32,
     "sampling": {}}                      optional ComfyUI sampling settings: beta_schedule,
                                          linear_start, linear_end, timesteps, zsnr

so in_channels must be 32 + the channels of concat_keys, and out_channels 32. The loader builds a
ComfyUI MODEL (comfy.model_base.BaseModel inside a ModelPatcher), so KSampler, Composite Sample,
LoRA-free patches and previews treat it as any checkpoint; `save_small_model` writes the format.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field

import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.supported_models_base
import comfy.utils
import safetensors.torch
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from .model_folders import read_safetensors, read_safetensors_layout
from .state_layout import layout_differences
from .taef2 import LATENT_CHANNELS, Taef2LatentFormat

log = logging.getLogger(__name__)

FORMAT = "small_model"
FORMAT_VERSION = "1"
MODEL_TYPES = {"eps": comfy.model_base.ModelType.EPS, "v_prediction": comfy.model_base.ModelType.V_PREDICTION}
LATENT_FORMATS = ("taef2",)
CONCAT_KEYS = ("mask", "mask_inverted", "masked_image", "concat_image")
SAMPLING_KEYS = ("beta_schedule", "linear_start", "linear_end", "timesteps", "zsnr")
UNET_KEYS = ("image_size", "in_channels", "out_channels", "model_channels", "num_res_blocks", "channel_mult",
             "num_heads", "num_head_channels", "transformer_depth", "transformer_depth_middle",
             "transformer_depth_output", "context_dim", "use_spatial_transformer", "use_linear_in_transformer",
             "use_scale_shift_norm", "resblock_updown", "adm_in_channels", "disable_self_attentions",
             "num_attention_blocks", "disable_middle_self_attn", "dropout")
UNET_REQUIRED = ("in_channels", "out_channels", "model_channels", "num_res_blocks", "channel_mult")


@dataclass(frozen=True)
class SmallModelConfig:
    unet: dict
    model_type: str = "eps"
    latent_format: str = "taef2"
    latent_scale: float = 1.0
    latent_shift: float = 0.0
    concat_keys: tuple[str, ...] = ()
    concat_image_channels: int = LATENT_CHANNELS
    sampling: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"unet": self.unet, "model_type": self.model_type, "latent_format": self.latent_format,
                           "latent_scale": self.latent_scale, "latent_shift": self.latent_shift,
                           "concat_keys": list(self.concat_keys), "concat_image_channels": self.concat_image_channels,
                           "sampling": self.sampling}, sort_keys=True)


def concat_channels(keys: tuple[str, ...], concat_image_channels: int) -> int:
    sizes = {"mask": 1, "mask_inverted": 1, "masked_image": LATENT_CHANNELS, "concat_image": concat_image_channels}
    return sum(sizes[key] for key in keys)


def _number(where: str, value, kind=float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"small model config: {where} must be a finite number, got {value!r}")
    if kind is int and int(value) != value:
        raise ValueError(f"small model config: {where} must be a whole number, got {value!r}")
    return kind(value)


def parse_config(raw: dict | str, where: str = "config") -> SmallModelConfig:
    """Check a config (dict or its JSON text) and return it typed; every error names the field and what
    is expected, and comes before any weight is built."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: the small model config is not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: the small model config must be a JSON object, got {type(raw).__name__}")
    known = {"unet", "model_type", "latent_format", "latent_scale", "latent_shift", "concat_keys",
             "concat_image_channels", "sampling"}
    if unknown := sorted(set(raw) - known):
        raise ValueError(f"{where}: unknown small model config fields {unknown}; expected only {sorted(known)}")
    unet = raw.get("unet")
    if not isinstance(unet, dict):
        raise ValueError(f"{where}: 'unet' must be an object of UNetModel arguments, got {unet!r}")
    if unknown := sorted(set(unet) - set(UNET_KEYS)):
        raise ValueError(f"{where}: unknown UNet arguments {unknown}; allowed: {', '.join(UNET_KEYS)}")
    if missing := [k for k in UNET_REQUIRED if k not in unet]:
        raise ValueError(f"{where}: the UNet config lacks {missing} (required: {', '.join(UNET_REQUIRED)})")
    model_type = raw.get("model_type", "eps")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{where}: model_type {model_type!r} is not supported; expected one of {sorted(MODEL_TYPES)}")
    latent_format = raw.get("latent_format", "taef2")
    if latent_format not in LATENT_FORMATS:
        raise ValueError(f"{where}: latent_format {latent_format!r} is not supported; expected one of {LATENT_FORMATS}")
    concat_keys = raw.get("concat_keys", [])
    if not isinstance(concat_keys, list) or any(k not in CONCAT_KEYS for k in concat_keys) \
            or len(set(concat_keys)) != len(concat_keys):
        raise ValueError(f"{where}: concat_keys {concat_keys!r} must be a list of distinct names from {CONCAT_KEYS}")
    sampling = raw.get("sampling", {})
    if not isinstance(sampling, dict) or (unknown := sorted(set(sampling) - set(SAMPLING_KEYS))):
        raise ValueError(f"{where}: sampling must be an object with keys from {SAMPLING_KEYS}, got {sampling!r}")
    config = SmallModelConfig(
        unet=dict(unet), model_type=model_type, latent_format=latent_format,
        latent_scale=_number("latent_scale", raw.get("latent_scale", 1.0)),
        latent_shift=_number("latent_shift", raw.get("latent_shift", 0.0)),
        concat_keys=tuple(concat_keys),
        concat_image_channels=_number("concat_image_channels", raw.get("concat_image_channels", LATENT_CHANNELS), int),
        sampling=dict(sampling))
    if config.latent_scale <= 0:
        raise ValueError(f"{where}: latent_scale must be > 0, got {config.latent_scale}")
    expected_in = LATENT_CHANNELS + concat_channels(config.concat_keys, config.concat_image_channels)
    if unet["in_channels"] != expected_in or unet["out_channels"] != LATENT_CHANNELS:
        raise ValueError(f"{where}: a {latent_format} model with concat_keys {list(config.concat_keys)} needs "
                         f"unet.in_channels = {expected_in} ({LATENT_CHANNELS} latent + concatenated channels) and "
                         f"unet.out_channels = {LATENT_CHANNELS}; got {unet['in_channels']} and {unet['out_channels']}")
    return config


def unet_arguments(config: SmallModelConfig) -> dict:
    """UNetModel keyword arguments: the stored ones over the defaults a file need not repeat."""
    return {"image_size": 32, "use_spatial_transformer": config.unet.get("context_dim") is not None,
            "num_head_channels": -1, **config.unet}


def expected_layout(config: SmallModelConfig, where: str = "config") -> dict[str, tuple[int, ...]]:
    """Key → shape of the UNet the config describes, built on the meta device (no memory, no init)."""
    try:
        with torch.device("meta"):
            unet = UNetModel(**unet_arguments(config), operations=comfy.ops.disable_weight_init)
    except Exception as error:  # the UNet's own asserts/TypeErrors: say which config they came from
        raise ValueError(f"{where}: the UNet config {config.unet} does not build a ComfyUI UNetModel: "
                         f"{type(error).__name__}: {error}") from None
    return {k: tuple(v.shape) for k, v in unet.state_dict().items()}


def check_state_layout(config: SmallModelConfig, shapes: dict, where: str) -> None:
    differences = layout_differences(expected_layout(config, where), shapes)
    if differences:
        raise ValueError(f"{where}: the weights do not match the UNet its config describes: "
                         f"{len(differences.missing)} missing (e.g. {differences.missing[:3]}), "
                         f"{len(differences.unknown)} unknown (e.g. {differences.unknown[:3]}), "
                         f"wrong shapes {differences.wrong[:3]}")


def save_small_model(path: str, unet_state: dict[str, torch.Tensor], config: SmallModelConfig | dict) -> None:
    """Write a small model file (the trainer's export); refuses a config or state the loader would refuse."""
    # A config built in code goes through the same checks as one read from a file.
    config = parse_config(config.to_json() if isinstance(config, SmallModelConfig) else config, path)
    check_state_layout(config, {k: v.shape for k, v in unet_state.items()}, path)
    metadata = {"diorama_format": FORMAT, "diorama_format_version": FORMAT_VERSION, "config": config.to_json()}
    safetensors.torch.save_file({k: v.detach().contiguous().cpu() for k, v in unet_state.items()}, path, metadata)


def read_config(path: str, metadata: dict) -> SmallModelConfig:
    if metadata.get("diorama_format") != FORMAT:
        raise ValueError(f"{path}: not a Diorama small model (metadata diorama_format is "
                         f"{metadata.get('diorama_format')!r}, expected {FORMAT!r}); write it with "
                         "loaders.small_model.save_small_model")
    if metadata.get("diorama_format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: small model format version {metadata.get('diorama_format_version')!r} is not "
                         f"supported; this Diorama reads version {FORMAT_VERSION}")
    if "config" not in metadata:
        raise ValueError(f"{path}: the metadata has no 'config' (the JSON UNet/latent config); expected one")
    return parse_config(metadata["config"], path)


class SmallModelSettings(comfy.supported_models_base.BASE):
    """The ComfyUI model config (`supported_models` style) of one small model file."""
    unet_extra_config = {}  # the file's config is complete; SD's defaults must not override it
    memory_usage_factor = 1.0

    def __init__(self, config: SmallModelConfig):
        self.latent_format = lambda: Taef2LatentFormat(config.latent_scale, config.latent_shift)
        self.sampling_settings = dict(config.sampling)
        super().__init__(unet_arguments(config))

    def inpaint_model(self) -> bool:
        return False  # concat channels come from the config's concat_keys, not from SD's 9-channel rule


class SmallBaseModel(comfy.model_base.BaseModel):
    """ComfyUI's BaseModel that names a conditioning of the wrong width: a conditioning made for another model
    (a text encoder's has no concat image, so ComfyUI concatenates the latent itself) would otherwise reach the
    first convolution as a bare channel-count error."""

    def concat_cond(self, **kwargs):
        concat = super().concat_cond(**kwargs)
        expected = concat_channels(self.concat_keys, self.concat_image_channels)
        given = 0 if concat is None else concat.shape[1]
        if given != expected:
            raise ValueError(
                f"this small model reads {expected} concatenated channels ({' + '.join(self.concat_keys) or 'none'}) "
                f"but its conditioning gives {given}: connect the positive and negative of the conditioning node made "
                "for it (Diorama Small Compositor Conditioning for diorama_compositor, Diorama Small Neural Assets "
                "Conditioning for diorama_neural_assets)")
        return concat


def build_model(config: SmallModelConfig, state: dict[str, torch.Tensor]) -> comfy.model_patcher.ModelPatcher:
    """A ComfyUI MODEL from a checked config and matching weights, placed as ComfyUI places a UNet."""
    settings = SmallModelSettings(config)
    load_device = comfy.model_management.get_torch_device()
    parameters = comfy.utils.calculate_parameters(state)
    unet_dtype = comfy.model_management.unet_dtype(model_params=parameters,
                                                   supported_dtypes=list(settings.supported_inference_dtypes),
                                                   weight_dtype=comfy.utils.weight_dtype(state))
    settings.set_inference_dtype(unet_dtype, comfy.model_management.unet_manual_cast(
        unet_dtype, load_device, settings.supported_inference_dtypes))
    model = SmallBaseModel(settings, model_type=MODEL_TYPES[config.model_type])
    model.concat_keys = config.concat_keys
    model.concat_image_channels = config.concat_image_channels
    # "masked_image" without a mask: an all-zero latent stands for "no known pixels" (SD's constants are 4-channel).
    model.blank_inpaint_image_like = torch.zeros_like
    model = model.to(comfy.model_management.unet_offload_device())
    model.load_model_weights(dict(state), "")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device,
                                            offload_device=comfy.model_management.unet_offload_device())


def read_small_model(path: str, layout_of: SmallModelConfig | None = None) -> tuple[SmallModelConfig, dict[str, torch.Tensor]]:
    """(the file's config, its UNet weights), after checking the metadata and the key/shape layout from the
    header: the layout of `layout_of`'s UNet (e.g. a recipe that trains on from the weights), else of the
    file's own config."""
    layout = read_safetensors_layout(path)  # refuses a non-safetensors, truncated or corrupt file by name
    with safetensors.safe_open(path, framework="pt") as file:
        metadata = file.metadata() or {}
    config = read_config(path, metadata)
    check_state_layout(layout_of or config, {k: v.shape for k, v in layout.items()}, path)
    state, _ = read_safetensors(path)
    return config, state


def load_small_model(path: str) -> comfy.model_patcher.ModelPatcher:
    """Check metadata and the key/shape layout from the header, then read the weights and build the MODEL."""
    config, state = read_small_model(path)
    log.info("small model %s: %s UNet, %d parameters", path, config.model_type, comfy.utils.calculate_parameters(state))
    return build_model(config, state)
