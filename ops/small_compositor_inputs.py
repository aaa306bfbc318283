"""The inputs of Diorama's small compositor (issue 9), shared by its training recipe
(training/recipes/small_compositor.py) and its conditioning node (nodes/small_compositor.py), so what the
model reads at inference is built by the same code that built it in training.

The model's `concat_latent_image`, in raw TAEF2 units (ComfyUI applies the model's latent format):
[background latent (32) | depth hint area-averaged to the latent grid (1) | collage latent (32) | collage
coverage area-averaged to the latent grid (1)]. The collage is AnyDoor's and IMPRINT's spatial identity
input: the reference object fitted into the placement box exactly as copy-paste places it
(ops.object_layer.place_object), everything else grey; with the depth given, only where Depth Fuse sees the
object (its visible mask), so occlusion reaches the model where it acts. The background is the whole photo:
inside the blend region it is what the object stands in front of, which the model may keep or shade.

An input a graph does not give is replaced by its absent value, which the model learned by condition
dropout: no depth = a hint of all ABSENT_HINT (nothing near) and the collage without visibility; no
reference = an all-grey collage with zero coverage.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .object_layer import PlacedObject
from .window import on_canvas

GREY = 0.5  # the fill of masked pixels, as Composite Sample's inpaint conditioning
ABSENT_HINT = 0.0  # the depth hint of an input without one: nothing near


def absent_hint(height: int, width: int) -> torch.Tensor:
    """[H,W]: the depth hint the model reads when none is given."""
    return torch.full((height, width), ABSENT_HINT)


def absent_reference(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(colour [H,W,3], coverage [H,W]) the model reads when no reference is given: nothing placed."""
    return torch.zeros(height, width, 3), torch.zeros(height, width)


def grey_where_masked(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """IMAGE [...,H,W,3] with the pixels where mask [...,H,W] > 0.5 set to GREY: the region to fill."""
    return torch.where((mask > 0.5)[..., None], torch.full_like(image, GREY), image)


def reference_layer(placed: PlacedObject) -> tuple[torch.Tensor, torch.Tensor]:
    """The placed reference on its whole canvas → (colour [B,H,W,3] where covered, coverage [B,H,W] in 0..1)."""
    colour = on_canvas(placed.image.permute(0, 3, 1, 2), placed.window, placed.canvas_hw).permute(0, 2, 3, 1)
    return colour, placed.canvas_mask()


def collage(colour: torch.Tensor, coverage: torch.Tensor, under: torch.Tensor | float = GREY) -> torch.Tensor:
    """IMAGE [...,H,W,3]: the placed colour where coverage [...,H,W] is, `under` (grey, or an image: the
    background) elsewhere, soft at the edge."""
    weight = coverage[..., None]
    return colour * weight + under * (1 - weight)


@torch.no_grad()
def concat_latent_image(vae, background_latent: torch.Tensor, hint: torch.Tensor | None,
                        colour: torch.Tensor | None, coverage: torch.Tensor | None) -> torch.Tensor:
    """The conditioning's `concat_latent_image`, raw latent units: [background latent | depth hint | collage
    latent | coverage], the parts given (a model trained without the depth or the identity input has no
    channels for it; colour and coverage come together). background_latent: the background's raw TAEF2 latent
    [B,32,h,w] (encoded once by the caller, who may need it twice); colour IMAGE [B,H,W,3], hint [B,H,W]
    near = 1, coverage [B,H,W] (already × the visible mask where the depth is given); H and W the latent's
    times the VAE's factor. `vae` is anything with ComfyUI's VAE.encode."""
    latent = background_latent.float()

    def on_latent_grid(plane: torch.Tensor) -> torch.Tensor:
        # continuous planes are averaged over each latent cell, not sampled
        return F.avg_pool2d(plane[:, None].float().to(latent.device), plane.shape[-1] // latent.shape[-1])

    parts = [latent]
    if hint is not None:
        parts.append(on_latent_grid(hint))
    if colour is not None:
        parts += [vae.encode(collage(colour, coverage)).float().to(latent.device), on_latent_grid(coverage)]
    return torch.cat(parts, dim=1)
