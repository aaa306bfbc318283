"""What every Diorama node shares: custom socket types, device placement and batch loops."""
from __future__ import annotations

from typing import Callable, TypeVar

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

DepthSocket = io.Custom("DIORAMA_DEPTH")
PlacementSocket = io.Custom("DIORAMA_PLACEMENT")
DepthModelSocket = io.Custom("DIORAMA_DEPTH_MODEL")
AssetsSocket = io.Custom("DIORAMA_ASSETS")  # ops.assets.Assets: cameras + per-object 3D boxes, one scene
KeypointsSocket = io.Custom("DIORAMA_KEYPOINTS")  # ops.keypoints.Keypoints: COCO-17 skeletons, fractions of an image

CATEGORY = "Diorama"
T = TypeVar("T")


def intermediate(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(comfy.model_management.intermediate_device())


def for_each_item(batch: int, work: Callable[[int], T]) -> list[T]:
    """Run `work` per batch item with a progress bar (also ComfyUI's cancel point)."""
    progress = comfy.utils.ProgressBar(batch)
    results = []
    for index in range(batch):
        results.append(work(index))
        progress.update(1)
    return results


# Diorama's small models read no text: a conditioning still needs a tensor in front of its dict (nodes such as
# Conditioning Zero Out or Combine handle it), so it carries one zero token; a UNet without attention layers never
# reads it.
NO_TEXT_TOKEN_SHAPE = (1, 1, 1)


def concat_conditioning(concat: torch.Tensor, mask: torch.Tensor) -> list:
    """A CONDITIONING for a small model that reads only concatenated channels: `concat_latent_image` [B,C,h,w]
    and `concat_mask` from mask [B,H,W]."""
    return [[intermediate(torch.zeros(NO_TEXT_TOKEN_SHAPE)),
             {"concat_latent_image": intermediate(concat), "concat_mask": intermediate(mask[:, None])}]]


def concat_batch(items: list[torch.Tensor]) -> torch.Tensor:
    """Per-item results back into one batch (without a copy when there is one item)."""
    return items[0] if len(items) == 1 else torch.cat(items)
