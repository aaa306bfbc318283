"""TAEF2, the tiny autoencoder of the FLUX.2 latent space, as a ComfyUI VAE.

The pretrained files (madebyollin/taesd's taef2_encoder / taef2_decoder, converted to safetensors)
are the TAESD encoder/decoder plus one addition: the three blocks at the lowest resolution (the last
three of the encoder, the first three of the decoder) first add a per-pixel branch
`x + conv1x1(64→256) → GroupNorm(4) → ReLU → conv1x1(256→64)` (stored under `N.pool.*`). ComfyUI's
own TAESD class lacks that branch, so it cannot load these files; this module builds the same
sequential layout (keys `0.weight`, `1.conv.0.weight`, `12.pool.1.weight`, …) and wraps it in a
`comfy.sd.VAE` so VAEEncode, VAEDecode, Composite Sample and tiled decoding treat it like any VAE:
RGB in [0, 1] ⇄ raw 32-channel latents at 1/8 resolution (no scale or shift: a model that samples in
this space applies its own latent format, see loaders.small_model).

Files live in ComfyUI's `vae_approx` folder (where TAESD/TAEF1 files go) as
`<name>_encoder.safetensors` + `<name>_decoder.safetensors`; ComfyUI's own VAE Loader ignores the
`taef2` prefix, so the two loaders never compete for these files.
"""
from __future__ import annotations

import logging
import os

import comfy.latent_formats
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.sd
import folder_paths
import torch
from torch import nn

from .model_folders import check_model_name, read_safetensors, resolve_model_file, safetensors_files
from .state_layout import layout_differences

log = logging.getLogger(__name__)

VAE_APPROX_FOLDER = "vae_approx"
LATENT_CHANNELS = 32
DOWNSCALE = 8
WIDTH = 64
POOL_WIDTH = 256
POOL_GROUPS = 4
ENCODER_SUFFIX = "_encoder"
DECODER_SUFFIX = "_decoder"

ops = comfy.ops.disable_weight_init  # ComfyUI's layers: no init cost, weights cast on the fly when offloaded


def conv3x3(n_in: int, n_out: int, **kwargs) -> nn.Module:
    return ops.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """The decoder's soft clamp of its input latents to about ±3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """TAESD's residual block; `pooled` adds TAEF2's per-pixel 64→256→64 branch before the convolutions."""

    def __init__(self, n_in: int, n_out: int, pooled: bool = False):
        super().__init__()
        self.conv = nn.Sequential(conv3x3(n_in, n_out), nn.ReLU(), conv3x3(n_out, n_out), nn.ReLU(),
                                  conv3x3(n_out, n_out))
        self.skip = ops.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = nn.Sequential(ops.Conv2d(n_in, POOL_WIDTH, 1, bias=False), ops.GroupNorm(POOL_GROUPS, POOL_WIDTH),
                                  nn.ReLU(), ops.Conv2d(POOL_WIDTH, n_in, 1, bias=False)) if pooled else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def encoder(latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    """RGB [B,3,H,W] in [0, 1] → raw latents [B,C,H/8,W/8]."""
    return nn.Sequential(
        conv3x3(3, WIDTH), Block(WIDTH, WIDTH),
        conv3x3(WIDTH, WIDTH, stride=2, bias=False), Block(WIDTH, WIDTH), Block(WIDTH, WIDTH), Block(WIDTH, WIDTH),
        conv3x3(WIDTH, WIDTH, stride=2, bias=False), Block(WIDTH, WIDTH), Block(WIDTH, WIDTH), Block(WIDTH, WIDTH),
        conv3x3(WIDTH, WIDTH, stride=2, bias=False),
        Block(WIDTH, WIDTH, pooled=True), Block(WIDTH, WIDTH, pooled=True), Block(WIDTH, WIDTH, pooled=True),
        conv3x3(WIDTH, latent_channels),
    )


def decoder(latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    """Raw latents [B,C,h,w] → RGB [B,3,8h,8w], about [0, 1] (not clamped)."""
    return nn.Sequential(
        Clamp(), conv3x3(latent_channels, WIDTH), nn.ReLU(),
        Block(WIDTH, WIDTH, pooled=True), Block(WIDTH, WIDTH, pooled=True), Block(WIDTH, WIDTH, pooled=True),
        nn.Upsample(scale_factor=2), conv3x3(WIDTH, WIDTH, bias=False),
        Block(WIDTH, WIDTH), Block(WIDTH, WIDTH), Block(WIDTH, WIDTH),
        nn.Upsample(scale_factor=2), conv3x3(WIDTH, WIDTH, bias=False),
        Block(WIDTH, WIDTH), Block(WIDTH, WIDTH), Block(WIDTH, WIDTH),
        nn.Upsample(scale_factor=2), conv3x3(WIDTH, WIDTH, bias=False),
        Block(WIDTH, WIDTH), conv3x3(WIDTH, 3),
    )


class Taef2(nn.Module):
    """The first-stage model a comfy.sd.VAE drives: `encode`/`decode` between [0, 1] RGB and raw latents."""

    def __init__(self, latent_channels: int = LATENT_CHANNELS):
        super().__init__()
        self.encoder = encoder(latent_channels)
        self.decoder = decoder(latent_channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


# Latent → RGB preview (ComfyUI's Latent2RGB previewer: RGB in [-1, 1] = latent · factors + bias), fitted by
# least squares on raw TAEF2 latents of 82 renders (the bundled scene and 40 scene pairs of the rendered training
# source, seed 12345) against the 8×8-averaged image: 18.8 dB PSNR on them, enough to follow a sampling run.
LATENT_RGB_FACTORS = [
    [0.0148, -0.0319, -0.0403], [0.0092, -0.0909, 0.0467], [0.0086, 0.0168, 0.0958], [0.0649, 0.1991, 0.3239],
    [0.0477, -0.0836, -0.0212], [-0.0251, -0.0402, -0.0266], [-0.097, 0.0964, -0.094], [-0.005, -0.0277, -0.0359],
    [-0.3366, -0.2215, 0.0114], [-0.0227, -0.0266, 0.0213], [0.017, 0.0076, 0.0107], [0.0724, 0.017, -0.1154],
    [0.0476, -0.002, -0.0331], [0.0494, -0.0078, -0.016], [0.0576, 0.0444, 0.04], [-0.1362, 0.1018, 0.0491],
    [-0.0378, -0.002, 0.0036], [0.0045, -0.0325, -0.0756], [0.0385, 0.017, 0.0191], [0.1231, -0.1314, 0.0286],
    [0.0053, -0.0116, -0.0189], [0.0022, -0.0361, 0.0644], [-0.0447, 0.0557, -0.0424], [-0.0514, -0.009, -0.0647],
    [0.0161, 0.0551, 0.0166], [-0.0325, -0.0039, -0.083], [0.0377, -0.0421, 0.0624], [0.0689, 0.0213, -0.0673],
    [-0.0309, -0.0473, -0.0938], [-0.0159, -0.0381, 0.0176], [0.0074, 0.0739, -0.0025], [0.0271, -0.0022, -0.0411],
]
LATENT_RGB_BIAS = [-0.1818, -0.1992, -0.1951]


class Taef2LatentFormat(comfy.latent_formats.LatentFormat):
    """The latent space of a model sampling TAEF2 latents: model space = (raw - shift) · scale.

    No `taesd_decoder_name`: ComfyUI's TAESD previewer would load taef2_decoder into its own TAESD class,
    which lacks the pooled blocks; previews use the fitted Latent2RGB factors instead."""
    latent_channels = LATENT_CHANNELS

    def __init__(self, scale: float = 1.0, shift: float = 0.0):
        self.scale_factor = scale
        self.shift_factor = shift
        # Preview factors apply to raw latents; ComfyUI's previewer sees model-space latents, so fold the scale in.
        self.latent_rgb_factors = [[v / scale for v in row] for row in LATENT_RGB_FACTORS]
        self.latent_rgb_factors_bias = [b + shift * sum(row[i] for row in LATENT_RGB_FACTORS)
                                        for i, b in enumerate(LATENT_RGB_BIAS)]

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        return (latent - self.shift_factor) * self.scale_factor

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self.scale_factor + self.shift_factor


def expected_layout(part: str) -> dict[str, tuple[int, ...]]:
    """Key → shape of one half ("encoder" or "decoder") of the file layout, without building weights."""
    with torch.device("meta"):
        module = encoder() if part == "encoder" else decoder()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def check_layout(part: str, path: str, state: dict[str, torch.Tensor]) -> None:
    differences = layout_differences(expected_layout(part), {k: v.shape for k, v in state.items()})
    if differences:
        raise ValueError(
            f"{path}: not a TAEF2 {part} (expected the TAESD {part} layout with TAEF2's pooled blocks and "
            f"{LATENT_CHANNELS} latent channels, e.g. madebyollin's taef2_{part} converted to safetensors): "
            f"missing {differences.missing[:5]}, unknown {differences.unknown[:5]}, wrong shapes {differences.wrong[:5]}")


class Taef2VAE(comfy.sd.VAE):
    """A comfy.sd.VAE around TAEF2. ComfyUI's VAE constructor picks an architecture from state-dict key
    names and has no entry for TAEF2, so this sets the same attributes it sets for an image VAE and
    reuses every encode/decode/tiling method unchanged."""

    def __init__(self, model: Taef2, dtype: torch.dtype | None = None):
        self.first_stage_model = model.eval()
        self.latent_channels = LATENT_CHANNELS
        self.latent_dim = 2
        self.output_channels = 3
        self.downscale_ratio = DOWNSCALE
        self.upscale_ratio = DOWNSCALE
        self.downscale_index_formula = None
        self.upscale_index_formula = None
        self.extra_1d_channel = None
        self.crop_input = True
        self.not_video = False
        self.disable_offload = False
        self.size = None
        # The first stage works in [0, 1] on both sides (TAESD's convention without the ±1 wrap).
        self.process_input = lambda image: image
        self.process_output = lambda image: image.clamp(0.0, 1.0)
        # Peak activations: about four 64-channel maps at full resolution (block input, two conv outputs,
        # the skip sum) per image; `shape` is the pixel batch [B,3,H,W] or the latent batch [B,C,h,w].
        self.memory_used_encode = lambda shape, dtype: 4 * WIDTH * shape[2] * shape[3] * comfy.model_management.dtype_size(dtype)
        self.memory_used_decode = lambda shape, dtype: (4 * WIDTH * shape[2] * shape[3] * DOWNSCALE ** 2
                                                        * comfy.model_management.dtype_size(dtype))
        # The released weights are float16; ComfyUI picks the first of these the device runs well.
        self.working_dtypes = [torch.float16, torch.bfloat16, torch.float32]
        self.device = comfy.model_management.vae_device()
        self.vae_dtype = dtype or comfy.model_management.vae_dtype(self.device, self.working_dtypes)
        self.first_stage_model.to(self.vae_dtype)
        self.output_device = comfy.model_management.intermediate_device()
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=self.device,
                                                        offload_device=comfy.model_management.vae_offload_device())
        self.model_size()


def read_part(part: str, path: str) -> dict[str, torch.Tensor]:
    state, _ = read_safetensors(path)
    check_layout(part, path, state)
    return state


def load_taef2(encoder_path: str, decoder_path: str) -> Taef2VAE:
    """A ComfyUI VAE from TAEF2's two safetensors files, each checked against the layout before loading."""
    model = Taef2()
    model.encoder.load_state_dict(read_part("encoder", encoder_path))
    model.decoder.load_state_dict(read_part("decoder", decoder_path))
    log.info("TAEF2 loaded from %s and %s", encoder_path, decoder_path)
    return Taef2VAE(model)


def taef2_pairs() -> dict[str, tuple[str, str]]:
    """name → (encoder file, decoder file) for every `<name>_encoder` + `<name>_decoder` safetensors pair in
    vae_approx whose name starts with "taef2" (TAESD/TAEF1 pairs belong to ComfyUI's own VAE Loader)."""
    files = safetensors_files(VAE_APPROX_FOLDER)
    by_stem = {os.path.splitext(f)[0]: f for f in files}
    return {stem[:-len(ENCODER_SUFFIX)]: (file, by_stem[stem[:-len(ENCODER_SUFFIX)] + DECODER_SUFFIX])
            for stem, file in sorted(by_stem.items())
            if stem.endswith(ENCODER_SUFFIX) and os.path.basename(stem).startswith("taef2")
            and stem[:-len(ENCODER_SUFFIX)] + DECODER_SUFFIX in by_stem}


def resolve_pair(name: str) -> tuple[str, str]:
    """(encoder path, decoder path) of a listed TAEF2 name, or an error naming the folders searched."""
    check_model_name(VAE_APPROX_FOLDER, name)
    pair = taef2_pairs().get(name)
    if pair is None:
        searched = ", ".join(folder_paths.get_folder_paths(VAE_APPROX_FOLDER))
        raise FileNotFoundError(f"TAEF2 {name!r} was not found: expected {name}{ENCODER_SUFFIX}.safetensors and "
                                f"{name}{DECODER_SUFFIX}.safetensors in the {VAE_APPROX_FOLDER!r} model folders "
                                f"({searched})")
    return resolve_model_file(VAE_APPROX_FOLDER, pair[0]), resolve_model_file(VAE_APPROX_FOLDER, pair[1])
