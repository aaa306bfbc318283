"""The colour-free detail map on hand-computable images."""
import torch

from diorama.ops.detail_map import detail_map


def step_image(channel: int, height: float = 0.1) -> torch.Tensor:
    image = torch.full((1, 32, 32, 3), 0.5)
    image[0, :, 16:, channel] += height
    return image


def test_flat_image_has_no_detail():
    assert detail_map(torch.full((1, 32, 32, 3), 0.3), torch.ones(1, 32, 32)).abs().max() == 0


def test_step_edge_magnitude_and_colour_independence():
    mask = torch.ones(1, 32, 32)
    red = detail_map(step_image(0), mask, threshold=0.0, erode_px=0)
    green = detail_map(step_image(1), mask, threshold=0.0, erode_px=0)
    # Unnormalised Sobel across a vertical step of 0.1: |dx| = (1+2+1)·0.1 on the two columns
    # beside the edge, dy = 0; the map is half of that.
    torch.testing.assert_close(red[0, 10, 15, 0], torch.tensor(0.2))
    torch.testing.assert_close(red[0, 10, 16, 0], torch.tensor(0.2))
    assert red[0, 10, 12, 0] == 0
    assert torch.equal(red, green), "the map must not depend on which colour changes"
    assert torch.equal(red[..., 0], red[..., 2])


def test_threshold_and_mask_remove_detail():
    mask = torch.zeros(1, 32, 32)
    mask[0, :, :8] = 1  # far from the edge
    assert detail_map(step_image(0), mask, threshold=0.0, erode_px=0).abs().max() == 0
    assert detail_map(step_image(0), torch.ones(1, 32, 32), threshold=0.25, erode_px=0).abs().max() == 0
