"""The conditioning of Diorama's small compositor (issue 9): what its UNet reads besides the noisy latent."""
from __future__ import annotations

from comfy_api.latest import io

from ..loaders.taef2 import LATENT_CHANNELS
from ..ops.checks import as_mask_batch, as_rgb_batch, common_batch, expand_batch, require_nonempty, require_same_size
from ..ops.composite_window import CompositeWindow, crop_image, crop_plane, require_window_fits
from ..ops.object_layer import place_object
from ..ops.placement import mask_bounding_box
from ..ops.small_compositor_inputs import absent_hint, absent_reference, collage, concat_latent_image, reference_layer
from .common import CATEGORY, concat_batch, concat_conditioning, for_each_item, intermediate
from .composite import WindowSocket

class SmallCompositorConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaSmallCompositorConditioning",
            display_name="Diorama Small Compositor Conditioning",
            category=f"{CATEGORY}/composite",
            description="What Diorama's small compositor (Diorama Load Small Model: diorama_compositor) reads: the "
                        "background, the blend mask, Depth Fuse's depth hint and visible mask, and the object seen "
                        "from another view placed into the blend mask's box as copy-paste places it (its occluded "
                        "part cut out by the visible mask), as its training built them. Sample with KSampler (from "
                        "the latent output, "
                        "optionally through Set Latent Noise Mask) or Composite Sample (connect the same window). "
                        "The model reads no text.",
            inputs=[
                io.Vae.Input("vae", tooltip="TAEF2 (Diorama Load Tiny Autoencoder): the compositor's latent space."),
                io.Image.Input("background", tooltip="The photo to composite into (a batch composites each); without "
                                                     "a window its sides must be multiples of 8."),
                io.Mask.Input("blend_mask", tooltip="Where the object goes and the model may paint, e.g. the placement's "
                                                    "box (Diorama Shape Mask level 0); same size as the background."),
                io.Image.Input("depth_hint", optional=True,
                               tooltip="The fused depth drawn near = white (Diorama Depth Fuse's depth_hint), same size "
                                       "as the background; needs visible_mask. Not connected: the model's 'no depth' "
                                       "input (hint all 0, nothing cut out of the placed reference)."),
                io.Mask.Input("visible_mask", optional=True,
                              tooltip="Where the placed object is seen (Diorama Depth Fuse's visible_mask), same size "
                                      "as the background: the placed reference is cut to it."),
                io.Image.Input("reference", optional=True,
                               tooltip="The object seen from another view (any size); needs reference_mask. It is "
                                       "fitted into the blend mask's box standing on its bottom edge, as Diorama "
                                       "Depth-Aware Paste places it. Not connected: the model's 'no reference' input "
                                       "(nothing placed)."),
                io.Mask.Input("reference_mask", optional=True, tooltip="The object's silhouette in the reference."),
                WindowSocket.Input("window", optional=True,
                                   tooltip="From Diorama Composite Window: every input is cropped and resized to the "
                                           "window's sampling size exactly as Composite Sample crops it. Not "
                                           "connected: the whole background at its own size."),
            ],
            outputs=[
                io.Conditioning.Output("positive", tooltip="The compositor's inputs (concat_latent_image + "
                                                           "concat_mask) for the sampler's positive."),
                io.Conditioning.Output("negative", tooltip="The same background and mask with the depth hint and the "
                                                           "reference absent: cfg 1 never reads it; cfg > 1 pushes the "
                                                           "sample toward the hint and reference."),
                io.Latent.Output("latent", tooltip="The background (window) with the placed reference pasted in "
                                                   "(cut to visible_mask), encoded, without a noise mask: at denoise "
                                                   "< 1 sampling refines that paste. Add Set Latent Noise Mask with "
                                                   "the blend mask to keep the background at every step."),
            ],
        )

    @classmethod
    def execute(cls, vae, background, blend_mask, depth_hint=None, visible_mask=None, reference=None,
                reference_mask=None, window: CompositeWindow | None = None) -> io.NodeOutput:
        background = as_rgb_batch(background, "background")
        blend = as_mask_batch(blend_mask, "blend_mask")
        require_same_size(background, blend, "background", "blend_mask")
        require_nonempty(blend, "blend_mask")
        sizes = {"background": background.shape[0], "blend_mask": blend.shape[0]}
        if (depth_hint is None) != (visible_mask is None):
            raise ValueError("connect both depth_hint and visible_mask (Diorama Depth Fuse's outputs) or neither")
        if depth_hint is not None:
            depth_hint = as_rgb_batch(depth_hint, "depth_hint")
            visible_mask = as_mask_batch(visible_mask, "visible_mask")
            require_same_size(background, depth_hint, "background", "depth_hint")
            require_same_size(background, visible_mask, "background", "visible_mask")
            sizes.update(depth_hint=depth_hint.shape[0], visible_mask=visible_mask.shape[0])
        if (reference is None) != (reference_mask is None):
            raise ValueError("connect both reference and reference_mask (the object and its silhouette) or neither")
        if reference is not None:
            reference = as_rgb_batch(reference, "reference")
            reference_mask = as_mask_batch(reference_mask, "reference_mask")
            require_same_size(reference, reference_mask, "reference", "reference_mask")
            require_nonempty(reference_mask, "reference_mask")
            sizes.update(reference=reference.shape[0], reference_mask=reference_mask.shape[0])
        batch = common_batch(sizes)
        if vae.latent_channels != LATENT_CHANNELS:
            raise ValueError(f"the VAE makes {vae.latent_channels}-channel latents; the small compositor samples TAEF2's "
                             f"{LATENT_CHANNELS}-channel latents: connect Diorama Load Tiny Autoencoder's VAE")
        factor = int(vae.spacial_compression_encode())
        height, width = background.shape[1:3]
        if window is None:
            if height % factor or width % factor:
                raise ValueError(f"background is {width}x{height} px; without a window both sides must be multiples of "
                                 f"{factor} (the VAE's latent factor): resize or crop it, or connect a window")
            crop_pixels, crop_mask = (lambda image: image), (lambda plane: plane)
        else:
            require_window_fits(window, height, width, "background")
            if window.sample_hw[0] % factor or window.sample_hw[1] % factor:
                raise ValueError(f"the window samples at {window.sample_hw[1]}x{window.sample_hw[0]} px, not multiples of "
                                 f"{factor} (this VAE's latent factor): make the window with this VAE connected")
            crop_pixels, crop_mask = (lambda image: crop_image(image, window)), (lambda plane: crop_plane(plane, window))

        pixels = expand_batch(crop_pixels(background), batch)
        blend = expand_batch(crop_mask(blend).clamp(0, 1), batch)
        if not bool((blend > 0.5).flatten(1).any(1).all()):
            raise ValueError("blend_mask lies outside the window (nothing above 0.5 in it): make the window from this "
                             "mask or placement, or with a larger expansion")
        size = tuple(pixels.shape[1:3])
        no_hint = expand_batch(absent_hint(*size)[None], batch)
        no_colour, no_coverage = (expand_batch(part[None], batch) for part in absent_reference(*size))
        hint, colour, coverage = no_hint, no_colour, no_coverage
        if depth_hint is not None:
            hint = expand_batch(crop_pixels(depth_hint).mean(-1), batch)
        if reference is not None:
            reference, reference_mask = expand_batch(reference, batch), expand_batch(reference_mask, batch)
            layers = for_each_item(batch, lambda i: reference_layer(place_object(
                reference[i:i + 1], reference_mask[i:i + 1], mask_bounding_box(blend[i]), size)))
            colour, coverage = concat_batch([c for c, _ in layers]), concat_batch([m for _, m in layers])
            if visible_mask is not None:
                coverage = coverage * expand_batch(crop_mask(visible_mask).clamp(0, 1), batch)
        background_latent = vae.encode(pixels)
        positive = concat_latent_image(vae, background_latent, hint, colour, coverage)
        negative = positive if depth_hint is None and reference is None else \
            concat_latent_image(vae, background_latent, no_hint, no_colour, no_coverage)
        latent = {"samples": intermediate(vae.encode(collage(colour, coverage, pixels)))}
        return io.NodeOutput(concat_conditioning(positive, blend), concat_conditioning(negative, blend), latent)

