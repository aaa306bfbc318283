"""The bundled, rendered demo scene as a node, so workflows run with no image files at all."""
from __future__ import annotations

from comfy_api.latest import io

from ..ops import bundled_scene
from ..ops.depth_map import DepthMap
from ..ops.placement import Placement, mask_bounding_box
from .common import CATEGORY, DepthSocket, PlacementSocket, intermediate


class BundledScene(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaBundledScene",
            display_name="Diorama Bundled Scene",
            category=f"{CATEGORY}/scene",
            description="Renders Diorama's demo room and the crate to insert into it, with exact depth, masks, "
                        "the crate's true placement and the true composite for comparison.",
            inputs=[
                io.Int.Input("width", default=512, min=64, max=2048, step=8, tooltip="Width of the room render in pixels."),
                io.Int.Input("height", default=384, min=64, max=2048, step=8, tooltip="Height of the room render in pixels."),
                io.Int.Input("reference_size", default=256, min=64, max=1024, step=8,
                             tooltip="Side of the square reference photo of the crate."),
            ],
            outputs=[
                io.Image.Output("background", tooltip="The room without the crate."),
                DepthSocket.Output("background_depth", tooltip="Metric depth of the room in metres."),
                io.Image.Output("object", tooltip="Reference photo of the crate on white."),
                io.Mask.Output("object_mask", tooltip="The crate's silhouette in the reference photo."),
                DepthSocket.Output("object_depth", tooltip="Metric depth of the reference photo."),
                PlacementSocket.Output("true_placement", tooltip="Where the crate really stands: its box and median depth."),
                io.Image.Output("ground_truth", tooltip="The room rendered with the crate in place."),
            ],
        )

    @classmethod
    def execute(cls, width: int, height: int, reference_size: int) -> io.NodeOutput:
        room = bundled_scene.render_background(width, height)
        truth = bundled_scene.render_truth(width, height)
        crate_at_target = bundled_scene.render_crate_alone(width, height)
        _, target_mask, target_depth = bundled_scene.object_layers(crate_at_target)
        x0, y0, x1, y1 = mask_bounding_box(target_mask)
        placement = Placement(
            box=(x0 / width, y0 / height, x1 / width, y1 / height),
            depth=float(target_depth[target_mask > 0].median()),
            depth_kind="metric",
            image_size=(height, width),
        )
        image, mask, depth = bundled_scene.render_reference(reference_size)
        return io.NodeOutput(
            intermediate(room.rgb[None]),
            DepthMap(intermediate(room.depth[None]), "metric"),
            intermediate(image[None]),
            intermediate(mask[None]),
            DepthMap(intermediate(depth[None]), "metric"),
            placement,
            intermediate(truth.rgb[None]),
        )
