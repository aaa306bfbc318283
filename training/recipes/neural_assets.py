"""Neural Assets (seed 001): DINO fine-tuned + the conditioning adapter + the SD UNet, trained to
re-render a scene from per-object appearance and 3D-pose tokens.

Per pair, as the reference (REFERENCE.md §1 "Pairing", "CFG"):
- the two frames are swapped with probability `swap_probability` (0.5); appearance comes from the
  source frame, pose rows and the reconstruction target from the target frame;
- objects: the target frame's 3D boxes (truncated to `slots`), each with its 2D box from the visible
  segmentation in the source frame (all zero when it is not visible there: zero appearance, pose kept);
- with probability `null_condition_probability` (0.1) the condition is dropped: all 2D boxes zero,
  the global box included, and all 12-D rows zero, the camera row included, so the adapter is
  trained on exactly the null input the node's negative feeds it (`NeuralAssetsAdapter.null_tokens`);
- tokens through the node's own code path (nodes/neural_assets.appearance_tokens_input, ops.assets.
  pose_rows, the adapter), so training and inference compute the same function;
- ε-loss on the target latents (training/diffusion.py), the tokens as the UNet's whole context.

One deviation from the reference, kept on purpose: latents come from ComfyUI's VAE encode ([−1, 1]
internally), as at inference in Diorama, not from the reference's [0, 1] input quirk.

Export (what the nodes load): `neural_assets_adapter.safetensors` (models/neural_assets/), the
fine-tuned DINO as a transformers folder `dino/` (models/dino/<name>/), and the UNet
`neural_assets_unet.safetensors` (models/diffusion_models/, UNETLoader).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import safetensors.torch
import torch

from ...loaders.dino_features import dino_patch_grid, load_dino
from ...loaders.model_folders import DINO_FOLDER, resolve_transformers_folder
from ...loaders.neural_assets_adapter import save_neural_assets_adapter
from ...nodes.neural_assets import appearance_tokens_input
from ...ops.assets import Assets, pose_rows
from ...ops.neural_assets_tokens import NeuralAssetsAdapter, NeuralAssetsConfig, dino_input
from ...ops.placement import mask_bounding_box
from .. import diffusion
from ..data.frames import Frame, PairedFrames
from . import register

NAME = "neural_assets"
GROUPS = ("adapter", "dino", "unet")
ADAPTER_FILE = "neural_assets_adapter.safetensors"
UNET_FILE = "neural_assets_unet.safetensors"
DINO_EXPORT = "dino"


@dataclass(frozen=True)
class NeuralAssetsSettings:
    """The `recipe:` section of a neural_assets config."""

    unet: str  # diffusion_models name (or absolute path) of an SD2.1-class UNet (1024-wide cross-attention)
    vae: str  # vae name (or absolute path)
    dino: str  # dino folder name: the backbone to fine-tune (the reference: DINO v1 ViT-B/8)
    slots: int = 10  # object slots N: 10 for MOVi-A/B/C scenes, 23 for MOVi-E/F
    token_dim: int = 512
    image_size: int = 256  # the reference trains on 256² frames
    null_condition_probability: float = 0.1
    swap_probability: float = 0.5
    learning_rates: dict = field(default_factory=lambda: {"adapter": 1e-4, "dino": 1e-5, "unet": 1e-5})
    adapter_seed: int = 0  # initialisation of the adapter's weights

    @staticmethod
    def from_config(section: dict) -> "NeuralAssetsSettings":
        names = {f.name for f in fields(NeuralAssetsSettings)}
        unknown = sorted(set(section) - names)
        missing = sorted(n for n in ("unet", "vae", "dino") if n not in section)
        if unknown or missing:
            raise ValueError(f"recipe section of {NAME}: unknown keys {unknown}, missing keys {missing}; expected "
                             f"{sorted(names)} (unet, vae, dino required)")
        settings = NeuralAssetsSettings(**section)
        rates = dict(settings.learning_rates)
        if sorted(rates) != sorted(GROUPS) or any(not isinstance(v, (int, float)) or v < 0 for v in rates.values()):
            raise ValueError(f"recipe.learning_rates = {rates}; expected a number ≥ 0 for each of {list(GROUPS)} "
                             "(0 keeps that part frozen)")
        for name in ("null_condition_probability", "swap_probability"):
            if not 0 <= getattr(settings, name) <= 1:
                raise ValueError(f"recipe.{name} = {getattr(settings, name)}; expected a probability in [0, 1]")
        if settings.slots < 1 or settings.image_size < 16:
            raise ValueError(f"recipe.slots = {settings.slots}, image_size = {settings.image_size}; expected slots ≥ 1 "
                             "and image_size ≥ 16")
        return settings


def visible_box(frame: Frame, instance_id: int) -> tuple[float, float, float, float]:
    """(y0, x0, y1, x1) fractions of the instance's visible pixels (ends exclusive), all zero when none."""
    mask = frame.mask_of(instance_id)
    if not bool(mask.any()):
        return (0.0, 0.0, 0.0, 0.0)
    height, width = mask.shape
    x0, y0, x1, y1 = mask_bounding_box(mask.float())
    return y0 / height, x0 / width, y1 / height, x1 / width


def pair_assets(source: Frame, target: Frame, slots: int) -> Assets:
    """The target frame's 3D boxes (first `slots`) with 2D boxes from the source frame's segmentation."""
    objects = tuple(replace(box, source_box=visible_box(source, instance_id), source=0)
                    for instance_id, box in zip(target.instance_ids, target.boxes3d))[:slots]
    return Assets(objects, source_camera=source.camera, target_camera=target.camera)


class NeuralAssetsRecipe:
    name = NAME

    def __init__(self, settings: NeuralAssetsSettings, device: torch.device, dtype: torch.dtype):
        self.settings, self.device = settings, device
        self.unet = diffusion.load_trainable_unet(settings.unet, device)
        self.vae = diffusion.load_frozen_vae(settings.vae)
        self.dino = load_dino(resolve_transformers_folder(DINO_FOLDER, settings.dino))
        self.dino_net = self.dino.patcher.model.network.to(device).requires_grad_(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.adapter_seed)
            self.adapter = NeuralAssetsAdapter(NeuralAssetsConfig(
                slots=settings.slots, feature_dim=self.dino.hidden_size, dino=self.dino.name,
                token_dim=settings.token_dim, context_dim=diffusion.context_dim(self.unet))).to(device)

    # ------------------------------------------------------------------ the trainer's interface
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"adapter": self.adapter, "dino": self.dino_net, "unet": self.unet.model.diffusion_model}

    def parameter_groups(self) -> list[dict]:
        return [{"name": name, "params": list(module.parameters())} for name, module in self.modules().items()
                if self.settings.learning_rates[name] > 0]

    def learning_rates(self, step: int) -> dict[str, float]:
        return {name: float(rate) for name, rate in self.settings.learning_rates.items() if rate > 0}

    def checkpointed_modules(self) -> list[torch.nn.Module]:
        """The UNet's transformer blocks and DINO's transformer layers (transformers marks them by class)."""
        from transformers.modeling_layers import GradientCheckpointingLayer

        layers = [m for m in self.dino_net.modules() if isinstance(m, GradientCheckpointingLayer)]
        return diffusion.unet_blocks(self.unet) + layers

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{key}": value.detach().clone() for name, module in self.modules().items()
                for key, value in module.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.modules().items():
            own = {key.removeprefix(f"{name}."): value for key, value in state.items() if key.startswith(f"{name}.")}
            module.load_state_dict(own, strict=True)

    def training_loss(self, batch: list[PairedFrames], generator: torch.Generator) -> torch.Tensor:
        context, latents = self._conditioned_batch(batch, generator)
        return diffusion.noise_prediction_loss(self.unet, latents, context, generator)

    @torch.no_grad()
    def validate(self, batch: list[PairedFrames], generator: torch.Generator) -> tuple[dict[str, float], torch.Tensor]:
        """ε-loss with the condition and with the null condition (the gap is what the tokens carry), and
        per pair [target | one-step x̂₀ | source] images."""
        pairs = [(pair.source, pair.target) for pair in batch]
        latents = self._latents([target for _, target in pairs])
        context = torch.cat([self._tokens(source, target, drop=False) for source, target in pairs])
        null = self.adapter.null_tokens(len(pairs))
        state = generator.get_state()
        loss, denoised = diffusion.one_step_prediction(self.unet, latents, context, generator)
        generator.set_state(state)  # the same noise and timesteps for the null condition
        null_loss, _ = diffusion.one_step_prediction(self.unet, latents, null, generator)
        strip = torch.cat((self._images([t for _, t in pairs]), diffusion.decode_latents(self.unet, self.vae, denoised),
                           self._images([s for s, _ in pairs])), dim=2)
        return {"loss": float(loss.mean()), "null_condition_loss": float(null_loss.mean())}, strip

    def export(self, directory: Path) -> list[Path]:
        directory = Path(directory)
        adapter = directory / ADAPTER_FILE
        save_neural_assets_adapter(str(adapter), self.adapter.cpu(), overwrite=True)
        self.adapter.to(self.device)
        dino = directory / DINO_EXPORT
        self.dino_net.save_pretrained(dino, safe_serialization=True)
        unet = directory / UNET_FILE
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.unet.model.diffusion_model.state_dict().items()}
        safetensors.torch.save_file(state, str(unet))
        return [adapter, dino, unet]

    # ------------------------------------------------------------------ the maths
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable DINO patch features [B, h, w, C], as loaders.dino_features.patch_features computes them."""
        return dino_patch_grid(self.dino, self.dino_net, dino_input(images).permute(0, 3, 1, 2).to(self.device))

    def _tokens(self, source: Frame, target: Frame, drop: bool) -> torch.Tensor:
        slots, config = self.settings.slots, self.adapter.config
        if drop:  # the reference's RandomDropBoxes: every box and every row zero → zero appearance features
            appearance = torch.zeros(1, config.num_tokens, config.feature_dim, device=self.device)
            rows = torch.zeros(1, slots + 1, config.pose_dim, device=self.device)
        else:
            assets = pair_assets(source, target, slots)
            image = source.image.permute(1, 2, 0)[None]
            appearance = appearance_tokens_input(self._features, [image[0]], assets, slots).to(self.device)
            rows = pose_rows(assets, slots)[None].to(self.device)
        return self.adapter.tokens(appearance, rows)

    def _images(self, frames: list[Frame]) -> torch.Tensor:
        images = torch.stack([frame.image.permute(1, 2, 0) for frame in frames])
        return diffusion.resize_images(images.float(), self.settings.image_size)

    def _latents(self, frames: list[Frame]) -> torch.Tensor:
        return diffusion.image_latents(self.unet, self.vae, self._images(frames), self.device)

    def _conditioned_batch(self, batch: list[PairedFrames], generator: torch.Generator):
        contexts, targets = [], []
        for pair in batch:
            pair.require("source.camera", "target.camera", "source.boxes3d", "target.boxes3d")
            swap = float(torch.rand((), generator=generator)) < self.settings.swap_probability
            drop = float(torch.rand((), generator=generator)) < self.settings.null_condition_probability
            source, target = (pair.target, pair.source) if swap else (pair.source, pair.target)
            contexts.append(self._tokens(source, target, drop))
            targets.append(target)
        return torch.cat(contexts), self._latents(targets)


def create(config: dict, device: torch.device, dtype: torch.dtype) -> NeuralAssetsRecipe:
    return NeuralAssetsRecipe(NeuralAssetsSettings.from_config(config), device, dtype)


register(NAME, create)
