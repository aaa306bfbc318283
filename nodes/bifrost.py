"""BIFRÖST / AnyDoor nodes: the reference-exact placement, depth fusion, hints and two ControlNets."""
from __future__ import annotations

import math

import nodes as comfy_nodes
import torch
from comfy_api.latest import io

from ..ops.bifrost_reference import (CROP_RATIOS, HINT_SIZE, box_rows_cols, build_anydoor_hint, build_hints, fuse_reference_depth,
                                     fused_depth_png, high_frequency_map, mask_bounding_box, reference_crop,
                                     square_padding)
from ..ops.checks import (as_mask_batch, as_rgb_batch, binary_mask, common_batch, expand_batch, file_pixels,
                          require_nonempty, require_same_size)
from ..ops.composite_window import CompositeWindow
from ..ops.depth_map import DepthMap, depth_hint
from ..ops.drawing import draw_box
from ..ops.placement import Placement
from ..ops.window import Window
from .common import CATEGORY, DepthSocket, PlacementSocket, concat_batch, for_each_item, intermediate
from .composite import WindowSocket
from .editor import background_ui

BIFROST_CATEGORY = f"{CATEGORY}/bifrost"
HINT_METHODS = ("BIFRÖST", "AnyDoor")


def require_range_placement(placement: Placement) -> tuple[tuple[float, float, float, float], tuple[float, float]]:
    if placement.xywh is None or placement.relative_depth_range is None:
        raise ValueError("this placement has no relative depth range; make it with Diorama Placement (Box + Depth "
                         "Range), as BIFRÖST places objects by a box and a depth range")
    return placement.xywh, placement.relative_depth_range


class PlacementDepthRange(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaPlacementDepthRange",
            display_name="Diorama Placement (Box + Depth Range)",
            category=BIFROST_CATEGORY,
            description="BIFRÖST's 2.5D location: a box [x, y, w, h] in fractions of the image and the object's depth "
                        "range as fractions of the background's disparity range (0 = farthest, 1 = nearest), as its "
                        "VLM answers.",
            inputs=[
                io.Image.Input("background", tooltip="The photo the object goes into."),
                io.Float.Input("x", default=0.338, min=0.0, max=1.0, step=0.001, tooltip="Left edge, fraction of the width."),
                io.Float.Input("y", default=0.521, min=0.0, max=1.0, step=0.001, tooltip="Top edge, fraction of the height."),
                io.Float.Input("width", default=0.2, min=0.0, max=1.0, step=0.001, tooltip="Box width, fraction of the width."),
                io.Float.Input("height", default=0.32, min=0.0, max=1.0, step=0.001, tooltip="Box height, fraction of the height."),
                io.Float.Input("depth_far", default=0.1, min=0.0, max=1.0, step=0.001,
                               tooltip="The object's farthest point: fraction of the background's disparity range."),
                io.Float.Input("depth_near", default=0.22, min=0.0, max=1.0, step=0.001,
                               tooltip="The object's nearest point: fraction of the background's disparity range."),
            ],
            outputs=[
                PlacementSocket.Output("placement", tooltip="For Diorama BIFRÖST Depth Fuse and Hints."),
                io.Image.Output("preview", tooltip="The background with the box drawn."),
            ],
        )

    @classmethod
    def execute(cls, background, x: float, y: float, width: float, height: float, depth_far: float,
                depth_near: float) -> io.NodeOutput:
        background = as_rgb_batch(background, "background")
        values = {"x": x, "y": y, "width": width, "height": height, "depth_far": depth_far, "depth_near": depth_near}
        not_finite = [f"{name}={value}" for name, value in values.items() if not math.isfinite(value)]
        if not_finite:  # name the input, so the user knows which widget or link to fix
            raise ValueError(f"{', '.join(not_finite)}: expected finite numbers (not NaN or infinity)")
        if width <= 0 or height <= 0:
            raise ValueError(f"box width {width} and height {height} must be > 0")
        if x < 0 or y < 0 or x + width > 1 or y + height > 1:
            raise ValueError(f"box [x={x}, y={y}, w={width}, h={height}] reaches outside the image; expected "
                             "x, y >= 0, x + w <= 1 and y + h <= 1")
        if not 0 <= depth_far <= depth_near <= 1:
            raise ValueError(f"depth range far={depth_far}, near={depth_near} must satisfy 0 <= far <= near <= 1")
        image_hw = tuple(background.shape[1:3])
        row0, rows, col0, cols = box_rows_cols((x, y, width, height), *image_hw)
        if rows < 1 or cols < 1:
            raise ValueError(f"the box covers {cols}x{rows} px of the {image_hw[1]}x{image_hw[0]} background; it needs "
                             "at least one pixel each way")
        placement = Placement((x, y, x + width, y + height), (depth_far + depth_near) / 2, "disparity", image_hw,
                              xywh=(x, y, width, height), relative_depth_range=(depth_far, depth_near))
        preview = draw_box(background, (col0, row0, col0 + cols, row0 + rows))
        return io.NodeOutput(placement, intermediate(preview), ui=background_ui(background))


class BifrostDepthFuse(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaBifrostDepthFuse",
            display_name="Diorama BIFRÖST Depth Fuse",
            category=BIFROST_CATEGORY,
            description="BIFRÖST's depth fusion, exactly: the object's disparity is min-max scaled into the "
                        "placement's depth range, resized into the box and written where it is nearer than the "
                        "background's min-max disparity (0..255).",
            inputs=[
                DepthSocket.Input("background_depth", tooltip="Disparity of the background (e.g. DPT / Depth Anything)."),
                DepthSocket.Input("object_depth", tooltip="Disparity of the object's reference photo."),
                io.Mask.Input("object_mask", tooltip="The object's silhouette in its reference photo."),
                PlacementSocket.Input("placement", tooltip="From Diorama Placement (Box + Depth Range)."),
            ],
            outputs=[
                DepthSocket.Output("fused_depth", tooltip="Disparity 0..255 with the visible object written in."),
                io.Mask.Output("visible_mask", tooltip="The object's visible pixels (BIFRÖST's fused mask)."),
                io.Image.Output("depth_preview", tooltip="The fused depth as an image (near = white)."),
            ],
        )

    @classmethod
    def execute(cls, background_depth: DepthMap, object_depth: DepthMap, object_mask, placement: Placement) -> io.NodeOutput:
        xywh, depth_range = require_range_placement(placement)
        for name, depth in (("background_depth", background_depth), ("object_depth", object_depth)):
            if depth.kind != "disparity":
                raise ValueError(f"{name} is {depth.kind!r} depth; BIFRÖST fuses disparity (larger = nearer), as DPT "
                                 "and Depth Anything estimate it")
        mask = binary_mask(as_mask_batch(object_mask, "object_mask"))
        require_same_size(object_depth.values, mask, "object_depth", "object_mask")
        require_nonempty(mask, "object_mask")
        batch = common_batch({"background_depth": background_depth.values.shape[0],
                              "object_depth": object_depth.values.shape[0], "object_mask": mask.shape[0]})
        backgrounds = expand_batch(background_depth.values, batch)
        objects, masks = expand_batch(object_depth.values, batch), expand_batch(mask, batch)

        def fuse(i: int):
            y1, y2, x1, x2 = mask_bounding_box(masks[i])
            masked = (objects[i] * masks[i])[y1:y2, x1:x2].to(torch.float64)
            return fuse_reference_depth(backgrounds[i].to(torch.float64), masked, masks[i][y1:y2, x1:x2], xywh, depth_range)

        results = for_each_item(batch, fuse)
        fused = DepthMap(concat_batch([r.depth[None] for r in results]), "disparity")
        visible = concat_batch([r.visible[None] for r in results]).to(torch.float32)
        return io.NodeOutput(DepthMap(intermediate(fused.values), "disparity"), intermediate(visible),
                             intermediate(depth_hint(fused)))


class BifrostHints(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaBifrostHints",
            display_name="Diorama BIFRÖST / AnyDoor Hints",
            category=BIFROST_CATEGORY,
            description="The window BIFRÖST/AnyDoor sample (the object's box ×1.1 grown by the crop ratio, padded "
                        "square, 512²) and the ControlNet hints built exactly as their code builds them: the 4-channel "
                        "detail hint (collage + mask) and the 3-channel depth hint.",
            inputs=[
                io.Image.Input("background", tooltip="The photo the object goes into."),
                io.Mask.Input("target_mask", tooltip="Where the object will be: the visible mask of BIFRÖST Depth Fuse, "
                                                     "or any mask of the object's place for AnyDoor."),
                io.Image.Input("reference", tooltip="The object's reference photo."),
                io.Mask.Input("reference_mask", tooltip="The object's silhouette in the reference photo."),
                io.Float.Input("crop_ratio", default=2.0, min=CROP_RATIOS[0], max=CROP_RATIOS[-1], step=0.1,
                               tooltip="Context around the object (the reference draws 1.5–2.9 at random)."),
                io.Int.Input("detail_threshold", default=50, min=0, max=255,
                             tooltip="High-frequency values below this are dropped (BIFRÖST 50)."),
                io.Float.Input("mask_growth", default=0.02, min=0.0, max=0.2, step=0.001,
                               tooltip="BIFRÖST: box dilation of the mask channel, as a fraction of the crop (0.02)."),
                io.Combo.Input("method", options=list(HINT_METHODS), default=HINT_METHODS[0],
                               tooltip="BIFRÖST: colour-free detail, the dilated visible mask, occlusion cut and depth "
                                       "hint. AnyDoor: colour detail over the whole box, the box as mask, no depth."),
                DepthSocket.Input("fused_depth", optional=True,
                                  tooltip="From BIFRÖST Depth Fuse: enables the depth hint. Leave empty for AnyDoor."),
                PlacementSocket.Input("placement", optional=True,
                                      tooltip="The placement the depth was fused with: its box gives the occlusion cut."),
            ],
            outputs=[
                WindowSocket.Output("window", tooltip="For Composite Sample (use stitch 'reference paste')."),
                io.Image.Output("detail_hint", tooltip="4 channels: collage RGB in [-1,1] + mask; for the detail ControlNet."),
                io.Image.Output("depth_hint", tooltip="3 channels in [0,1]; for the depth ControlNet (None without fused_depth)."),
                io.Image.Output("preview", tooltip="The detail hint's collage and mask, viewable."),
            ],
        )

    @classmethod
    def execute(cls, background, target_mask, reference, reference_mask, crop_ratio: float, detail_threshold: int,
                mask_growth: float, method: str, fused_depth: DepthMap | None = None,
                placement: Placement | None = None) -> io.NodeOutput:
        if method not in HINT_METHODS:
            raise ValueError(f"method {method!r} is unknown; expected one of {HINT_METHODS}")
        anydoor = method == HINT_METHODS[1]
        if anydoor and fused_depth is not None:
            raise ValueError("AnyDoor has no depth hint: disconnect fused_depth (or choose BIFRÖST)")
        background = as_rgb_batch(background, "background")
        target = binary_mask(as_mask_batch(target_mask, "target_mask"))
        reference = as_rgb_batch(reference, "reference")
        ref_mask = binary_mask(as_mask_batch(reference_mask, "reference_mask"))
        require_same_size(background, target, "background", "target_mask")
        require_same_size(reference, ref_mask, "reference", "reference_mask")
        empty = [i for i in range(target.shape[0]) if not bool(target[i].any())]
        if empty:
            raise ValueError(f"target_mask is empty in batch item(s) {empty}: the object has no visible pixel (from "
                             "BIFRÖST Depth Fuse this means the scene is nearer everywhere in the box; raise the depth "
                             "range or move the box)")
        require_nonempty(ref_mask, "reference_mask")
        sizes = {"background": background.shape[0], "target_mask": target.shape[0], "reference": reference.shape[0],
                 "reference_mask": ref_mask.shape[0]}
        if fused_depth is not None:
            require_same_size(background, fused_depth.values, "background", "fused_depth")
            sizes["fused_depth"] = fused_depth.values.shape[0]
        if fused_depth is not None and placement is None:
            raise ValueError("a fused_depth needs the placement it was fused with (its box gives the occlusion cut)")
        batch = common_batch(sizes)
        height, width = background.shape[1:3]
        pixels, target = expand_batch(file_pixels(background), batch), expand_batch(target, batch)
        references, ref_masks = expand_batch(file_pixels(reference), batch), expand_batch(ref_mask, batch)
        depth_u8 = None if fused_depth is None else expand_batch(fused_depth_png(fused_depth.values), batch)

        def hints(i: int):
            crop, crop_mask = reference_crop(references[i], ref_masks[i])
            if int(crop_mask.count_nonzero()) == 0:
                raise ValueError(f"reference_mask item {i} is empty after cropping to the object; expected the "
                                 "object's silhouette")
            detail = high_frequency_map(crop, crop_mask, detail_threshold, colour=anydoor)
            if anydoor:
                return build_anydoor_hint(pixels[i], target[i], detail, crop_ratio)
            if placement is None:
                visible_in_box = torch.ones(1, 1, dtype=torch.uint8)
            else:
                row0, rows, col0, cols = box_rows_cols(require_range_placement(placement)[0], height, width)
                visible_in_box = target[i][row0:row0 + rows, col0:col0 + cols]
            source_depth = depth_u8[i] if depth_u8 is not None else torch.zeros(height, width, dtype=torch.uint8)
            return build_hints(pixels[i], target[i], visible_in_box, source_depth, detail, crop_ratio,
                               mask_growth if mask_growth > 0 else None)

        results = for_each_item(batch, hints)
        boxes = {r.crop.crop_box for r in results}
        if len(boxes) > 1:
            raise ValueError(f"the batch items need different windows {sorted(boxes)}; composite them in separate runs "
                             "or give one target mask for all")
        y1, y2, x1, x2 = results[0].crop.crop_box
        window = CompositeWindow(Window(y1, y2, x1, x2), (HINT_SIZE, HINT_SIZE), (height, width),
                                 square_padding(y2 - y1, x2 - x1))
        detail_hint = torch.stack([r.detail for r in results])
        depth = torch.stack([r.depth for r in results]) if fused_depth is not None else None
        preview = torch.cat([(detail_hint[..., :3] + 1) / 2, detail_hint[..., 3:].expand(-1, -1, -1, 3)], dim=2)
        return io.NodeOutput(window, intermediate(detail_hint), None if depth is None else intermediate(depth),
                             intermediate(preview))


def hint_channels(control_net) -> int | None:
    """The hint channels a ControlNet was trained with, when ComfyUI exposes its hint block."""
    block = getattr(getattr(control_net, "control_model", None), "input_hint_block", None)
    if block is None:
        return None
    first = block[0]
    weight = getattr(first, "weight", None)
    return None if weight is None else int(weight.shape[1])


def require_hint(control_net, hint: torch.Tensor, name: str, expected: int) -> None:
    if hint.dim() != 4 or hint.shape[-1] != expected:
        raise ValueError(f"{name} must be a [batch, height, width, {expected}] hint; got shape {tuple(hint.shape)}")
    channels = hint_channels(control_net)
    if channels is not None and channels != expected:
        raise ValueError(f"{name} has {expected} channels but the connected ControlNet expects {channels}-channel "
                         "hints; connect the matching ControlNet")


class ApplyControlNets(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaApplyControlNets",
            display_name="Diorama Apply Detail + Depth ControlNets",
            category=BIFROST_CATEGORY,
            description="Applies BIFRÖST's detail ControlNet (4-channel hint) and depth ControlNet (3-channel hint) to "
                        "the same conditioning; their residuals are summed, each at its strength (1.0 in the "
                        "reference). Both see the conditioning's tokens (the identity tokens) as context. AnyDoor: "
                        "connect the detail net only.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="E.g. Identity Encode's positive."),
                io.Conditioning.Input("negative", tooltip="E.g. Identity Encode's negative."),
                io.ControlNet.Input("detail_control_net", tooltip="The detail ControlNet (4-channel hint)."),
                io.Image.Input("detail_hint", tooltip="From Diorama BIFRÖST / AnyDoor Hints."),
                io.Float.Input("detail_strength", default=1.0, min=0.0, max=10.0, step=0.01, tooltip="Detail residual scale."),
                io.ControlNet.Input("depth_control_net", optional=True, tooltip="The depth ControlNet (3-channel hint)."),
                io.Image.Input("depth_hint", optional=True, tooltip="From Diorama BIFRÖST / AnyDoor Hints."),
                io.Float.Input("depth_strength", default=1.0, min=0.0, max=10.0, step=0.01, tooltip="Depth residual scale."),
            ],
            outputs=[
                io.Conditioning.Output("controlled_positive", display_name="positive",
                                       tooltip="Conditioning carrying both ControlNets."),
                io.Conditioning.Output("controlled_negative", display_name="negative",
                                       tooltip="The negative with the same hints."),
            ],
        )

    @classmethod
    def execute(cls, positive, negative, detail_control_net, detail_hint, detail_strength: float,
                depth_strength: float, depth_control_net=None, depth_hint=None) -> io.NodeOutput:
        require_hint(detail_control_net, detail_hint, "detail_hint", 4)
        if (depth_control_net is None) != (depth_hint is None):
            raise ValueError("connect both depth_control_net and depth_hint, or neither (AnyDoor)")
        if depth_hint is not None:
            require_hint(depth_control_net, depth_hint, "depth_hint", 3)
        apply = comfy_nodes.ControlNetApplyAdvanced().apply_controlnet
        positive, negative = apply(positive, negative, detail_control_net, detail_hint, detail_strength, 0.0, 1.0)
        if depth_control_net is not None:
            positive, negative = apply(positive, negative, depth_control_net, depth_hint, depth_strength, 0.0, 1.0)
        return io.NodeOutput(positive, negative)
