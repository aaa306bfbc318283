"""What Diorama's small TAEF2-space UNet recipes share (small_compositor, small_neural_assets): the
convolution-only UNet config, its seeded initial weights, the settings every such recipe checks, and the
trainer interface around an ε-prediction loss that weights the blend region.

A recipe subclass sets `name`, `settings`, `config`, `export_name` and implements `encoded(inputs)` →
(target latents, concat [mask | model-space concat image], latent-grid blend mask) and `inputs(batch)`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import comfy.ops
import comfy.utils
import torch
import torch.nn.functional as F
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from ...loaders.model_folders import SMALL_MODEL_FOLDER
from ...loaders.small_model import (SmallModelConfig, build_model, parse_config, read_small_model,
                                    save_small_model, unet_arguments)
from ...loaders.taef2 import DOWNSCALE, LATENT_CHANNELS, load_taef2, resolve_pair
from .. import diffusion

CONCAT_KEYS = ("mask", "concat_image")


PREDICTIONS = {"eps": "eps", "v": "v_prediction"}  # recipe.prediction → the small model's model_type


@dataclass(frozen=True)
class SmallUNetSettings:
    """The `recipe:` keys every small-UNet recipe has; a recipe's settings subclass this with its own."""

    taef2: str = "taef2"  # vae_approx pair name (Diorama Load Tiny Autoencoder's list), or "ENCODER,DECODER" files
    image_size: int = 64  # training resolution (multiple of 8 × 2^(levels−1))
    model_channels: int = 64
    channel_mult: tuple = (1, 2, 2)
    num_res_blocks: int = 2
    latent_scale: float = 1.0  # model space = raw TAEF2 latent × scale
    mask_weight: float = 1.0  # loss weight inside the blend region (1 = plain MSE)
    learning_rate: float = 2e-4
    init_seed: int = 0  # the UNet's initial weights
    prediction: str = "eps"  # what the UNet outputs: "eps" (noise) or "v" (v-prediction, trained under the v-loss)
    init_weights: str = ""  # start from this small model file (diorama_small_models/ name or path), not init_seed

    @classmethod
    def from_section(cls, section: dict, recipe: str):
        """The settings of a `recipe:` section, unknown keys and the shared checks refused by name."""
        names = {f.name for f in fields(cls)}
        if unknown := sorted(set(section) - names):
            raise ValueError(f"recipe section of {recipe}: unknown keys {unknown}; expected some of {sorted(names)}")
        settings = cls(**{**section, "channel_mult": tuple(section.get("channel_mult", (1, 2, 2)))})
        check_unet_settings(settings, recipe)
        return settings


def check_unet_settings(settings, recipe: str) -> None:
    """The checks every small-UNet recipe's `recipe:` section needs (image size, width, rates, prediction)."""
    if settings.prediction not in PREDICTIONS:
        raise ValueError(f"{recipe}: recipe.prediction = {settings.prediction!r}; expected one of {sorted(PREDICTIONS)}")
    multiple = DOWNSCALE * 2 ** (len(settings.channel_mult) - 1)
    if settings.image_size < multiple or settings.image_size % multiple:
        raise ValueError(f"recipe.image_size = {settings.image_size}; expected a multiple of {multiple} "
                         f"(TAEF2's 1/8 times the UNet's {len(settings.channel_mult)} levels)")
    if settings.model_channels < 32 or settings.model_channels % 32:
        raise ValueError(f"recipe.model_channels = {settings.model_channels}; expected a multiple of 32 "
                         "(the UNet's GroupNorm has 32 groups)")
    if settings.learning_rate <= 0 or settings.mask_weight <= 0 or settings.latent_scale <= 0:
        raise ValueError(f"{recipe}: recipe.learning_rate, mask_weight and latent_scale must be > 0; got "
                         f"{settings.learning_rate}, {settings.mask_weight}, {settings.latent_scale}")


def conv_unet_config(settings, concat_image_channels: int, recipe: str) -> SmallModelConfig:
    """A convolution-only UNet (no attention, so any text conditioning a workflow passes is ignored) reading
    the blend mask and `concat_image_channels` of concatenated latents."""
    levels = len(settings.channel_mult)
    unet = {"in_channels": LATENT_CHANNELS + 1 + concat_image_channels, "out_channels": LATENT_CHANNELS,
            "model_channels": settings.model_channels, "num_res_blocks": [settings.num_res_blocks] * levels,
            "channel_mult": list(settings.channel_mult), "num_heads": 1,
            "transformer_depth": [0] * (settings.num_res_blocks * levels),
            "transformer_depth_output": [0] * ((settings.num_res_blocks + 1) * levels),
            "transformer_depth_middle": -1, "context_dim": None}
    return parse_config({"unet": unet, "model_type": PREDICTIONS[settings.prediction], "latent_format": "taef2",
                         "latent_scale": settings.latent_scale, "concat_keys": list(CONCAT_KEYS),
                         "concat_image_channels": concat_image_channels}, f"recipe {recipe}")


def initial_unet_state(config: SmallModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """Seeded initial weights: torch's default init of every conv/linear (ComfyUI's layers skip it), and the
    output convolutions zero as in SD's UNet (zero_module), so the untrained model predicts ε = 0."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNetModel(**unet_arguments(config), operations=comfy.ops.disable_weight_init)
        for module in unet.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                _default_init(module)
            elif isinstance(module, torch.nn.GroupNorm):
                torch.nn.init.ones_(module.weight)
                torch.nn.init.zeros_(module.bias)
    state = unet.state_dict()
    for key in [k for k in state if k.startswith("out.2.") or k.endswith("out_layers.3.weight")
                or k.endswith("out_layers.3.bias")]:
        state[key] = torch.zeros_like(state[key])
    return state


def _default_init(module: torch.nn.Module) -> None:
    # The torch base class's reset_parameters (Kaiming-uniform); ComfyUI's subclasses replace it with a no-op.
    base = torch.nn.Conv2d if isinstance(module, torch.nn.Conv2d) else torch.nn.Linear
    base.reset_parameters(module)


def taef2_paths(name: str) -> tuple[str, str]:
    """A vae_approx pair name, or "ENCODER,DECODER" file names/paths."""
    if "," in name:
        encoder, decoder = (part.strip() for part in name.split(",", 1))
        return diffusion.model_path("vae_approx", encoder), diffusion.model_path("vae_approx", decoder)
    return tuple(diffusion.model_path("vae_approx", part) for part in resolve_pair(name))


def weights_path(name: str) -> str:
    """recipe.init_weights: a file path (absolute, or relative to the working directory: an earlier run's
    export), else a name in the diorama_small_models folder."""
    return str(Path(name).resolve()) if Path(name).is_file() else diffusion.model_path(SMALL_MODEL_FOLDER, name)


def resize_plane(plane: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """[H,W] → [size,size]: "nearest" keeps a mask binary, "area" averages a continuous plane."""
    return F.interpolate(plane[None, None].float(), size=(size, size), mode=mode)[0, 0]


def latent_blend_mask(blend: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """[B,1,h,w] from pixel masks [B,H,W], as BaseModel.concat_cond makes it at inference (bilinear, rounded)."""
    return comfy.utils.common_upscale(blend[:, None].float(), latents.shape[-1], latents.shape[-2], "bilinear",
                                      "center").round()


class SmallUNetRecipe:
    name: str
    export_name: str

    def __init__(self, settings, config: SmallModelConfig, device: torch.device):
        self.settings, self.config, self.device = settings, config, device
        start = initial_unet_state(config, settings.init_seed) if not settings.init_weights else \
            read_small_model(weights_path(settings.init_weights), config)[1]
        self.unet = build_model(config, start)
        self.network = self.unet.model.diffusion_model.to(device=device, dtype=torch.float32).requires_grad_(True)
        # Trained weights are the float32 master copy (bf16 comes from the trainer's autocast); on a GPU the
        # loader may have chosen fp16 for inference, and BaseModel casts the UNet's input to this dtype.
        self.network.dtype = torch.float32
        self.unet.model.manual_cast_dtype = None
        self.vae = load_taef2(*taef2_paths(settings.taef2))

    def parameter_groups(self) -> list[dict]:
        return [{"name": "unet", "params": list(self.network.parameters())}]

    def learning_rates(self, step: int) -> dict[str, float]:
        return {"unet": float(self.settings.learning_rate)}

    def checkpointed_modules(self) -> list[torch.nn.Module]:
        return []  # convolution-only and small: nothing worth recomputing

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.network.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.network.load_state_dict(state, strict=True)

    @torch.no_grad()
    def encoded_batch(self, targets: torch.Tensor, raw_concat: torch.Tensor, blend: torch.Tensor):
        """(target latents, concat [mask | model-space concat image], latent-grid blend mask) on the device, from
        target images [B,S,S,3], the raw-TAEF2 concat_latent_image and pixel blend masks [B,S,S]: as
        BaseModel.concat_cond builds them at inference (the whole concat image through process_latent_in, the
        mask resized bilinearly and rounded)."""
        model = self.unet.model
        latents = model.process_latent_in(self.vae.encode(targets).float())
        mask = latent_blend_mask(blend, latents)
        concat = torch.cat((mask, model.process_latent_in(raw_concat)), dim=1)
        return latents.to(self.device), concat.to(self.device), mask.to(self.device)

    def weighted_loss(self, latents: torch.Tensor, concat: torch.Tensor, blend: torch.Tensor,
                      generator: torch.Generator) -> torch.Tensor:
        """The prediction's MSE (ε: ‖ε̂ − ε‖² = ‖x̂₀ − x₀‖²/σ²; v: ‖v̂ − v‖² = ‖x̂₀ − x₀‖²·(σ² + 1)/σ², which keeps
        weight on x̂₀ at high noise, where an ε-model's small errors become large x̂₀ errors), the blend region
        weighted by settings.mask_weight."""
        noisy, sigma, noise = diffusion.noisy_latents(self.unet, latents, generator)
        weight = 1 + (self.settings.mask_weight - 1) * blend
        if self.settings.prediction == "eps":
            epsilon = diffusion.predicted_noise(self.unet, noisy, sigma, None, concat).float()
            return (weight * (epsilon - noise) ** 2).mean() / weight.mean()
        denoised = self.unet.model.apply_model(noisy, sigma, c_concat=concat, c_crossattn=None).float()
        variance = sigma.float().view(-1, 1, 1, 1) ** 2
        return (weight * (denoised - latents) ** 2 * (variance + 1) / variance).mean() / weight.mean()

    def one_step_composites(self, latents: torch.Tensor, concat: torch.Tensor, generator: torch.Generator,
                            targets: torch.Tensor, pixel_blend: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Validation: the mean ε-loss and the one-step x̂₀ decoded and blended into the targets [B,S,S,3]."""
        loss, denoised = diffusion.one_step_prediction(self.unet, latents, None, generator, concat)
        predicted = diffusion.decode_latents(self.unet, self.vae, denoised)
        return float(loss.mean()), targets * (1 - pixel_blend[..., None]) + predicted * pixel_blend[..., None]

    def export(self, directory: Path) -> list[Path]:
        path = Path(directory) / self.export_name
        save_small_model(str(path), {k: v.float() for k, v in self.network.state_dict().items()}, self.config)
        return [path]
