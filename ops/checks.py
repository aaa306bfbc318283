"""Input checks shared by every node: each raises ValueError saying what was wrong and what is expected."""
from __future__ import annotations

import torch

MIN_SIDE = 16


def as_rgb_batch(image: torch.Tensor, name: str) -> torch.Tensor:
    """An IMAGE as [B,H,W,3] float: RGBA loses alpha, grayscale is repeated."""
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: expected an IMAGE [batch, height, width, 1|3|4 channels], got shape {tuple(image.shape)}")
    require_min_side(image.shape[1], image.shape[2], name)
    require_finite(image, name)
    if image.shape[-1] == 4:
        image = image[..., :3]
    elif image.shape[-1] == 1:
        image = image.expand(-1, -1, -1, 3)
    return image.float()


def as_mask_batch(mask: torch.Tensor, name: str) -> torch.Tensor:
    """A MASK as [B,H,W] float in 0..1."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 3:
        raise ValueError(f"{name}: expected a MASK [batch, height, width], got shape {tuple(mask.shape)}")
    require_finite(mask, name)
    return mask.float().clamp(0.0, 1.0)


def require_min_side(height: int, width: int, name: str) -> None:
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"{name}: {width}x{height} px is too small; both sides must be at least {MIN_SIDE} px")


def require_finite(values: torch.Tensor, name: str) -> None:
    # NaN and inf propagate into a sum, which is one fast pass; an overflowing sum of finite
    # values falls through to the exact count.
    if bool(torch.isfinite(values.sum(dtype=torch.float64))):
        return
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise ValueError(f"{name}: contains {bad} NaN or infinite values; expected finite numbers")


def require_same_size(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if tuple(a.shape[1:3]) != tuple(b.shape[1:3]):
        raise ValueError(
            f"{name_a} is {a.shape[2]}x{a.shape[1]} px but {name_b} is {b.shape[2]}x{b.shape[1]} px; "
            "they must have the same width and height"
        )


def require_nonempty(mask: torch.Tensor, name: str) -> None:
    empty = [i for i in range(mask.shape[0]) if not bool((mask[i] > 0.5).any())]
    if empty:
        raise ValueError(f"{name}: mask is empty (no pixel above 0.5) in batch item(s) {empty}; expected the object's silhouette")


def common_batch(sizes: dict[str, int]) -> int:
    """The batch size several inputs broadcast to: each is 1 or the same N."""
    larger = {n: s for n, s in sizes.items() if s != 1}
    if len(set(larger.values())) > 1:
        listed = ", ".join(f"{n}={s}" for n, s in sizes.items())
        raise ValueError(f"batch sizes do not match ({listed}); each input must have batch 1 or the same batch N")
    return next(iter(larger.values()), 1)


def expand_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    return tensor if tensor.shape[0] == batch else tensor.expand(batch, *tensor.shape[1:])


def file_pixels(image: torch.Tensor) -> torch.Tensor:
    """IMAGE values back to the 8-bit pixels they were loaded from (LoadImage stores k/255), as
    reference code that read the file with OpenCV saw them."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def binary_mask(mask: torch.Tensor) -> torch.Tensor:
    """A MASK as {0,1} uint8, the form reference code keeps masks in."""
    return (mask > 0.5).to(torch.uint8)
