"""Neural Assets conditioning tokens: masked DINO inputs, RoIAlign appearance features and the adapter.

The reference (`ConditioningEncoder`, `RoIAlignAppearanceEncoder`, `MLPPoseEncoder`,
`FeedForwardNeck`) builds, for N object slots plus one background slot, 4 tokens per slot:

    objects     DINO(where(fg, image, ½))  → RoIAlign 2×2 in each object box   → Dense(512)
    background  DINO(where(fg, ½, image))  → RoIAlign 2×2 in the box (0,0,1,1) → Dense(512)
    pose        12 numbers per slot; the last (camera) row first through Dense(24)→GELU→Dense(12);
                then Dense(1024)→GELU→Dense(512), each slot's row repeated for its 4 tokens
    tokens      Dense(1024)(concat[appearance 512 | pose 512])             → [B, 4(N+1), 1024]

`fg` is the union of the object boxes, rasterised as round(box·size) with half-open ranges. Boxes
that are all zero (padding, invisible objects, the CFG-null input) give zero appearance features
before the projection. GELU is Flax's default, the tanh approximation. The CFG negative is this
network applied to all-zero boxes and pose rows: bias-driven tokens, not zeros.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .identity_tokens import DINO_MEAN, DINO_STD  # ImageNet statistics, as the reference's DINOViT._preprocess
from .roi_align import roi_align

DINO_SIZE = 224
BACKGROUND_VALUE = 0.5  # what the reference paints over the masked-out part of each pass
ROI_SIZE = 2  # the reference's roi_align_size: 2×2 = 4 tokens per slot, flattened row-major
POSE_DIM = 12  # (u, v, d) of four box corners; for the background slot, the camera's R (9) and t (3)


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boxes [B,K,4] (y0, x0, y1, x1) fractions → bool [B,K,H,W]: pixel rows round(y0·H)..round(y1·H)−1
    and columns likewise, as the reference's boxes_to_sparse_segmentations (round half to even)."""
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"expected boxes [batch, boxes, 4] as (y0, x0, y1, x1), got {tuple(boxes.shape)}")
    # float32 product then rounding, as the reference computes it (a float64 product can round differently).
    scale = torch.tensor([height, width, height, width], dtype=torch.float32, device=boxes.device)
    y0, x0, y1, x1 = torch.round(boxes.to(torch.float32) * scale).to(torch.int64).unbind(-1)
    rows = torch.arange(height, device=boxes.device)
    cols = torch.arange(width, device=boxes.device)
    in_rows = (rows >= y0[..., None]) & (rows < y1[..., None])  # [B,K,H]
    in_cols = (cols >= x0[..., None]) & (cols < x1[..., None])  # [B,K,W]
    return in_rows[..., :, None] & in_cols[..., None, :]


def foreground_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Union of the object boxes [B,K,4] (without the global box) → bool [B,H,W]."""
    return box_masks(boxes, height, width).any(dim=1)


def _check_pass_inputs(image: torch.Tensor, fg: torch.Tensor) -> None:
    if image.ndim != 4 or image.shape[-1] != 3:
        raise ValueError(f"expected images [batch, height, width, 3], got {tuple(image.shape)}")
    if fg.shape != image.shape[:3]:
        raise ValueError(f"foreground mask {tuple(fg.shape)} does not match the images {tuple(image.shape[:3])}")


def object_pass_image(image: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """The object pass's input: the image inside the boxes, grey (0.5) elsewhere."""
    _check_pass_inputs(image, fg)
    return torch.where(fg[..., None], image, torch.full_like(image, BACKGROUND_VALUE))


def background_pass_image(image: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """The background pass's input: grey (0.5) inside the boxes, the image elsewhere."""
    _check_pass_inputs(image, fg)
    return torch.where(fg[..., None], torch.full_like(image, BACKGROUND_VALUE), image)


def dino_input(images: torch.Tensor, size: int = DINO_SIZE) -> torch.Tensor:
    """Images [B,H,W,3] in [0,1] → [B,size,size,3] ImageNet-normalised, as the reference's
    DINOViT._preprocess: antialiased bilinear resize (jax.image.resize) then (x − mean) / std.

    PyTorch's antialiased bilinear interpolation computes the same triangle-filter weights as jax's
    (half-pixel centres, the tent widened by the downscale factor, renormalised at the borders)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images [batch, height, width, 3] in [0, 1], got {tuple(images.shape)}")
    pixels = images.to(torch.float32).permute(0, 3, 1, 2)
    if tuple(pixels.shape[-2:]) != (size, size):
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = pixels.new_tensor(DINO_MEAN).view(1, 3, 1, 1)
    std = pixels.new_tensor(DINO_STD).view(1, 3, 1, 1)
    return ((pixels - mean) / std).permute(0, 2, 3, 1).contiguous()


def non_empty_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """bool [B,K]: the box is not the reference's NOTRACK box (all zeros)."""
    return (boxes != 0).any(dim=-1)


def appearance_features(features: torch.Tensor, boxes: torch.Tensor, roi_size: int = ROI_SIZE) -> torch.Tensor:
    """DINO patch features [B,h,w,C] and boxes [B,K,4] → [B, K·roi², C]: RoIAlign roi×roi per box,
    flattened (box, row, column), features of all-zero boxes set to 0."""
    rois = roi_align(features, boxes, roi_size)  # [B,K,S,S,C]
    rois = torch.where(non_empty_boxes(boxes)[:, :, None, None, None], rois, torch.zeros_like(rois))
    return rois.flatten(1, 3)


def slot_appearance_features(object_features: torch.Tensor, background_features: torch.Tensor,
                             boxes: torch.Tensor, roi_size: int = ROI_SIZE) -> torch.Tensor:
    """The adapter's appearance input [B, (N+1)·roi², C]: object boxes boxes[:, :N] on the object
    pass's features, the last (global) box on the background pass's features."""
    if boxes.ndim != 3 or boxes.shape[1] < 1:
        raise ValueError(f"expected boxes [batch, N + 1, 4] with the global box last, got {tuple(boxes.shape)}")
    return torch.cat((appearance_features(object_features, boxes[:, :-1], roi_size),
                      appearance_features(background_features, boxes[:, -1:], roi_size)), dim=1)


@dataclass(frozen=True)
class NeuralAssetsConfig:
    slots: int  # N object slots (the background slot comes on top): 10 for MOVi-A/B/C, 23 for MOVi-E/F
    feature_dim: int  # DINO feature width C (768 for ViT-B)
    dino: str  # the backbone the adapter was trained with, e.g. "dino_vitb8"
    token_dim: int = 512  # width of the appearance and pose tokens before the neck
    context_dim: int = 1024  # width of the conditioning tokens (SD2.1's cross-attention context)
    pose_dim: int = POSE_DIM
    roi_size: int = ROI_SIZE
    gelu: str = "tanh"  # Flax's nn.gelu default (approximate=True)

    @property
    def tokens_per_slot(self) -> int:
        return self.roi_size * self.roi_size

    @property
    def num_tokens(self) -> int:
        return self.tokens_per_slot * (self.slots + 1)


def _mlp(inputs: int, hidden: int, outputs: int, gelu: str) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.GELU(approximate=gelu),
                               torch.nn.Linear(hidden, outputs))


class NeuralAssetsAdapter(torch.nn.Module):
    """The reference's trainable conditioning head (everything after DINO), in torch layout.

    Parameters (torch Linear, weight [out, in]): `appearance` (C → token_dim), `pose`
    (pose_dim → 2·token_dim → token_dim), `background` (pose_dim → 2·pose_dim → pose_dim, on the
    camera row), `neck` (2·token_dim → context_dim).
    """

    def __init__(self, config: NeuralAssetsConfig):
        super().__init__()
        if config.gelu != "tanh":
            raise ValueError(f"gelu {config.gelu!r} is not supported; expected 'tanh' (Flax's default, as the reference)")
        self.config = config
        self.appearance = torch.nn.Linear(config.feature_dim, config.token_dim)
        self.pose = _mlp(config.pose_dim, 2 * config.token_dim, config.token_dim, config.gelu)
        self.background = _mlp(config.pose_dim, 2 * config.pose_dim, config.pose_dim, config.gelu)
        self.neck = torch.nn.Linear(2 * config.token_dim, config.context_dim)

    def _check(self, appearance: torch.Tensor | None, pose_rows: torch.Tensor | None) -> None:
        c = self.config
        if appearance is not None and (appearance.ndim != 3 or appearance.shape[1:] != (c.num_tokens, c.feature_dim)):
            raise ValueError(f"expected appearance features [batch, {c.num_tokens}, {c.feature_dim}] "
                             f"({c.slots} object slots + 1 background, {c.tokens_per_slot} each, {c.dino} features), "
                             f"got {tuple(appearance.shape)}")
        if pose_rows is not None and (pose_rows.ndim != 3 or pose_rows.shape[1:] != (c.slots + 1, c.pose_dim)):
            raise ValueError(f"expected pose rows [batch, {c.slots + 1}, {c.pose_dim}] ({c.slots} object slots, "
                             f"the camera row last), got {tuple(pose_rows.shape)}")
        if appearance is not None and pose_rows is not None and appearance.shape[0] != pose_rows.shape[0]:
            raise ValueError(f"appearance batch {appearance.shape[0]} and pose batch {pose_rows.shape[0]} differ")

    def appearance_tokens(self, appearance: torch.Tensor) -> torch.Tensor:
        """[B, 4(N+1), C] → [B, 4(N+1), token_dim]."""
        self._check(appearance, None)
        return self.appearance(appearance)

    def pose_input(self, pose_rows: torch.Tensor) -> torch.Tensor:
        """[B, N+1, 12] with the camera row replaced by the background MLP of itself."""
        self._check(None, pose_rows)
        return torch.cat((pose_rows[:, :-1], self.background(pose_rows[:, -1:])), dim=1)

    def pose_tokens(self, pose_rows: torch.Tensor) -> torch.Tensor:
        """[B, N+1, 12] → [B, 4(N+1), token_dim], each slot's token repeated for its 4 appearance tokens."""
        return self.pose(self.pose_input(pose_rows)).repeat_interleave(self.config.tokens_per_slot, dim=1)

    def tokens(self, appearance: torch.Tensor, pose_rows: torch.Tensor) -> torch.Tensor:
        """Appearance features [B, 4(N+1), C] (slot_appearance_features) and pose rows [B, N+1, 12]
        (objects in the target camera, camera row last) → conditioning tokens [B, 4(N+1), context_dim]."""
        self._check(appearance, pose_rows)
        return self.neck(torch.cat((self.appearance_tokens(appearance), self.pose_tokens(pose_rows)), dim=-1))

    def forward(self, appearance: torch.Tensor, pose_rows: torch.Tensor) -> torch.Tensor:
        return self.tokens(appearance, pose_rows)

    def null_tokens(self, batch: int = 1) -> torch.Tensor:
        """The CFG negative [batch, 4(N+1), context_dim]: the network on all-zero boxes (hence zero
        appearance features) and all-zero pose rows, as the reference's RandomDropBoxes branch."""
        c = self.config
        weight = self.neck.weight
        appearance = torch.zeros(batch, c.num_tokens, c.feature_dim, dtype=weight.dtype, device=weight.device)
        pose_rows = torch.zeros(batch, c.slots + 1, c.pose_dim, dtype=weight.dtype, device=weight.device)
        return self.tokens(appearance, pose_rows)
