"""Placement nodes: where the object goes (box) and how far away (depth)."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..ops.checks import as_mask_batch, as_rgb_batch, require_nonempty
from ..ops.depth_map import KINDS, DepthMap
from ..ops.drawing import draw_box
from ..ops.placement import Placement, ground_contact_depth, mask_bounding_box, normalised_box
from .common import CATEGORY, DepthSocket, PlacementSocket, intermediate
from .editor import background_ui

DEPTH_SOURCES = ("value", "ground contact in background depth")


def depth_inputs() -> list:
    return [
        io.Combo.Input("depth_source", options=list(DEPTH_SOURCES),
                       tooltip="'value': use the depth below. 'ground contact': read the background depth where "
                               "the box's bottom edge meets the scene (needs background_depth)."),
        io.Float.Input("depth", default=3.0, min=-1e4, max=1e4, step=0.01,
                       tooltip="The object's median depth: metres (metric) or the depth map's disparity units."),
        io.Combo.Input("depth_kind", options=list(KINDS),
                       tooltip="What the depth value means; must match the background depth when one is given."),
        DepthSocket.Input("background_depth", optional=True,
                          tooltip="Background depth; needed for 'ground contact', checked against depth_kind otherwise."),
    ]


def placement_depth(depth_source: str, depth: float, depth_kind: str, background_depth: DepthMap | None,
                    box: tuple[float, float, float, float]) -> tuple[float, str]:
    if depth_source not in DEPTH_SOURCES:
        raise ValueError(f"depth_source {depth_source!r} is unknown; expected one of {DEPTH_SOURCES}")
    if depth_source == DEPTH_SOURCES[1]:
        if background_depth is None:
            raise ValueError("depth_source is 'ground contact in background depth' but no background_depth is connected")
        return ground_contact_depth(background_depth, box), background_depth.kind
    if background_depth is not None and background_depth.kind != depth_kind:
        raise ValueError(f"depth_kind is {depth_kind!r} but background_depth is {background_depth.kind!r}; they must match")
    if depth_kind == "metric" and not depth > 0:
        raise ValueError(f"metric depth must be > 0 metres, got {depth}")
    return float(depth), depth_kind


def preview(image: torch.Tensor, placement: Placement) -> torch.Tensor:
    return intermediate(draw_box(image, placement.pixel_box(*image.shape[1:3])))


class PlacementFromBox(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaPlacementFromBox",
            display_name="Diorama Placement From Box",
            category=f"{CATEGORY}/placement",
            description="A placement from box coordinates and a depth.",
            inputs=[
                io.Image.Input("background", tooltip="The photo the object goes into (gives the size)."),
                io.Float.Input("x0", default=0.4, min=-1e5, max=1e5, step=0.001, tooltip="Left edge."),
                io.Float.Input("y0", default=0.4, min=-1e5, max=1e5, step=0.001, tooltip="Top edge."),
                io.Float.Input("x1", default=0.6, min=-1e5, max=1e5, step=0.001, tooltip="Right edge."),
                io.Float.Input("y1", default=0.8, min=-1e5, max=1e5, step=0.001, tooltip="Bottom edge (where the object stands)."),
                io.Combo.Input("unit", options=["fractions", "pixels"],
                               tooltip="Box coordinates as fractions of width/height (0..1) or as pixels."),
                *depth_inputs(),
            ],
            outputs=[
                PlacementSocket.Output("placement", tooltip="Box (normalised) and depth for DepthFuse, paste and masks."),
                io.Image.Output("preview", tooltip="The background with the box drawn."),
            ],
        )

    @classmethod
    def execute(cls, background, x0, y0, x1, y1, unit, depth_source, depth, depth_kind, background_depth=None) -> io.NodeOutput:
        background = as_rgb_batch(background, "background")
        height, width = background.shape[1:3]
        box = normalised_box(x0, y0, x1, y1, height, width, unit)
        value, kind = placement_depth(depth_source, depth, depth_kind, background_depth, box)
        placement = Placement(box, value, kind, (height, width))
        return io.NodeOutput(placement, preview(background, placement), ui=background_ui(background))


class PlacementFromMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaPlacementFromMask",
            display_name="Diorama Placement From Mask",
            category=f"{CATEGORY}/placement",
            description="A placement from the bounding box of a MASK (e.g. drawn, or from SAM/RMBG/Florence-2 nodes).",
            inputs=[
                io.Mask.Input("mask", tooltip="Marks where the object goes; its bounding box becomes the placement box."),
                *depth_inputs(),
            ],
            outputs=[
                PlacementSocket.Output("placement", tooltip="Box (normalised) and depth."),
                io.Image.Output("preview", tooltip="The mask with the box drawn."),
            ],
        )

    @classmethod
    def execute(cls, mask, depth_source, depth, depth_kind, background_depth=None) -> io.NodeOutput:
        mask = as_mask_batch(mask, "mask")
        require_nonempty(mask[:1], "mask")
        height, width = mask.shape[1:3]
        x0, y0, x1, y1 = mask_bounding_box(mask[0])
        box = (x0 / width, y0 / height, x1 / width, y1 / height)
        value, kind = placement_depth(depth_source, depth, depth_kind, background_depth, box)
        placement = Placement(box, value, kind, (height, width))
        return io.NodeOutput(placement, preview(mask[:1, ..., None].expand(-1, -1, -1, 3), placement))
