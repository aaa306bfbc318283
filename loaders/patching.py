"""Handing non-diffusion torch models to ComfyUI's model management."""
from __future__ import annotations

import comfy.model_management
import comfy.model_patcher
import torch


class ManagedModule(torch.nn.Module):
    """Holds a model for a ModelPatcher.

    ModelPatcher records where the weights live by assigning `model.device`; transformers models
    expose `device` as a read-only property, so the patcher manages this holder instead.
    """

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network
        self.device = comfy.model_management.unet_offload_device()

    def forward(self, *args, **kwargs):
        return self.network(*args, **kwargs)


def model_patcher(network: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher that loads onto ComfyUI's compute device and offloads where it says."""
    return comfy.model_patcher.ModelPatcher(
        ManagedModule(network),
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )
