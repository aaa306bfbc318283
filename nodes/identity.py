"""Identity nodes: DINOv2 and identity-adapter loaders, and IdentityEncode (BIFRÖST/AnyDoor/IMPRINT tokens)."""
from __future__ import annotations

from typing import Callable

import torch
from comfy_api.latest import io

from ..loaders.identity_adapter import IdentityAdapter, apply_identity_adapter, load_identity_adapter, null_tokens
from ..loaders.identity_encoder import dinov2_geometry, dinov2_tokens, load_dinov2
from ..loaders.model_folders import IDENTITY_ADAPTER_FOLDER, resolve_model_file, safetensors_files
from ..ops.bifrost_reference import mask_bounding_box, reference_crop
from ..ops.checks import (as_mask_batch, as_rgb_batch, binary_mask, common_batch, expand_batch, file_pixels,
                          require_nonempty, require_same_size)
from ..ops.identity_tokens import dino_pixels
from ..ops.imprint_adapter import object_crop
from .common import CATEGORY, concat_batch, for_each_item, intermediate

IdentityAdapterSocket = io.Custom("DIORAMA_IDENTITY_ADAPTER")
CLIP_VISION_FOLDER = "clip_vision"


class DinoV2Loader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaDinoV2Loader",
            display_name="Diorama DINOv2 Loader",
            category=f"{CATEGORY}/identity",
            description="Loads DINOv2 of any size (e.g. the DINOv2-g inside BIFRÖST/AnyDoor, converted to "
                        "ComfyUI's CLIP-vision layout) from models/clip_vision/, reading its architecture "
                        "from the weights. The result is a standard CLIP_VISION.",
            inputs=[
                io.Combo.Input("clip_name", options=safetensors_files(CLIP_VISION_FOLDER),
                               tooltip="A DINOv2 .safetensors file in models/clip_vision/ (the layout ComfyUI's "
                                       "Load CLIP Vision reads)."),
            ],
            outputs=[io.ClipVision.Output("clip_vision", tooltip="DINOv2 as ComfyUI's CLIP_VISION model.")],
        )

    @classmethod
    def execute(cls, clip_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_dinov2(resolve_model_file(CLIP_VISION_FOLDER, clip_name)))


class IdentityAdapterLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaIdentityAdapterLoader",
            display_name="Diorama Identity Adapter Loader",
            category=f"{CATEGORY}/identity",
            description=f"Loads an identity adapter (BIFRÖST's DINOv2 → 1024 projector, or an IMPRINT content "
                        f"adapter) from models/{IDENTITY_ADAPTER_FOLDER}/; its metadata says how tokens are made.",
            inputs=[
                io.Combo.Input("adapter_name", options=safetensors_files(IDENTITY_ADAPTER_FOLDER),
                               tooltip=f"An identity adapter .safetensors in models/{IDENTITY_ADAPTER_FOLDER}/ "
                                       f"(or a path added for '{IDENTITY_ADAPTER_FOLDER}' in extra_model_paths.yaml)."),
            ],
            outputs=[IdentityAdapterSocket.Output("identity_adapter",
                                                  tooltip="The adapter, managed by ComfyUI's model management.")],
        )

    @classmethod
    def execute(cls, adapter_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_identity_adapter(resolve_model_file(IDENTITY_ADAPTER_FOLDER, adapter_name)))


CropFunction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def crop_function(adapter: IdentityAdapter) -> CropFunction:
    """How the adapter's reference crop is made: BIFRÖST's exact crop for the linear adapters; for
    IMPRINT the same framing at the adapter's image size with the non-object pixels filled as its
    metadata says (black: the paper's masked object I ⊗ M)."""
    if adapter.architecture == "linear":
        return reference_crop
    fill = 0 if adapter.reference_background == "black" else 255
    return lambda image, mask: object_crop(image, mask, fill, adapter.image_size)


def reference_crops(image: torch.Tensor, mask: torch.Tensor,
                    crop: CropFunction = reference_crop) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [B,H,W,3] and MASK [B,H,W] → the reference's 224² crops (uint8) and their masks (0/255).

    LoadImage makes IMAGE = uint8 / 255, so rounding ×255 recovers the file's bytes exactly.
    """
    image_u8 = file_pixels(image)
    mask_u8 = binary_mask(mask)
    crops, crop_masks = [], []
    for index in range(image_u8.shape[0]):
        y1, y2, x1, x2 = mask_bounding_box(mask_u8[index])
        # The reference slices with inclusive box ends as exclusive ends: a one-row or one-column
        # object crops to nothing.
        if y2 <= y1 or x2 <= x1:
            raise ValueError(f"reference_mask item {index}: the object spans a single row or column "
                             f"(box rows {y1}..{y2}, columns {x1}..{x2}), which the reference crop drops; "
                             "expected an object at least 2 px high and wide")
        object_crop_u8, crop_mask = crop(image_u8[index], mask_u8[index])
        if not bool(crop_mask.any()):
            raise ValueError(f"reference_mask item {index}: no object pixel is left in the "
                             f"{crop_mask.shape[-1]}² crop; expected a mask covering the object")
        crops.append(object_crop_u8)
        crop_masks.append(crop_mask)
    return torch.stack(crops), torch.stack(crop_masks)


class IdentityEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaIdentityEncode",
            display_name="Diorama Identity Encode",
            category=f"{CATEGORY}/identity",
            description="Identity tokens from a masked reference; the adapter's metadata decides how. BIFRÖST/"
                        "AnyDoor (linear adapter): the reference is cropped, whitened outside the mask, padded and "
                        "resized to 224² exactly as the reference code does, encoded by DINOv2 (class + patch "
                        "tokens, positions resized to 16²) and projected; the negative is the same on an all-zero "
                        "image. IMPRINT (content adapter): the same framing with the background removed (black), "
                        "DINOv2, then the adapter's transformer into the UNet's cross-attention width; the "
                        "negative is what the adapter's metadata names (the adapter on all-zero DINOv2 tokens).",
            inputs=[
                io.ClipVision.Input("clip_vision", tooltip="DINOv2 (Diorama DINOv2 Loader or ComfyUI's Load CLIP Vision)."),
                IdentityAdapterSocket.Input("identity_adapter", tooltip="From Diorama Identity Adapter Loader."),
                io.Image.Input("reference", tooltip="Photo(s) of the object; a batch gives one token set per image."),
                io.Mask.Input("reference_mask",
                              tooltip="The object's silhouette in the reference (above 0.5 = object), same size "
                                      "as the reference; one mask for all references or one per reference."),
            ],
            outputs=[
                io.Conditioning.Output("positive", tooltip="Identity tokens as conditioning: [batch, 257, 1024] for "
                                                            "BIFRÖST/AnyDoor, [batch, num_tokens, context_dim] "
                                                            "for an IMPRINT content adapter."),
                io.Conditioning.Output("negative", tooltip="The unconditional tokens the adapter's metadata names "
                                                            "(all-zero image, or the adapter on all-zero DINOv2 "
                                                            "tokens), one per batch item."),
                io.Image.Output("reference_crop", tooltip="The crop DINOv2 sees (224² unless the adapter says otherwise)."),
            ],
        )

    @classmethod
    def execute(cls, clip_vision, identity_adapter, reference: torch.Tensor,
                reference_mask: torch.Tensor) -> io.NodeOutput:
        image = as_rgb_batch(reference, "reference")
        mask = as_mask_batch(reference_mask, "reference_mask")
        require_same_size(image, mask, "reference", "reference_mask")
        batch = common_batch({"reference": image.shape[0], "reference_mask": mask.shape[0]})
        image, mask = expand_batch(image, batch), expand_batch(mask, batch)
        require_nonempty(mask, "reference_mask")
        hidden, patch = dinov2_geometry(clip_vision)
        if hidden != identity_adapter.input_dim:
            raise ValueError(f"the identity adapter expects {identity_adapter.input_dim}-wide DINOv2 tokens but "
                             f"clip_vision makes {hidden}-wide ones; use the DINOv2 the adapter was trained with")
        if identity_adapter.image_size % patch:
            raise ValueError(f"the adapter's image size {identity_adapter.image_size} is not a multiple of the "
                             f"DINOv2 patch size {patch}")
        tokens = 1 + (identity_adapter.image_size // patch) ** 2
        if identity_adapter.input_tokens is not None and tokens != identity_adapter.input_tokens:
            raise ValueError(f"the identity adapter reads {identity_adapter.input_tokens} DINOv2 tokens but this "
                             f"DINOv2 (patch {patch}) makes {tokens} at {identity_adapter.image_size}²; use the "
                             "DINOv2 the adapter was trained with")
        crops, _ = reference_crops(image, mask, crop_function(identity_adapter))
        pixels = dino_pixels(crops)

        def encode(index: int) -> torch.Tensor:
            return apply_identity_adapter(identity_adapter, dinov2_tokens(clip_vision, pixels[index:index + 1]))

        positive = concat_batch(for_each_item(batch, encode))
        if identity_adapter.negative == "null_tokens":
            negative = null_tokens(identity_adapter)
        else:
            # The reference's unconditional tokens: zeros *before* normalisation, i.e. a black image.
            black = torch.zeros(1, crops.shape[1], crops.shape[2], 3, dtype=torch.uint8)
            negative = apply_identity_adapter(identity_adapter, dinov2_tokens(clip_vision, dino_pixels(black)))
        negative = negative.repeat(batch, 1, 1)
        preview = intermediate(crops.float() / 255.0)
        return io.NodeOutput([[positive, {}]], [[negative, {}]], preview)
