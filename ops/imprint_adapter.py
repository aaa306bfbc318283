"""IMPRINT's content adapter: DINOv2 class + patch tokens → tokens in the UNet's cross-attention space.

IMPRINT's identity encoder is DINOv2 followed by a "content adapter" that bridges the image and text
embedding spaces; the paper gives no layer list and no weights are published, so this is Diorama's
design (format `imprint_content_adapter`, version 1):

    x = input_projection(tokens)                      [B, T, input_dim] → [B, T, width]
    queries mode:     x = concat(queries, x)          K learned query tokens first
    depth × pre-LN block:
        x = x + out_proj(attention(split_heads(qkv(norm1(x)))))     softmax(q·kᵀ/√head_dim)·v
        x = x + fc2(gelu(fc1(norm2(x))))                            exact (erf) GELU
    x = output_norm(x)[:, :K] (queries) or x (passthrough: one output token per input token)
    out = output_projection(x)                        [B, K or T, context_dim]

The DINOv2 tokens already carry position information, so the adapter adds none. In queries mode
the number of conditioning tokens is fixed (e.g. 77, the text encoder's count) whatever the image
size; passthrough keeps one token per DINOv2 token. The unconditional tokens ("null_tokens") are
the adapter on an all-zero DINOv2 token sequence: IMPRINT trains with the image embedding dropped
(5% / 10%), and a zeroed embedding passed through the trainable adapter gives learnt unconditional
tokens without a DINOv2 pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .bifrost_reference import REFERENCE_EXPANSION, REFERENCE_SIZE, expand_image_mask, mask_bounding_box, pad_to_square
from .opencv_arith import resize_linear

TOKEN_MODES = ("queries", "passthrough")


@dataclass(frozen=True)
class ImprintAdapterConfig:
    input_dim: int  # DINOv2 token width (1536 for ViT-g, 1024 for ViT-L)
    input_tokens: int  # DINOv2 tokens it reads: 1 + (image_size / patch)², 257 for 224² and 14-px patches
    width: int
    depth: int
    heads: int
    mlp_dim: int
    context_dim: int  # cross-attention width of the UNet (768 for SD1.x)
    num_queries: int = 0  # 0: passthrough, else the number of learned query tokens = output tokens
    norm_eps: float = 1e-5

    @property
    def token_mode(self) -> str:
        return "queries" if self.num_queries else "passthrough"

    @property
    def num_tokens(self) -> int:
        """Conditioning tokens per reference."""
        return self.num_queries or self.input_tokens

    def check(self) -> None:
        for field in ("input_dim", "input_tokens", "width", "depth", "heads", "mlp_dim", "context_dim"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field}={getattr(self, field)}, expected a positive integer")
        if self.num_queries < 0:
            raise ValueError(f"num_queries={self.num_queries}, expected 0 (passthrough) or a positive count")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps={self.norm_eps}, expected a positive number")


class Attention(torch.nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.out_proj = torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        # [B,T,3·W] → 3 × [B, heads, T, W/heads]; q, k, v in that order along the last axis.
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, width))


class Block(torch.nn.Module):
    def __init__(self, config: ImprintAdapterConfig):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(config.width, eps=config.norm_eps)
        self.attention = Attention(config.width, config.heads)
        self.norm2 = torch.nn.LayerNorm(config.width, eps=config.norm_eps)
        self.mlp = torch.nn.Sequential()
        self.mlp.add_module("fc1", torch.nn.Linear(config.width, config.mlp_dim))
        self.mlp.add_module("gelu", torch.nn.GELU())
        self.mlp.add_module("fc2", torch.nn.Linear(config.mlp_dim, config.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ImprintContentAdapter(torch.nn.Module):
    """The content adapter of the module docstring; parameters named as the file stores them."""

    def __init__(self, config: ImprintAdapterConfig):
        super().__init__()
        config.check()
        self.config = config
        self.input_projection = torch.nn.Linear(config.input_dim, config.width)
        if config.num_queries:
            self.queries = torch.nn.Parameter(torch.zeros(config.num_queries, config.width))
        self.blocks = torch.nn.ModuleList(Block(config) for _ in range(config.depth))
        self.output_norm = torch.nn.LayerNorm(config.width, eps=config.norm_eps)
        self.output_projection = torch.nn.Linear(config.width, config.context_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """DINOv2 tokens [B, input_tokens, input_dim] → conditioning tokens [B, num_tokens, context_dim]."""
        c = self.config
        if tokens.ndim != 3 or tokens.shape[1:] != (c.input_tokens, c.input_dim):
            raise ValueError(f"the IMPRINT content adapter expects DINOv2 tokens [batch, {c.input_tokens}, {c.input_dim}] "
                             f"(class + patch tokens), got {tuple(tokens.shape)}")
        x = self.input_projection(tokens)
        if c.num_queries:
            x = torch.cat((self.queries.expand(x.shape[0], -1, -1).to(x.dtype), x), dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.output_norm(x)
        if c.num_queries:
            x = x[:, :c.num_queries]
        return self.output_projection(x)

    def null_input(self, batch: int = 1) -> torch.Tensor:
        """The CFG null input: an all-zero DINOv2 token sequence (the dropped image embedding)."""
        weight = self.input_projection.weight
        return torch.zeros(batch, self.config.input_tokens, self.config.input_dim, dtype=weight.dtype,
                           device=weight.device)


def object_crop(image: torch.Tensor, mask: torch.Tensor, fill: int, size: int = REFERENCE_SIZE
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference object framed as BIFRÖST frames it (mask box with its inclusive-end slicing,
    1.2× margin, centred square, OpenCV bilinear resize to size²), every non-object pixel = fill.

    fill 0 is IMPRINT's masked object I ⊗ M (background removed); fill 255 at 224 is exactly
    ops.bifrost_reference.reference_crop. image uint8 [H,W,3], mask {0,1} [H,W] →
    (uint8 [size,size,3], uint8 mask 0/255 [size,size]).
    """
    if not 0 <= fill <= 255:
        raise ValueError(f"fill {fill} is not a uint8 value")
    mask = mask.to(torch.uint8)
    y1, y2, x1, x2 = mask_bounding_box(mask)
    crop, crop_mask = expand_image_mask(image[y1:y2, x1:x2], mask[y1:y2, x1:x2], REFERENCE_EXPANSION)
    # The margin expand_image_mask adds has mask 0, so this also sets it to fill.
    keep = crop_mask[..., None]
    crop = crop * keep + fill * (1 - keep)
    crop = resize_linear(pad_to_square(crop, fill), size, size)
    crop_mask = resize_linear(pad_to_square(crop_mask * 255, 0), size, size)
    return crop, crop_mask
