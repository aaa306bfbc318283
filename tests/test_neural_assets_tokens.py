"""Neural Assets tokens against the reference's goldens (Flax/JAX outputs, make_goldens.py):
RoIAlign, box masks, the two masked DINO inputs, appearance features, the adapter's tokens and
their CFG-null version, and the converter from the reference's params.npz through the loader node."""
from __future__ import annotations

import numpy as np
import pytest
import safetensors.torch
import torch
from reference_data import reference_dir

from diorama.loaders.neural_assets_adapter import (AdapterFormatError, adapter_from_state_dict, config_metadata,
                                                   flax_to_state_dict, read_flax_params)
from diorama.ops.neural_assets_tokens import (NeuralAssetsAdapter, NeuralAssetsConfig, appearance_features,
                                              background_pass_image, box_masks, dino_input, foreground_mask,
                                              object_pass_image, slot_appearance_features)
from diorama.ops.roi_align import resample_weights, roi_align

TOL = 1e-4
REF = reference_dir("neural_assets")


def load(name: str) -> dict[str, torch.Tensor]:
    with np.load(REF / name, allow_pickle=False) as data:
        return {key: torch.from_numpy(data[key]) for key in data.files}


@pytest.fixture(scope="module")
def roi():
    return load("roi_align_12.npz")


@pytest.fixture(scope="module")
def gold():
    return load("tokens_scenes12.npz")


@pytest.fixture(scope="module")
def adapter():
    module = adapter_from_state_dict(flax_to_state_dict(read_flax_params(str(REF / "params.npz"))),
                                     config_metadata(NeuralAssetsConfig(slots=10, feature_dim=768, dino="dino_vitb8")))
    return module


def close(actual: torch.Tensor, expected: torch.Tensor, tol: float = TOL) -> None:
    assert actual.shape == expected.shape
    error = (actual.float() - expected.float()).abs().max().item()
    assert error <= tol, f"max abs error {error:.3g} > {tol}"


@pytest.mark.parametrize("size", [1, 2, 7])
def test_roi_align_every_golden_box(roi, size):
    # The 19 boxes per map include partly-outside, negative-origin, zero, zero-height and one-cell boxes.
    close(roi_align(roi["in_feature_map"], roi["in_boxes"], size), roi[f"out_roi_s{size}"])


def test_box_masks_equal_reference_rasterisation(roi):
    masks = box_masks(roi["in_boxes"], 256, 256)
    assert torch.equal(masks, roi["out_box_masks_256"].bool())


def test_masked_pass_images_and_dino_inputs(gold):
    fg = foreground_mask(gold["in_src_bboxes"][:, :-1], 256, 256)  # objects only: the global box is last
    assert torch.equal(fg, gold["mid_fg_mask"][..., 0])
    objects = object_pass_image(gold["in_src_images"], fg)
    assert torch.equal(objects, gold["mid_appearance_src_image"])
    assert torch.equal(background_pass_image(gold["in_src_images"], fg), gold["in_src_bg_images"])
    close(dino_input(objects), gold["mid_dino_input_fg"])
    close(dino_input(gold["in_src_bg_images"]), gold["mid_dino_input_bg"])


@pytest.mark.parametrize("hw", [(128, 96), (300, 517)])
def test_dino_input_resizes_other_sizes_like_jax(hw):
    # Up- and downscaling, non-square: the same triangle-filter weights the RoIAlign goldens check
    # (jax.image.resize is scale_and_translate with no translation), applied as two matrices.
    image = torch.rand(1, *hw, 3, generator=torch.Generator().manual_seed(0))
    one, zero = torch.tensor(1.0), torch.tensor(0.0)
    rows = resample_weights(hw[0], 224, one * 224 / hw[0], zero).float()
    cols = resample_weights(hw[1], 224, one * 224 / hw[1], zero).float()
    resized = torch.einsum("yh,bhwc,xw->byxc", rows, image, cols)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    close(dino_input(image), (resized - mean) / std)


def test_roi_features_and_appearance_input(gold):
    close(roi_align(gold["mid_feat_fg"], gold["in_src_bboxes"][:, :10], 2), gold["mid_roi_fg"])
    close(roi_align(gold["mid_feat_bg"], gold["in_src_bboxes"][:, 10:], 2), gold["mid_roi_bg"])
    close(slot_appearance_features(gold["mid_feat_fg"], gold["mid_feat_bg"], gold["in_src_bboxes"]),
          gold["mid_app_features_pre_proj"])


def test_appearance_features_zero_empty_boxes():
    features = torch.randn(1, 28, 28, 8)
    boxes = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.5, 0.6]]])
    out = appearance_features(features, boxes)
    assert out.shape == (1, 8, 8)
    assert torch.equal(out[0, :4], torch.zeros(4, 8))  # without zeroing it would be the map's corner
    assert out[0, 4:].abs().sum() > 0


def test_adapter_tokens_equal_goldens(gold, adapter):
    appearance = gold["mid_app_features_pre_proj"]
    poses = gold["in_tgt_object_poses"]
    with torch.no_grad():
        close(adapter.pose_input(poses), gold["mid_pose_input_after_bg_mlp"])
        close(adapter.appearance_tokens(appearance), gold["out_appearance_tokens"])
        close(adapter.pose_tokens(poses), gold["out_object_pose_tokens"])
        close(adapter.tokens(appearance, poses), gold["out_conditioning_tokens"])


def test_null_tokens_are_the_network_on_null_inputs(gold, adapter):
    with torch.no_grad():
        # Null boxes are all zero, so the appearance features are zeroed whatever DINO saw.
        null_features = slot_appearance_features(gold["mid_feat_fg"], gold["mid_feat_bg"], gold["in_null_src_bboxes"])
        assert not null_features.any()
        close(adapter.appearance_tokens(null_features), gold["out_null_appearance_tokens"])
        close(adapter.pose_tokens(gold["in_null_tgt_object_poses"]), gold["out_null_object_pose_tokens"])
        close(adapter.tokens(null_features, gold["in_null_tgt_object_poses"]), gold["out_null_conditioning_tokens"])
        close(adapter.null_tokens(2), gold["out_null_conditioning_tokens"])


def test_gelu_is_the_tanh_approximation(gold, adapter):
    # The exact erf GELU moves the pose tokens by several times the tolerance (6e-4): the goldens tell them apart.
    exact = NeuralAssetsAdapter(adapter.config)
    exact.load_state_dict(adapter.state_dict())
    exact.pose[1].approximate = "none"
    exact.background[1].approximate = "none"
    with torch.no_grad():
        error = (exact.pose_tokens(gold["in_tgt_object_poses"]) - gold["out_object_pose_tokens"]).abs().max()
    assert error > 3 * TOL


def test_adapter_rejects_wrong_shapes(adapter):
    with pytest.raises(ValueError, match=r"\[batch, 44, 768\]"):
        adapter.tokens(torch.zeros(1, 40, 768), torch.zeros(1, 11, 12))
    with pytest.raises(ValueError, match=r"\[batch, 11, 12\]"):
        adapter.tokens(torch.zeros(1, 44, 768), torch.zeros(1, 10, 12))


def test_converter_cli_and_loader_node_give_golden_tokens(tmp_path, base_dir, node_class, gold):
    from diorama.convert import main

    models = base_dir / "models"
    assert main(["neural-assets", str(REF / "params.npz"), "--slots", "10", "--models-dir", str(models),
                 "--name", "na_movi_test"]) == 0
    path = models / "neural_assets" / "na_movi_test.safetensors"
    with safetensors.safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    assert metadata == {"diorama_format": "neural_assets_adapter", "diorama_format_version": "1", "slots": "10",
                        "feature_dim": "768", "dino": "dino_vitb8", "token_dim": "512", "context_dim": "1024",
                        "gelu": "tanh"}
    # Existing files are kept unless --overwrite.
    assert main(["neural-assets", str(REF / "params.npz"), "--slots", "10", "--models-dir", str(models),
                 "--name", "na_movi_test"]) == 2
    loaded = node_class("DioramaNeuralAssetsAdapterLoader").execute("na_movi_test.safetensors").result[0]
    assert loaded.config.slots == 10 and loaded.config.num_tokens == 44
    close(loaded.tokens(gold["mid_app_features_pre_proj"], gold["in_tgt_object_poses"]), gold["out_conditioning_tokens"])
    close(loaded.null_tokens(2), gold["out_null_conditioning_tokens"])


def test_converter_needs_slots(tmp_path, capsys):
    from diorama.convert import main

    assert main(["neural-assets", str(REF / "params.npz"), "--models-dir", str(tmp_path)]) == 2
    assert "--slots" in capsys.readouterr().err


def test_converter_names_unknown_and_missing_parameters(tmp_path):
    params = read_flax_params(str(REF / "params.npz"))
    extra = dict(params, **{"conditioning_encoder/appearance_encoder/image_backbone/embedding/kernel": np.zeros(3)})
    with pytest.raises(AdapterFormatError, match="image_backbone.*fine-tuned DINO"):
        flax_to_state_dict(extra)
    partial = {k: v for k, v in params.items() if not k.startswith("conditioning_neck/")}
    with pytest.raises(AdapterFormatError, match="missing.*conditioning_neck/feed_forward_module/bias"):
        flax_to_state_dict(partial)
    # A 'params/' prefix (flattened variables dict) is accepted.
    assert set(flax_to_state_dict({f"params/{k}": v for k, v in params.items()})) == set(flax_to_state_dict(params))


def test_converter_refuses_pickled_arrays(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, **{"conditioning_neck/feed_forward_module/bias": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(AdapterFormatError, match="plain numpy arrays"):
        flax_to_state_dict(read_flax_params(str(path)))


def test_loader_rejects_bad_files(adapter):
    state_dict = adapter.state_dict()
    metadata = config_metadata(adapter.config)
    with pytest.raises(AdapterFormatError, match="diorama_format"):
        adapter_from_state_dict(state_dict, {}, "x.safetensors")
    with pytest.raises(AdapterFormatError, match="feature_dim 1024"):
        adapter_from_state_dict(state_dict, dict(metadata, feature_dim="1024"), "x.safetensors")
    with pytest.raises(AdapterFormatError, match="gelu"):
        adapter_from_state_dict(state_dict, dict(metadata, gelu="erf"), "x.safetensors")
    with pytest.raises(AdapterFormatError, match="missing \\['neck.bias'\\]"):
        adapter_from_state_dict({k: v for k, v in state_dict.items() if k != "neck.bias"}, metadata, "x.safetensors")
