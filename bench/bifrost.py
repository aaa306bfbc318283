"""BIFRÖST: everything Diorama does before sampling, against one real-size sampling step.

Preprocessing (depth fusion, reference crop, high-frequency map, hints, DINOv2 input pixels) runs on
inputs of the reference example's size (683×512 background, 1280×1280 reference), synthesised here.
The step is what every one of BIFRÖST's 50 DDIM steps costs: an SD2.1 UNet with the detail and the
depth ControlNet, batch 2 for CFG, built from ComfyUI's own classes with random weights and run
through ComfyUI's ControlNet objects (hint resize, residual sum) and `BaseModel.apply_model`, as its
sampler calls them. DINOv2-g at 224² is a model forward too, so it is timed on its own line.
"""
from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .measure import median_seconds, peak_rss_mib

BACKGROUND_HW = (512, 683)  # the reference repository's example photo
REFERENCE_HW = (1280, 1280)  # and its reference image
BOX_XYWH = (0.338, 0.521, 0.2, 0.32)  # the example's placement and depth range
DEPTH_RANGE = (0.1, 0.22)
CROP_RATIO = 2.1  # the ratio the example drew
DETAIL_THRESHOLD = 50
MASK_GROWTH = 0.02
LATENT_HW = (64, 64)
TOKENS, CONTEXT_DIM = 257, 1024  # DINOv2 class + 16² patch tokens, projected to SD2.1's context width
SIGMA = 5.0  # any mid-schedule noise level: the cost of a step does not depend on it
TARGET = 0.10

# SD2.1-base's UNet (as ComfyUI's model detection reads it from the checkpoint; BIFRÖST's cldm yaml
# has the same shape). ComfyUI's SD20 model config adds num_head_channels 64 and fp32 attention.
SD21_UNET = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
                 channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
                 transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], context_dim=1024,
                 use_linear_in_transformer=True, use_spatial_transformer=True, legacy=False, adm_in_channels=None,
                 use_temporal_attention=False, use_temporal_resblock=False, use_checkpoint=False)
# DINOv2 ViT-g/14 as BIFRÖST/AnyDoor load it: 40 blocks, width 1536, SwiGLU, 37² learnt positions.
DINOV2_G = dict(hidden_size=1536, num_layers=40, patch_size=14, grid=37, swiglu=True)


@dataclass(frozen=True)
class Inputs:
    background: torch.Tensor  # uint8 [H,W,3]
    background_depth: torch.Tensor  # float64 [H,W] disparity, 16-bit range as DPT PNGs store it
    reference: torch.Tensor  # uint8 [H,W,3]
    reference_mask: torch.Tensor  # uint8 {0,1} [H,W]
    reference_depth: torch.Tensor  # float64 [H,W]


def smooth_field(height: int, width: int, cells: int, generator: torch.Generator, channels: int = 1) -> torch.Tensor:
    """Random values on a coarse grid, interpolated: photo-like large structures, [channels,H,W] in ~0..1."""
    coarse = torch.rand(1, channels, cells, cells, generator=generator, dtype=torch.float64)
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]


def synthetic_image(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    # Smooth regions plus pixel noise, so the Sobel map has edges and texture to find.
    field = smooth_field(height, width, 12, generator, 3) + 0.08 * torch.randn(3, height, width, generator=generator,
                                                                               dtype=torch.float64)
    return (field.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def synthetic_inputs(seed: int = 0) -> Inputs:
    generator = torch.Generator().manual_seed(seed)
    bh, bw = BACKGROUND_HW
    rh, rw = REFERENCE_HW
    rows = torch.arange(rh, dtype=torch.float64)[:, None]
    cols = torch.arange(rw, dtype=torch.float64)[None, :]
    # An upright ellipse about as large in its frame as the example's object (box 1128×942 of 1280²).
    mask = (((rows - 624) / 564) ** 2 + ((cols - 709) / 471) ** 2 <= 1).to(torch.uint8)
    return Inputs(
        background=synthetic_image(bh, bw, generator),
        background_depth=(smooth_field(bh, bw, 6, generator)[0].clamp(0, 1) * 65535).round(),
        reference=synthetic_image(rh, rw, generator),
        reference_mask=mask,
        reference_depth=(smooth_field(rh, rw, 6, generator)[0].clamp(0, 1) * 65535).round(),
    )


def preprocessing_stages(inputs: Inputs) -> tuple[dict, object]:
    """Each step of the pipeline as a zero-argument callable on its real inputs, and the whole chain.

    The stages are run once here so that each later timing sees exactly the data it sees in the chain.
    """
    from diorama.ops.bifrost_reference import (box_rows_cols, build_hints, fuse_reference_depth, fused_depth_png,
                                               high_frequency_map, mask_bounding_box, reference_crop)
    from diorama.ops.identity_tokens import dino_pixels

    def fuse():
        # As the Depth Fuse node: the object's disparity inside its mask, cropped to the mask's box.
        y1, y2, x1, x2 = mask_bounding_box(inputs.reference_mask)
        masked = (inputs.reference_depth * inputs.reference_mask)[y1:y2, x1:x2]
        return fuse_reference_depth(inputs.background_depth, masked, inputs.reference_mask[y1:y2, x1:x2], BOX_XYWH,
                                    DEPTH_RANGE)

    def hints(fused, depth_u8, detail):
        height, width = inputs.background.shape[:2]
        row0, rows, col0, cols = box_rows_cols(BOX_XYWH, height, width)
        visible_in_box = fused.visible[row0:row0 + rows, col0:col0 + cols]
        return build_hints(inputs.background, fused.visible, visible_in_box, depth_u8, detail, CROP_RATIO, MASK_GROWTH)

    def identity_pixels(crop):
        # IdentityEncode's two inputs: the crop, and the black image of the unconditional branch.
        return dino_pixels(crop[None]), dino_pixels(torch.zeros_like(crop)[None])

    fused = fuse()
    depth_u8 = fused_depth_png(fused.depth)
    crop, crop_mask = reference_crop(inputs.reference, inputs.reference_mask)
    detail = high_frequency_map(crop, crop_mask, DETAIL_THRESHOLD, False)
    if int(fused.visible.sum()) == 0:
        raise RuntimeError("the synthetic object is hidden everywhere; the hints would not be representative")
    stages = {
        "fuse_reference_depth": fuse,
        "fused_depth_png": lambda: fused_depth_png(fused.depth),
        "reference_crop": lambda: reference_crop(inputs.reference, inputs.reference_mask),
        "high_frequency_map": lambda: high_frequency_map(crop, crop_mask, DETAIL_THRESHOLD, False),
        "build_hints": lambda: hints(fused, depth_u8, detail),
        "dino_pixels (×2)": lambda: identity_pixels(crop),
    }

    def chain():
        f = fuse()
        d = fused_depth_png(f.depth)
        c, m = reference_crop(inputs.reference, inputs.reference_mask)
        h = hints(f, d, high_frequency_map(c, m, DETAIL_THRESHOLD, False))
        return h, identity_pixels(c)

    return stages, chain


def node_chain(node: dict, inputs: Inputs):
    """The same preprocessing through the nodes a workflow uses (IMAGE/MASK in, node outputs out)."""
    from diorama.nodes.identity import reference_crops
    from diorama.ops.depth_map import DepthMap
    from diorama.ops.identity_tokens import dino_pixels

    background = inputs.background[None].to(torch.float32) / 255
    reference = inputs.reference[None].to(torch.float32) / 255
    reference_mask = inputs.reference_mask[None].to(torch.float32)
    background_depth = DepthMap(inputs.background_depth[None].to(torch.float32), "disparity")
    object_depth = DepthMap(inputs.reference_depth[None].to(torch.float32), "disparity")
    x, y, w, h = BOX_XYWH

    def run():
        placement = node["DioramaPlacementDepthRange"].execute(background, x, y, w, h, *DEPTH_RANGE).result[0]
        fused, visible, _ = node["DioramaBifrostDepthFuse"].execute(background_depth, object_depth, reference_mask,
                                                                    placement).result
        hints = node["DioramaBifrostHints"].execute(
            background=background, target_mask=visible, reference=reference, reference_mask=reference_mask,
            crop_ratio=CROP_RATIO, detail_threshold=DETAIL_THRESHOLD, mask_growth=MASK_GROWTH, method="BIFRÖST",
            fused_depth=fused, placement=placement).result
        # IdentityEncode's work before DINOv2 (its crop, normalised; and the black image).
        crops, _ = reference_crops(reference, reference_mask)
        return hints, dino_pixels(crops), dino_pixels(torch.zeros_like(crops))

    return run


def initialise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import tiny_sd

    # ComfyUI's layers skip initialisation (their memory holds garbage, NaN and denormals included,
    # which would time the wrong arithmetic): the tests' seeded fan-in-scaled init.
    return tiny_sd.initialise(module, seed)


def dinov2_g_forward_seconds(repeats: int) -> dict[str, float]:
    """DINOv2-g at 224², batch 1, as Diorama runs it (loaders.identity_encoder.dinov2_tokens): with the
    weight dtype ComfyUI picks for CLIP vision (fp16 on CPU, cast to fp32 layer by layer), and fp32."""
    from diorama.loaders.identity_encoder import DinoV2Config, build_clip_vision, dinov2_tokens

    clip_vision = build_clip_vision(DinoV2Config(**DINOV2_G))
    initialise(clip_vision.model, 3)
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    seconds = {}
    with torch.inference_mode():
        for dtype in (clip_vision.dtype, torch.float32):
            clip_vision.model.to(dtype)
            tokens = dinov2_tokens(clip_vision, pixels)
            if tuple(tokens.shape) != (1, TOKENS, DINOV2_G["hidden_size"]) or not torch.isfinite(tokens).all():
                raise RuntimeError(f"DINOv2-g gave tokens {tuple(tokens.shape)} (expected (1, {TOKENS}, 1536)) or "
                                   "non-finite values")
            label = f"{str(dtype).removeprefix('torch.')} weights"
            if dtype == clip_vision.dtype:
                label += ", ComfyUI's CPU default"
            seconds[label] = median_seconds(lambda: dinov2_tokens(clip_vision, pixels), repeats)
            if dtype == torch.float32:
                break  # the default already was fp32
    return seconds


def sd21_with_two_controlnets():
    """ComfyUI's SD2.1 model and the detail (4-channel hint) and depth (3-channel) ControlNets, chained
    as Apply ControlNet chains them (the second holds the first as its previous net)."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management
    import comfy.ops
    import comfy.supported_models

    model = comfy.supported_models.SD20(dict(SD21_UNET, dtype=torch.float32)).get_model({})
    initialise(model.diffusion_model, 10)
    device = comfy.model_management.get_torch_device()
    control_config = {k: v for k, v in model.model_config.unet_config.items() if k != "out_channels"}
    nets = []
    generator = torch.Generator().manual_seed(20)
    for seed, channels in ((11, 4), (12, 3)):
        control_model = comfy.cldm.cldm.ControlNet(hint_channels=channels, operations=comfy.ops.disable_weight_init,
                                                   device=None, **control_config)
        initialise(control_model, seed)
        net = comfy.controlnet.ControlNet(control_model, load_device=device)
        # ComfyUI's hint layout [B,C,H,W] at 512² pixels; one image, broadcast over cond/uncond.
        net.set_cond_hint(torch.rand(1, channels, 512, 512, generator=generator), 1.0, (0.0, 1.0))
        if nets:
            net.set_previous_controlnet(nets[-1])
        nets.append(net)
    last = nets[-1]
    last.pre_run(model, lambda percent: model.model_sampling.percent_to_sigma(percent))
    return model, last


def step_seconds(repeats: int) -> tuple[float, float, int]:
    """(UNet + both ControlNets, UNet alone, parameter count): one CFG step, batch 2, fp32."""
    model, control = sd21_with_two_controlnets()
    parameters = sum(p.numel() for m in [model.diffusion_model] + [c.control_model for c in (control,
                                                                                              control.previous_controlnet)]
                     for p in m.parameters())
    generator = torch.Generator().manual_seed(30)
    x = torch.randn(2, 4, *LATENT_HW, generator=generator)
    context = torch.randn(2, TOKENS, CONTEXT_DIM, generator=generator)
    sigma = torch.full((2,), SIGMA)
    cond = {"c_crossattn": context}

    def controlled():
        # As ComfyUI's calc_cond_batch: residuals of both nets summed, then the UNet with them.
        residuals = control.get_control(x, sigma, cond, 2, {})
        return model.apply_model(x, sigma, c_crossattn=context, control=residuals, transformer_options={})

    def plain():
        return model.apply_model(x, sigma, c_crossattn=context, transformer_options={})

    with torch.inference_mode():
        residuals = control.get_control(x, sigma, cond, 2, {})
        # ComfyUI files the 12 zero-conv outputs under "output" (they are added to the skip connections
        # the output blocks read) and the mid-block one under "middle".
        counts = {key: len(value) for key, value in residuals.items()}
        if counts != {"input": 0, "middle": 1, "output": 12}:
            raise RuntimeError(f"expected 12 skip + 1 middle ControlNet residuals, got {counts}")
        out = controlled()
        if tuple(out.shape) != tuple(x.shape) or not torch.isfinite(out).all():
            raise RuntimeError(f"the UNet step gave {tuple(out.shape)} with non-finite values or a wrong shape")
        t_controlled = median_seconds(controlled, repeats)
        t_plain = median_seconds(plain, repeats)
    control.cleanup()
    return t_controlled, t_plain, parameters


def bench_bifrost(node: dict, repeats: int, heavy_repeats: int) -> None:
    import comfy.ldm.modules.attention as attention

    load_at_start = f"{os.getloadavg()[0]:.2f}"
    torch.manual_seed(0)
    print(f"BIFRÖST preprocessing vs one sampling step; threads {torch.get_num_threads()}, "
          f"attention {attention.optimized_attention.__name__}")
    inputs = synthetic_inputs()
    stages, chain = preprocessing_stages(inputs)
    with torch.inference_mode():
        seconds = {name: median_seconds(work, repeats) for name, work in stages.items()}
        t_chain = median_seconds(chain, repeats)
        t_nodes = median_seconds(node_chain(node, inputs), repeats)
    total = sum(seconds.values())
    print(f"  preprocessing, background {BACKGROUND_HW[1]}x{BACKGROUND_HW[0]}, reference "
          f"{REFERENCE_HW[1]}x{REFERENCE_HW[0]} (median of {repeats}):")
    for name, value in seconds.items():
        print(f"    {name:<22} {value * 1000:8.1f} ms  {value / total:6.1%}")
    print(f"    {'sum of the stages':<22} {total * 1000:8.1f} ms")
    print(f"    {'whole chain':<22} {t_chain * 1000:8.1f} ms")
    print(f"    {'through the nodes':<22} {t_nodes * 1000:8.1f} ms  (Placement, Depth Fuse, Hints, IdentityEncode's "
          "crop + pixels)")
    top = max(seconds, key=seconds.get)
    print(f"    largest stage: {top} {seconds[top] / total:.0%}" + (" (dominates: > 50%)" if seconds[top] > total / 2
                                                                      else " (none dominates)"))

    dino = dinov2_g_forward_seconds(heavy_repeats)
    gc.collect()
    for label, value in dino.items():
        print(f"  DINOv2-g forward at 224², batch 1 ({label}; median of {heavy_repeats}): {value:.2f} s")
    t_step, t_unet, parameters = step_seconds(heavy_repeats)
    gc.collect()
    print(f"  SD2.1 UNet + detail + depth ControlNets, one step, batch 2, latent 4x{LATENT_HW[0]}x{LATENT_HW[1]}, "
          f"context {TOKENS}x{CONTEXT_DIM}, fp32, {parameters / 1e6:.0f}M params (median of {heavy_repeats}): "
          f"{t_step:.2f} s")
    print(f"  SD2.1 UNet alone, same step: {t_unet:.2f} s")
    verdict = "met" if t_nodes / t_step <= TARGET else "NOT met"
    print(f"  preprocessing / one step: ops {t_chain / t_step:.2%}, nodes {t_nodes / t_step:.2%} "
          f"(target ≤ {TARGET:.0%}, judged on the nodes: {verdict})")
    for label, value in dino.items():
        print(f"  DINOv2-g forward ({label}) / one step: {value / t_step:.1%}")
    print("  (IdentityEncode runs DINOv2 twice, on the reference and on the black image; sampling runs 50 steps)")
    print(f"  peak RSS: {peak_rss_mib():.0f} MiB; load average at the start {load_at_start}, at the end "
          f"{os.getloadavg()[0]:.2f} (other processes share these cores)")
