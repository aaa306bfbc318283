"""NeuralAssetPose: per-object appearance + 3D-pose tokens that replace the text tokens of SD2.1."""
from __future__ import annotations

from dataclasses import replace

import torch
from comfy_api.latest import io

from ..loaders.dino_features import clip_vision_backbone_name, clip_vision_patch_features, patch_features
from ..ops.assets import Assets, crop_camera, pose_rows, source_boxes
from ..ops.checks import as_rgb_batch
from ..ops.neural_assets_tokens import (appearance_features, background_pass_image, foreground_mask,
                                        object_pass_image)
from .common import CATEGORY, AssetsSocket, for_each_item, intermediate
from .composite import WindowSocket


def _dino_features(dino, clip_vision, adapter_dino: str):
    """The patch-feature function of whichever DINO is connected (exactly one must be), after checking it is
    the backbone the adapter was trained on (same width but another backbone would pass silently)."""
    if (dino is None) == (clip_vision is None):
        raise ValueError("connect exactly one DINO: a Diorama DINO Loader model or a CLIP_VISION DINOv2")
    name = dino.name if dino is not None else clip_vision_backbone_name(clip_vision)
    if name != adapter_dino:
        raise ValueError(f"the adapter was trained on DINO features of {adapter_dino!r} but the connected DINO is "
                         f"{name!r}; connect that backbone")
    if dino is not None:
        return lambda images: patch_features(dino, images)
    return lambda images: clip_vision_patch_features(clip_vision, images)


def scene_sources(source: torch.Tensor, assets: Assets) -> list[torch.Tensor]:
    """Index 0: this scene's source image; then the images transferred objects came from."""
    return [source, *assets.extra_sources]


def boxes_from_source(objects: torch.Tensor, assets: Assets, source: int) -> torch.Tensor:
    """[1, N, 4]: the slots' source boxes of the objects whose appearance comes from image `source`,
    zero for every other slot."""
    keep = torch.tensor([i < len(assets.objects) and assets.objects[i].source == source for i in range(objects.shape[0])])
    return torch.where(keep[:, None], objects, torch.zeros_like(objects))[None]


def appearance_tokens_input(features_of, sources: list[torch.Tensor], assets: Assets, slots: int) -> torch.Tensor:
    """RoI features [1, 4(N+1), C]: each object from an object pass over ITS source image (objects of that
    image kept, the rest 0.5), the background slot from a background pass (boxes set to 0.5)."""
    boxes = source_boxes(assets, slots)  # [N+1, 4], global box last
    objects = boxes[:-1]

    def pass_features(index: int, background: bool) -> torch.Tensor:
        image = sources[index][None]
        own = boxes_from_source(objects, assets, index)
        fg = foreground_mask(own, image.shape[1], image.shape[2])
        if background:
            return appearance_features(features_of(background_pass_image(image, fg)), boxes[-1:][None])
        return appearance_features(features_of(object_pass_image(image, fg)), own)

    background = pass_features(assets.background_source, background=True)
    # Each slot is non-zero in the pass of its own source only, so the passes add up.
    per_object = background.new_zeros(1, 4 * slots, background.shape[-1])
    for index in sorted({asset.source for asset in assets.objects}):
        per_object = per_object + pass_features(index, background=False)
    return torch.cat([per_object, background], dim=1)


def window_fractions(window) -> tuple[float, float, float, float]:
    """The window's sampled square (area plus its padding) as (y0, x0, y1, x1) fractions of the photo."""
    height, width = window.image_hw
    top, bottom, left, right = window.padding
    area = window.area
    return (area.y0 - top) / height, (area.x0 - left) / width, (area.y1 + bottom) / height, (area.x1 + right) / width


class NeuralAssetPose(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaNeuralAssetPose",
            display_name="Diorama Neural Asset Pose",
            category=f"{CATEGORY}/neural assets",
            description="Neural Assets conditioning: per object 4 tokens of its appearance (RoIAlign of DINO "
                        "features inside its source box) joined with 4 tokens of its 3D box projected into the "
                        "target camera, plus the background slot, → [B, 4(N+1), 1024] in place of text tokens. "
                        "The negative is the network on the null inputs, as the reference trains it.",
            inputs=[
                io.Custom("DIORAMA_NEURAL_ASSETS_ADAPTER").Input("adapter", tooltip="From Diorama Neural Assets Adapter Loader (sets N)."),
                io.Image.Input("source_image", tooltip="The photo the assets' appearance comes from (a batch gives one "
                                                       "conditioning per image)."),
                AssetsSocket.Input("assets", tooltip="3D boxes, source boxes and cameras (Diorama asset nodes)."),
                io.Custom("DIORAMA_DINO").Input("dino", optional=True, tooltip="A DINO / DINOv2 from Diorama DINO Loader."),
                io.ClipVision.Input("clip_vision", optional=True, tooltip="Or a DINOv2 loaded as CLIP_VISION."),
                WindowSocket.Input("window", optional=True,
                                   tooltip="Composite Sample's window for a local edit: the 3D boxes are projected "
                                           "into that crop of the target view. Leave empty for the whole image."),
            ],
            outputs=[
                io.Conditioning.Output("positive", tooltip="The asset tokens, for SD2.1-class models."),
                io.Conditioning.Output("negative", tooltip="The null-input tokens (classifier-free guidance)."),
            ],
        )

    @classmethod
    def execute(cls, adapter, source_image, assets: Assets, dino=None, clip_vision=None, window=None) -> io.NodeOutput:
        source_image = as_rgb_batch(source_image, "source_image")
        slots = adapter.config.slots
        if len(assets.objects) > slots:
            raise ValueError(f"the assets hold {len(assets.objects)} objects but this adapter has {slots} slots; remove "
                             f"objects or use an adapter with more slots")
        features_of = _dino_features(dino, clip_vision, adapter.config.dino)
        target = assets if window is None else replace(assets, target_camera=crop_camera(assets.target_camera,
                                                                                         window_fractions(window)))
        rows = pose_rows(target, slots)[None]

        def tokens(i: int) -> torch.Tensor:
            appearance = appearance_tokens_input(features_of, scene_sources(source_image[i], assets), assets, slots)
            return adapter.tokens(appearance, rows)

        positive = torch.cat(for_each_item(source_image.shape[0], tokens))
        negative = adapter.null_tokens(positive.shape[0])
        return io.NodeOutput([[intermediate(positive), {}]], [[intermediate(negative), {}]])
