"""Depth estimation through the node, on tiny random Depth Anything V2 and DPT models saved offline."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_depth import MODELS


@pytest.fixture(scope="module")
def depth_folder(tiny_depth_models):
    return tiny_depth_models


def scene_prompt(model_name: str, width: int = 96, height: int = 64) -> dict:
    return {
        "1": {"class_type": "DioramaBundledScene", "inputs": {"width": width, "height": height, "reference_size": 64}},
        "2": {"class_type": "DioramaDepthModelLoader", "inputs": {"model_name": model_name}},
        "3": {"class_type": "DioramaDepthEstimate", "inputs": {"depth_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 1], "filename_prefix": f"depth_{model_name}"}},
    }


def test_loader_lists_every_model_folder(depth_folder, node_class):
    spec = node_class("DioramaDepthModelLoader").INPUT_TYPES()["required"]["model_name"]
    options = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
    assert set(MODELS) <= set(options)


@pytest.mark.parametrize("model_name", MODELS)
def test_estimate_through_the_executor(depth_folder, run_prompt, base_dir, model_name):
    report = run_prompt(scene_prompt(model_name))
    saved = report.outputs["4"]["images"][0]
    preview = np.asarray(Image.open(base_dir / "output" / saved["filename"]))
    assert preview.shape == (64, 96, 3)
    assert preview.std() > 0, "the preview must show depth structure"


@pytest.mark.parametrize("model_name, kind", [(MODELS[0], "disparity"), (MODELS[1], "metric"), (MODELS[2], "disparity")])
def test_batch_is_estimated_item_by_item_with_its_kind(depth_folder, node_class, model_name, kind):
    model = node_class("DioramaDepthModelLoader").execute(model_name).result[0]
    images = torch.rand(2, 50, 70, 3)
    depth, preview = node_class("DioramaDepthEstimate").execute(model, images).result
    assert depth.kind == kind and depth.values.shape == (2, 50, 70) and preview.shape == (2, 50, 70, 3)
    single = node_class("DioramaDepthEstimate").execute(model, images[1:]).result[0]
    torch.testing.assert_close(depth.values[1:], single.values)
    if kind == "metric":
        assert bool((depth.values > 0).all())


@pytest.mark.parametrize("model_name", [MODELS[0], MODELS[2]])
def test_matches_the_transformers_processor_and_post_processing(depth_folder, node_class, model_name):
    """The node's tensor preprocessing reproduces what the model's own processor feeds it."""
    from transformers import AutoModelForDepthEstimation, DPTImageProcessor

    folder = depth_folder / model_name
    processor = DPTImageProcessor.from_pretrained(folder, local_files_only=True)
    reference_model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True).eval()
    rgb = (np.random.default_rng(1).random((60, 80, 3)) * 255).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(rgb).resize((80, 60), Image.BILINEAR))
    with torch.no_grad():
        inputs = processor(images=Image.fromarray(rgb), return_tensors="pt")
        output = reference_model(**inputs)
    expected = processor.post_process_depth_estimation(output, target_sizes=[(60, 80)])[0]["predicted_depth"]
    model = node_class("DioramaDepthModelLoader").execute(model_name).result[0]
    ours = node_class("DioramaDepthEstimate").execute(model, torch.from_numpy(rgb / 255.0).float()[None]).result[0]
    assert inputs["pixel_values"].shape[-2:] == model.preprocessing.input_size(60, 80)
    correlation = np.corrcoef(ours.values[0].flatten().numpy(), expected.flatten().numpy())[0, 1]
    assert correlation > 0.97


def test_missing_model_folder_names_the_folders_searched(depth_folder, node_class):
    with pytest.raises(FileNotFoundError, match="was not found in the 'depth_estimation' model folders: .*depth_estimation"):
        node_class("DioramaDepthModelLoader").execute("no-such-model")


def test_pickled_weights_are_refused(depth_folder, node_class):
    pickled = depth_folder / "pickled-only"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "dpt"}))
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="no .safetensors weights"):
        node_class("DioramaDepthModelLoader").execute("pickled-only")


def test_model_is_managed_by_comfy(depth_folder, node_class):
    import comfy.model_management
    import comfy.model_patcher

    model = node_class("DioramaDepthModelLoader").execute(MODELS[0]).result[0]
    assert isinstance(model.patcher, comfy.model_patcher.ModelPatcher)
    node_class("DioramaDepthEstimate").execute(model, torch.rand(1, 32, 32, 3))
    assert any(loaded.model is model.patcher for loaded in comfy.model_management.current_loaded_models)
