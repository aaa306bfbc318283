"""Diorama's small compositor (issue 9): a small SD-style UNet in TAEF2's latent space, trained from scratch
on renderer pairs as a depth-aware identity compositor, exported as a small model (loaders/small_model.py).

Per pair (source_mode "object": the source frame shows the object alone from another camera), at
`image_size` (the rendered frames resized square), the inputs a graph gives Diorama Small Compositor
Conditioning, built as the evaluation's graph builds them (training/data/insertion.py: the placement box is
the object's projected 3D box, its depth the centre's):
- blend region: the placement box; the model must produce the target there, shadow and occluders in front
  of the object included;
- background: the target's clean plate, the scene without the object (a user's photo);
- depth (`depth_hint: true`): Depth Fuse run on the background depth and the reference's depth placed in
  the box: its fused depth drawn near = white (1 channel on the latent grid) and its visible mask, which
  cuts the occluded part out of the collage;
- identity (`identity: true`): the collage, the reference fitted into the box as copy-paste places it,
  grey elsewhere (TAEF2-encoded, 32 channels) and its coverage (1 channel).
Why a collage rather than a crop of the reference in its own frame: a convolution-only UNet at 16² latents
has to move and shrink a crop into the box before it can copy it, and the first models trained that way
(1500 steps) learned to ignore the reference. The preparation of these inputs and their concat are
ops/small_compositor_inputs.py, which the inference node uses too, so training and inference cannot drift
apart.

Why identity as latent channels, not cross-attention tokens: the loader's concat keys are the one
conditioning path that KSampler and Composite Sample already feed to a small model (the conditioning's
`concat_latent_image`), and a UNet without cross-attention ignores whatever text/token conditioning a
workflow passes. So the UNet has no attention layers, and the model's concat keys are
["mask", "concat_image"]: the blend mask (`concat_mask` / the LATENT's noise_mask), then
`concat_latent_image` = [background latent (32) | depth hint (1, optional) | collage latent and coverage (33,
optional)] in raw TAEF2 units, which ComfyUI scales by the model's latent format (process_latent_in) exactly as
training does here. Loss: ε- or v-prediction MSE (small_unet.weighted_loss), the blend region weighted by
`mask_weight`.

Condition dropout (`condition_dropout` p): per pair, the depth is absent with probability p (the hint all 0:
nothing near; the collage uncut) and, independently, the reference (the collage all grey). The
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

from ...loaders.small_model import SmallModelConfig
from ...loaders.taef2 import LATENT_CHANNELS
from ...ops.depth_map import DepthMap, depth_hint
from ...ops.eval_metrics import box_mask
from ...ops.depth_fuse import fuse_object_depth
from ...ops.object_layer import place_object
from ...ops.small_compositor_inputs import absent_hint, absent_reference, collage, concat_latent_image, reference_layer
from .. import diffusion
from ..data.insertion import finite_depth, insertion_of
from ..data.frames import PairedFrames
from . import register
from .small_unet import SmallUNetRecipe, SmallUNetSettings, conv_unet_config, resize_plane

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
    """Channels of `concat_latent_image`: background latent, then the depth hint, then the collage latent and
    its coverage."""
    return LATENT_CHANNELS + int(depth_hint_on) + (LATENT_CHANNELS + 1) * int(identity_on)


def model_config(settings: SmallCompositorSettings) -> SmallModelConfig:
    """The compositor's small-model config: the shared convolution-only UNet reading the blend mask and the
    concatenated latents of the switched-on inputs."""
    return conv_unet_config(settings, concat_image_channels(settings.depth_hint, settings.identity), NAME)


@dataclass(frozen=True)
class CompositorInputs:
    """One pair's inputs at image size (pixels) before encoding."""
    target: torch.Tensor  # [S,S,3]
    background: torch.Tensor  # [S,S,3]: the target's clean plate (the scene without the object)
    blend: torch.Tensor  # [S,S] 0/1: the placement box
    hint: torch.Tensor  # [S,S] Depth Fuse's fused depth, near = 1
    visible: torch.Tensor  # [S,S] Depth Fuse's visible mask (all 1: no depth given)
    colour: torch.Tensor  # [S,S,3] the reference placed in the box (ops.small_compositor_inputs.reference_layer)
    coverage: torch.Tensor  # [S,S] its coverage before visibility

    def collage_coverage(self) -> torch.Tensor:
        return self.coverage * self.visible


def drop_conditions(inputs: list[CompositorInputs], probability: float,
                    generator: torch.Generator) -> list[CompositorInputs]:
    """Condition dropout: each pair's depth (hint and visibility), and independently its reference, absent
    with `probability` (two draws per pair from `generator`, made even when p = 0 so the noise stream does not
    depend on p)."""
    draws = torch.rand(len(inputs), 2, generator=generator)
    dropped = []
    for item, (no_depth, no_reference) in zip(inputs, (draws < probability).tolist()):
        size = item.target.shape[0]
        if no_depth:
            item = replace(item, hint=absent_hint(size, size), visible=torch.ones(size, size))
        if no_reference:
            colour, coverage = absent_reference(size, size)
            item = replace(item, colour=colour, coverage=coverage)
        dropped.append(item)
    return dropped


def compositor_inputs(pair: PairedFrames, size: int) -> CompositorInputs:
    """The inputs a graph gives the compositor node for this pair (the evaluation's: the projected 3D box and
    centre depth as placement, the source view's object as reference), at `size`² pixels."""
    pair.require("target.clean_plate", "source.depth")
    insertion = insertion_of(pair)
    target = pair.target.image.permute(1, 2, 0)
    height, width = target.shape[:2]
    source_mask = pair.source.mask_of(pair.object_id).float()
    if not bool(source_mask.any()):
        raise ValueError(f"training pair from {pair.origin}: its object is not seen in the source frame, so there is "
                         "no reference to place; use a source that shows it (the renderer's source_mode: object)")
    placed = place_object(pair.source.image.permute(1, 2, 0)[None], source_mask[None], insertion.box,
                          (height, width), depth=finite_depth(pair.source.depth)[None])
    fused, visible = fuse_object_depth(DepthMap(insertion.background_depth[None].float(), "metric"), placed,
                                       insertion.depth)
    colour, coverage = reference_layer(placed)
    images = diffusion.resize_images(torch.stack((target, pair.target.clean_plate.permute(1, 2, 0), colour[0])), size)
    return CompositorInputs(
        target=images[0], background=images[1], blend=resize_plane(box_mask(insertion.box, height, width), size, "nearest"),
        hint=resize_plane(depth_hint(fused)[0, ..., 0], size, "area"), visible=resize_plane(visible[0], size, "area"),
        colour=images[2], coverage=resize_plane(coverage[0], size, "area"))


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
        """Loss, and per pair [target | one-step x̂₀ blended into the background | background | collage]."""
        inputs = self._inputs(batch)
        latents, concat, _ = self._encoded(inputs)
        targets = torch.stack([i.target for i in inputs])
        loss, composite = self.one_step_composites(latents, concat, generator, targets,
                                                   torch.stack([i.blend for i in inputs]))
        collages = torch.stack([collage(i.colour, i.collage_coverage()) for i in inputs])
        return {"loss": loss}, torch.cat((targets, composite, torch.stack([i.background for i in inputs]), collages),
                                         dim=2)

    @torch.no_grad()
    def _encoded(self, inputs: list[CompositorInputs]):
        """The batch as the UNet reads it (SmallUNetRecipe.encoded_batch)."""
        identity = self.settings.identity
        raw = concat_latent_image(self.vae, self.vae.encode(torch.stack([i.background for i in inputs])),
                                  torch.stack([i.hint for i in inputs]) if self.settings.depth_hint else None,
                                  torch.stack([i.colour for i in inputs]) if identity else None,
                                  torch.stack([i.collage_coverage() for i in inputs]) if identity else None)
        return self.encoded_batch(torch.stack([i.target for i in inputs]), raw, torch.stack([i.blend for i in inputs]))


def create(config: dict, device: torch.device, dtype: torch.dtype) -> SmallCompositorRecipe:
    return SmallCompositorRecipe(SmallCompositorSettings.from_config(config), device, dtype)


register(NAME, create)
