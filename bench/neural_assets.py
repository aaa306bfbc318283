"""Neural Assets: building the conditioning tokens against one real-size sampling step.

Token construction is what NeuralAssetPose does per image before sampling: the foreground mask,
the two masked passes through a real-size DINO ViT-B/8 (random weights) at 224², RoIAlign 2×2 per
slot, and the adapter (appearance projection, pose/background MLPs, neck), plus the CFG-null tokens;
for 1, 10 and 23 objects on a 256² source (adapters with 10 slots for up to 10 objects, 23 above, as
the reference's MOVi-A/B/C and MOVi-E/F models). The step is one SD2.1 UNet forward at 512² (latent
64², batch 2 for CFG) with the 4(N+1) asset tokens as its context, built from ComfyUI's classes as
bench/bifrost.py builds it.
"""
from __future__ import annotations

import gc
import os

import torch

from .bifrost import SD21_UNET, initialise
from .measure import median_seconds, peak_rss_mib

SOURCE_HW = (256, 256)  # the reference's training resolution
LATENT_HW = (64, 64)  # SD2.1 at 512²
SIGMA = 5.0
OBJECT_COUNTS = (1, 10, 23)


def dino_vitb8():
    """DINO v1 ViT-B/8 (facebook/dino-vitb8's configuration) with random weights, as a DinoBackbone."""
    from transformers import ViTConfig, ViTModel

    from diorama.loaders.dino_features import DinoBackbone
    from diorama.loaders.patching import model_patcher

    config = ViTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                       image_size=224, patch_size=8, layer_norm_eps=1e-6, qkv_bias=True)
    torch.manual_seed(0)
    model = ViTModel(config, add_pooling_layer=False).eval()
    return DinoBackbone(model_patcher(model), "dino_vitb8", "vit", 768, 8, 1)


def adapter(slots: int):
    from diorama.loaders.neural_assets_adapter import NeuralAssetsAdapterModel, config_metadata
    from diorama.loaders.patching import model_patcher
    from diorama.ops.neural_assets_tokens import NeuralAssetsAdapter, NeuralAssetsConfig

    config = NeuralAssetsConfig(slots=slots, feature_dim=768, dino="dino_vitb8")
    torch.manual_seed(slots)
    module = NeuralAssetsAdapter(config).eval()
    return NeuralAssetsAdapterModel(model_patcher(module), config, config_metadata(config))


def scene(objects: int, slots: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A source image [1,H,W,3], boxes [1,N+1,4] (random visible boxes, zero padding, global last), pose rows."""
    image = torch.rand(1, *SOURCE_HW, 3, generator=generator)
    corner = torch.rand(objects, 2, generator=generator) * 0.7
    size = 0.05 + torch.rand(objects, 2, generator=generator) * 0.25
    boxes = torch.zeros(slots + 1, 4)
    boxes[:objects] = torch.cat((corner, corner + size), dim=1)
    boxes[-1] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    rows = torch.zeros(slots + 1, 12)
    rows[:objects] = torch.rand(objects, 12, generator=generator) * torch.tensor([1.0, 1.0, 10.0] * 4)
    rows[-1] = torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0, 1, 0.5, 0, 0.2])
    return image, boxes[None], rows[None]


def token_pipeline(dino, head, image: torch.Tensor, boxes: torch.Tensor, rows: torch.Tensor):
    """What NeuralAssetPose computes for one image: positive and negative tokens."""
    from diorama.loaders.dino_features import patch_features
    from diorama.ops.neural_assets_tokens import (background_pass_image, foreground_mask, object_pass_image,
                                                  slot_appearance_features)

    def run():
        fg = foreground_mask(boxes[:, :-1], image.shape[1], image.shape[2])
        objects = patch_features(dino, object_pass_image(image, fg))
        background = patch_features(dino, background_pass_image(image, fg))
        positive = head.tokens(slot_appearance_features(objects, background, boxes), rows)
        return positive, head.null_tokens(1)

    return run


def sd21_unet():
    import comfy.supported_models

    model = comfy.supported_models.SD20(dict(SD21_UNET, dtype=torch.float32)).get_model({})
    initialise(model.diffusion_model, 10)
    return model


def bench_neural_assets(repeats: int, heavy_repeats: int) -> None:
    import comfy.ldm.modules.attention as attention

    load_at_start = f"{os.getloadavg()[0]:.2f}"
    print(f"Neural Assets token construction vs one sampling step; threads {torch.get_num_threads()}, "
          f"attention {attention.optimized_attention.__name__}")
    dino = dino_vitb8()
    generator = torch.Generator().manual_seed(1)
    pixels = torch.rand(1, 224, 224, 3, generator=generator)
    from diorama.loaders.dino_features import patch_features

    with torch.inference_mode():
        t_dino = median_seconds(lambda: patch_features(dino, pixels), heavy_repeats)
    print(f"  DINO ViT-B/8 at 224² (28² patches), batch 1, fp32 (median of {heavy_repeats}): {t_dino:.3f} s")
    rows_out = []
    for objects in OBJECT_COUNTS:
        slots = 10 if objects <= 10 else 23
        head = adapter(slots)
        image, boxes, rows = scene(objects, slots, generator)
        run = token_pipeline(dino, head, image, boxes, rows)
        with torch.inference_mode():
            positive, negative = run()
            if positive.shape != (1, 4 * (slots + 1), 1024) or not torch.isfinite(positive).all():
                raise RuntimeError(f"tokens {tuple(positive.shape)} are not [1, {4 * (slots + 1)}, 1024] or not finite")
            t_tokens = median_seconds(run, heavy_repeats)
            t_head = median_seconds(lambda: head.tokens(torch.zeros(1, 4 * (slots + 1), 768), rows), repeats)
        rows_out.append((objects, slots, t_tokens, t_head))
        gc.collect()

    model = sd21_unet()
    step = {}
    with torch.inference_mode():
        for slots in sorted({s for _, s, _, _ in rows_out}):
            g = torch.Generator().manual_seed(30)
            x = torch.randn(2, 4, *LATENT_HW, generator=g)
            context = torch.randn(2, 4 * (slots + 1), 1024, generator=g)
            sigma = torch.full((2,), SIGMA)
            out = model.apply_model(x, sigma, c_crossattn=context, transformer_options={})
            if tuple(out.shape) != tuple(x.shape) or not torch.isfinite(out).all():
                raise RuntimeError("the UNet step gave a wrong shape or non-finite values")
            step[slots] = median_seconds(
                lambda: model.apply_model(x, sigma, c_crossattn=context, transformer_options={}), heavy_repeats)
    for slots, seconds in step.items():
        print(f"  SD2.1 UNet step at 512² (latent 64², batch 2 for CFG, context {4 * (slots + 1)}x1024, fp32; "
              f"median of {heavy_repeats}): {seconds:.2f} s")
    print(f"  {'objects':>7} {'slots':>5} {'tokens s':>9} {'adapter ms':>11} {'/ one step':>10}")
    for objects, slots, t_tokens, t_head in rows_out:
        print(f"  {objects:>7} {slots:>5} {t_tokens:>9.3f} {t_head * 1000:>11.2f} {t_tokens / step[slots]:>10.1%}")
    print("  (tokens: fg mask, two DINO passes, RoIAlign, adapter, CFG-null tokens; computed once per image, "
          "before all sampling steps)")
    print(f"  peak RSS: {peak_rss_mib():.0f} MiB; load average at the start {load_at_start}, at the end "
          f"{os.getloadavg()[0]:.2f}")
