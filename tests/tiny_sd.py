"""Tiny, randomly initialised Stable-Diffusion-1.5-shaped models in the released file layouts.

ComfyUI's loaders detect the model family from key names and shapes, so these files load through
CheckpointLoaderSimple / ControlNetLoader like real ones: an SD1.5 UNet of one level (320 channels,
768-wide cross-attention), the SD1 CLIP text encoder, a TAESD standing in for the VAE, and a
ControlNet of the same shape.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

# The file names the example workflows load, so the tests run them unchanged on tiny models.
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
INPAINTING = "sd-v1-5-inpainting.safetensors"
DEPTH_CONTROLNET = "control_v11f1p_sd15_depth.safetensors"

UNET = dict(image_size=32, out_channels=4, model_channels=320, num_res_blocks=[1], channel_mult=[1],
            transformer_depth=[1], transformer_depth_output=[1, 1], transformer_depth_middle=1,
            num_head_channels=-1, num_heads=8, context_dim=768, use_linear_in_transformer=False,
            use_spatial_transformer=True, adm_in_channels=None)


def initialise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """ComfyUI's layers skip initialisation; give every weight seeded random values."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in module.parameters():
        if parameter.ndim >= 2:
            parameter.data.copy_(torch.randn(parameter.shape, generator=generator) / parameter[0].numel() ** 0.5)
        elif parameter.ndim == 1:
            parameter.data.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    for layer in module.modules():
        if isinstance(layer, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and layer.weight is not None:
            layer.weight.data.fill_(1.0)
    return module


def unet_state_dict(in_channels: int, seed: int) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(in_channels=in_channels, operations=comfy.ops.disable_weight_init, **UNET)
    return {f"model.diffusion_model.{k}": v for k, v in initialise(unet, seed).state_dict().items()}


def controlnet_state_dict(hint_channels: int, seed: int) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.cldm.cldm import ControlNet

    config = {k: v for k, v in UNET.items() if k not in ("out_channels", "transformer_depth_output")}
    net = ControlNet(in_channels=4, hint_channels=hint_channels, operations=comfy.ops.disable_weight_init, **config)
    return {f"control_model.{k}": v for k, v in initialise(net, seed).state_dict().items()}


def taesd_state_dict(seed: int) -> dict[str, torch.Tensor]:
    from comfy.taesd.taesd import TAESD

    taesd = TAESD(latent_channels=4)
    state = {k: v for k, v in initialise(taesd, seed).state_dict().items() if k.startswith(("taesd_encoder.", "taesd_decoder."))}
    # As ComfyUI's VAELoader does for SD1 TAESD files: latents in the SD1 scale.
    state.update(vae_scale=torch.tensor(0.18215), vae_shift=torch.tensor(0.0))
    return {f"first_stage_model.{k}": v for k, v in state.items()}


def clip_state_dict(seed: int) -> dict[str, torch.Tensor]:
    from transformers import CLIPTextConfig, CLIPTextModel

    # The SD1 text encoder's shape (CLIP ViT-L/14 text tower); ComfyUI detects it by key names.
    config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
    torch.manual_seed(seed)
    model = CLIPTextModel(config)
    return {f"cond_stage_model.transformer.{k}": v for k, v in model.state_dict().items()}


def write_checkpoint(path: Path, in_channels: int = 4, seed: int = 0) -> Path:
    state = {**unet_state_dict(in_channels, seed), **taesd_state_dict(seed + 1), **clip_state_dict(seed + 2)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().half() if v.is_floating_point() and k.startswith("cond_stage_model") else v.contiguous()
               for k, v in state.items()}, str(path))
    return path


def write_controlnet(path: Path, hint_channels: int = 3, seed: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in controlnet_state_dict(hint_channels, seed).items()}, str(path))
    return path


def write_example_models(models_dir: Path) -> dict[str, str]:
    """The checkpoints and ControlNet the example workflows load, under their file names."""
    return {
        "checkpoint": write_checkpoint(models_dir / "checkpoints" / CHECKPOINT).name,
        "inpainting": write_checkpoint(models_dir / "checkpoints" / INPAINTING, in_channels=9, seed=3).name,
        "controlnet": write_controlnet(models_dir / "controlnet" / DEPTH_CONTROLNET).name,
    }
