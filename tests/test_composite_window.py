"""The composite window and the stitch, on closed-form cases."""
import math

import pytest
import torch

from diorama.ops.composite_window import composite_window, crop_image
from diorama.ops.stitch import stitch_window


def test_window_is_a_square_around_the_box_at_the_model_resolution():
    window = composite_window((400, 300, 450, 400), (800, 1000), 2.0, 512, 8)
    area = window.area
    assert (area.x1 - area.x0, area.y1 - area.y0) == (200, 200)
    assert (area.x0 + area.x1) / 2 == 425 and (area.y0 + area.y1) / 2 == 350
    assert window.sample_hw == (512, 512)


@pytest.mark.parametrize("box, image_hw", [((0, 0, 60, 40), (200, 300)), ((250, 150, 300, 200), (200, 300)),
                                           ((10, 10, 290, 190), (200, 300)), ((5, 100, 40, 217), (217, 333))])
def test_window_stays_inside_the_image_and_contains_the_box(box, image_hw):
    window = composite_window(box, image_hw, 2.5, 512, 8)
    a = window.area
    assert 0 <= a.x0 <= box[0] and box[2] <= a.x1 <= image_hw[1]
    assert 0 <= a.y0 <= box[1] and box[3] <= a.y1 <= image_hw[0]
    h, w = window.sample_hw
    assert h % 8 == 0 and w % 8 == 0
    # Aspect kept to within the rounding to multiples of 8, area about 512².
    assert abs(w / h - (a.x1 - a.x0) / (a.y1 - a.y0)) < 0.05 * (a.x1 - a.x0) / (a.y1 - a.y0) + 16 / h
    assert abs(math.sqrt(h * w) - 512) < 16


def test_background_smaller_than_the_latent_factor_is_refused():
    with pytest.raises(ValueError, match="smaller than the VAE's latent factor 8"):
        composite_window((0, 0, 4, 4), (6, 6), 2.0, 512, 8)


def test_stitch_is_exact_outside_the_blend_region_and_generated_inside():
    background = torch.rand(1, 120, 160, 3)
    window = composite_window((60, 40, 100, 80), (120, 160), 2.0, 64, 8)
    blend = torch.zeros(1, 120, 160)
    blend[0, 50:70, 70:90] = 1.0
    generated = torch.full((1, *window.sample_hw, 3), 0.25)
    out = stitch_window(background, generated, blend, window, feather_px=0, colour_match=False)
    assert torch.equal(out[blend == 0], background[blend == 0])
    torch.testing.assert_close(out[0, 52:68, 72:88], torch.full((16, 16, 3), 0.25))


def test_colour_match_removes_a_colour_cast_across_the_seam():
    """The model's window comes back with a cast; after stitching, the seam must not show it.

    A uniform cast is removed exactly by the mean offset measured on the ring outside the blend
    region, so what is left across the seam is the scene's own variation: the bound is 0.01 (2.5 of
    255 levels), well under the 0.08 cast that is clearly visible.
    """
    torch.manual_seed(0)
    background = 0.4 + 0.02 * torch.rand(1, 200, 200, 3)
    window = composite_window((80, 80, 120, 120), (200, 200), 2.5, 96, 8)
    rows, cols = window.area.slices
    generated = crop_image(background, window) + torch.tensor([0.08, -0.05, 0.06])
    blend = torch.zeros(1, 200, 200)
    blend[0, 85:115, 85:115] = 1.0
    inside_ring = torch.zeros(200, 200, dtype=torch.bool)
    inside_ring[86:114, 86:114] = True
    inside_ring[90:110, 90:110] = False
    outside_ring = torch.zeros(200, 200, dtype=torch.bool)
    outside_ring[80:120, 80:120] = True
    outside_ring[85:115, 85:115] = False

    def seam_step(image):
        return (image[0][inside_ring].mean(0) - image[0][outside_ring].mean(0)).abs().max()

    plain = stitch_window(background, generated, blend, window, feather_px=2, colour_match=False)
    matched = stitch_window(background, generated, blend, window, feather_px=2, colour_match=True)
    assert seam_step(plain) > 0.05
    assert seam_step(matched) < 0.01
    assert torch.equal(matched[blend == 0], background[blend == 0])
    assert rows.start >= 0 and cols.start >= 0


def test_whole_image_window_covers_the_photo_at_the_model_resolution(node_class):
    background = torch.rand(1, 300, 200, 3)
    window = node_class("DioramaCompositeWindow").execute(background, 2.0, 512, area="whole image").result[0]
    assert (window.area.y0, window.area.y1, window.area.x0, window.area.x1) == (0, 300, 0, 200)
    h, w = window.sample_hw
    assert h % 8 == 0 and w % 8 == 0 and abs(h / w - 1.5) < 0.05 and abs(h * w - 512 ** 2) / 512 ** 2 < 0.1
