"""Depth nodes: estimate with a depth model, or adopt a depth IMAGE made by another pack."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..loaders.depth_models import estimate_depth, load_depth_model
from ..loaders.model_folders import DEPTH_FOLDER, resolve_transformers_folder, transformers_folders
from ..ops.checks import as_rgb_batch
from ..ops.depth_map import checked_depth, depth_hint
from .common import CATEGORY, DepthModelSocket, DepthSocket, concat_batch, for_each_item, intermediate

FROM_IMAGE_MEANINGS = ("disparity (white = near)", "metric (white = max_metres)")


class DepthModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaDepthModelLoader",
            display_name="Diorama Load Depth Model",
            category=f"{CATEGORY}/depth",
            description="Loads a Depth Anything V2 or DPT model saved in transformers format (config.json + "
                        f"model.safetensors) from models/{DEPTH_FOLDER}/.",
            inputs=[
                io.Combo.Input("model_name", options=transformers_folders(DEPTH_FOLDER),
                               tooltip=f"A model folder under models/{DEPTH_FOLDER}/ (or a path added for "
                                       f"'{DEPTH_FOLDER}' in extra_model_paths.yaml)."),
            ],
            outputs=[DepthModelSocket.Output("depth_model", tooltip="The depth model, managed by ComfyUI's model management.")],
        )

    @classmethod
    def execute(cls, model_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_depth_model(resolve_transformers_folder(DEPTH_FOLDER, model_name)))


class DepthEstimate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaDepthEstimate",
            display_name="Diorama Estimate Depth",
            category=f"{CATEGORY}/depth",
            description="Monocular depth of each image, kept as float numbers with their meaning "
                        "(relative disparity or metric metres).",
            inputs=[
                DepthModelSocket.Input("depth_model", tooltip="From Diorama Load Depth Model."),
                io.Image.Input("image", tooltip="Images to estimate depth for (a batch is processed image by image)."),
            ],
            outputs=[
                DepthSocket.Output("depth", tooltip="Float depth at the image's size, with its kind."),
                io.Image.Output("preview", tooltip="Near = white, normalised over the batch."),
            ],
        )

    @classmethod
    def execute(cls, depth_model, image: torch.Tensor) -> io.NodeOutput:
        image = as_rgb_batch(image, "image")
        maps = for_each_item(image.shape[0], lambda i: estimate_depth(depth_model, image[i:i + 1]))
        values = concat_batch(maps)
        if depth_model.kind == "metric":
            # Bicubic upsampling can undershoot next to sharp near edges; metric depth must stay positive.
            values = values.clamp_min(1e-3)
        depth = checked_depth(values, depth_model.kind, "estimated depth")
        return io.NodeOutput(depth, intermediate(depth_hint(depth)))


class DepthFromImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaDepthFromImage",
            display_name="Diorama Depth From Image",
            category=f"{CATEGORY}/depth",
            description="Turns a depth IMAGE from another pack (e.g. a ControlNet depth preprocessor) into "
                        "Diorama's float depth, stating what its values mean.",
            inputs=[
                io.Image.Input("depth_image", tooltip="A depth image; its channels are averaged."),
                io.Combo.Input("meaning", options=list(FROM_IMAGE_MEANINGS),
                               tooltip="Disparity: brighter is nearer (MiDaS, Depth Anything, Zoe previews). "
                                       "Metric: brightness times max_metres is the distance."),
                io.Float.Input("max_metres", default=10.0, min=0.01, max=10000.0, step=0.01,
                               tooltip="For metric images: the distance in metres that white stands for."),
            ],
            outputs=[DepthSocket.Output("depth", tooltip="Float depth with its kind.")],
        )

    @classmethod
    def execute(cls, depth_image: torch.Tensor, meaning: str, max_metres: float) -> io.NodeOutput:
        if meaning not in FROM_IMAGE_MEANINGS:
            raise ValueError(f"meaning {meaning!r} is unknown; expected one of {FROM_IMAGE_MEANINGS}")
        values = as_rgb_batch(depth_image, "depth_image").mean(dim=-1)
        if meaning.startswith("metric"):
            if bool((values <= 0).any()):
                raise ValueError("depth_image has black pixels, which would be 0 m in metric depth; "
                                 "metric depth must be > 0 everywhere (use 'disparity' for relative depth images)")
            return io.NodeOutput(checked_depth(intermediate(values * max_metres), "metric", "depth_image"))
        return io.NodeOutput(checked_depth(intermediate(values), "disparity", "depth_image"))
