"""Tiny BIFRÖST / AnyDoor checkpoints in the released key layout (Lightning `.ckpt`, torch.save).

Same key names as the released files, small shapes: an SD2-shaped UNet of one level (ComfyUI
detects SD2.x from 320 channels and 1024-wide linear cross-attention, so those stay; 64-channel
heads), ControlNets of the same shape (hint 4 / 3 channels), the SD VAE at its real size (ComfyUI's
VAELoader knows only that shape; stored fp16 to keep the file small), a facebookresearch-layout
DINOv2 (SwiGLU, patch 14, 37² positions) of width 128 and depth 2, its projector, the 12 linear-β
schedule buffers and logvar, and optionally AdamW-like optimizer state.
"""
from __future__ import annotations

from pathlib import Path

import torch

from tiny_sd import initialise

UNET = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1], channel_mult=[1],
            transformer_depth=[1], transformer_depth_output=[1, 1], transformer_depth_middle=1, num_head_channels=64,
            num_heads=-1, context_dim=1024, use_linear_in_transformer=True, use_spatial_transformer=True,
            adm_in_channels=None)
# Enough levels for output_blocks.11 to exist: the block ComfyUI's SD2 v-prediction guess reads.
UNET_12_OUTPUT_BLOCKS = dict(UNET, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 1, 1, 1], transformer_depth=[1, 0, 0, 0, 0, 0, 0, 0],
                             transformer_depth_output=[1] + [0] * 11)  # read from the end: [0] is output_blocks.11
DINO = dict(dim=128, depth=2, positions=37 * 37 + 1, patch=14)
SD_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
SCHEDULE = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
            "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
            "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")


def unet_state_dict(seed: int = 0, config: dict = UNET) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(operations=comfy.ops.disable_weight_init, **config)
    return {k: v.detach() for k, v in initialise(unet, seed).state_dict().items()}


def controlnet_state_dict(hint_channels: int, seed: int) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.cldm.cldm import ControlNet

    config = {k: v for k, v in UNET.items() if k not in ("out_channels", "transformer_depth_output")}
    net = ControlNet(hint_channels=hint_channels, operations=comfy.ops.disable_weight_init, **config)
    return {k: v.detach() for k, v in initialise(net, seed).state_dict().items()}


def vae_state_dict(seed: int) -> dict[str, torch.Tensor]:
    from comfy.ldm.models.autoencoder import AutoencoderKL

    vae = AutoencoderKL(ddconfig=SD_VAE, embed_dim=4)
    return {k: v.detach().half() for k, v in initialise(vae, seed).state_dict().items()}


def dinov2_state_dict(seed: int, dim: int = DINO["dim"], depth: int = DINO["depth"], positions: int = DINO["positions"],
                      patch: int = DINO["patch"]) -> dict[str, torch.Tensor]:
    """facebookresearch/dinov2 names: fused qkv, SwiGLU w12/w3, ls1/ls2 layer scales."""
    hidden = (int(dim * 4 * 2 / 3) + 7) // 8 * 8
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, positions, dim), "mask_token": (1, dim),
              "patch_embed.proj.weight": (dim, 3, patch, patch), "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        shapes.update({f"blocks.{i}.{k}": s for k, s in {
            "norm1.weight": (dim,), "norm1.bias": (dim,), "attn.qkv.weight": (3 * dim, dim), "attn.qkv.bias": (3 * dim,),
            "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,), "ls1.gamma": (dim,), "norm2.weight": (dim,),
            "norm2.bias": (dim,), "mlp.w12.weight": (2 * hidden, dim), "mlp.w12.bias": (2 * hidden,),
            "mlp.w3.weight": (dim, hidden), "mlp.w3.bias": (dim,), "ls2.gamma": (dim,)}.items()})
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        value = torch.randn(shape, generator=generator)
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            value = 1 + 0.1 * value
        elif len(shape) >= 2 and key not in ("cls_token", "pos_embed", "mask_token"):
            value = value / shape[-1] ** 0.5 if len(shape) == 2 else value / (3 * patch * patch) ** 0.5
        elif key.endswith("gamma"):
            value = 0.5 + 0.1 * value
        else:
            value = 0.1 * value
        out[key] = value
    return out


def linear_schedule_buffers() -> dict[str, torch.Tensor]:
    """latent-diffusion's DDPM.register_schedule for beta_schedule="linear" (v_posterior 0), as float32 buffers."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas = 1 - betas
    ac = torch.cumprod(alphas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    var = betas * (1 - prev) / (1 - ac)
    values = [betas, ac, prev, ac.sqrt(), (1 - ac).sqrt(), (1 - ac).log(), (1 / ac).sqrt(), (1 / ac - 1).sqrt(), var,
              torch.log(torch.maximum(var, torch.tensor(1e-20, dtype=torch.float64))), betas * prev.sqrt() / (1 - ac),
              (1 - prev) * alphas.sqrt() / (1 - ac)]
    return {name: value.float() for name, value in zip(SCHEDULE, values)}


def tiny_state_dict(variant: str = "bifrost", seed: int = 0) -> dict[str, torch.Tensor]:
    state = {f"model.diffusion_model.{k}": v for k, v in unet_state_dict(seed).items()}
    controls = {"control_model_detail.": 4, "control_model_depth.": 3} if variant == "bifrost" else {"control_model.": 4}
    for i, (prefix, hint) in enumerate(controls.items()):
        state.update({prefix + k: v for k, v in controlnet_state_dict(hint, seed + 1 + i).items()})
    state.update({f"first_stage_model.{k}": v for k, v in vae_state_dict(seed + 3).items()})
    state.update({f"cond_stage_model.model.{k}": v for k, v in dinov2_state_dict(seed + 4).items()})
    generator = torch.Generator().manual_seed(seed + 5)
    state["cond_stage_model.projector.weight"] = torch.randn(1024, DINO["dim"], generator=generator) / DINO["dim"] ** 0.5
    state["cond_stage_model.projector.bias"] = 0.01 * torch.randn(1024, generator=generator)
    state.update(linear_schedule_buffers())
    state["logvar"] = torch.zeros(1000)
    return state


def write_tiny_bifrost_ckpt(path: Path, variant: str = "bifrost", extra_optimizer_state: bool = True, seed: int = 0,
                            state: dict[str, torch.Tensor] | None = None) -> Path:
    """A Lightning-like checkpoint: {"state_dict", "optimizer_states", "epoch", ...} written by torch.save."""
    state = tiny_state_dict(variant, seed) if state is None else state
    checkpoint: dict = {"epoch": 1, "global_step": 8687, "pytorch-lightning_version": "1.5.0", "state_dict": state}
    if extra_optimizer_state:
        # AdamW moments for the trained ControlNet's hint block and the UNet decoder, as Lightning stores them.
        trained = [k for k in state if ".input_hint_block." in k or k.startswith("model.diffusion_model.out.")]
        checkpoint["optimizer_states"] = [{
            "state": {i: {"step": torch.tensor(8687.0), "exp_avg": torch.randn_like(state[k].float()),
                          "exp_avg_sq": torch.rand_like(state[k].float())} for i, k in enumerate(trained)},
            "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False,
                              "params": list(range(len(trained)))}],
        }]
        checkpoint["lr_schedulers"] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def write_example_models(models_dir: Path) -> list[Path]:
    """Tiny BIFRÖST and AnyDoor checkpoints converted into `models_dir` under the names the example
    workflows load (bifrost_*.safetensors, anydoor_*.safetensors), through the real converter."""
    import tempfile

    from diorama.convert import FOLDERS
    from diorama.loaders.bifrost_checkpoint import convert_checkpoint

    written = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed, variant in enumerate(("bifrost", "anydoor")):
            checkpoint = write_tiny_bifrost_ckpt(Path(scratch) / f"{variant}.ckpt", variant, seed=10 * seed)
            folders = {folder: str(models_dir / folder) for folder in FOLDERS}
            written += [part.path for part in convert_checkpoint(str(checkpoint), variant, folders, overwrite=True)]
    return [Path(p) for p in written]
