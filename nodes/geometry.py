"""Geometry nodes: depth fusion with occlusion, shape masks, detail map and the depth-aware paste."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..ops.checks import (as_mask_batch, as_rgb_batch, common_batch, expand_batch, require_nonempty,
                          require_same_size)
from ..ops.depth_fuse import fuse_object_depth
from ..ops.depth_map import DepthMap, depth_hint
from ..ops.detail_map import detail_map
from ..ops.object_layer import place_object
from ..ops.paste import depth_aware_paste
from ..ops.placement import Placement
from ..ops.shape_masks import shape_mask, without_occluders
from .common import CATEGORY, DepthSocket, PlacementSocket, concat_batch, for_each_item, intermediate


def _object_inputs(mask: torch.Tensor, name: str = "object_mask") -> torch.Tensor:
    mask = as_mask_batch(mask, name)
    require_nonempty(mask, name)
    return mask


class DepthFuse(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaDepthFuse",
            display_name="Diorama Depth Fuse",
            category=f"{CATEGORY}/geometry",
            description="Scales the object's depth to the placement depth, writes it into the background depth "
                        "and keeps the scene wherever the scene is nearer (occlusion).",
            inputs=[
                DepthSocket.Input("background_depth", tooltip="Depth of the background photo."),
                DepthSocket.Input("object_depth", tooltip="Depth of the object's reference photo (same kind)."),
                io.Mask.Input("object_mask", tooltip="The object's silhouette in its reference photo."),
                PlacementSocket.Input("placement", tooltip="Where the object goes and at which depth."),
            ],
            outputs=[
                DepthSocket.Output("fused_depth", tooltip="Background depth with the visible object written in."),
                io.Mask.Output("visible_mask", tooltip="Where the placed object is visible (not hidden by nearer scene)."),
                io.Image.Output("depth_hint", tooltip="Fused depth as a depth-ControlNet hint (near = white)."),
            ],
        )

    @classmethod
    def execute(cls, background_depth: DepthMap, object_depth: DepthMap, object_mask, placement: Placement) -> io.NodeOutput:
        mask = _object_inputs(object_mask)
        if placement.relative_depth_range is not None:
            raise ValueError("this placement gives a depth range relative to the background (BIFRÖST); fuse it with "
                             "Diorama BIFRÖST Depth Fuse")
        if object_depth.kind != background_depth.kind:
            raise ValueError(f"object_depth is {object_depth.kind!r} but background_depth is {background_depth.kind!r}; "
                             "both must be metric or both disparity")
        if placement.depth_kind != background_depth.kind:
            raise ValueError(f"the placement depth is {placement.depth_kind!r} but background_depth is "
                             f"{background_depth.kind!r}; they must match")
        require_same_size(object_depth.values, mask, "object_depth", "object_mask")
        batch = common_batch({"background_depth": background_depth.values.shape[0],
                              "object_depth": object_depth.values.shape[0], "object_mask": mask.shape[0]})
        background = expand_batch(background_depth.values, batch)
        obj_depth, mask = expand_batch(object_depth.values, batch), expand_batch(mask, batch)
        height, width = background.shape[1:3]
        box = placement.pixel_box(height, width)

        def fuse(i: int):
            placed = place_object(None, mask[i:i + 1], box, (height, width), depth=obj_depth[i:i + 1])
            return fuse_object_depth(DepthMap(background[i:i + 1], background_depth.kind), placed, placement.depth)

        results = for_each_item(batch, fuse)
        fused = DepthMap(intermediate(concat_batch([r[0].values for r in results])), background_depth.kind)
        visible = intermediate(concat_batch([r[1] for r in results]))
        return io.NodeOutput(fused, visible, intermediate(depth_hint(fused)))


class ShapeMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaShapeMask",
            display_name="Diorama Shape Mask",
            category=f"{CATEGORY}/geometry",
            description="IMPRINT's shape-guided mask of the placed object at one of four precision levels; "
                        "coarser levels give the generator more freedom over the object's shape and pose.",
            inputs=[
                io.Mask.Input("object_mask", tooltip="The object's silhouette in its reference photo."),
                PlacementSocket.Input("placement", tooltip="Where the object goes."),
                io.Int.Input("level", default=2, min=0, max=3,
                             tooltip="0 = bounding box, 1 = convex hull, 2 = dilated silhouette, 3 = exact silhouette."),
                DepthSocket.Input("background_depth", optional=True,
                                  tooltip="With visible_mask: cut out scene content in front of the object, so a blend "
                                          "mask never lets the generator paint over what hides the object."),
                io.Mask.Input("visible_mask", optional=True, tooltip="From DepthFuse: where the object is visible."),
            ],
            outputs=[io.Mask.Output("mask", tooltip="The mask on the background's canvas.")],
        )

    @classmethod
    def execute(cls, object_mask, placement: Placement, level: int, background_depth: DepthMap | None = None,
                visible_mask=None) -> io.NodeOutput:
        mask = _object_inputs(object_mask)
        height, width = placement.image_size
        box = placement.pixel_box(height, width)
        masks = concat_batch(for_each_item(mask.shape[0], lambda i: shape_mask(
            place_object(None, mask[i:i + 1], box, (height, width)), level)))
        if (background_depth is None) != (visible_mask is None):
            raise ValueError("give both background_depth and visible_mask (to keep occluders out of the mask) or neither")
        if background_depth is not None:
            if background_depth.kind != placement.depth_kind:
                raise ValueError(f"background_depth is {background_depth.kind!r} but the placement depth is "
                                 f"{placement.depth_kind!r}; they must match")
            visible = as_mask_batch(visible_mask, "visible_mask")
            require_same_size(background_depth.values, visible, "background_depth", "visible_mask")
            require_same_size(masks, visible, "shape mask (placement size)", "visible_mask")
            batch = common_batch({"object_mask": masks.shape[0], "background_depth": background_depth.values.shape[0],
                                  "visible_mask": visible.shape[0]})
            masks = without_occluders(expand_batch(masks, batch), expand_batch(background_depth.values, batch),
                                      background_depth.kind, placement.depth, expand_batch(visible, batch))
        return io.NodeOutput(intermediate(masks))


class DetailMap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaDetailMap",
            display_name="Diorama Detail Map",
            category=f"{CATEGORY}/geometry",
            description="Colour-free high-frequency map of the masked object (Sobel magnitude, max over channels).",
            inputs=[
                io.Image.Input("image", tooltip="The object's reference photo."),
                io.Mask.Input("mask", tooltip="The object's silhouette."),
                io.Float.Input("threshold", default=50 / 255, min=0.0, max=1.0, step=0.001,
                               tooltip="Gradient magnitudes below this become 0 (BIFRÖST uses 50/255)."),
                io.Int.Input("erode_px", default=2, min=0, max=64,
                             tooltip="Erode the mask by this many pixels so the silhouette edge is not a detail."),
            ],
            outputs=[io.Image.Output("detail", tooltip="Three identical channels in 0..1.")],
        )

    @classmethod
    def execute(cls, image, mask, threshold: float, erode_px: int) -> io.NodeOutput:
        image, mask = as_rgb_batch(image, "image"), as_mask_batch(mask, "mask")
        require_same_size(image, mask, "image", "mask")
        batch = common_batch({"image": image.shape[0], "mask": mask.shape[0]})
        image, mask = expand_batch(image, batch), expand_batch(mask, batch)
        maps = for_each_item(batch, lambda i: detail_map(image[i:i + 1], mask[i:i + 1], threshold, erode_px))
        return io.NodeOutput(intermediate(concat_batch(maps)))


class DepthAwarePaste(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaDepthAwarePaste",
            display_name="Diorama Depth-Aware Paste",
            category=f"{CATEGORY}/composite",
            description="Training-free composite: the object scaled into its placement, hidden where the scene is "
                        "nearer, with a feathered edge and its colours pulled towards its surroundings. Pixels "
                        "outside the pasted object are returned unchanged.",
            inputs=[
                io.Image.Input("background", tooltip="The photo to composite into."),
                io.Image.Input("object", tooltip="The object's reference photo."),
                io.Mask.Input("object_mask", tooltip="The object's silhouette in its reference photo."),
                PlacementSocket.Input("placement", tooltip="Where the object goes."),
                io.Mask.Input("visible_mask", optional=True,
                              tooltip="From DepthFuse: where the object is visible. Without it the whole object is pasted."),
                io.Float.Input("feather_px", default=2.0, min=0.0, max=64.0, step=0.5,
                               tooltip="Width of the soft edge, inside the object, in pixels."),
                io.Float.Input("colour_match", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="How far the object's brightness and colour cast move towards its surroundings."),
            ],
            outputs=[
                io.Image.Output("image", tooltip="The composite."),
                io.Mask.Output("alpha", tooltip="How much of the object each pixel holds."),
            ],
        )

    @classmethod
    def execute(cls, background, object, object_mask, placement: Placement, feather_px: float, colour_match: float,
                visible_mask=None) -> io.NodeOutput:
        background = as_rgb_batch(background, "background")
        obj = as_rgb_batch(object, "object")
        mask = _object_inputs(object_mask)
        require_same_size(obj, mask, "object", "object_mask")
        sizes = {"background": background.shape[0], "object": obj.shape[0], "object_mask": mask.shape[0]}
        if visible_mask is not None:
            visible_mask = as_mask_batch(visible_mask, "visible_mask")
            require_same_size(background, visible_mask, "background", "visible_mask")
            sizes["visible_mask"] = visible_mask.shape[0]
        batch = common_batch(sizes)
        background, obj, mask = (expand_batch(t, batch) for t in (background, obj, mask))
        height, width = background.shape[1:3]
        box = placement.pixel_box(height, width)

        def paste(i: int):
            placed = place_object(obj[i:i + 1], mask[i:i + 1], box, (height, width))
            visible = placed.canvas_mask() if visible_mask is None else expand_batch(visible_mask, batch)[i:i + 1]
            return depth_aware_paste(background[i:i + 1], placed, (visible > 0.5).float(), feather_px, colour_match)

        results = for_each_item(batch, paste)
        return io.NodeOutput(intermediate(concat_batch([r[0] for r in results])),
                             intermediate(concat_batch([r[1] for r in results])))
