"""The small Neural Assets recipe (issue 9) and what it trains on: the renderer's "moved" pairs (one camera, one
object at two 3D poses), the pose hint of a 3D box against its closed form, the pose planes, and a short
training run with the real TAEF2 (the loss falls, resuming repeats the next losses bit for bit)."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from recipe_runs import ShortRun, rendered_pairs
from diorama.ops import assets as A
from diorama.ops.asset_render import NEAR_METRES, box_pose_hint
from diorama.ops.neural_asset_planes import pose_planes
from diorama.training.data.rendered import RenderedPairs
from diorama.training.recipes import small_neural_assets as na

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RUN = ShortRun(steps=20, checkpoint_every=10, batch_size=4)
DATA = {"kind": "rendered", "source_mode": "moved", "count": 8, "size": 64, "seed": 0}


def recipe_section(**changes) -> dict:
    return {"taef2": "taef2", "image_size": 64, "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
            "learning_rate": 3e-3, "margin_px": 4, **changes}


def new_recipe(**changes):
    return na.create(recipe_section(**changes), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def pairs(one_torch_thread) -> list:
    return rendered_pairs(DATA)


@pytest.fixture(scope="module")
def trained(one_torch_thread, taef2_models, pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("small_neural_assets")
    return out, RUN.train(new_recipe(), pairs, out)


def _yaw(rotation) -> float:
    matrix = torch.tensor(rotation, dtype=torch.float64)
    return math.atan2(float(matrix[1, 0]), float(matrix[0, 0]))


def test_moved_pairs_share_the_camera_and_move_one_object(pairs):
    for pair in pairs:
        assert pair.source.camera == pair.target.camera
        k = pair.target.instance_ids.index(pair.object_id)
        for j, (before, after) in enumerate(zip(pair.source.boxes3d, pair.target.boxes3d)):
            if j != k:
                assert before.centre == after.centre and before.rotation == after.rotation
        before, after = pair.source.boxes3d[k], pair.target.boxes3d[k]
        assert 0.3 - 1e-9 <= math.dist(before.centre[:2], after.centre[:2]) <= 0.8 + 1e-9
        assert before.centre[2] == pytest.approx(after.centre[2])
        turn = abs((_yaw(after.rotation) - _yaw(before.rotation) + math.pi) % (2 * math.pi) - math.pi)
        assert math.radians(15) - 1e-6 <= turn <= math.radians(90) + 1e-6
        assert pair.extras["source_mode"] == "moved"


def test_moved_pairs_differ_only_around_the_object_and_its_shadow(pairs):
    """Outside both boxes' blend region the frames agree except where the moved object's shadow falls."""
    for pair in pairs:
        k = pair.target.instance_ids.index(pair.object_id)
        asset = replace(pair.target.boxes3d[k], source_box=pair.source.boxes3d[k].source_box)
        outside = pose_planes(asset, pair.target.camera, 4).blend < 0.5
        same = (pair.source.image - pair.target.image).abs().amax(0) < 1e-4
        assert same[outside].float().mean() > 0.9
        assert not same[~outside].all()  # the object did move


def test_moved_mode_refuses_people():
    with pytest.raises(ValueError, match="moves boxes and balls only"):
        RenderedPairs(2, 32, source_mode="moved", people=0.5)


def test_box_pose_hint_of_a_cube_facing_the_camera_is_its_closed_form():
    """A 1 m cube 5 m in front of the camera: the silhouette is its front face, a square of side f/4.5 px, at
    depth 4.5 m everywhere (hint NEAR/4.5); f = 64 px gives 14.2 px."""
    size, focal = 64, 64.0
    camera = A.Camera(A.intrinsics_from_focal(size, size, focal), A.world_to_camera_look_at((0, -5, 0), (0, 0, 0)),
                      (size, size))
    cube = A.Asset((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)), (0, 0, 0, 0))
    hint = box_pose_hint(cube, camera)
    silhouette = hint > 0
    assert int(silhouette.sum()) == pytest.approx((focal / 4.5) ** 2, rel=0.15)
    torch.testing.assert_close(hint[silhouette], torch.full_like(hint[silhouette], NEAR_METRES / 4.5), atol=1e-4, rtol=0)
    rows, cols = torch.nonzero(silhouette, as_tuple=True)
    assert abs(float(rows.float().mean()) - 31.5) < 0.6 and abs(float(cols.float().mean()) - 31.5) < 0.6


def test_pose_planes_cover_both_boxes_and_refuse_nothing_to_move():
    size = 64
    camera = A.Camera(A.intrinsics_from_focal(size, size, 64.0), A.world_to_camera_look_at((0, -5, 0), (0, 0, 0)),
                      (size, size))
    cube = A.Asset((1.0, 0.0, 0.0), (1.0, 1.0, 1.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)), (0.25, 0.1, 0.5, 0.3))
    planes = pose_planes(cube, camera, margin=2)
    assert bool((planes.blend[planes.source_box > 0] == 1).all()) and bool((planes.blend[planes.pose_hint > 0] == 1).all())
    assert planes.source_box.sum() == (32 - 16) * (19 - 6)  # rows 16:32, cols round(6.4)=6:round(19.2)=19
    behind = A.Asset((0.0, -10.0, 0.0), (1.0, 1.0, 1.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="nothing to move"):
        pose_planes(behind, camera, margin=2)


def test_loss_falls_and_a_checkpoint_is_written(trained):
    out, result = trained
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    # An untrained model stays at ‖ε‖² ≈ 1 (zero output convolutions predict ε̂ = 0); see the compositor's test.
    assert last < 0.93 * first, result.losses
    RUN.assert_checkpoints_written(out, result)


def test_resume_gives_the_same_next_losses(trained, pairs, tmp_path):
    out, result = trained
    RUN.assert_resume_repeats_the_next_losses(new_recipe, pairs, out, result, tmp_path)


def test_concat_holds_the_source_latent_the_pose_planes_and_the_moved_appearance(taef2_models, pairs):
    from diorama.ops.neural_asset_planes import moved_appearance

    recipe = new_recipe()
    assert recipe.config.unet["in_channels"] == 32 + 1 + 32 + 2 + 32
    inputs = recipe._inputs(pairs[:2])
    _, concat, mask = recipe._encoded(inputs)
    assert concat.shape == (2, 1 + 66, 8, 8)
    torch.testing.assert_close(concat[:, :1], mask)
    planes = torch.stack([i.planes.pose_hint for i in inputs])
    torch.testing.assert_close(recipe.unet.model.process_latent_out(concat[:, 34:35]),
                               torch.nn.functional.avg_pool2d(planes[:, None], 8))
    appearance = torch.cat([moved_appearance(i.source[None], i.planes.source_box, i.planes.pose_hint) for i in inputs])
    torch.testing.assert_close(recipe.unet.model.process_latent_out(concat[:, 35:]), recipe.vae.encode(appearance),
                               atol=1e-4, rtol=1e-4)


def test_moved_appearance_stretches_the_source_box_onto_the_target_silhouettes_rectangle():
    """Closed form: a source whose box holds left-red / right-blue halves lands on the target rectangle as the
    same halves (stretched from 4×4 to 8×12 px), grey elsewhere; an empty plane (window crop) gives all grey."""
    from diorama.ops.neural_asset_planes import moved_appearance

    source = torch.full((1, 32, 32, 3), 0.2)
    source[0, 4:8, 4:6] = torch.tensor([1.0, 0.0, 0.0])
    source[0, 4:8, 6:8] = torch.tensor([0.0, 0.0, 1.0])
    source_box = torch.zeros(32, 32)
    source_box[4:8, 4:8] = 1
    hint = torch.zeros(32, 32)
    hint[20:28, 10:22] = torch.linspace(0.3, 0.6, 12)  # any nearness > 0 on the silhouette
    hint[22, 10] = 0  # a hole does not change the rectangle
    out = moved_appearance(source, source_box, hint)[0]
    assert torch.equal(out[20:28, 10:15], torch.tensor([1.0, 0.0, 0.0]).expand(8, 5, 3))
    assert torch.equal(out[20:28, 17:22], torch.tensor([0.0, 0.0, 1.0]).expand(8, 5, 3))
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[20:28, 10:22] = False
    assert bool((out[outside] == 0.5).all())
    assert bool((moved_appearance(source, torch.zeros(32, 32), hint) == 0.5).all())


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"unknown keys \['slots'\]"):
        na.SmallNeuralAssetsSettings.from_config({"slots": 4})
    with pytest.raises(ValueError, match="margin_px"):
        na.SmallNeuralAssetsSettings.from_config(recipe_section(margin_px=-1))


def test_v_loss_is_the_unet_outputs_error_against_the_textbook_v_target(taef2_models, pairs):
    """With x_t = x₀ + σε, α = 1/√(1+σ²), s = σ/√(1+σ²): v = αε − s·x₀ (Salimans & Ho). The recipe's v-loss,
    computed from ComfyUI's denoised output, equals the mean square error of the UNet's raw output against v."""
    from diorama.training import diffusion

    recipe = new_recipe(prediction="v", mask_weight=1.0)
    assert recipe.config.model_type == "v_prediction"
    latents, concat, blend = recipe._encoded(recipe._inputs(pairs[:2]))
    raw = []
    hook = recipe.network.register_forward_hook(lambda module, args, output: raw.append(output.detach()))
    with torch.no_grad():
        loss = recipe.weighted_loss(latents, concat, blend, torch.Generator().manual_seed(3))
    hook.remove()
    noisy, sigma, noise = diffusion.noisy_latents(recipe.unet, latents, torch.Generator().manual_seed(3))
    sigma = sigma.view(-1, 1, 1, 1)
    v = noise / (1 + sigma ** 2).sqrt() - sigma / (1 + sigma ** 2).sqrt() * latents
    torch.testing.assert_close(loss, ((raw[0] - v) ** 2).mean(), rtol=1e-4, atol=1e-6)


def test_init_weights_start_from_a_stage_one_export_and_refuse_another_layout(taef2_models, tmp_path):
    stage_one = new_recipe()
    exported = stage_one.export(tmp_path)[0]
    stage_two = new_recipe(prediction="v", init_weights=str(exported))
    for key, value in stage_one.trainable_state().items():
        torch.testing.assert_close(stage_two.trainable_state()[key], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match=str(exported.name)):
        new_recipe(init_weights=str(exported), model_channels=64)
    with pytest.raises(ValueError, match="recipe.prediction"):
        na.SmallNeuralAssetsSettings.from_config(recipe_section(prediction="x0"))
