"""IMPRINT (seed 002, Song et al. CVPR'24): its two training stages, as recipes `imprint_stage1` and
`imprint_stage2`.

Stage 1, context-agnostic ID-preserving (paper §3.1): a view-synthesis model S = {E_u, G_θ}. The image
encoder E_u = DINOv2 + the content adapter reads the masked object of view 1, Î_v1 = I_v1 ⊗ M_v1, and
the UNet G_θ must generate the masked object of view 2, Î_v2 = I_v2 ⊗ M_v2, under
L_id = E‖ε − G_θ(Î_v2, t, E_u(Î_v1))‖². E_u (DINOv2 at 4e-6, the adapter) and the UNet's *decoder
blocks* are optimised; the image embedding is dropped at rate 0.05. Only the encoder goes on to stage 2:
the export is the adapter (`imprint_content_adapter` v1) and the fine-tuned DINOv2 (ComfyUI's
CLIP-vision layout).

Stage 2, compositing (§3.2–3.4): DINOv2 frozen; the adapter and the whole generator G_φ (an inpainting
UNet reading the background and a coarse mask) are optimised under the masked loss
L_comp = E[M‖ε − G_φ(I*_bg, t, Ê_u)‖²] with M the coarse mask, drawn per pair from the four shape-mask
levels (ops.shape_masks: box, hull, dilated, exact), and the reference perturbed as Î_obj = P(T(I_obj))
(ops.augment); the embedding is dropped at rate 0.1. Sequential collaborative training: for n epochs the
adapter learns at 4e-5 and the UNet at 4e-6, then for n more epochs the two rates are swapped, and
training ends (`sequential_collaborative_rates`). n is given in steps (`phase_steps` = n epochs ×
⌈pairs / (batch_size × accumulation)⌉). Background blending is the sampler's (Composite Sample blends
the known background in at every step); validation shows the one-step prediction blended the same way.

Decisions the paper leaves open: the reference is framed as Identity Encode frames it at inference
(ops.imprint_adapter.object_crop, black fill), so training and inference see the same crops; stage 1's
target is the view-2 object framed the same way at the generator's resolution; stage 2's target is a
square of `context` (2) object-box sides around the object, as Composite Window crops at inference; learning rates the paper does not give (stage 1's adapter
and decoder) are recipe settings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F

from ...loaders.identity_adapter import imprint_module_from_state_dict, save_imprint_content_adapter
from ...loaders.identity_encoder import dinov2_forward, dinov2_geometry, load_dinov2, require_dinov2
from ...loaders.model_folders import read_safetensors
from ...ops.augment import augment_object
from ...ops.identity_tokens import dino_pixels
from ...ops.imprint_adapter import ImprintAdapterConfig, ImprintContentAdapter, object_crop
from ...ops.placement import mask_bounding_box
from ...ops.shape_masks import LEVELS, shape_mask_levels
from .. import diffusion
from ..data.frames import Frame, PairedFrames
from . import register

STAGE1, STAGE2 = "imprint_stage1", "imprint_stage2"
ADAPTER_FILE = "imprint_content_adapter.safetensors"  # → models/identity_adapters/
DINOV2_FILE = "imprint_dinov2.safetensors"  # → models/clip_vision/
UNET_FILE = "imprint_unet.safetensors"  # → models/diffusion_models/ (the generator G_φ, UNETLoader)
# The paper's sequential collaborative training: the larger and the smaller learning rate.
HIGH_RATE, LOW_RATE = 4e-5, 4e-6


def sequential_collaborative_rates(step: int, phase_steps: int, high: float = HIGH_RATE,
                                   low: float = LOW_RATE) -> dict[str, float]:
    """Learning rates of (adapter, unet) at optimiser step `step` (0-based): phase 1 (steps 0 … n−1) adapter
    `high`, UNet `low`; phase 2 (n … 2n−1) swapped; the schedule, and training, end after 2n steps."""
    if step < 0 or step >= 2 * phase_steps:
        raise ValueError(f"sequential collaborative training has two phases of {phase_steps} steps, so steps "
                         f"0 … {2 * phase_steps - 1}; step {step} is outside (set train.steps ≤ {2 * phase_steps})")
    if step < phase_steps:
        return {"adapter": high, "unet": low}
    return {"adapter": low, "unet": high}


def _settings(cls, section: dict, recipe: str, required: tuple[str, ...]):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(section) - names)
    missing = [name for name in required if name not in section]
    if unknown or missing:
        raise ValueError(f"recipe section of {recipe}: unknown keys {unknown}, missing keys {missing}; "
                         f"expected {sorted(names)} ({', '.join(required)} required)")
    settings = cls(**section)
    if not 0 <= settings.embedding_drop <= 1:
        raise ValueError(f"{recipe}: embedding_drop = {settings.embedding_drop}, expected a probability in [0, 1]")
    if settings.resolution < 16 or settings.resolution % 8:
        raise ValueError(f"{recipe}: resolution = {settings.resolution}, expected a multiple of 8 ≥ 16 (latents are 1/8)")
    return settings


@dataclass(frozen=True)
class Stage1Settings:
    """The `recipe:` section of imprint_stage1."""

    checkpoint: str  # SD checkpoint (checkpoints folder or absolute path): G_θ, and the VAE
    dinov2: str  # DINOv2 (clip_vision folder or absolute path), fine-tuned here
    adapter: dict = field(default_factory=lambda: {"width": 1024, "depth": 4, "heads": 16, "mlp_dim": 4096,
                                                   "num_queries": 77})  # content adapter sizes (Diorama's design)
    image_size: int = 224  # DINOv2 input side (a multiple of its patch)
    resolution: int = 512  # the generator's training resolution (the paper: 512²)
    embedding_drop: float = 0.05  # the paper's stage-1 rate
    learning_rates: dict = field(default_factory=lambda: {"dinov2": 4e-6, "adapter": 4e-5, "unet_decoder": 4e-5})
    adapter_seed: int = 0


@dataclass(frozen=True)
class Stage2Settings:
    """The `recipe:` section of imprint_stage2."""

    checkpoint: str  # SD inpainting checkpoint (checkpoints folder or absolute path): G_φ, and the VAE
    dinov2: str  # stage 1's DINOv2 export (clip_vision folder or absolute path), frozen
    adapter: str  # stage 1's adapter export (identity_adapters folder or absolute path)
    phase_steps: int  # n epochs of sequential collaborative training, in optimiser steps
    resolution: int = 512
    context: float = 2.0  # the training crop's side in object-box sides (Composite Window's default context)
    embedding_drop: float = 0.1  # the paper's stage-2 rate
    augment: bool = True  # P(T(I_obj)) on the reference
    rates: tuple = (HIGH_RATE, LOW_RATE)  # (larger, smaller) learning rate of the schedule


def frame_u8(frame: Frame) -> torch.Tensor:
    return (frame.image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8)


def object_mask(pair: PairedFrames, frame: Frame, which: str) -> torch.Tensor:
    mask = frame.mask_of(pair.object_id)
    if not bool(mask.any()):
        raise ValueError(f"training pair from {pair.origin}: object {pair.object_id} has no pixels in the {which} "
                         "frame; IMPRINT needs the object visible in both frames")
    return mask


def masked_object(pair: PairedFrames, frame: Frame, which: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """I ⊗ M framed as Identity Encode frames its reference: (uint8 [size,size,3], bool mask [size,size])."""
    crop, crop_mask = object_crop(frame_u8(frame), object_mask(pair, frame, which), 0, size)
    return crop, crop_mask > 127


def square_around_object(pair: PairedFrames, size: int, context: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The target frame cropped to a square `context` times the object's box side, centred on the object as far
    as the frame allows (as Composite Window crops around a placement at inference), resized to size²:
    (image [size,size,3] in 0..1, the object's silhouette in the crop at full resolution, float)."""
    frame = pair.target
    mask = object_mask(pair, frame, "target")
    height, width = mask.shape
    x0, y0, x1, y1 = mask_bounding_box(mask.float())
    side = min(height, width, max(8, math.ceil(context * max(x1 - x0, y1 - y0))))
    left = min(max(round((x0 + x1) / 2 - side / 2), 0), width - side)
    top = min(max(round((y0 + y1) / 2 - side / 2), 0), height - side)
    image = frame.image[:, top:top + side, left:left + side].permute(1, 2, 0)[None]
    return diffusion.resize_images(image, size)[0], mask[top:top + side, left:left + side].float()


def coarse_mask(silhouette: torch.Tensor, level: int, size: int) -> torch.Tensor:
    """One of IMPRINT's four shape-mask levels of a [S,S] silhouette, at size² (nearest)."""
    levels = shape_mask_levels(silhouette, level)
    return F.interpolate(levels[None, None], size=(size, size), mode="nearest")[0, 0]


def drop_embeddings(tokens: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Zero the DINOv2 tokens of each item with probability `rate`: the adapter then gives its null tokens,
    the negative the node feeds at inference (metadata negative = null_tokens)."""
    keep = (torch.rand(tokens.shape[0], generator=generator) >= rate).to(tokens.device, tokens.dtype)
    return tokens * keep[:, None, None]


def masked_loss(predicted: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_comp = M‖ε − ε̂‖²: the squared error averaged over the masked latent pixels (weights [B,1,h,w] are the
    coarse mask's coverage of each latent pixel) and the channels."""
    error = (predicted.float() - noise) ** 2
    return (weights * error).sum() / (weights.sum() * error.shape[1]).clamp_min(1e-8)


def side_by_side(*images: torch.Tensor) -> torch.Tensor:
    """[B,H,W,3] panels of the same height → one [B,H,ΣW,3] strip per item."""
    return torch.cat([image.float().cpu().clamp(0, 1) for image in images], dim=2)


class _ImprintRecipe:
    """What both stages share: DINOv2 → adapter → tokens, the UNet and VAE, validation, state."""

    name: str
    settings: Stage1Settings | Stage2Settings
    image_size: int
    train_dinov2: bool

    def _load_common(self, checkpoint: str, dinov2: str, device: torch.device) -> None:
        self.device = device
        self.unet, _, self.vae = diffusion.load_trainable_checkpoint(checkpoint, device)
        self.clip_vision = load_dinov2(diffusion.model_path("clip_vision", dinov2))
        self.dinov2 = require_dinov2(self.clip_vision).to(device=device, dtype=torch.float32)

    def _reference_pixels(self, batch: list[PairedFrames], generator: torch.Generator | None) -> torch.Tensor:
        crops = []
        for pair in batch:
            crop, crop_mask = masked_object(pair, pair.source, "source", self.image_size)
            if generator is not None:  # P(T(I_obj)) in 0..1, back to the uint8 crop Identity Encode feeds DINOv2
                image, _ = augment_object(crop.permute(2, 0, 1).float() / 255, crop_mask, generator)
                crop = (image.permute(1, 2, 0) * 255).round().to(torch.uint8)
            crops.append(crop)
        return torch.stack(crops)

    def _context(self, references: torch.Tensor, drop: float, generator: torch.Generator) -> torch.Tensor:
        pixels = dino_pixels(references).to(self.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_dinov2):
            tokens = dinov2_forward(self.dinov2, pixels)
        return self.adapter(drop_embeddings(tokens, drop, generator))

    def checkpointed_modules(self) -> list[torch.nn.Module]:
        return diffusion.unet_blocks(self.unet)

    def _named_modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{key}": value.detach().clone()
                for prefix, module in self._named_modules().items()
                for key, value in module.named_parameters() if value.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = self.trainable_state()
        if set(state) != set(expected):
            missing, unknown = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
            raise ValueError(f"{self.name}: checkpoint tensors do not match this recipe's trained parameters "
                             f"(missing {missing[:5]}, unknown {unknown[:5]}); was it written with other settings?")
        parameters = {f"{prefix}.{key}": value for prefix, module in self._named_modules().items()
                      for key, value in module.named_parameters()}
        with torch.no_grad():
            for key, value in state.items():
                parameters[key].copy_(value)

    def _write_adapter(self, directory: Path) -> Path:
        path = directory / ADAPTER_FILE
        save_imprint_content_adapter(str(path), self.adapter, image_size=self.image_size, negative="null_tokens",
                                     reference_background="black", overwrite=True)
        return path


class ImprintStage1(_ImprintRecipe):
    """View synthesis: E_u(Î_v1) → G_θ generates Î_v2; DINOv2, adapter and UNet decoder blocks train."""

    name = STAGE1
    GROUPS = ("dinov2", "adapter", "unet_decoder")

    def __init__(self, settings: Stage1Settings, device: torch.device, dtype: torch.dtype):
        rates = settings.learning_rates
        if sorted(rates) != sorted(self.GROUPS) or any(not isinstance(v, (int, float)) or v < 0 for v in rates.values()):
            raise ValueError(f"{STAGE1}: learning_rates = {rates}; expected a number ≥ 0 for each of {list(self.GROUPS)}")
        self.settings, self.image_size = settings, settings.image_size
        self._load_common(settings.checkpoint, settings.dinov2, device)
        self.train_dinov2 = True
        self.dinov2.requires_grad_(True)
        hidden, patch = dinov2_geometry(self.clip_vision)
        if settings.image_size % patch:
            raise ValueError(f"{STAGE1}: image_size {settings.image_size} is not a multiple of the DINOv2 patch {patch}")
        sizes = dict(settings.adapter)
        config = ImprintAdapterConfig(input_dim=hidden, input_tokens=1 + (settings.image_size // patch) ** 2,
                                      context_dim=diffusion.context_dim(self.unet), **sizes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.adapter_seed)
            self.adapter = ImprintContentAdapter(config)
            if config.num_queries:  # zero queries would stay identical to each other forever
                torch.nn.init.normal_(self.adapter.queries, std=0.02)
        self.adapter.to(device)
        unet = self.unet.model.diffusion_model
        # G_θ's decoder: the output blocks and the output head; the encoder half and the middle stay frozen.
        unet.requires_grad_(False)
        self.decoder = torch.nn.ModuleDict({"output_blocks": unet.output_blocks, "out": unet.out})
        self.decoder.requires_grad_(True)

    def _named_modules(self) -> dict[str, torch.nn.Module]:
        return {"dinov2": self.dinov2, "adapter": self.adapter, "unet_decoder": self.decoder}

    def parameter_groups(self) -> list[dict]:
        return [{"name": name, "params": [p for p in module.parameters() if p.requires_grad]}
                for name, module in self._named_modules().items()]

    def learning_rates(self, step: int) -> dict[str, float]:
        return dict(self.settings.learning_rates)

    def _batch(self, batch: list[PairedFrames]):
        for pair in batch:
            pair.require("source.image", "target.image")
        references = self._reference_pixels(batch, None)
        targets = torch.stack([masked_object(pair, pair.target, "target", self.settings.resolution)[0]
                               for pair in batch]).float() / 255
        latents = diffusion.image_latents(self.unet, self.vae, targets, self.device)
        return references, targets, latents

    def training_loss(self, batch: list[PairedFrames], generator: torch.Generator) -> torch.Tensor:
        references, _, latents = self._batch(batch)
        context = self._context(references, self.settings.embedding_drop, generator)
        return diffusion.noise_prediction_loss(self.unet, latents, context, generator)

    @torch.no_grad()
    def validate(self, batch: list[PairedFrames], generator: torch.Generator) -> tuple[dict[str, float], torch.Tensor]:
        references, targets, latents = self._batch(batch)
        context = self._context(references, 0.0, generator)
        losses, denoised = diffusion.one_step_prediction(self.unet, latents, context, generator)
        size = self.settings.resolution
        shown = diffusion.resize_images(references.float() / 255, size)
        prediction = diffusion.decode_latents(self.unet, self.vae, denoised)
        return {"loss": float(losses.mean())}, side_by_side(shown, targets, diffusion.resize_images(prediction, size))

    def export(self, directory: Path) -> list[Path]:
        dinov2 = directory / DINOV2_FILE
        state = {key: value.detach().to(torch.float32).contiguous().cpu() for key, value in self.dinov2.state_dict().items()}
        safetensors.torch.save_file(state, str(dinov2), metadata={"source": "diorama imprint_stage1"})
        return [self._write_adapter(directory), dinov2]


class ImprintStage2(_ImprintRecipe):
    """Compositing: frozen DINOv2, adapter + inpainting UNet under the masked loss and the swap schedule."""

    name = STAGE2

    def __init__(self, settings: Stage2Settings, device: torch.device, dtype: torch.dtype):
        if settings.phase_steps < 1 or len(settings.rates) != 2 or not settings.rates[0] >= settings.rates[1] >= 0:
            raise ValueError(f"{STAGE2}: phase_steps = {settings.phase_steps}, rates = {settings.rates}; expected "
                             "phase_steps ≥ 1 and rates [larger, smaller] ≥ 0 (the paper: [4e-5, 4e-6])")
        if not settings.context >= 1:
            raise ValueError(f"{STAGE2}: context = {settings.context}, expected ≥ 1 (the crop holds the whole object)")
        self.settings = settings
        self._load_common(settings.checkpoint, settings.dinov2, device)
        if "masked_image" not in getattr(self.unet.model, "concat_keys", ()):
            raise ValueError(f"{STAGE2}: {settings.checkpoint} is not an inpainting model (its UNet reads no masked "
                             "image); IMPRINT's generator takes the background and the coarse mask as extra channels")
        self.train_dinov2 = False
        self.dinov2.requires_grad_(False)
        path = diffusion.model_path("identity_adapters", settings.adapter)
        state_dict, metadata = read_safetensors(path)
        self.adapter = imprint_module_from_state_dict(state_dict, metadata, Path(path).name).to(device)
        self.adapter.requires_grad_(True)
        self.image_size = int(metadata["image_size"])
        c, (hidden, _) = self.adapter.config, dinov2_geometry(self.clip_vision)
        if c.input_dim != hidden:
            raise ValueError(f"{STAGE2}: the adapter {settings.adapter} reads {c.input_dim}-wide tokens, but DINOv2 "
                             f"{settings.dinov2} gives {hidden}")
        if c.context_dim != diffusion.context_dim(self.unet):
            raise ValueError(f"{STAGE2}: the adapter gives {c.context_dim}-wide tokens, the UNet attends to "
                             f"{diffusion.context_dim(self.unet)}-wide context")

    def _named_modules(self) -> dict[str, torch.nn.Module]:
        return {"adapter": self.adapter, "unet": self.unet.model.diffusion_model}

    def parameter_groups(self) -> list[dict]:
        return [{"name": name, "params": list(module.parameters())} for name, module in self._named_modules().items()]

    def learning_rates(self, step: int) -> dict[str, float]:
        return sequential_collaborative_rates(step, self.settings.phase_steps, *self.settings.rates)

    def _batch(self, batch: list[PairedFrames], generator: torch.Generator, augment: bool):
        for pair in batch:
            pair.require("source.image", "target.image")
        size = self.settings.resolution
        references = self._reference_pixels(batch, generator if augment else None)
        targets, masks = [], []
        for pair in batch:
            image, silhouette = square_around_object(pair, size, self.settings.context)
            level = LEVELS[int(torch.randint(len(LEVELS), (), generator=generator))]
            targets.append(image)
            masks.append(coarse_mask(silhouette, level, size))
        targets, masks = torch.stack(targets), torch.stack(masks)
        # What Composite Sample feeds an inpainting UNet (nodes/composite.inpaint_conditioning): the region to
        # fill grey, plus the mask.
        keep = (masks.round() < 0.5).float()[..., None]
        background = targets * keep + 0.5 * (1 - keep)
        latents = diffusion.image_latents(self.unet, self.vae, targets, self.device)
        with torch.no_grad():
            concat = self.unet.model.concat_cond(noise=latents, concat_latent_image=self.vae.encode(background).float(),
                                                 concat_mask=masks[:, None], device=self.device)
        latent_masks = F.interpolate(masks[:, None], size=latents.shape[-2:], mode="area").to(self.device)
        return references, targets, masks, background, latents, concat, latent_masks

    def training_loss(self, batch: list[PairedFrames], generator: torch.Generator) -> torch.Tensor:
        references, _, _, _, latents, concat, weights = self._batch(batch, generator, self.settings.augment)
        context = self._context(references, self.settings.embedding_drop, generator)
        noisy, sigma, noise = diffusion.noisy_latents(self.unet, latents, generator)
        return masked_loss(diffusion.predicted_noise(self.unet, noisy, sigma, context, concat), noise, weights)

    @torch.no_grad()
    def validate(self, batch: list[PairedFrames], generator: torch.Generator) -> tuple[dict[str, float], torch.Tensor]:
        references, targets, masks, background, latents, concat, weights = self._batch(batch, generator, False)
        context = self._context(references, 0.0, generator)
        noisy, sigma, noise = diffusion.noisy_latents(self.unet, latents, generator)
        epsilon = diffusion.predicted_noise(self.unet, noisy, sigma, context, concat).float()
        loss = masked_loss(epsilon, noise, weights)
        denoised = noisy - sigma.view(-1, 1, 1, 1) * epsilon
        size = self.settings.resolution
        prediction = diffusion.resize_images(diffusion.decode_latents(self.unet, self.vae, denoised), size)
        blend = masks[..., None].cpu()
        composite = prediction * blend + targets.cpu() * (1 - blend)  # background blending, as the sampler does
        shown = diffusion.resize_images(references.float() / 255, size)
        return {"masked_loss": float(loss)}, side_by_side(shown, background, targets, composite)

    def export(self, directory: Path) -> list[Path]:
        unet = directory / UNET_FILE
        state = {key: value.detach().to(torch.float32).contiguous().cpu()
                 for key, value in self.unet.model.diffusion_model.state_dict().items()}
        safetensors.torch.save_file(state, str(unet), metadata={"source": "diorama imprint_stage2"})
        return [self._write_adapter(directory), unet]


def create_stage1(config: dict, device: torch.device, dtype: torch.dtype) -> ImprintStage1:
    return ImprintStage1(_settings(Stage1Settings, config, STAGE1, ("checkpoint", "dinov2")), device, dtype)


def create_stage2(config: dict, device: torch.device, dtype: torch.dtype) -> ImprintStage2:
    settings = _settings(Stage2Settings, config, STAGE2, ("checkpoint", "dinov2", "adapter", "phase_steps"))
    return ImprintStage2(settings, device, dtype)


register(STAGE1, create_stage1)
register(STAGE2, create_stage2)
