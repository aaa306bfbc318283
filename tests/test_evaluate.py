"""The evaluation command: metric functions against closed forms, the baselines through the executor on
held-out renders, and occlusion handling measured against the renderer's truth."""
from __future__ import annotations

import math

import pytest
import torch


def test_psnr_of_known_noise_and_of_identical_images():
    from diorama.ops.eval_metrics import box_mask, psnr

    truth = torch.rand(16, 20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.8 + 0.1
    signs = (torch.arange(16 * 20 * 3).reshape(16, 20, 3) % 2) * 2 - 1
    noisy = truth + 0.1 * signs  # every error is ±0.1: MSE 0.01 → 20 dB
    assert psnr(noisy, truth) == pytest.approx(20.0, abs=1e-6)
    half = torch.cat([noisy[:, :10], truth[:, 10:]], dim=1)
    assert psnr(half, truth, box_mask((0, 0, 10, 16), 16, 20)) == pytest.approx(20.0, abs=1e-6)
    assert psnr(half, truth, box_mask((10, 0, 20, 16), 16, 20)) == math.inf
    with pytest.raises(ValueError, match="selects no pixels"):
        psnr(half, truth, torch.zeros(16, 20, dtype=torch.bool))


def test_ssim_closed_forms():
    from diorama.ops.eval_metrics import SSIM_C1, box_mask, ssim

    image = torch.rand(24, 24, 3, generator=torch.Generator().manual_seed(1))
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    # Two flat images a and b: no variance, no covariance, so SSIM = (2ab + C1) / (a² + b² + C1) everywhere.
    a, b = 0.3, 0.7
    flat_a, flat_b = torch.full((24, 24, 3), a), torch.full((24, 24, 3), b)
    expected = (2 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1)
    assert ssim(flat_a, flat_b) == pytest.approx(expected, rel=1e-6)
    assert ssim(flat_a, flat_b, box_mask((2, 2, 9, 9), 24, 24)) == pytest.approx(expected, rel=1e-6)
    assert ssim(image, 1 - image) < 0  # anti-correlated structure


def test_iou_and_identity_similarity_of_known_masks():
    from diorama.ops.eval_metrics import changed_region, identity_similarity, iou

    a = torch.zeros(10, 10, dtype=torch.bool)
    b = torch.zeros(10, 10, dtype=torch.bool)
    a[0:4, 0:4] = True
    b[0:4, 2:6] = True  # overlap 4×2 = 8, union 16 + 16 - 8 = 24
    assert iou(a, b) == pytest.approx(1 / 3)
    assert iou(a, a) == 1.0 and iou(a, ~a) == 0.0

    red, blue = torch.zeros(10, 10, 3), torch.zeros(10, 10, 3)
    red[..., 0], blue[..., 2] = 0.9, 0.9
    assert identity_similarity(red, a, red, b) == pytest.approx(1.0)
    assert identity_similarity(red, a, blue, b) == 0.0
    assert identity_similarity(red, torch.zeros_like(a), red, b) == 0.0  # nothing composited

    background = torch.full((10, 10, 3), 0.5)
    composite = background.clone()
    composite[a] = 0.9
    composite[5, 5] = 0.52  # below the threshold: not part of the object
    assert torch.equal(changed_region(composite, background), a)


@pytest.fixture(scope="module")
def held_out():
    from diorama.evaluate import held_out_scenes

    return held_out_scenes(4, 64)


def test_held_out_scenes_are_consistent_with_the_renderer(held_out):
    from diorama.evaluate import EVAL_SEED
    from diorama.ops.eval_metrics import box_mask

    scenes, neural_assets = held_out
    assert len(scenes) == 4 and len(neural_assets) == 3
    assert scenes[0].name == "bundled room" and all(f"seed={EVAL_SEED}" in s.name for s in scenes[1:])
    for scene in scenes + neural_assets:
        height, width = scene.truth.shape[:2]
        # The placement box (projected 3D box) holds every visible pixel of the object.
        assert not bool((scene.visible & ~box_mask(scene.box, height, width)).any())
        assert torch.isfinite(scene.background_depth).all() and torch.isfinite(scene.reference_depth).all()
        # The object is in the truth and not in the clean plate.
        assert float((scene.truth - scene.background).abs().amax(-1)[scene.visible].mean()) > 0.02
    assert all(s.source_frame is not None for s in neural_assets)


def test_eval_on_four_scenes_prints_every_row(held_out, monkeypatch):
    """Without the small models (hidden here, as shipped ones would be found): their rows say so; they run in
    test_small_compositor_node.py and test_small_neural_assets_node.py."""
    import diorama.evaluate
    from diorama.evaluate import COLUMNS, evaluate, format_table

    monkeypatch.setattr(diorama.evaluate, "compositor_missing",
                        lambda size: "needs a trained model (diorama_compositor.safetensors)")
    monkeypatch.setattr(diorama.evaluate, "neural_assets_missing",
                        lambda size: "needs a trained model (diorama_neural_assets.safetensors)")
    scenes, neural_assets = held_out
    rows = dict(evaluate(scenes, neural_assets))
    for name in ("copy-paste", "depth-aware paste"):
        values = rows[name]
        assert all(math.isfinite(values[c]) for c in ("PSNR box", "PSNR all", "SSIM box", "SSIM all", "IoU vis.", "identity"))
        assert values["PSNR all"] > values["PSNR box"]  # outside the box both paste the background back exactly
        assert 0 <= values["IoU vis."] <= 1
    assert math.isfinite(rows["reuse source frame"]["NA box PSNR"])
    # The object left where it was: its target box is wrong, the rest nearly right (only its shadow moved).
    assert rows["reuse source frame"]["NA rest PSNR"] > rows["reuse source frame"]["NA box PSNR"] + 10
    for name in ("learned compositor", "compositor − depth hint", "compositor − identity tokens",
                 "compositor − per-step blending", "learned Neural Assets"):
        assert rows[name].startswith("needs a trained model")
    table = format_table(list(rows.items()), scenes)
    assert table.splitlines()[0] == f"| method | {' | '.join(COLUMNS)} |"
    assert "4 held-out scenes at 64² px (the bundled room + rendered seed 90001)" in table
    assert "rendered seed 1)" in format_table(list(rows.items()), scenes, seed=1)


def test_readme_is_only_written_from_the_held_out_seed(capsys):
    """A table of validation scenes (--seed 1) must not land in the README, which claims held-out numbers."""
    from diorama.evaluate import main

    assert main(["--seed", "1", "--readme"]) == 2
    assert "--readme writes the held-out scenes' table (seed 90001)" in capsys.readouterr().err


def test_copy_paste_ignores_occlusion_that_depth_aware_paste_respects():
    """The bundled room: the crate stands behind the table, so 40% of it is hidden in the renderer's truth."""
    from diorama.evaluate import bundled_scene, composite_metrics, run_paste_baselines

    scene = bundled_scene(128, 128)
    assert scene.visible_fraction < 0.7
    outputs = run_paste_baselines([scene])
    copy = composite_metrics(scene, outputs["copy"][0])
    depth_aware = composite_metrics(scene, outputs["depth_aware"][0])
    assert depth_aware["IoU vis."] > copy["IoU vis."] + 0.15
    assert depth_aware["PSNR box"] > copy["PSNR box"]


def test_readme_block_is_replaced_exactly_once(tmp_path):
    from diorama.evaluate import README_BEGIN, README_END, write_readme

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_BEGIN}\nold\n{README_END}\ntail\n")
    write_readme(readme, "| new |")
    assert readme.read_text() == f"# x\n{README_BEGIN}\n| new |\n{README_END}\ntail\n"
    readme.write_text("# no block\n")
    with pytest.raises(ValueError, match="exactly one block"):
        write_readme(readme, "| new |")


def test_rest_psnr_averages_squared_errors_so_an_exact_scene_adds_nothing():
    from diorama.evaluate import psnr_of_mean_error

    # MSEs 1e-2 (20 dB) and 0 (inf) average to 5e-3: 10·log10(200) dB.
    assert psnr_of_mean_error([20.0, math.inf]) == pytest.approx(10 * math.log10(200))
    assert psnr_of_mean_error([math.inf, math.inf]) == math.inf
    assert psnr_of_mean_error([30.0, 30.0]) == pytest.approx(30.0)
