"""What the diffusion recipes share: the UNet and VAE loaded through ComfyUI's own loaders, images
turned into the model's latents, and the noise-prediction loss on ComfyUI's noise schedule.

The loss is the DDPM ε objective the seeds train with: t uniform over the model's discrete
timesteps, x_t = x_0 + σ_t·ε in ComfyUI's (k-diffusion) scaling, which is the DDPM x_t up to the
factor ComfyUI's `calculate_input` divides out, and ‖ε̂ − ε‖². ε̂ is read back from the model's
denoised output, so v-prediction models (SD2.1-768) train through the same code.
"""
from __future__ import annotations

import os

import comfy.model_patcher
import comfy.sd
import comfy.utils
import torch
import torch.nn.functional as F

from ..loaders.model_folders import resolve_model_file


def model_path(folder: str, name: str) -> str:
    """An absolute path as given, or a name in one of ComfyUI's model folders (e.g. 'diffusion_models')."""
    if os.path.isabs(name):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"model file {name} does not exist")
        return name
    return resolve_model_file(folder, name)


def load_trainable_unet(name: str, device: torch.device) -> comfy.model_patcher.ModelPatcher:
    """A UNet file (diffusion_models) through ComfyUI's load_diffusion_model, in float32 (trained weights are
    the float32 master copy; bf16 comes from autocast), wholly on `device` with gradients on: training
    needs every weight resident, which ModelPatcher's partial loading for inference does not promise."""
    patcher = comfy.sd.load_diffusion_model(model_path("diffusion_models", name), model_options={"dtype": torch.float32})
    patcher.model.to(device)
    patcher.model.diffusion_model.requires_grad_(True)
    return patcher


def load_trainable_checkpoint(name: str, device: torch.device):
    """A whole checkpoint (checkpoints folder) as CheckpointLoaderSimple loads it → (UNet patcher, CLIP, VAE),
    the UNet as load_trainable_unet leaves it."""
    import folder_paths

    patcher, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
        model_path("checkpoints", name), output_vae=True, output_clip=True,
        embedding_directory=folder_paths.get_folder_paths("embeddings"), model_options={"dtype": torch.float32})
    patcher.model.to(device)
    patcher.model.diffusion_model.requires_grad_(True)
    return patcher, clip, vae


def load_frozen_vae(name: str) -> comfy.sd.VAE:
    """A VAE file as VAELoader loads it (TAESD files included); it only encodes targets and decodes previews."""
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(model_path("vae", name), safe_load=True))
    vae.throw_exception_if_invalid()
    return vae


def context_dim(patcher: comfy.model_patcher.ModelPatcher) -> int:
    return int(patcher.model.model_config.unet_config["context_dim"])


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B,H,W,3] → [B,size,size,3], antialiased bilinear (the seeds train on square inputs)."""
    if tuple(images.shape[1:3]) == (size, size):
        return images
    pixels = F.interpolate(images.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", align_corners=False,
                           antialias=True)
    return pixels.clamp(0, 1).permute(0, 2, 3, 1)


@torch.no_grad()
def image_latents(patcher: comfy.model_patcher.ModelPatcher, vae: comfy.sd.VAE, images: torch.Tensor,
                  device: torch.device) -> torch.Tensor:
    """Images [B,H,W,3] in [0,1] → the latents the UNet samples (VAE encode, then the model's latent scaling),
    as ComfyUI's samplers see an encoded image."""
    return patcher.model.process_latent_in(vae.encode(images[..., :3]).float()).to(device)


@torch.no_grad()
def decode_latents(patcher: comfy.model_patcher.ModelPatcher, vae: comfy.sd.VAE, latents: torch.Tensor) -> torch.Tensor:
    """The model's latents → images [B,H,W,3] in [0,1] (float32, CPU)."""
    return vae.decode(patcher.model.process_latent_out(latents.float())).float().clamp(0, 1).cpu()


def noisy_latents(patcher: comfy.model_patcher.ModelPatcher, latents: torch.Tensor, generator: torch.Generator):
    """(x_t, σ, ε): uniform timesteps and Gaussian noise drawn on the CPU from `generator` (the same on every device)."""
    sampling = patcher.model.model_sampling
    steps = sampling.sigmas.shape[0]
    timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator)
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    sigma = sampling.sigmas.cpu()[timesteps].to(latents.device)
    return sampling.noise_scaling(sigma, noise, latents), sigma, noise


def predicted_noise(patcher: comfy.model_patcher.ModelPatcher, noisy: torch.Tensor, sigma: torch.Tensor,
                    context: torch.Tensor, concat: torch.Tensor | None = None) -> torch.Tensor:
    """ε̂ of the UNet at (x_t, σ) with cross-attention `context` (and inpainting channels `concat`)."""
    denoised = patcher.model.apply_model(noisy, sigma, c_concat=concat, c_crossattn=context)
    return (noisy - denoised) / sigma.view(-1, *([1] * (noisy.ndim - 1)))


def noise_prediction_loss(patcher: comfy.model_patcher.ModelPatcher, latents: torch.Tensor, context: torch.Tensor,
                          generator: torch.Generator, concat: torch.Tensor | None = None) -> torch.Tensor:
    """Mean ‖ε̂ − ε‖² over a batch of clean latents, one random timestep each."""
    noisy, sigma, noise = noisy_latents(patcher, latents, generator)
    return F.mse_loss(predicted_noise(patcher, noisy, sigma, context, concat).float(), noise)


def one_step_prediction(patcher: comfy.model_patcher.ModelPatcher, latents: torch.Tensor, context: torch.Tensor,
                        generator: torch.Generator, concat: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation: (ε-loss per item, the model's x̂_0 from one noisy step) for a batch."""
    noisy, sigma, noise = noisy_latents(patcher, latents, generator)
    denoised = patcher.model.apply_model(noisy, sigma, c_concat=concat, c_crossattn=context).float()
    epsilon = (noisy - denoised) / sigma.view(-1, *([1] * (noisy.ndim - 1)))
    return ((epsilon - noise) ** 2).flatten(1).mean(1), denoised


def unet_blocks(patcher: comfy.model_patcher.ModelPatcher) -> list[torch.nn.Module]:
    """The UNet's transformer blocks: the activations worth recomputing under gradient checkpointing."""
    from comfy.ldm.modules.attention import BasicTransformerBlock

    return [m for m in patcher.model.diffusion_model.modules() if isinstance(m, BasicTransformerBlock)]
