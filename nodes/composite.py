"""Windowed diffusion compositing: choose the window, crop hints to it, sample it, stitch it back."""
from __future__ import annotations

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import node_helpers
import torch
from comfy_api.latest import io

from ..ops.bifrost_reference import paste_back
from ..ops.checks import (as_mask_batch, as_rgb_batch, common_batch, expand_batch, file_pixels, require_nonempty,
                          require_same_size)
from ..ops.composite_window import composite_window, crop_image, crop_plane, require_window_fits
from ..ops.depth_map import DepthMap
from ..ops.placement import Placement, mask_bounding_box
from ..ops.small_compositor_inputs import grey_where_masked
from ..ops.stitch import stitch_window
from .common import CATEGORY, DepthSocket, PlacementSocket, intermediate

WindowSocket = io.Custom("DIORAMA_WINDOW")
DEFAULT_LATENT_FACTOR = 8
STITCH_MODES = ("blend", "reference paste")
WINDOW_AREAS = ("around the object", "whole image")


def latent_factor(vae) -> int:
    return DEFAULT_LATENT_FACTOR if vae is None else int(vae.spacial_compression_encode())


class CompositeWindowNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaCompositeWindow",
            display_name="Diorama Composite Window",
            category=f"{CATEGORY}/composite",
            description="The part of the photo a diffusion model samples: the object's box with context around it, "
                        "kept inside the image, at the model's native resolution.",
            inputs=[
                io.Image.Input("background", tooltip="The photo to composite into."),
                PlacementSocket.Input("placement", optional=True, tooltip="Where the object goes (or give a mask)."),
                io.Mask.Input("mask", optional=True, tooltip="Region to sample around, e.g. a shape mask (used when no placement)."),
                io.Float.Input("expansion", default=2.0, min=1.0, max=8.0, step=0.05,
                               tooltip="Window side as a multiple of the object's longer side (context for the model)."),
                io.Int.Input("resolution", default=512, min=64, max=4096, step=64,
                             tooltip="The model's native resolution: 512 for SD1.x, 768 for SD2.x-768, 1024 for SDXL-class. "
                                     "The window is sampled at about resolution² pixels."),
                io.Vae.Input("vae", optional=True, tooltip="Its latent factor rounds the sampling size (8 when not given)."),
                io.Combo.Input("area", options=list(WINDOW_AREAS), default=WINDOW_AREAS[0],
                               tooltip="'around the object': the placement's or mask's box with context. 'whole "
                                       "image': the whole photo (scene re-rendering, e.g. Neural Assets)."),
            ],
            outputs=[
                WindowSocket.Output("window", tooltip="For Crop To Window and Composite Sample."),
                io.Image.Output("background_crop", tooltip="The window of the background at sampling size."),
            ],
        )

    @classmethod
    def execute(cls, background, expansion: float, resolution: int, placement: Placement | None = None,
                mask=None, vae=None, area: str = WINDOW_AREAS[0]) -> io.NodeOutput:
        background = as_rgb_batch(background, "background")
        height, width = background.shape[1:3]
        if area not in WINDOW_AREAS:
            raise ValueError(f"area {area!r} is unknown; expected one of {WINDOW_AREAS}")
        if area == WINDOW_AREAS[1]:
            box, expansion = (0, 0, width, height), 1.0
        elif placement is not None:
            box = placement.pixel_box(height, width)
        elif mask is not None:
            mask = as_mask_batch(mask, "mask")
            require_same_size(background, mask, "background", "mask")
            require_nonempty(mask.amax(0, keepdim=True), "mask")
            box = mask_bounding_box(mask.amax(0))
        else:
            raise ValueError("connect a placement or a mask: the window is built around the object")
        window = composite_window(box, (height, width), expansion, resolution, latent_factor(vae))
        return io.NodeOutput(window, intermediate(crop_image(background, window)))


class CropToWindow(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaCropToWindow",
            display_name="Diorama Crop To Window",
            category=f"{CATEGORY}/composite",
            description="Crops images, masks and depth exactly as Composite Sample crops the background, e.g. a "
                        "depth hint for a native ControlNet node.",
            inputs=[
                WindowSocket.Input("window", tooltip="From Diorama Composite Window."),
                io.Image.Input("image", optional=True, tooltip="Any full-size IMAGE (hint, init image, ...)."),
                io.Mask.Input("mask", optional=True, tooltip="Any full-size MASK."),
                DepthSocket.Input("depth", optional=True, tooltip="A full-size Diorama depth map."),
            ],
            outputs=[
                io.Image.Output("cropped_image", tooltip="The image's window at sampling size (None when not given)."),
                io.Mask.Output("cropped_mask", tooltip="The mask's window at sampling size (None when not given)."),
                DepthSocket.Output("cropped_depth", tooltip="The depth's window at sampling size (None when not given)."),
            ],
        )

    @classmethod
    def execute(cls, window, image=None, mask=None, depth: DepthMap | None = None) -> io.NodeOutput:
        if image is None and mask is None and depth is None:
            raise ValueError("connect at least one of image, mask or depth to crop")
        out_image = out_mask = out_depth = None
        if image is not None:
            image = as_rgb_batch(image, "image")
            require_window_fits(window, *image.shape[1:3], "image")
            out_image = intermediate(crop_image(image, window))
        if mask is not None:
            mask = as_mask_batch(mask, "mask")
            require_window_fits(window, *mask.shape[1:3], "mask")
            out_mask = intermediate(crop_plane(mask, window))
        if depth is not None:
            require_window_fits(window, *depth.values.shape[1:3], "depth")
            out_depth = DepthMap(intermediate(crop_plane(depth.values, window)), depth.kind)
        return io.NodeOutput(out_image, out_mask, out_depth)


def inpaint_conditioning(positive, negative, vae, pixels: torch.Tensor, mask: torch.Tensor):
    """What inpainting UNets read: the window with the region to fill set to grey, and the mask."""
    values = {"concat_latent_image": vae.encode(grey_where_masked(pixels, mask)), "concat_mask": mask[:, None]}
    return (node_helpers.conditioning_set_values(positive, values), node_helpers.conditioning_set_values(negative, values))


def window_noise(latent: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """Noise per item from its own seed, so a batch item equals that item run alone."""
    return torch.cat([comfy.sample.prepare_noise(latent[i:i + 1], seed) for i, seed in enumerate(seeds)])


class CompositeSample(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaCompositeSample",
            display_name="Diorama Composite Sample",
            category=f"{CATEGORY}/composite",
            description="Samples only the composite window: encodes it, adds inpainting conditioning when the model is "
                        "an inpainting model, keeps the known background at every step through the soft blend mask, "
                        "decodes, colour-matches the seam and stitches the result back. Pixels outside the blend mask "
                        "are returned unchanged.",
            inputs=[
                io.Model.Input("model", tooltip="Any SD-style model; inpainting models are detected and conditioned."),
                io.Conditioning.Input("positive", tooltip="Text, identity tokens or ControlNet-carrying conditioning."),
                io.Conditioning.Input("negative", tooltip="The negative / unconditional conditioning."),
                io.Vae.Input("vae", tooltip="The model's VAE."),
                io.Image.Input("background", tooltip="The full-size photo (a batch composites each)."),
                WindowSocket.Input("window", tooltip="From Diorama Composite Window, made from this background."),
                io.Mask.Input("blend_mask", optional=True,
                              tooltip="Full-size soft mask of what may change (e.g. a Diorama Shape Mask); it must lie "
                                      "inside the window. Needed by 'blend'."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Noise seed; with batch_size > 1, item i uses seed + i."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Classifier-free guidance scale."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, tooltip="Sampler, as in KSampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, tooltip="Scheduler, as in KSampler."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much to change: below 1 keeps the init image's layout (e.g. a depth-aware paste)."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Samples per background (seeds seed … seed+n−1)."),
                io.Float.Input("feather_px", default=4.0, min=0.0, max=64.0, step=0.5,
                               tooltip="Inward feather of the seam, in full-image pixels."),
                io.Boolean.Input("colour_match", default=True,
                                 tooltip="Shift the generated region by the colour drift measured just outside it."),
                io.Combo.Input("stitch", options=list(STITCH_MODES), default=STITCH_MODES[0],
                               tooltip="'blend': keep the background at every step through the blend mask and stitch "
                                       "with a feathered, colour-matched seam. 'reference paste': what BIFRÖST and "
                                       "AnyDoor do: sample the whole window from noise (no background latent) and "
                                       "paste it back hard, 5 px inside the window, exactly as their code."),
                io.Image.Input("init_image", optional=True,
                               tooltip="Full-size image to start from instead of the background (e.g. a depth-aware paste)."),
            ],
            outputs=[
                io.Image.Output("image", tooltip="The full-size composite."),
                io.Latent.Output("latent", tooltip="The sampled window latent."),
                io.Image.Output("window_image", tooltip="The decoded window at sampling size, before stitching."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, background, window, blend_mask=None, seed: int = 0, steps: int = 20,
                cfg: float = 5.0, sampler_name: str = "euler", scheduler: str = "normal", denoise: float = 1.0,
                batch_size: int = 1, feather_px: float = 4.0, colour_match: bool = True, stitch: str = STITCH_MODES[0],
                init_image=None) -> io.NodeOutput:
        background = as_rgb_batch(background, "background")
        height, width = background.shape[1:3]
        require_window_fits(window, height, width, "background")
        if stitch not in STITCH_MODES:
            raise ValueError(f"stitch {stitch!r} is unknown; expected one of {STITCH_MODES}")
        reference = stitch == STITCH_MODES[1]
        if reference:
            if init_image is not None or denoise < 1:
                raise ValueError("'reference paste' samples the window from pure noise: disconnect init_image and set "
                                 "denoise to 1")
            blend = torch.ones_like(background[..., 0]) if blend_mask is None else as_mask_batch(blend_mask, "blend_mask")
        elif blend_mask is None:
            raise ValueError("stitch 'blend' needs a blend_mask: connect the mask of what may change")
        else:
            blend = as_mask_batch(blend_mask, "blend_mask")
        require_same_size(background, blend, "background", "blend_mask")
        require_nonempty(blend, "blend_mask")
        rows, cols = window.area.slices
        if not reference and int((blend > 0).sum()) > int((blend[:, rows, cols] > 0).sum()):
            raise ValueError("blend_mask reaches outside the composite window; make the window with a larger expansion "
                             "or from this mask")
        model_channels = model.get_model_object("latent_format").latent_channels
        if vae.latent_channels != model_channels:
            raise ValueError(f"the VAE makes {vae.latent_channels}-channel latents but the model samples "
                             f"{model_channels}-channel latents; use the VAE that belongs to this model")
        if min(height, width) < latent_factor(vae):
            raise ValueError(f"background {width}x{height} px is smaller than the VAE's latent factor {latent_factor(vae)}")
        sizes = {"background": background.shape[0], "blend_mask": blend.shape[0]}
        if init_image is not None:
            init_image = as_rgb_batch(init_image, "init_image")
            require_same_size(background, init_image, "background", "init_image")
            sizes["init_image"] = init_image.shape[0]
        batch = common_batch(sizes)
        if batch > 1 and batch_size > 1:
            raise ValueError(f"give either a batch of {batch} backgrounds or batch_size {batch_size}, not both")
        items = max(batch, batch_size)
        seeds = [seed] * items if batch_size == 1 else [(seed + i) % 2**64 for i in range(items)]

        # Crop and encode each distinct input once; a batch of seeds shares one encoded window.
        window_background = crop_image(background, window)
        window_start = window_background if init_image is None else crop_image(init_image, window)
        window_blend = crop_plane(blend, window).clamp(0, 1)
        if reference:
            factor = latent_factor(vae)
            latent = torch.zeros(items, model_channels, window.sample_hw[0] // factor, window.sample_hw[1] // factor)
        else:
            latent = expand_batch(vae.encode(window_start), items).clone()
        if "masked_image" in getattr(model.model, "concat_keys", ()):
            # ComfyUI repeats these to the sampled batch itself.
            positive, negative = inpaint_conditioning(positive, negative, vae, window_background, window_blend)
        samples = comfy.sample.sample(
            model, window_noise(latent, seeds), steps, cfg, sampler_name, scheduler, positive, negative, latent,
            denoise=denoise, noise_mask=None if reference else expand_batch(window_blend, items)[:, None],
            callback=latent_preview.prepare_callback(model, steps),
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
        )
        generated = vae.decode(samples).clamp(0, 1)
        if reference:
            image = reference_paste(expand_batch(background, items), generated.to(background.device), window)
        else:
            image = stitch_window(expand_batch(background, items), generated.to(background.device),
                                  expand_batch(blend, items), window, feather_px, colour_match)
        return io.NodeOutput(intermediate(image), {"samples": intermediate(samples)}, intermediate(generated))


def reference_paste(background: torch.Tensor, generated: torch.Tensor, window) -> torch.Tensor:
    """BIFRÖST/AnyDoor's paste-back on uint8 pixels, per item (IMAGE values are k/255 from a file)."""
    area = window.area
    pasted = [paste_back(generated[i] * 255, file_pixels(background[i]),
                         (area.y0, area.y1, area.x0, area.x1), window.padding)
              for i in range(background.shape[0])]
    return torch.stack(pasted).to(background.dtype) / 255
