"""The models the Neural Assets example workflows load, tiny and random, under their file names:
an SD2-shaped UNet (the BIFRÖST tests' one-level UNet), TAESD as the VAE, a DINO ViT-B/8-shaped
patch projection (the golden script's stub DINO with random weights) and a random adapter."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

UNET = "neural_assets_sd21_unet.safetensors"
VAE = "vae-ft-mse-840000-ema-pruned.safetensors"
DINO = "dino-vitb8"
ADAPTER = "neural_assets_movi.safetensors"


def write_example_models(models_dir: Path) -> list[Path]:
    import tiny_bifrost
    import tiny_dino
    import tiny_sd

    from diorama.loaders.neural_assets_adapter import save_neural_assets_adapter
    from diorama.ops.neural_assets_tokens import NeuralAssetsAdapter, NeuralAssetsConfig

    unet = models_dir / "diffusion_models" / UNET
    vae = models_dir / "vae" / VAE
    adapter = models_dir / "neural_assets" / ADAPTER
    for folder in (unet.parent, vae.parent, adapter.parent):
        folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tiny_bifrost.unet_state_dict(seed=21).items()}, str(unet))
    taesd = {k.removeprefix("first_stage_model."): v.contiguous() for k, v in tiny_sd.taesd_state_dict(22).items()}
    save_file(taesd, str(vae))
    projection = np.random.default_rng(23).normal(0, 0.05, (192, 768)).astype(np.float32)
    tiny_dino.stub_vit(projection).save_pretrained(models_dir / "dino" / DINO)
    torch.manual_seed(24)
    module = NeuralAssetsAdapter(NeuralAssetsConfig(slots=10, feature_dim=768, dino="dino_vitb8"))
    save_neural_assets_adapter(str(adapter), module, overwrite=True)
    return [unet, vae, models_dir / "dino" / DINO, adapter]
