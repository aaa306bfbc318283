"""Diorama's small Neural Assets model (issue 9): a small SD-style UNet in TAEF2's latent space, trained from
scratch on renderer pairs (source_mode "moved": one camera, the object at two 3D poses) to put an object at a
new 3D pose: source frame + the object's target 3D box → target frame.

Per pair, at `image_size`: the source frame's TAEF2 latent, and the pose planes of ops.neural_asset_planes (the
object's box in the source frame, its target 3D box's pose hint, the blend region = both boxes' rectangle grown
by `margin_px`). Concat keys ["mask", "concat_image"]: the blend mask, then `concat_latent_image` =
[source latent (32) | source box (1) | pose hint (1) | moved appearance latent (32): the source box's pixels
stretched onto the target box], planes area-averaged to the latent grid, in raw TAEF2 units (ComfyUI applies the model's latent format, as for the compositor). The noise is the target frame's;
outside the blend region sampling keeps the source (Composite Sample / Set Latent Noise Mask), which the
target equals there up to the moved object's shadow. Loss: ε- or v-prediction MSE (small_unet.weighted_loss),
the blend region weighted by `mask_weight`.

Export: `diorama_neural_assets.safetensors` (models/diorama_small_models/, Diorama Load Small Model; the
evaluation command's "learned Neural Assets" row).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ...loaders.taef2 import LATENT_CHANNELS
from ...ops.neural_asset_planes import PosePlanes, neural_assets_concat, pose_planes
from .. import diffusion
from ..data.frames import PairedFrames
from . import register
from .small_unet import SmallUNetRecipe, SmallUNetSettings, conv_unet_config, resize_plane

NAME = "small_neural_assets"
EXPORT_NAME = "diorama_neural_assets.safetensors"
CONCAT_IMAGE_CHANNELS = 2 * LATENT_CHANNELS + 2


@dataclass(frozen=True)
class SmallNeuralAssetsSettings(SmallUNetSettings):
    """The `recipe:` section of a small_neural_assets config."""

    margin_px: int = 8  # the blend rectangle's growth around both boxes (edges, contact shadow)

    @classmethod
    def from_config(cls, section: dict) -> "SmallNeuralAssetsSettings":
        settings = cls.from_section(section, NAME)
        if settings.margin_px < 0:
            raise ValueError(f"recipe.margin_px = {settings.margin_px}; expected >= 0 pixels")
        return settings


@dataclass(frozen=True)
class NeuralAssetsInputs:
    source: torch.Tensor  # [S,S,3]
    target: torch.Tensor  # [S,S,3]
    planes: PosePlanes  # at S²


def resized_planes(planes: PosePlanes, size: int) -> PosePlanes:
    """Masks nearest (they stay 0/1), the pose hint area-averaged (continuous)."""
    return PosePlanes(resize_plane(planes.source_box, size, "nearest"), resize_plane(planes.pose_hint, size, "area"),
                      resize_plane(planes.blend, size, "nearest"))


def neural_assets_inputs(pair: PairedFrames, size: int, margin_px: int) -> NeuralAssetsInputs:
    """The pair's object moved from its source-frame box to its target 3D box, seen by the target camera."""
    pair.require("target.camera", "target.boxes3d", "source.boxes3d")
    k = pair.target.instance_ids.index(pair.object_id)
    asset = replace(pair.target.boxes3d[k], source_box=pair.source.boxes3d[k].source_box)
    planes = pose_planes(asset, pair.target.camera, margin_px)
    images = diffusion.resize_images(torch.stack((pair.source.image.permute(1, 2, 0),
                                                  pair.target.image.permute(1, 2, 0))), size)
    return NeuralAssetsInputs(images[0], images[1], resized_planes(planes, size))


class SmallNeuralAssetsRecipe(SmallUNetRecipe):
    name = NAME
    export_name = EXPORT_NAME

    def __init__(self, settings: SmallNeuralAssetsSettings, device: torch.device, dtype: torch.dtype):
        super().__init__(settings, conv_unet_config(settings, CONCAT_IMAGE_CHANNELS, NAME), device)

    def _inputs(self, batch: list[PairedFrames]) -> list[NeuralAssetsInputs]:
        return [neural_assets_inputs(pair, self.settings.image_size, self.settings.margin_px) for pair in batch]

    @torch.no_grad()
    def _encoded(self, inputs: list[NeuralAssetsInputs]):
        """The batch as the UNet reads it (SmallUNetRecipe.encoded_batch)."""
        raw = neural_assets_concat(self.vae, torch.stack([i.source for i in inputs]),
                                   torch.stack([i.planes.source_box for i in inputs]),
                                   torch.stack([i.planes.pose_hint for i in inputs]))
        return self.encoded_batch(torch.stack([i.target for i in inputs]), raw,
                                  torch.stack([i.planes.blend for i in inputs]))

    def training_loss(self, batch: list[PairedFrames], generator: torch.Generator) -> torch.Tensor:
        return self.weighted_loss(*self._encoded(self._inputs(batch)), generator)

    @torch.no_grad()
    def validate(self, batch: list[PairedFrames], generator: torch.Generator) -> tuple[dict[str, float], torch.Tensor]:
        """ε-loss, and per pair [target | one-step x̂₀ blended into the source | source]."""
        inputs = self._inputs(batch)
        latents, concat, _ = self._encoded(inputs)
        sources = torch.stack([i.source for i in inputs])
        loss, composite = self.one_step_composites(latents, concat, generator, sources,
                                                   torch.stack([i.planes.blend for i in inputs]))
        return {"loss": loss}, torch.cat((torch.stack([i.target for i in inputs]), composite, sources), dim=2)


def create(config: dict, device: torch.device, dtype: torch.dtype) -> SmallNeuralAssetsRecipe:
    return SmallNeuralAssetsRecipe(SmallNeuralAssetsSettings.from_config(config), device, dtype)


register(NAME, create)
