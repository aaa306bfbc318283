"""Person insertion tokens (Warner & Essa '24): reference image ⊕ caption ⊕ pose in one sequence.

The method conditions an inpainting UNet's cross-attention on a reference person crop (the image
encoder's embedding, as in Kulal et al.'s affordance model it builds on), a caption, and a
17-keypoint COCO skeleton that "a single learnable dense layer" projects into the same token space.
Here the image embedding is projected by one dense layer into `image_tokens` tokens, the skeleton
(x, y, visibility per joint; optionally with the reference person's own skeleton after it, as the
paper feeds both) by one dense layer into `pose_tokens` tokens, and the sequence is
image ⊕ caption ⊕ pose, each part optional (the paper's ablations: img, img-text, img-pose,
img-pose-text).

Unconditional tokens for classifier-free guidance: each missing modality has a learnt null
(`image_null`, `pose_null`), the tokens the model sees when that input is dropped in training.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

KEYPOINTS = 17
POSE_INPUTS = {"target": 1, "target+reference": 2}  # skeletons the pose layer reads, concatenated
IMAGE_ENCODERS = {"clip_vision": "image_embeds", "dinov2": "cls"}  # encoder → the pooled vector it gives


@dataclass(frozen=True)
class PersonAdapterConfig:
    image_encoder: str  # "clip_vision" (CLIP image_embeds) or "dinov2" (final-norm class token)
    image_dim: int  # width of the pooled image embedding
    token_dim: int  # the UNet's cross-attention width (768 for SD1.x)
    image_tokens: int  # m: tokens the image projection makes
    pose_tokens: int  # k: tokens the pose projection makes
    pose_inputs: str = "target"  # "target" (17·3 inputs) or "target+reference" (2·17·3)
    image_size: int = 224  # side of the square reference crop fed to the encoder

    def __post_init__(self):
        if self.image_encoder not in IMAGE_ENCODERS:
            raise ValueError(f"image encoder {self.image_encoder!r} is unknown; expected one of {sorted(IMAGE_ENCODERS)}")
        if self.pose_inputs not in POSE_INPUTS:
            raise ValueError(f"pose inputs {self.pose_inputs!r} is unknown; expected one of {sorted(POSE_INPUTS)}")
        for name in ("image_dim", "token_dim", "image_tokens", "pose_tokens", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")

    @property
    def pose_dim(self) -> int:
        return POSE_INPUTS[self.pose_inputs] * KEYPOINTS * 3


class PersonAdapter(torch.nn.Module):
    def __init__(self, config: PersonAdapterConfig):
        super().__init__()
        self.config = config
        c = config
        self.image_projection = torch.nn.Linear(c.image_dim, c.image_tokens * c.token_dim)
        self.pose_projection = torch.nn.Linear(c.pose_dim, c.pose_tokens * c.token_dim)
        self.image_null = torch.nn.Parameter(torch.zeros(c.image_tokens, c.token_dim))
        self.pose_null = torch.nn.Parameter(torch.zeros(c.pose_tokens, c.token_dim))

    def image(self, embedding: torch.Tensor) -> torch.Tensor:
        """Pooled image embeddings [B, image_dim] → [B, m, token_dim]."""
        c = self.config
        if embedding.ndim != 2 or embedding.shape[1] != c.image_dim:
            raise ValueError(f"the person adapter expects {c.image_dim}-wide image embeddings [batch, {c.image_dim}], "
                             f"got {tuple(embedding.shape)}; use the image encoder it was trained with")
        return self.image_projection(embedding).reshape(-1, c.image_tokens, c.token_dim)

    def pose(self, pose: torch.Tensor) -> torch.Tensor:
        """Pose vectors [B, pose_dim] (ops.keypoints.pose_vector, reference after target) → [B, k, token_dim]."""
        c = self.config
        if pose.ndim != 2 or pose.shape[1] != c.pose_dim:
            raise ValueError(f"the person adapter's pose layer reads {c.pose_dim} numbers ({c.pose_inputs}), got "
                             f"{tuple(pose.shape)}")
        return self.pose_projection(pose).reshape(-1, c.pose_tokens, c.token_dim)

    def forward(self, embedding: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(embedding), self.pose(pose)


def join_parts(parts: list[torch.Tensor]) -> torch.Tensor:
    """Token blocks [1|B, n_i, D] → [B, Σn_i, D] along the token axis (batch-1 blocks broadcast)."""
    batch = max(p.shape[0] for p in parts)
    bad = [tuple(p.shape) for p in parts if p.shape[0] not in (1, batch)]
    if bad:
        raise ValueError(f"token blocks have batch sizes {[p.shape[0] for p in parts]}; each must be 1 or the same N")
    return torch.cat([p.expand(batch, -1, -1) for p in parts], dim=1)
