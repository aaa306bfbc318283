"""IdentityEncode: DINOv2 at 224² with DINOv2's own position resizing, identity adapters, and the node.

Goldens: the reference's DINOv2 input tensors (BIFRÖST goldens), an independent transformers
Dinov2Model holding the same weights with positions resized by a hand-written bicubic written from
DINOv2's formula, ComfyUI's own DINOv2 forward at its native size, and the published state-dict
manifest of BIFRÖST's DINOv2-g.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from reference_data import reference_dir
from tiny_dinov2 import SPECS, from_comfy_layout, to_comfy_layout, transformers_dinov2, write_dinov2_models

GOLDENS = reference_dir("bifrost")
CASES = ("case0_partial_occlusion", "case1_in_front", "real_repo_example")
ADAPTER = "tiny-adapter.safetensors"


@pytest.fixture(scope="module")
def models(base_dir):
    from diorama.loaders.identity_adapter import save_identity_adapter

    write_dinov2_models(base_dir / "models" / "clip_vision")
    adapters = base_dir / "models" / "identity_adapters"
    adapters.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(1)
    save_identity_adapter(str(adapters / ADAPTER), torch.randn(1024, 64, generator=generator) * 0.1,
                          torch.randn(1024, generator=generator) * 0.1, "bifrost")
    return base_dir / "models"


def load(node_class, name="tiny-dinov2-swiglu"):
    return node_class("DioramaDinoV2Loader").execute(f"{name}.safetensors").result[0]


def keys_cubic(distance: np.ndarray, a: float = -0.75) -> np.ndarray:
    d = np.abs(distance)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def bicubic_matrix(size_in: int, size_out: int, scale: float) -> np.ndarray:
    """Rows map an input axis to an output axis: source x = (i + 0.5)·scale − 0.5, taps clamped at the edges."""
    matrix = np.zeros((size_out, size_in))
    for i in range(size_out):
        x = (i + 0.5) * scale - 0.5
        base = math.floor(x)
        for tap in range(base - 1, base + 3):
            matrix[i, min(max(tap, 0), size_in - 1)] += keys_cubic(np.array(x - tap))
    return matrix


def reference_positions(positions: torch.Tensor, grid: int) -> torch.Tensor:
    """DINOv2's resize written out: scale factor (grid + 0.1)/M, so the source step is M/(grid + 0.1)."""
    side = math.isqrt(positions.shape[1] - 1)
    table = positions[0, 1:].double().numpy().reshape(side, side, -1)
    matrix = bicubic_matrix(side, grid, side / (grid + 0.1))
    resized = np.einsum("ih,jw,hwc->ijc", matrix, matrix, table).reshape(grid * grid, -1)
    return torch.cat((positions[0, :1].double(), torch.from_numpy(resized)))[None]


def independent_tokens(clip_vision, name: str, pixels: torch.Tensor) -> torch.Tensor:
    """transformers' Dinov2Model holding the weights ComfyUI holds, positions from reference_positions."""
    model = transformers_dinov2(name)
    state = {k: v.float() for k, v in clip_vision.get_sd().items()}
    model.load_state_dict(from_comfy_layout(state))
    grid = pixels.shape[-1] // SPECS[name]["patch_size"]
    resized = reference_positions(state["embeddings.position_embeddings"], grid).float()
    model.embeddings.position_embeddings = torch.nn.Parameter(resized)
    with torch.no_grad():
        return model(pixel_values=pixels).last_hidden_state


@pytest.mark.parametrize("case", CASES)
def test_dino_pixels_match_the_reference_inputs(case):
    from diorama.ops.identity_tokens import dino_pixels

    golden = np.load(GOLDENS / f"{case}.npz")
    crop = torch.from_numpy(golden["pp_masked_ref_224"])[None]
    torch.testing.assert_close(dino_pixels(crop), torch.from_numpy(golden["dino_input"]), atol=1e-5, rtol=0)
    black = dino_pixels(torch.zeros(1, 224, 224, 3, dtype=torch.uint8))
    torch.testing.assert_close(black, torch.from_numpy(golden["dino_uncond_input"]), atol=1e-5, rtol=0)


def test_loader_infers_each_architecture(models, node_class):
    from diorama.loaders.identity_encoder import infer_dinov2_config

    for name, spec in SPECS.items():
        state = safetensors.torch.load_file(str(models / "clip_vision" / f"{name}.safetensors"))
        config = infer_dinov2_config(state)
        assert (config.hidden_size, config.num_layers, config.num_heads, config.patch_size, config.swiglu) == (
            spec["hidden_size"], spec["num_hidden_layers"], spec["num_attention_heads"], spec["patch_size"],
            spec["use_swiglu_ffn"])
        assert config.grid == spec["image_size"] // spec["patch_size"]
        import comfy.clip_vision

        assert isinstance(load(node_class, name), comfy.clip_vision.ClipVisionModel)


def test_giant_layout_matches_the_published_bifrost_encoder():
    """DINOv2-g in ComfyUI's layout (meta tensors) → the config, and a ComfyUI model of exactly the
    published parameter count of BIFRÖST's `cond_stage_model.model`."""
    import comfy.image_encoders.dino2
    import comfy.ops
    from transformers import Dinov2Config, Dinov2Model

    from diorama.loaders.identity_encoder import comfy_dinov2_config, infer_dinov2_config

    with torch.device("meta"):
        giant = Dinov2Model(Dinov2Config(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24,
                                         use_swiglu_ffn=True, patch_size=14, image_size=518))
    config = infer_dinov2_config(to_comfy_layout(giant.state_dict()))
    assert (config.hidden_size, config.num_layers, config.num_heads, config.patch_size, config.grid, config.swiglu) \
        == (1536, 40, 24, 14, 37, True)
    comfy_model = comfy.image_encoders.dino2.Dinov2Model(comfy_dinov2_config(config), torch.float16, "meta",
                                                         comfy.ops.manual_cast)
    manifest = json.loads((GOLDENS / "bifrost_state_dict_manifest.json").read_text())
    published = sum(math.prod(shape) for key, shape in manifest.items() if key.startswith("cond_stage_model.model."))
    assert sum(p.numel() for p in comfy_model.parameters()) == published
    projector = manifest["cond_stage_model.projector.weight"]
    assert projector == [1024, 1536]


@pytest.mark.parametrize("name", list(SPECS))
def test_224_tokens_equal_an_independent_implementation(models, node_class, name):
    from diorama.loaders.identity_encoder import dinov2_tokens

    clip_vision = load(node_class, name)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    ours = dinov2_tokens(clip_vision, pixels)
    grid = 224 // SPECS[name]["patch_size"]
    assert ours.shape == (2, 1 + grid * grid, SPECS[name]["hidden_size"])
    torch.testing.assert_close(ours, independent_tokens(clip_vision, name, pixels), atol=1e-5, rtol=1e-5)


def test_position_resize_is_dinov2s_not_a_plain_resize(models, node_class):
    """The +0.1 scale factor moves the sampling points: a resize to size=16 gives other positions."""
    from diorama.ops.identity_tokens import interpolate_position_embeddings

    positions = load(node_class).model.embeddings.position_embeddings.detach().float()
    ours = interpolate_position_embeddings(positions, 16, 16)
    torch.testing.assert_close(ours.double(), reference_positions(positions, 16), atol=1e-5, rtol=0)
    grid = positions[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    plain = torch.nn.functional.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False)
    assert (ours[0, 1:] - plain.permute(0, 2, 3, 1).reshape(256, -1)).abs().max() > 1e-3
    assert interpolate_position_embeddings(positions, 37, 37) is positions


@pytest.mark.parametrize("name", list(SPECS))
def test_native_size_tokens_equal_comfyuis_forward(models, node_class, name):
    from diorama.loaders.identity_encoder import dinov2_tokens

    clip_vision = load(node_class, name)
    size = SPECS[name]["image_size"]
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        comfy_tokens = clip_vision.model(pixel_values=pixels)[0]
    torch.testing.assert_close(dinov2_tokens(clip_vision, pixels), comfy_tokens.float(), atol=1e-5, rtol=1e-5)


def write_reference(folder: Path, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured 90×120 photo and an ellipse mask, as PNGs LoadImage / LoadImageMask read."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:90, :120]
    mask = (((yy - 45) / 30.0) ** 2 + ((xx - 60) / 40.0) ** 2 <= 1).astype(np.uint8)
    Image.fromarray(rgb).save(folder / f"{name}.png")
    Image.fromarray(mask * 255).save(folder / f"{name}_mask.png")
    return rgb, mask


def encode_prompt(reference: str) -> dict:
    return {
        "1": {"class_type": "DioramaDinoV2Loader", "inputs": {"clip_name": "tiny-dinov2-swiglu.safetensors"}},
        "2": {"class_type": "DioramaIdentityAdapterLoader", "inputs": {"adapter_name": ADAPTER}},
        "3": {"class_type": "LoadImage", "inputs": {"image": f"{reference}.png"}},
        "4": {"class_type": "LoadImageMask", "inputs": {"image": f"{reference}_mask.png", "channel": "red"}},
        "5": {"class_type": "DioramaIdentityEncode", "inputs": {"clip_vision": ["1", 0], "identity_adapter": ["2", 0],
                                                                "reference": ["3", 0], "reference_mask": ["4", 0]}},
        "6": {"class_type": "DioramaTestCapture", "inputs": {"positive": ["5", 0], "negative": ["5", 1],
                                                             "crop": ["5", 2]}},
    }


class Capture:
    """Output node that keeps what it receives, so a test can read a CONDITIONING from the executor."""

    seen: dict = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "crop": ("IMAGE",)}}

    RETURN_TYPES = ()
    FUNCTION = "capture"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def capture(self, positive, negative, crop):
        Capture.seen.update(positive=positive, negative=negative, crop=crop)
        return {}


def zero_image_tokens(clip_vision, adapter) -> torch.Tensor:
    from diorama.loaders.identity_adapter import apply_identity_adapter
    from diorama.loaders.identity_encoder import dinov2_tokens
    from diorama.ops.identity_tokens import DINO_MEAN, DINO_STD

    # The reference's unconditional input: zeros before normalisation, written from its formula.
    pixels = ((torch.zeros(1, 3, 224, 224) - torch.tensor(DINO_MEAN).view(1, 3, 1, 1))
              / torch.tensor(DINO_STD).view(1, 3, 1, 1))
    return apply_identity_adapter(adapter, dinov2_tokens(clip_vision, pixels))


def test_node_through_the_executor(models, base_dir, run_prompt, node_class, monkeypatch):
    import nodes

    from diorama.ops.bifrost_reference import reference_crop

    rgb, mask = write_reference(base_dir / "input", "identity_ref", seed=5)
    monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, "DioramaTestCapture", Capture)
    run_prompt(encode_prompt("identity_ref"))
    positive, negative, crop = Capture.seen["positive"], Capture.seen["negative"], Capture.seen["crop"]
    assert len(positive) == 1 and positive[0][1] == {} and positive[0][0].shape == (1, 257, 1024)
    assert negative[0][0].shape == (1, 257, 1024)
    clip_vision = load(node_class)
    adapter = node_class("DioramaIdentityAdapterLoader").execute(ADAPTER).result[0]
    torch.testing.assert_close(negative[0][0], zero_image_tokens(clip_vision, adapter), atol=1e-5, rtol=1e-5)
    expected_crop, _ = reference_crop(torch.from_numpy(rgb), torch.from_numpy(mask))
    assert crop.shape == (1, 224, 224, 3)
    assert torch.equal((crop[0] * 255).round().to(torch.uint8), expected_crop)
    assert (positive[0][0] - negative[0][0]).abs().max() > 1e-2


def test_positive_follows_the_reference_and_batches(models, node_class):
    clip_vision = load(node_class)
    adapter = node_class("DioramaIdentityAdapterLoader").execute(ADAPTER).result[0]
    encode = node_class("DioramaIdentityEncode")
    generator = torch.Generator().manual_seed(6)
    images = torch.randint(0, 256, (2, 64, 80, 3), generator=generator).float() / 255
    mask = torch.zeros(1, 64, 80)
    mask[:, 10:50, 15:70] = 1
    both = encode.execute(clip_vision, adapter, images, mask).result
    assert both[0][0][0].shape == (2, 257, 1024) and both[1][0][0].shape == (2, 257, 1024)
    assert both[2].shape == (2, 224, 224, 3)
    first = encode.execute(clip_vision, adapter, images[:1], mask).result
    second = encode.execute(clip_vision, adapter, images[1:], mask).result
    torch.testing.assert_close(both[0][0][0][:1], first[0][0][0])
    torch.testing.assert_close(both[0][0][0][1:], second[0][0][0])
    assert (first[0][0][0] - second[0][0][0]).abs().max() > 1e-2, "another reference must give other tokens"
    torch.testing.assert_close(first[1][0][0], second[1][0][0])
    # One reference, a batch of masks: each mask picks its own part of the photo.
    masks = torch.cat([mask, torch.flip(mask, dims=[1])])
    by_mask = encode.execute(clip_vision, adapter, images[:1], masks).result
    assert by_mask[0][0][0].shape == (2, 257, 1024)
    torch.testing.assert_close(by_mask[0][0][0][:1], first[0][0][0])


@pytest.mark.parametrize("change, message", [
    (lambda image, mask: (image, torch.zeros_like(mask)), "mask is empty"),
    (lambda image, mask: (image, mask[:, :, :40]), "same width and height"),
    (lambda image, mask: (image.expand(3, -1, -1, -1), mask.expand(2, -1, -1)), "batch sizes do not match"),
])
def test_bad_references_are_refused(models, node_class, change, message):
    clip_vision = load(node_class)
    adapter = node_class("DioramaIdentityAdapterLoader").execute(ADAPTER).result[0]
    image, mask = torch.rand(1, 48, 64, 3), torch.zeros(1, 48, 64)
    mask[:, 10:30, 10:40] = 1
    with pytest.raises(ValueError, match=message):
        node_class("DioramaIdentityEncode").execute(clip_vision, adapter, *change(image, mask))


def test_a_one_row_object_is_refused(models, node_class):
    clip_vision = load(node_class)
    adapter = node_class("DioramaIdentityAdapterLoader").execute(ADAPTER).result[0]
    mask = torch.zeros(1, 48, 64)
    mask[:, 20, 5:60] = 1
    with pytest.raises(ValueError, match="single row or column"):
        node_class("DioramaIdentityEncode").execute(clip_vision, adapter, torch.rand(1, 48, 64, 3), mask)


def test_adapter_width_must_match_the_encoder(models, node_class):
    adapter = node_class("DioramaIdentityAdapterLoader").execute(ADAPTER).result[0]
    mask = torch.ones(1, 48, 64)
    with pytest.raises(ValueError, match="expects 64-wide DINOv2 tokens but clip_vision makes 128-wide"):
        node_class("DioramaIdentityEncode").execute(load(node_class, "tiny-dinov2-mlp"), adapter,
                                                    torch.rand(1, 48, 64, 3), mask)


def test_saved_adapter_metadata_is_the_version_1_format(models):
    with safetensors.safe_open(str(models / "identity_adapters" / ADAPTER), "pt") as f:
        assert f.metadata() == {"diorama_format": "identity_adapter", "diorama_format_version": "1",
                                "architecture": "linear", "encoder": "dinov2", "tokens": "cls+patch",
                                "image_size": "224", "negative": "zero_image", "source": "bifrost"}
        assert set(f.keys()) == {"projection.weight", "projection.bias"}


GOOD_METADATA = {"diorama_format": "identity_adapter", "diorama_format_version": "1", "architecture": "linear",
                 "encoder": "dinov2", "tokens": "cls+patch", "image_size": "224", "negative": "zero_image",
                 "source": "anydoor"}


@pytest.mark.parametrize("metadata, tensors, message", [
    ({}, None, "not a Diorama identity adapter"),
    ({"diorama_format_version": "2"}, None, "format version '2' is not supported"),
    ({"architecture": "perceiver"}, None, "'perceiver' format version '1' is not supported"),
    ({"source": "other"}, None, "source='other'"),
    ({"image_size": "518"}, None, "image_size='518'"),
    ({}, {"projection.weight": torch.zeros(1024, 64)}, "expected exactly"),
    ({}, {"projection.weight": torch.zeros(1024, 64), "projection.bias": torch.zeros(512)}, r"expected \[out, in\]"),
])
def test_bad_adapters_are_refused(models, node_class, metadata, tensors, message):
    folder = models / "identity_adapters"
    full = {} if metadata == {} and tensors is None else {**GOOD_METADATA, **metadata}
    tensors = tensors or {"projection.weight": torch.zeros(1024, 64), "projection.bias": torch.zeros(1024)}
    safetensors.torch.save_file(tensors, str(folder / "bad.safetensors"), metadata=full)
    try:
        with pytest.raises(ValueError, match=message):
            node_class("DioramaIdentityAdapterLoader").execute("bad.safetensors")
    finally:
        (folder / "bad.safetensors").unlink()


def test_missing_and_wrong_model_files(models, node_class):
    with pytest.raises(FileNotFoundError, match="not found in the 'clip_vision' model folders: .*clip_vision"):
        node_class("DioramaDinoV2Loader").execute("no-such.safetensors")
    with pytest.raises(FileNotFoundError, match="not found in the 'identity_adapters' model folders: .*identity_adapters"):
        node_class("DioramaIdentityAdapterLoader").execute("no-such.safetensors")
    clip_like = models / "clip_vision" / "clip-like.safetensors"
    safetensors.torch.save_file({"vision_model.embeddings.class_embedding": torch.zeros(8)}, str(clip_like))
    try:
        with pytest.raises(ValueError, match="CLIP/SigLIP vision model: expected DINOv2 weights"):
            node_class("DioramaDinoV2Loader").execute("clip-like.safetensors")
    finally:
        clip_like.unlink()


def test_encode_refuses_a_clip_model(models, node_class):
    from diorama.loaders.identity_encoder import dinov2_tokens

    class NotDino:
        model = torch.nn.Linear(2, 2)

    with pytest.raises(ValueError, match="holds a Linear, not DINOv2"):
        dinov2_tokens(NotDino(), torch.zeros(1, 3, 224, 224))


def test_a_file_of_another_model_is_refused_from_its_header_alone(tmp_path, monkeypatch):
    """A CLIP vision file in the DINOv2 loader: refused before any weight is read (a DINOv2-g is
    over a gigabyte; the header says enough)."""
    import comfy.utils

    from diorama.loaders.identity_encoder import load_dinov2

    path = tmp_path / "clip_vit.safetensors"
    safetensors.torch.save_file({"vision_model.embeddings.patch_embedding.weight": torch.zeros(8, 3, 4, 4),
                                 "vision_model.post_layernorm.weight": torch.zeros(8)}, str(path))

    def weights_read(*args, **kwargs):
        raise AssertionError("the weights were read before the file was recognised as another model")

    monkeypatch.setattr(comfy.utils, "load_torch_file", weights_read)
    with pytest.raises(ValueError, match=r"clip_vit.safetensors is a CLIP/SigLIP vision model: expected DINOv2 weights"):
        load_dinov2(str(path))
