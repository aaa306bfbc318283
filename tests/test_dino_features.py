"""DINO patch-feature grids: transformers folders through the loader node, and ComfyUI's CLIP_VISION DINOv2.

The layout (patch order, class token and registers dropped, row-major grid) is checked end to end
against the golden script's stand-in DINO: its 8×8 patch projection (rows in (dy, dx, rgb) order)
of the reference's own DINO input gives `mid_feat_*`; a ViTModel holding only that projection
must give LayerNorm(mid_feat_*) from the source images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_data import reference_dir

from diorama.loaders.dino_features import clip_vision_backbone_name, clip_vision_patch_features, patch_features
from diorama.ops.neural_assets_tokens import dino_input

REF = reference_dir("neural_assets")


@pytest.fixture(scope="module")
def gold():
    with np.load(REF / "tokens_scenes12.npz", allow_pickle=False) as data:
        return {key: torch.from_numpy(data[key]) for key in data.files}


@pytest.fixture(scope="module")
def dino_models(base_dir, gold):
    import tiny_dino

    return tiny_dino.write_dino_models(base_dir / "models" / "dino", gold["stub_patch_proj"].numpy())


@pytest.fixture(scope="module")
def load(node_class, dino_models):
    return lambda name: node_class("DioramaDinoLoader").execute(name).result[0]


def test_stub_backbone_reproduces_golden_features(load, gold):
    import tiny_dino

    dino = load("stub-dino-vit8")
    assert dino.name == "dino_vitb8" and dino.prefix_tokens == 1
    for image, feature in (("mid_appearance_src_image", "mid_feat_fg"), ("in_src_bg_images", "mid_feat_bg")):
        out = patch_features(dino, gold[image])
        expected = torch.nn.functional.layer_norm(gold[feature], (768,), eps=tiny_dino.LAYER_NORM_EPS)
        assert out.shape == (2, 28, 28, 768)
        assert (out - expected).abs().max().item() < 1e-3


def test_vit_grid_is_transformers_output_without_class_token(load, dino_models):
    from transformers import ViTModel

    dino = load("tiny-dino-vit8")
    images = torch.rand(2, 256, 256, 3, generator=torch.Generator().manual_seed(1))
    out = patch_features(dino, images)
    assert out.shape == (2, 28, 28, 32)
    model = ViTModel.from_pretrained(dino_models / "tiny-dino-vit8", add_pooling_layer=False).eval()
    with torch.no_grad():
        hidden = model(pixel_values=dino_input(images).permute(0, 3, 1, 2)).last_hidden_state
    # Token 1 + 28·i + j is patch (row i, column j).
    for i, j in ((0, 0), (0, 27), (27, 0), (5, 17)):
        assert torch.allclose(out[:, i, j], hidden[:, 1 + 28 * i + j], atol=1e-5)


def test_dinov2_registers_are_dropped(load, dino_models):
    from transformers import Dinov2WithRegistersModel

    dino = load("tiny-dinov2-reg")
    assert dino.name == "dinov2reg_vit328" and dino.prefix_tokens == 5
    images = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    out = patch_features(dino, images, size=56)  # the learnt 7×7 grid: no position resize
    model = Dinov2WithRegistersModel.from_pretrained(dino_models / "tiny-dinov2-reg").eval()
    with torch.no_grad():
        hidden = model(pixel_values=dino_input(images, 56).permute(0, 3, 1, 2)).last_hidden_state
    assert out.shape == (1, 7, 7, 32)
    assert torch.allclose(out[0, 6, 2], hidden[0, 5 + 6 * 7 + 2], atol=1e-5)
    with pytest.raises(ValueError, match="not a multiple of .* patch size 8"):
        patch_features(dino, images, size=60)


def test_clip_vision_dinov2_grid_matches_transformers(tmp_path):
    import tiny_dinov2

    from diorama.loaders.identity_encoder import load_dinov2

    # tiny-dinov2-mlp: 8-px patches learnt at 80² (10×10); at 80² neither implementation resizes
    # positions, so ComfyUI's DINOv2 and transformers' must agree patch for patch.
    tiny_dinov2.write_dinov2_models(tmp_path)
    clip_vision = load_dinov2(str(tmp_path / "tiny-dinov2-mlp.safetensors"))
    assert clip_vision_backbone_name(clip_vision) == "dinov2_vit1288"
    images = torch.rand(2, 96, 96, 3, generator=torch.Generator().manual_seed(3))
    out = clip_vision_patch_features(clip_vision, images, size=80)
    model = tiny_dinov2.transformers_dinov2("tiny-dinov2-mlp")
    with torch.no_grad():
        # ComfyUI stores CLIP-vision weights in its weight dtype (fp16 on CPU) and computes in fp32.
        for parameter in model.parameters():
            parameter.copy_(parameter.to(clip_vision.dtype).float())
        hidden = model(pixel_values=dino_input(images, 80).permute(0, 3, 1, 2)).last_hidden_state
    assert out.shape == (2, 10, 10, 128)
    assert torch.allclose(out, hidden[:, 1:].reshape(2, 10, 10, 128), atol=1e-4)
    # At the default 224² the positions are resized (DINOv2's own way): 28×28.
    assert clip_vision_patch_features(clip_vision, images).shape == (2, 28, 28, 128)


def test_loader_refuses_non_dino_folders(tmp_path):
    import json

    from diorama.loaders.dino_features import load_dino

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ValueError, match="model_type 'clip' is not a supported DINO"):
        load_dino(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no .safetensors"):
        load_dino(str(tmp_path))
