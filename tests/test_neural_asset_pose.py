"""NeuralAssetPose: the node's assembly (passes, RoI slots, pose rows) against the reference's tokens,
and the tokens driving a tiny SD2-shaped UNet through ComfyUI's executor."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from neural_assets_scenes import SLOTS, load_scene, scene_assets
from reference_data import reference_dir

# Not the example workflows' name: their fixture writes a random adapter under that one.
ADAPTER = "reference-params.safetensors"


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(reference_dir("neural_assets") / "tokens_scenes12.npz"))


@pytest.fixture(scope="module")
def adapter(base_dir):
    from diorama.loaders.neural_assets_adapter import convert_flax_params, load_neural_assets_adapter

    path = Path(base_dir) / "models" / "neural_assets" / ADAPTER
    path.parent.mkdir(parents=True, exist_ok=True)
    convert_flax_params(str(reference_dir("neural_assets") / "params.npz"), str(path), slots=SLOTS, overwrite=True)
    return load_neural_assets_adapter(str(path))


@pytest.mark.parametrize("index", [0, 1], ids=["scene1", "scene2"])
def test_node_assembly_gives_the_reference_tokens(golden, adapter, index):
    """With the reference's DINO features standing in for DINO (the golden backbone is a stub), the
    node's passes, RoI slots and pose rows give the reference's conditioning and null tokens."""
    from diorama.nodes.neural_assets import appearance_tokens_input
    from diorama.ops.assets import pose_rows

    assets = scene_assets(load_scene(index + 1))
    source = torch.from_numpy(golden["in_src_images"][index])
    passes = []

    def features_of(image: torch.Tensor) -> torch.Tensor:
        # The node must hand DINO exactly the reference's two masked images.
        for expected, features in (("mid_appearance_src_image", "mid_feat_fg"), ("in_src_bg_images", "mid_feat_bg")):
            if torch.equal(image[0], torch.from_numpy(golden[expected][index])):
                passes.append(expected)
                return torch.from_numpy(golden[features][index])[None]
        raise AssertionError("DINO was given an image that is neither of the reference's passes")

    appearance = appearance_tokens_input(features_of, [source], assets, SLOTS)
    np.testing.assert_allclose(appearance[0].numpy(), golden["mid_app_features_pre_proj"][index], atol=1e-4)
    rows = pose_rows(assets, SLOTS)[None]
    np.testing.assert_allclose(rows[0].numpy(), golden["in_tgt_object_poses"][index], atol=1e-4)
    tokens = adapter.tokens(appearance, rows)
    np.testing.assert_allclose(tokens[0].numpy(), golden["out_conditioning_tokens"][index], atol=1e-4)
    np.testing.assert_allclose(adapter.null_tokens(1)[0].numpy(), golden["out_null_conditioning_tokens"][index], atol=1e-4)
    assert sorted(passes) == ["in_src_bg_images", "mid_appearance_src_image"]


@pytest.fixture(scope="module")
def models(base_dir, adapter, tiny_bifrost_models):
    """The stub DINO (ViT-B/8 shaped: the adapter's backbone), the converted reference adapter and the
    tiny SD2-shaped UNet of the BIFRÖST tests."""
    import tiny_dino

    tiny_dino.write_dino_models(Path(base_dir) / "models" / "dino",
                                dict(np.load(reference_dir("neural_assets") / "tokens_scenes12.npz"))["stub_patch_proj"])
    return "stub-dino-vit8"


def scene_json() -> str:
    import json

    scene = load_scene(2)
    return json.dumps({
        "camera": {"image_size": [256, 256], "intrinsics": scene["in_k_pix"].tolist(),
                   "world_to_camera": scene["in_world2cam_opencv"][0].tolist()},
        "target_camera": {"image_size": [256, 256], "intrinsics": scene["in_k_pix"].tolist(),
                          "world_to_camera": scene["in_world2cam_opencv"][1].tolist()},
        "objects": [{"centre": scene["in_obj_center_world"][1, i].tolist(), "size": scene["in_obj_size"][i].tolist(),
                     "yaw_pitch_roll": np.degrees(scene["in_obj_ypr"][1, i]).tolist(),
                     "source_box": [0.2 + 0.3 * i, 0.2, 0.45 + 0.3 * i, 0.5]} for i in range(2)],
    })


def pose_graph(models: str, move: float = 0.0, prefix: str = "na") -> dict:
    return {
        "1": {"class_type": "DioramaAssetsFromJSON", "inputs": {"json": scene_json()}},
        "2": {"class_type": "DioramaMoveAsset", "inputs": {"assets": ["1", 0], "index": 1, "dx": move, "dy": 0.0,
                                                           "dz": 0.0, "axes": "world"}},
        "3": {"class_type": "DioramaBundledScene", "inputs": {"width": 256, "height": 256, "reference_size": 64}},
        "4": {"class_type": "DioramaDinoLoader", "inputs": {"model_name": models}},
        "5": {"class_type": "DioramaNeuralAssetsAdapterLoader", "inputs": {"adapter_name": ADAPTER}},
        "6": {"class_type": "DioramaNeuralAssetPose", "inputs": {"adapter": ["5", 0], "source_image": ["3", 0],
                                                                 "assets": ["2", 0], "dino": ["4", 0]}},
        "7": {"class_type": "UNETLoader", "inputs": {"unet_name": "bifrost_unet.safetensors", "weight_dtype": "default"}},
        "8": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "9": {"class_type": "KSampler", "inputs": {"model": ["7", 0], "positive": ["6", 0], "negative": ["6", 1],
                                                   "latent_image": ["8", 0], "seed": 3, "steps": 1, "cfg": 3.0,
                                                   "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 1.0}},
        "10": {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": f"latents/{prefix}"}},
    }


def test_moving_one_asset_changes_its_tokens_only_and_the_sample(run_prompt, node_class, base_dir, models):
    def run(move: float, prefix: str) -> torch.Tensor:
        report = run_prompt(pose_graph(models, move, prefix))
        saved = report.outputs["10"]["latents"][0]
        return safetensors.torch.load_file(str(Path(base_dir) / "output" / saved["subfolder"] / saved["filename"]))["latent_tensor"]

    assert torch.equal(run(0.0, "still"), run(0.0, "still_again"))
    assert not torch.allclose(run(0.0, "still"), run(0.7, "moved"), atol=1e-6), "the pose tokens must reach the UNet"

    # The tokens themselves: only object 1's four tokens change.
    from diorama.ops.assets import move_object
    from diorama.ops.asset_json import parse_assets

    assets = parse_assets(scene_json())
    dino = node_class("DioramaDinoLoader").execute(models).result[0]
    adapter = node_class("DioramaNeuralAssetsAdapterLoader").execute(ADAPTER).result[0]
    image = torch.rand(1, 256, 256, 3)
    pose = node_class("DioramaNeuralAssetPose")
    before = pose.execute(adapter, image, assets, dino=dino).result[0][0][0]
    after = pose.execute(adapter, image, move_object(assets, 1, (0.7, 0.0, 0.0)), dino=dino).result[0][0][0]
    changed = (before - after).abs().amax(-1) > 1e-6
    assert before.shape == (1, 4 * (SLOTS + 1), 1024)
    assert changed[0, 4:8].all() and not changed[0, :4].any() and not changed[0, 8:].any()


def test_bad_inputs(node_class, models):
    from diorama.ops.asset_json import parse_assets

    dino = node_class("DioramaDinoLoader").execute(models).result[0]
    adapter = node_class("DioramaNeuralAssetsAdapterLoader").execute(ADAPTER).result[0]
    assets = parse_assets(scene_json())
    pose = node_class("DioramaNeuralAssetPose")
    with pytest.raises(ValueError, match="exactly one DINO"):
        pose.execute(adapter, torch.rand(1, 64, 64, 3), assets)
    crowded = assets
    from diorama.ops.assets import add_object

    for _ in range(SLOTS):
        crowded = add_object(crowded, crowded.objects[0])
    with pytest.raises(ValueError, match="slots"):
        pose.execute(adapter, torch.rand(1, 64, 64, 3), crowded, dino=dino)
    wrong = node_class("DioramaDinoLoader").execute("tiny-dino-vit8").result[0]
    with pytest.raises(ValueError, match="trained on DINO features"):
        pose.execute(adapter, torch.rand(1, 64, 64, 3), assets, dino=wrong)


@pytest.mark.parametrize("name", ["neural_assets_edit", "neural_assets_transfer"])
def test_example_scene_boxes_project_onto_their_source_boxes(name):
    """The example workflows' room assets describe the bundled scene: each 3D box, projected with the
    source camera, covers the object's box in the rendered photo."""
    import json

    from diorama.ops.asset_json import parse_assets
    from diorama.ops.assets import box_corners, project, to_camera

    workflow = json.loads((Path(__file__).resolve().parents[1] / "example_workflows" / f"{name}.json").read_text())
    text = next(n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "DioramaAssetsFromJSON")
    assets = parse_assets(text)
    for asset in assets.objects:
        uvd = project(to_camera(box_corners(asset), assets.source_camera), assets.source_camera)
        assert bool((uvd[:, 2] > 0).all())
        x0, x1 = float(uvd[:, 0].min()), float(uvd[:, 0].max())
        y0, y1 = float(uvd[:, 1].min()), float(uvd[:, 1].max())
        by0, bx0, by1, bx1 = asset.source_box
        inter = max(0.0, min(x1, bx1) - max(x0, bx0)) * max(0.0, min(y1, by1) - max(y0, by0))
        union = (x1 - x0) * (y1 - y0) + (bx1 - bx0) * (by1 - by0) - inter
        assert inter / union > 0.8, f"{asset.centre}: projected box ({x0:.3f},{y0:.3f},{x1:.3f},{y1:.3f}) vs {asset.source_box}"


def test_a_window_projects_the_boxes_into_that_crop():
    """Closed form: a point at pixel (px, py) of the photo is at ((px − x0)/w, (py − y0)/h) of the crop."""
    from diorama.nodes.neural_assets import window_fractions
    from diorama.ops.assets import crop_camera, pose_rows
    from diorama.ops.composite_window import CompositeWindow
    from diorama.ops.window import Window

    assets = scene_assets(load_scene(2))
    window = CompositeWindow(Window(40, 200, 60, 180), (512, 512), (256, 256), padding=(0, 0, 20, 20))
    box = window_fractions(window)
    assert box == (40 / 256, 40 / 256, 200 / 256, 200 / 256)
    from dataclasses import replace

    whole = pose_rows(assets, SLOTS)
    cropped = pose_rows(replace(assets, target_camera=crop_camera(assets.target_camera, box)), SLOTS)
    u, v = whole[:2, 0::3].double(), whole[:2, 1::3].double()
    torch.testing.assert_close(cropped[:2, 0::3].double(), (u * 256 - 40) / 160, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cropped[:2, 1::3].double(), (v * 256 - 40) / 160, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cropped[:2, 2::3], whole[:2, 2::3])  # depths
    torch.testing.assert_close(cropped[-1], whole[-1])  # the camera row: same poses
