"""Diorama's small compositor (issue 9): a small SD-style UNet in TAEF2's latent space, trained from scratch
on renderer pairs as a depth-aware identity compositor, exported as a small model (loaders/small_model.py).

Per pair, at `image_size` (the rendered frames resized square):
- blend region: the object's box in the target frame (its visible pixels' bounding box, IMPRINT's coarsest
  shape-mask level); the model must produce the target there, occluders in front of the object included;
- background: the target with the blend region grey (0.5), as Composite Sample's inpaint conditioning
  (nodes/composite.inpaint_conditioning) masks its window; everything outside is the clean target;
- depth hint (`depth_hint: true`): the target's depth (the renderer's ground-truth fused depth: the scene
  with the object at its place, nearer objects hiding it) as ops.depth_map.depth_hint draws it (near =
  white), area-averaged to the latent grid (1 channel);
- identity (`identity: true`): the object seen in the source frame, everything else grey, cropped to a
  square around its box and TAEF2-encoded (32 channels).
The preparation of these inputs and their concat are ops/small_compositor_inputs.py, which the inference node
(Diorama Small Compositor Conditioning) uses too, so training and inference cannot drift apart.

Why identity as latent channels, not cross-attention tokens: the loader's concat keys are the one
conditioning path that KSampler and Composite Sample already feed to a small model (the conditioning's
`concat_latent_image`), and a UNet without cross-attention ignores whatever text/token conditioning a
workflow passes. So the UNet has no attention layers, and the model's concat keys are
["mask", "concat_image"]: the blend mask (`concat_mask` / the LATENT's noise_mask), then
`concat_latent_image` = [background latent (32) | depth hint (1, optional) | reference latent (32, optional)]
in raw TAEF2 units, which ComfyUI scales by the model's latent format (process_latent_in) exactly as
training does here. Loss: ε-prediction MSE, pixels inside the blend region weighted by `mask_weight`.

Condition dropout (`condition_dropout` p): per pair, the depth hint is replaced by the absent hint (all 0:
nothing near) with probability p and, independently, the reference by the absent reference (all grey). The
model then also knows what to do without either, which is what the evaluation's ablation rows measure
("compositor − depth hint", "− identity tokens": the same weights with that input absent) instead of
training two more models on two CPU cores.

Export (models/diorama_small_models/, Diorama Load Small Model), named as the evaluation command looks the
models up (evaluate.py): `diorama_compositor.safetensors`, or with an ablation switch off
`diorama_compositor_no_depth.safetensors` / `diorama_compositor_no_identity.safetensors`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ...loaders.small_model import SmallModelConfig
from ...loaders.taef2 import LATENT_CHANNELS
from ...ops.depth_map import DepthMap, depth_hint
from ...ops.placement import mask_bounding_box
from ...ops.small_compositor_inputs import (absent_hint, absent_reference, concat_latent_image, grey_where_masked,
                                            reference_crop)
from .. import diffusion
from ..data.frames import PairedFrames
from . import register
from .small_unet import SmallUNetRecipe, SmallUNetSettings, conv_unet_config

NAME = "small_compositor"


@dataclass(frozen=True)
class SmallCompositorSettings(SmallUNetSettings):
    """The `recipe:` section of a small_compositor config."""

    depth_hint: bool = True  # ablation switch: the fused-depth channel
    identity: bool = True  # ablation switch: the reference latent channels
    condition_dropout: float = 0.0  # per pair: probability that the hint (and, independently, the reference) is absent

    @classmethod
    def from_config(cls, section: dict) -> "SmallCompositorSettings":
        settings = cls.from_section(section, NAME)
        for name in ("depth_hint", "identity"):
            if not isinstance(getattr(settings, name), bool):
                raise ValueError(f"recipe.{name} = {getattr(settings, name)!r}; expected true or false")
        if not 0 <= settings.condition_dropout < 1:
            raise ValueError(f"recipe.condition_dropout = {settings.condition_dropout}; expected a probability in [0, 1)")
        return settings


def export_name(depth_hint_on: bool, identity_on: bool) -> str:
    """The file name the evaluation command expects for this variant (both switches off: both suffixes)."""
    suffix = ("" if depth_hint_on else "_no_depth") + ("" if identity_on else "_no_identity")
    return f"diorama_compositor{suffix}.safetensors"


def concat_image_channels(depth_hint_on: bool, identity_on: bool) -> int:
    """Channels of `concat_latent_image`: background latent, then the depth hint, then the reference latent."""
    return LATENT_CHANNELS + int(depth_hint_on) + LATENT_CHANNELS * int(identity_on)


def model_config(settings: SmallCompositorSettings) -> SmallModelConfig:
    """The compositor's small-model config: the shared convolution-only UNet reading the blend mask and the
    concatenated latents of the switched-on inputs."""
    return conv_unet_config(settings, concat_image_channels(settings.depth_hint, settings.identity), NAME)


def box_mask(box: tuple[int, int, int, int], height: int, width: int) -> torch.Tensor:
    x0, y0, x1, y1 = box
    mask = torch.zeros(height, width)
    mask[y0:y1, x0:x1] = 1.0
    return mask


def resize_plane(plane: torch.Tensor, size: int) -> torch.Tensor:
    """[H,W] → [size,size], nearest (masks stay binary)."""
    return F.interpolate(plane[None, None].float(), size=(size, size), mode="nearest")[0, 0]


@dataclass(frozen=True)
class CompositorInputs:
    """One pair's inputs at image size (pixels) before encoding."""
    target: torch.Tensor  # [S,S,3]
    background: torch.Tensor  # [S,S,3]: target with the blend region grey
    blend: torch.Tensor  # [S,S] 0/1
    hint: torch.Tensor  # [S,S] near = 1
    reference: torch.Tensor  # [S,S,3]: the object from the source frame, rest grey, square crop


def drop_conditions(inputs: list[CompositorInputs], probability: float,
                    generator: torch.Generator) -> list[CompositorInputs]:
    """Condition dropout: each pair's hint, and independently its reference, absent with `probability`
    (two draws per pair from `generator`, made even when p = 0 so the noise stream does not depend on p)."""
    draws = torch.rand(len(inputs), 2, generator=generator)
    dropped = []
    for item, (no_hint, no_reference) in zip(inputs, (draws < probability).tolist()):
        size = item.target.shape[0]
        dropped.append(replace(item, hint=absent_hint(size, size) if no_hint else item.hint,
                               reference=absent_reference(size, size) if no_reference else item.reference))
    return dropped


def compositor_inputs(pair: PairedFrames, size: int) -> CompositorInputs:
    pair.require("target.depth")
    target_mask = pair.target.mask_of(pair.object_id).float()
    source_mask = pair.source.mask_of(pair.object_id).float()
    height, width = target_mask.shape
    blend = box_mask(mask_bounding_box(target_mask), height, width)
    target = pair.target.image.permute(1, 2, 0)
    background = grey_where_masked(target, blend)
    hint = depth_hint(DepthMap(pair.target.depth[None].float(), "metric"))[0, ..., 0]
    reference = reference_crop(pair.source.image.permute(1, 2, 0), source_mask, (size, size))
    images = diffusion.resize_images(torch.stack((target, background)), size)
    hint = F.interpolate(hint[None, None], size=(size, size), mode="area")[0, 0]  # continuous: averaged, not sampled
    return CompositorInputs(images[0], images[1], resize_plane(blend, size), hint, reference)


class SmallCompositorRecipe(SmallUNetRecipe):
    name = NAME

    def __init__(self, settings: SmallCompositorSettings, device: torch.device, dtype: torch.dtype):
        super().__init__(settings, model_config(settings), device)
        self.export_name = export_name(settings.depth_hint, settings.identity)

    def _inputs(self, batch: list[PairedFrames]) -> list[CompositorInputs]:
        return [compositor_inputs(pair, self.settings.image_size) for pair in batch]

    def training_loss(self, batch: list[PairedFrames], generator: torch.Generator) -> torch.Tensor:
        inputs = drop_conditions(self._inputs(batch), self.settings.condition_dropout, generator)
        return self.weighted_loss(*self._encoded(inputs), generator)

    @torch.no_grad()
    def validate(self, batch: list[PairedFrames], generator: torch.Generator) -> tuple[dict[str, float], torch.Tensor]:
        """ε-loss, and per pair [target | one-step x̂₀ blended into the background | masked background]."""
        inputs = self._inputs(batch)
        latents, concat, _ = self._encoded(inputs)
        targets = torch.stack([i.target for i in inputs])
        loss, composite = self.one_step_composites(latents, concat, generator, targets,
                                                   torch.stack([i.blend for i in inputs]))
        return {"loss": loss}, torch.cat((targets, composite, torch.stack([i.background for i in inputs])), dim=2)

    @torch.no_grad()
    def _encoded(self, inputs: list[CompositorInputs]):
        """The batch as the UNet reads it (SmallUNetRecipe.encoded_batch)."""
        raw = concat_latent_image(self.vae, torch.stack([i.background for i in inputs]),
                                  torch.stack([i.hint for i in inputs]) if self.settings.depth_hint else None,
                                  torch.stack([i.reference for i in inputs]) if self.settings.identity else None)
        return self.encoded_batch(torch.stack([i.target for i in inputs]), raw, torch.stack([i.blend for i in inputs]))


def create(config: dict, device: torch.device, dtype: torch.dtype) -> SmallCompositorRecipe:
    return SmallCompositorRecipe(SmallCompositorSettings.from_config(config), device, dtype)


register(NAME, create)
