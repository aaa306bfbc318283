"""Tiny random depth models in transformers folder format: Depth Anything V2 (relative and metric) and DPT.

`Depth-Anything-V2-Small-hf` is the name the example workflow loads; here it is a tiny relative model.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

MODELS = ("tiny-depth-anything", "tiny-depth-anything-metric", "tiny-dpt")
EXAMPLE_WORKFLOW_MODEL = "Depth-Anything-V2-Small-hf"


def _depth_anything(metric: bool):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    extra = {"depth_estimation_type": "metric", "max_depth": 20} if metric else {}
    config = DepthAnythingConfig(backbone_config=backbone, fusion_hidden_size=16, head_hidden_size=8,
                                 neck_hidden_sizes=[8, 16, 32, 32], reassemble_hidden_size=32, **extra)
    return DepthAnythingForDepthEstimation(config)


def _dpt():
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
                       patch_size=16, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                       backbone_out_indices=[0, 1, 2, 3])
    return DPTForDepthEstimation(config)


def write_depth_models(folder: Path) -> Path:
    """Save every tiny model (weights + preprocessor_config.json) under `folder`."""
    from transformers import DPTImageProcessor

    torch.manual_seed(0)
    depth_anything = DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                       resample=Image.BICUBIC, image_mean=[0.485, 0.456, 0.406],
                                       image_std=[0.229, 0.224, 0.225])
    dpt = DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False, ensure_multiple_of=1,
                            resample=Image.BICUBIC, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    models = {
        MODELS[0]: (lambda: _depth_anything(False), depth_anything),
        MODELS[1]: (lambda: _depth_anything(True), depth_anything),
        MODELS[2]: (_dpt, dpt),
        EXAMPLE_WORKFLOW_MODEL: (lambda: _depth_anything(False), depth_anything),
    }
    for name, (build, processor) in models.items():
        model = build().eval()
        # Random init gives near-constant heads; spread every weight so outputs carry image structure.
        for parameter in model.parameters():
            parameter.data.normal_(0, 0.2)
        model.save_pretrained(folder / name)
        processor.save_pretrained(folder / name)
    return folder
