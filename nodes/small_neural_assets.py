"""The conditioning of Diorama's small Neural Assets model (issue 9): what its UNet reads besides the noisy latent
to put one object of a scene at its 3D box — the source frame, the object's box in it and its target 3D box's
pose hint (ops.neural_asset_planes, the code the training recipe uses)."""
from __future__ import annotations

import math

import torch
from comfy_api.latest import io

from ..loaders.taef2 import LATENT_CHANNELS
from ..ops import assets as A
from ..ops.checks import as_rgb_batch, expand_batch
from ..ops.composite_window import CompositeWindow, crop_image, crop_plane, require_window_fits
from ..ops.neural_asset_planes import neural_assets_concat, pose_planes
from .common import CATEGORY, AssetsSocket, concat_conditioning, intermediate
from .composite import WindowSocket

TRAINED_SIDE = 128  # the image size margin_px refers to: the model's training size (configs/small_neural_assets.yaml)
CAMERA_TOLERANCE = 1e-6  # intrinsics (px) and world_to_camera entries that differ less are the same camera


def same_camera(a: A.Camera, b: A.Camera) -> bool:
    """Whether two cameras take the same picture (up to rounding in their matrices)."""
    def close(x, y) -> bool:
        return bool(torch.allclose(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64),
                                   atol=CAMERA_TOLERANCE, rtol=0))
    return a.image_hw == b.image_hw and close(a.intrinsics, b.intrinsics) and close(a.world_to_camera, b.world_to_camera)


def scaled_margin(margin_px: float, height: int, width: int) -> int:
    """margin_px at TRAINED_SIDE² → pixels of a height×width sampled region (the same share of the picture)."""
    return round(margin_px * math.sqrt(height * width) / TRAINED_SIDE)


class SmallNeuralAssetsConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaSmallNeuralAssetsConditioning",
            display_name="Diorama Small Neural Assets Conditioning",
            category=f"{CATEGORY}/neural assets",
            description="What Diorama's small Neural Assets model (Diorama Load Small Model: diorama_neural_assets) "
                        "reads to move one object of a photo to its 3D box: the photo, the object's box in it, "
                        "its target 3D box's silhouette and the box's pixels stretched onto that silhouette's "
                        "rectangle, built as its training built them. Sample with Composite "
                        "Sample (blend_mask + the same window) or KSampler (latent through Set Latent Noise Mask, "
                        "then paste with blend_mask). The model moves objects within one view and reads no text.",
            inputs=[
                io.Vae.Input("vae", tooltip="TAEF2 (Diorama Load Tiny Autoencoder): the model's latent space."),
                io.Image.Input("source", tooltip="The photo the scene's source camera took (a batch edits each with "
                                                 "the same scene); without a window its sides must be multiples of 8."),
                AssetsSocket.Input("assets", tooltip="The scene: its camera and the objects' 3D boxes, the one to move "
                                                     "at its new pose (e.g. Diorama Move Asset / Rotate Asset) with its "
                                                     "source_box where it is in the photo. Source and target camera "
                                                     "must be the same; a camera made for another image size is "
                                                     "scaled to the photo's."),
                io.Int.Input("index", default=0, min=0, max=1023,
                             tooltip="Which object to put at its 3D box (0 = the first in the scene's list)."),
                io.Float.Input("margin_px", default=8.0, min=0.0, max=64.0, step=0.5,
                               tooltip=f"How far the blend region (the only pixels that may change) reaches around "
                                       f"both boxes, for edges and the contact shadow: pixels at {TRAINED_SIDE}² (the "
                                       f"model's training size and margin 8), scaled with the sampled region's size "
                                       f"(the window, or the whole photo)."),
                WindowSocket.Input("window", optional=True,
                                   tooltip="From Diorama Composite Window (e.g. 'whole image' at resolution 128, or "
                                           "around the blend_mask): the photo and planes are cropped and resized to "
                                           "its sampling size exactly as Composite Sample crops them. Not connected: "
                                           "the whole photo at its own size."),
            ],
            outputs=[
                io.Conditioning.Output("positive", tooltip="The model's inputs (concat_latent_image + concat_mask) for "
                                                           "the sampler's positive."),
                io.Conditioning.Output("negative", tooltip="The same inputs (the model learned no 'absent' input): cfg 1 "
                                                           "never reads it; any cfg samples the same."),
                io.Latent.Output("latent", tooltip="The encoded photo (window), without a noise mask: add Set Latent "
                                                   "Noise Mask with the blend region to keep the rest at every step."),
                io.Mask.Output("blend_mask", tooltip="Full-size 0/1 mask of the pixels the edit may change (both boxes' "
                                                     "rectangle grown by the margin): for Composite Sample's "
                                                     "blend_mask, Set Latent Noise Mask (through Crop To Window with a "
                                                     "window) and the final paste."),
            ],
        )

    @classmethod
    def execute(cls, vae, source, assets: A.Assets, index: int, margin_px: float,
                window: CompositeWindow | None = None) -> io.NodeOutput:
        source = as_rgb_batch(source, "source")
        A.require_object_index(assets, index)
        asset = assets.objects[index]
        if asset.source != 0:
            raise ValueError(f"object {index} takes its appearance from another image (extra source {asset.source}, "
                             "e.g. Diorama Transfer Asset); the small model moves an object within the source photo: "
                             "pick an object of this photo")
        if not same_camera(assets.source_camera, assets.target_camera):
            raise ValueError("the scene's source and target cameras differ; the small Neural Assets model moves "
                             "objects within one view (the photo's): remove the camera move (Diorama Move Camera) or "
                             "use the Neural Assets model (Diorama Neural Asset Pose) for new views")
        if margin_px < 0:
            raise ValueError(f"margin_px is {margin_px}; expected >= 0 pixels")
        if vae.latent_channels != LATENT_CHANNELS:
            raise ValueError(f"the VAE makes {vae.latent_channels}-channel latents; the small Neural Assets model "
                             f"samples TAEF2's {LATENT_CHANNELS}-channel latents: connect Diorama Load Tiny "
                             "Autoencoder's VAE")
        factor = int(vae.spacial_compression_encode())
        height, width = source.shape[1:3]
        if window is None:
            if height % factor or width % factor:
                raise ValueError(f"source is {width}x{height} px; without a window both sides must be multiples of "
                                 f"{factor} (the VAE's latent factor): resize or crop it, or connect a window")
            sampled_hw = (height, width)
        else:
            require_window_fits(window, height, width, "source")
            if window.sample_hw[0] % factor or window.sample_hw[1] % factor:
                raise ValueError(f"the window samples at {window.sample_hw[1]}x{window.sample_hw[0]} px, not multiples "
                                 f"of {factor} (this VAE's latent factor): make the window with this VAE connected")
            sampled_hw = window.area.shape

        camera = assets.target_camera
        if camera.image_hw != (height, width):
            camera = A.resize_camera(camera, height, width)
        planes = pose_planes(asset, camera, scaled_margin(margin_px, *sampled_hw))
        full_blend = planes.blend[None]
        if window is None:
            pixels, source_box, hint, blend = source, planes.source_box[None], planes.pose_hint[None], full_blend
        else:
            # Masks stay 0/1 as the training's (nearest) resize kept them; the hint is continuous.
            pixels = crop_image(source, window)
            source_box = (crop_plane(planes.source_box[None], window) > 0.5).float()
            hint = crop_plane(planes.pose_hint[None], window)
            blend = (crop_plane(full_blend, window) > 0.5).float()
            if not bool(blend.any()):
                raise ValueError("the blend region (both boxes and the margin) lies outside the window: make the window "
                                 "from this node's blend_mask or with area 'whole image'")
        batch = source.shape[0]
        concat = neural_assets_concat(vae, pixels, expand_batch(source_box, batch), expand_batch(hint, batch))
        blend = expand_batch(blend, batch)
        # The concat starts with the encoded photo itself: the LATENT is those channels (no second encode).
        latent = {"samples": intermediate(concat[:, :LATENT_CHANNELS].clone())}
        # Two lists over the same tensors: a node that edits one conditioning in place leaves the other alone.
        return io.NodeOutput(concat_conditioning(concat, blend), concat_conditioning(concat, blend), latent,
                             intermediate(expand_batch(full_blend, batch)))
