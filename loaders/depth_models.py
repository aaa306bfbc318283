"""Monocular depth models (Depth Anything V2, DPT/MiDaS) from transformers-format folders."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import comfy.model_management
import comfy.model_patcher
import torch

from .patching import model_patcher

log = logging.getLogger(__name__)

SUPPORTED = {"depth_anything": "DepthAnythingForDepthEstimation", "dpt": "DPTForDepthEstimation"}


@dataclass(frozen=True)
class Preprocessing:
    """What the model's image processor would do, read from preprocessor_config.json."""

    height: int = 518
    width: int = 518
    keep_aspect_ratio: bool = True
    multiple_of: int = 14
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @staticmethod
    def from_folder(folder: str, model_type: str) -> "Preprocessing":
        defaults = DEFAULT_PREPROCESSING[model_type]
        path = os.path.join(folder, "preprocessor_config.json")
        if not os.path.isfile(path):
            return defaults
        with open(path) as f:
            config = json.load(f)
        size = config.get("size", {})
        return Preprocessing(
            height=int(size.get("height", defaults.height)),
            width=int(size.get("width", defaults.width)),
            keep_aspect_ratio=bool(config.get("keep_aspect_ratio", defaults.keep_aspect_ratio)),
            multiple_of=int(config.get("ensure_multiple_of", defaults.multiple_of)),
            mean=tuple(config.get("image_mean", defaults.mean)),
            std=tuple(config.get("image_std", defaults.std)),
        )

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The processor's resize rule: the scale nearer to 1 wins when keeping the aspect ratio."""
        scale_h, scale_w = self.height / height, self.width / width
        if self.keep_aspect_ratio:
            if abs(1 - scale_w) < abs(1 - scale_h):
                scale_h = scale_w
            else:
                scale_w = scale_h

        def multiple(value: float) -> int:
            return max(self.multiple_of, round(value / self.multiple_of) * self.multiple_of)

        return multiple(scale_h * height), multiple(scale_w * width)


# What the published processors use when a folder ships no preprocessor_config.json:
# Depth Anything V2 (518, aspect kept, multiple of 14, ImageNet statistics) and DPT-Large/MiDaS
# (384 square, mean = std = 0.5); transformers' DPT only runs square inputs.
DEFAULT_PREPROCESSING = {
    "depth_anything": Preprocessing(),
    "dpt": Preprocessing(384, 384, False, 1, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


@dataclass(frozen=True)
class DepthModel:
    patcher: comfy.model_patcher.ModelPatcher
    kind: str  # "metric" or "disparity": what the network's output means
    preprocessing: Preprocessing


def load_depth_model(folder: str) -> DepthModel:
    """Load safetensors weights offline; architecture from config.json, never remote code."""
    import transformers

    with open(os.path.join(folder, "config.json")) as f:
        config_dict = json.load(f)
    model_type = config_dict.get("model_type")
    if model_type not in SUPPORTED:
        raise ValueError(f"{folder}: model_type {model_type!r} is not a supported depth model; expected one of {sorted(SUPPORTED)}")
    if not any(name.endswith(".safetensors") for name in os.listdir(folder)):
        raise FileNotFoundError(f"{folder}: no .safetensors weights found (pickled .bin/.pt weights are not loaded)")
    model_class = getattr(transformers, SUPPORTED[model_type])
    model = model_class.from_pretrained(folder, local_files_only=True, use_safetensors=True, torch_dtype=torch.float32)
    model.eval()
    kind = "metric" if config_dict.get("depth_estimation_type") == "metric" else "disparity"
    patcher = model_patcher(model)
    log.info("loaded %s depth model from %s (%s output)", model_type, folder, kind)
    return DepthModel(patcher, kind, Preprocessing.from_folder(folder, model_type))


def estimate_depth(model: DepthModel, image: torch.Tensor) -> torch.Tensor:
    """image [B,H,W,3] 0..1 → depth [B,H,W] at the image's size, on the intermediate device."""
    comfy.model_management.load_model_gpu(model.patcher)
    device = model.patcher.load_device
    height, width = image.shape[1:3]
    p = model.preprocessing
    pixels = image.permute(0, 3, 1, 2).to(device, torch.float32)
    pixels = torch.nn.functional.interpolate(pixels, size=p.input_size(height, width), mode="bicubic",
                                             align_corners=False, antialias=True).clamp(0, 1)
    pixels = (pixels - pixels.new_tensor(p.mean)[:, None, None]) / pixels.new_tensor(p.std)[:, None, None]
    with torch.no_grad():
        predicted = model.patcher.model(pixel_values=pixels).predicted_depth
    depth = torch.nn.functional.interpolate(predicted.unsqueeze(1).float(), size=(height, width), mode="bicubic",
                                            align_corners=False)[:, 0]
    return depth.to(comfy.model_management.intermediate_device())
