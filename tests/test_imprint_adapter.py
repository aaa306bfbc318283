"""IMPRINT's identity path: the content-adapter format (save → load → same outputs; wrong shapes,
versions, keys and metadata refused), its reference crop, Identity Encode with it, and the whole
path through the executor on tiny models (inpainting SD1.5 + Composite Sample).

Goldens: the format's documented equations written out here with plain tensor ops on the raw
state dict (not the module under test), BIFRÖST's reference crop from the reference code's golden
arrays, and an OpenCV/numpy crop written from the paper's I ⊗ M."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch

from reference_data import reference_dir
from tiny_imprint import ADAPTER, CONTEXT_DIM, DINOV2, adapter_config, random_adapter

FOLDER = "identity_adapters"


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weight + bias


def documented_forward(sd: dict[str, torch.Tensor], meta: dict[str, str], tokens: torch.Tensor) -> torch.Tensor:
    """The README's imprint_content_adapter v1 equations, in float64, from the file's tensors and metadata."""
    sd = {k: v.double() for k, v in sd.items()}
    eps, heads, depth = float(meta["norm_eps"]), int(meta["heads"]), int(meta["depth"])
    x = tokens.double() @ sd["input_projection.weight"].T + sd["input_projection.bias"]
    if meta["token_mode"] == "queries":
        x = torch.cat((sd["queries"].expand(x.shape[0], -1, -1), x), dim=1)
    for i in range(depth):
        p = f"blocks.{i}."
        h = layer_norm(x, sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        q, k, v = (h @ sd[p + "attention.qkv.weight"].T + sd[p + "attention.qkv.bias"]).chunk(3, dim=-1)
        b, t, w = q.shape
        q, k, v = (m.reshape(b, t, heads, w // heads).transpose(1, 2) for m in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(w // heads), dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(b, t, w)
        x = x + attended @ sd[p + "attention.out_proj.weight"].T + sd[p + "attention.out_proj.bias"]
        h = layer_norm(x, sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        h = h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        x = x + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    x = layer_norm(x, sd["output_norm.weight"], sd["output_norm.bias"], eps)
    if meta["token_mode"] == "queries":
        x = x[:, :int(meta["num_tokens"])]
    return (x @ sd["output_projection.weight"].T + sd["output_projection.bias"]).float()


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safetensors.safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module")
def folder(base_dir) -> Path:
    path = base_dir / "models" / FOLDER
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("num_queries", [16, 0], ids=["queries", "passthrough"])
def test_save_load_gives_the_same_outputs_and_the_documented_maths(folder, node_class, num_queries):
    from diorama.loaders.identity_adapter import apply_identity_adapter, save_imprint_content_adapter

    module = random_adapter(adapter_config(num_queries), seed=40 + num_queries)
    path = folder / f"roundtrip-{num_queries}.safetensors"
    save_imprint_content_adapter(str(path), module, overwrite=True)
    adapter = node_class("DioramaIdentityAdapterLoader").execute(path.name).result[0]
    tokens = torch.randn(2, 257, 64, generator=torch.Generator().manual_seed(41))
    with torch.no_grad():
        before = module(tokens)
    after = apply_identity_adapter(adapter, tokens)
    expected_tokens = num_queries or 257
    assert after.shape == (2, expected_tokens, CONTEXT_DIM)
    assert torch.equal(after, before), "the loaded file must compute what the saved module computed"
    torch.testing.assert_close(after, documented_forward(*read(path), tokens), atol=1e-4, rtol=1e-4)
    # Tokens are per item, and every DINOv2 token matters: change one patch token of item 1 only.
    changed = tokens.clone()
    changed[1, 100] += 1.0
    moved = apply_identity_adapter(adapter, changed)
    assert torch.equal(moved[0], after[0]) and (moved[1] - after[1]).abs().max() > 1e-3


def test_saved_metadata_is_the_documented_format(folder):
    from diorama.loaders.identity_adapter import save_imprint_content_adapter

    path = folder / "metadata.safetensors"
    save_imprint_content_adapter(str(path), random_adapter(adapter_config(), seed=42), overwrite=True)
    tensors, metadata = read(path)
    assert metadata == {
        "diorama_format": "identity_adapter", "diorama_format_version": "1", "architecture": "imprint_content_adapter",
        "encoder": "dinov2", "tokens": "cls+patch", "activation": "gelu", "image_size": "224", "input_dim": "64",
        "input_tokens": "257", "width": "64", "depth": "2", "heads": "2", "mlp_dim": "128", "norm_eps": "1e-05",
        "token_mode": "queries", "num_tokens": "16", "context_dim": "768", "negative": "null_tokens",
        "reference_background": "black"}
    blocks = {f"blocks.{i}.{name}": shape for i in range(2) for name, shape in [
        ("norm1.weight", (64,)), ("norm1.bias", (64,)), ("attention.qkv.weight", (192, 64)),
        ("attention.qkv.bias", (192,)), ("attention.out_proj.weight", (64, 64)), ("attention.out_proj.bias", (64,)),
        ("norm2.weight", (64,)), ("norm2.bias", (64,)), ("mlp.fc1.weight", (128, 64)), ("mlp.fc1.bias", (128,)),
        ("mlp.fc2.weight", (64, 128)), ("mlp.fc2.bias", (64,))]}
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "input_projection.weight": (64, 64), "input_projection.bias": (64,), "queries": (16, 64), **blocks,
        "output_norm.weight": (64,), "output_norm.bias": (64,), "output_projection.weight": (768, 64),
        "output_projection.bias": (768,)}
    with pytest.raises(FileExistsError, match="already exists"):
        save_imprint_content_adapter(str(path), random_adapter(adapter_config(), seed=42))


def good_file() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from diorama.loaders.identity_adapter import imprint_metadata

    module = random_adapter(adapter_config(), seed=43)
    return dict(module.state_dict()), imprint_metadata(module.config, 224, "null_tokens", "black")


def without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize("edit, message", [
    (lambda sd, md: (sd, {**md, "diorama_format_version": "2"}),
     r"'imprint_content_adapter' format version '2' is not supported by this Diorama; supported: linear v1, imprint_content_adapter v1"),
    (lambda sd, md: (sd, {**md, "architecture": "imprint_adapter"}), "'imprint_adapter' format version '1' is not supported"),
    (lambda sd, md: (sd, without(md, "diorama_format")), "is not a Diorama identity adapter"),
    (lambda sd, md: (without(sd, "blocks.1.mlp.fc2.weight"), md), r"missing \['blocks.1.mlp.fc2.weight'\]"),
    (lambda sd, md: (without(sd, "queries"), md), r"missing \['queries'\]"),
    (lambda sd, md: ({**sd, "extra.weight": torch.zeros(1)}, md), r"unknown \['extra.weight'\]"),
    (lambda sd, md: ({**sd, "output_projection.weight": torch.zeros(1024, 64)}, md),
     r"output_projection.weight \(1024, 64\) \(expected \(768, 64\)\)"),
    (lambda sd, md: ({**sd, "input_projection.weight": torch.zeros(64, 1536)}, md),
     r"input_projection.weight \(64, 1536\) \(expected \(64, 64\)\)"),
    (lambda sd, md: (sd, {**md, "depth": "3"}), r"missing \['blocks.2."),
    (lambda sd, md: (sd, {**md, "context_dim": "1024"}), r"output_projection.weight \(768, 64\) \(expected \(1024, 64\)\)"),
    (lambda sd, md: (sd, {**md, "heads": "3"}), "width 64 is not divisible by heads 3"),
    (lambda sd, md: (sd, {**md, "width": "x"}), r"width='x', expected a positive integer"),
    (lambda sd, md: (sd, without(md, "input_tokens")), r"input_tokens=None, expected a positive integer"),
    (lambda sd, md: (sd, {**md, "norm_eps": "-1"}), r"norm_eps='-1', expected a positive number"),
    (lambda sd, md: (sd, {**md, "token_mode": "pooled"}), r"token_mode='pooled', expected one of \('queries', 'passthrough'\)"),
    (lambda sd, md: (without(sd, "queries"), {**md, "token_mode": "passthrough"}),
     r"num_tokens \(16\) must equal input_tokens \(257\)"),
    (lambda sd, md: (sd, {**md, "negative": "zeros"}), r"negative='zeros', expected one of \('null_tokens', 'zero_image'\)"),
    (lambda sd, md: (sd, {**md, "reference_background": "grey"}), "reference_background='grey'"),
    (lambda sd, md: (sd, {**md, "encoder": "clip"}), "encoder='clip', expected 'dinov2'"),
    (lambda sd, md: (sd, {**md, "activation": "relu"}), "activation='relu', expected 'gelu'"),
], ids=["version 2", "unknown architecture", "no format", "missing block tensor", "missing queries", "unknown tensor",
        "context width", "encoder width", "depth", "context_dim metadata", "heads", "non-integer", "no input_tokens",
        "norm_eps", "token mode", "passthrough count", "negative", "background", "encoder", "activation"])
def test_bad_files_are_clear_errors(folder, node_class, edit, message):
    state_dict, metadata = edit(*good_file())
    path = folder / "bad-imprint.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path), metadata=metadata)
    try:
        with pytest.raises(ValueError, match=message) as error:
            node_class("DioramaIdentityAdapterLoader").execute(path.name)
        assert "bad-imprint.safetensors" in str(error.value), "the message names the file"
    finally:
        path.unlink()


def test_the_writer_refuses_what_the_loader_would_refuse(folder):
    from diorama.loaders.identity_adapter import save_imprint_content_adapter

    with pytest.raises(ValueError, match="negative='zeros'"):
        save_imprint_content_adapter(str(folder / "never.safetensors"), random_adapter(adapter_config(), 44),
                                     negative="zeros")
    assert not (folder / "never.safetensors").exists()


def golden_crop_inputs(case: str = "case0_partial_occlusion"):
    golden = np.load(reference_dir("bifrost") / f"{case}.npz")
    return golden, torch.from_numpy(golden["in_ref_image"]), torch.from_numpy(golden["in_ref_mask"])


def test_white_fill_is_bifrosts_reference_crop():
    from diorama.ops.imprint_adapter import object_crop

    golden, image, mask = golden_crop_inputs()
    crop, crop_mask = object_crop(image, mask, 255)
    assert torch.equal(crop, torch.from_numpy(golden["pp_masked_ref_224"]))
    assert torch.equal(crop_mask, torch.from_numpy(golden["pp_ref_mask_224"]))


def test_black_fill_is_the_masked_object_i_times_m():
    """I ⊗ M framed as BIFRÖST frames it, written with numpy and OpenCV from the golden box."""
    from diorama.ops.imprint_adapter import object_crop

    golden, image, mask = golden_crop_inputs()
    y1, y2, x1, x2 = golden["pp_ref_box_yyxx"]
    masked = golden["in_ref_image"] * golden["in_ref_mask"][..., None]
    piece = masked[y1:y2, x1:x2]
    h, w = piece.shape[:2]
    gh, gw = int(h * 1.2), int(w * 1.2)
    top, left = (gh - h) // 2, (gw - w) // 2
    piece = np.pad(piece, ((top, gh - h - top), (left, gw - w - left), (0, 0)))
    side = max(gh, gw)
    first = (side - min(gh, gw)) // 2
    pad = ((0, 0), (first, side - gw - first)) if gh > gw else ((first, side - gh - first), (0, 0))
    piece = np.pad(piece, (*pad, (0, 0)))
    expected = cv2.resize(piece, (224, 224), interpolation=cv2.INTER_LINEAR)
    crop, crop_mask = object_crop(image, mask, 0)
    assert torch.equal(crop, torch.from_numpy(expected))
    assert torch.equal(crop_mask, torch.from_numpy(golden["pp_ref_mask_224"]))
    outside = crop_mask == 0
    assert int(crop[outside].max()) == 0, "nothing of the reference's background is left"
    small, _ = object_crop(image, mask, 0, size=112)
    assert small.shape == (112, 112, 3)


@pytest.fixture(scope="module")
def encoder(base_dir, node_class, tiny_imprint_models):
    clip_vision = node_class("DioramaDinoV2Loader").execute(DINOV2).result[0]
    adapter = node_class("DioramaIdentityAdapterLoader").execute(ADAPTER).result[0]
    return clip_vision, adapter


def test_identity_encode_with_the_content_adapter(encoder, node_class, base_dir):
    from diorama.loaders.identity_encoder import dinov2_tokens
    from diorama.ops.identity_tokens import dino_pixels
    from diorama.ops.imprint_adapter import object_crop

    clip_vision, adapter = encoder
    generator = torch.Generator().manual_seed(45)
    images = torch.randint(0, 256, (2, 64, 80, 3), generator=generator).float() / 255
    mask = torch.zeros(1, 64, 80)
    mask[:, 12:50, 15:70] = 1
    positive, negative, crop = node_class("DioramaIdentityEncode").execute(clip_vision, adapter, images, mask).result
    assert positive[0][0].shape == (2, 16, CONTEXT_DIM) and negative[0][0].shape == (2, 16, CONTEXT_DIM)
    sd, meta = read(base_dir / "models" / FOLDER / ADAPTER)
    # The negative is the adapter on the null input: all-zero DINOv2 tokens, as the metadata says.
    assert meta["negative"] == "null_tokens"
    null = documented_forward(sd, meta, torch.zeros(1, 257, 64))
    torch.testing.assert_close(negative[0][0], null.expand(2, -1, -1), atol=1e-4, rtol=1e-4)
    # The positive: DINOv2 on the black-background crop, then the adapter.
    expected_crop, _ = object_crop((images[1] * 255).round().to(torch.uint8), mask[0], 0)
    assert torch.equal((crop[1] * 255).round().to(torch.uint8), expected_crop)
    tokens = dinov2_tokens(clip_vision, dino_pixels(expected_crop[None]))
    torch.testing.assert_close(positive[0][0][1:], documented_forward(sd, meta, tokens), atol=1e-4, rtol=1e-4)
    assert (positive[0][0][0] - positive[0][0][1]).abs().max() > 1e-2, "another reference gives other tokens"
    assert (positive[0][0][0] - negative[0][0][0]).abs().max() > 1e-2


def test_a_dinov2_of_another_geometry_is_refused_before_encoding(base_dir, folder, node_class):
    """An adapter for 257 tokens (14-px patches at 224²) and a 128-wide DINOv2 with 8-px patches (785 tokens)."""
    from tiny_dinov2 import write_dinov2_models

    from diorama.loaders.identity_adapter import save_imprint_content_adapter

    write_dinov2_models(base_dir / "models" / "clip_vision")
    save_imprint_content_adapter(str(folder / "wide.safetensors"), random_adapter(adapter_config(input_dim=128), 46),
                                 overwrite=True)
    adapter = node_class("DioramaIdentityAdapterLoader").execute("wide.safetensors").result[0]
    clip_vision = node_class("DioramaDinoV2Loader").execute("tiny-dinov2-mlp.safetensors").result[0]
    with pytest.raises(ValueError, match="reads 257 DINOv2 tokens but this DINOv2 \\(patch 8\\) makes 785 at 224²"):
        node_class("DioramaIdentityEncode").execute(clip_vision, adapter, torch.rand(1, 48, 64, 3), torch.ones(1, 48, 64))


def graph(invert_reference: bool = False, prefix: str = "imprint_e2e") -> dict:
    """Bundled scene → box-level shape mask → window; inpainting SD1.5; IMPRINT tokens; one step of
    Composite Sample (blend, CFG 3 against the null tokens) whose window latent is saved."""
    return {
        "1": {"class_type": "DioramaBundledScene", "inputs": {"width": 256, "height": 192, "reference_size": 128}},
        "2": {"class_type": "DioramaShapeMask", "inputs": {"object_mask": ["1", 3], "placement": ["1", 5], "level": 0}},
        "3": {"class_type": "DioramaCompositeWindow",
              "inputs": {"background": ["1", 0], "mask": ["2", 0], "expansion": 2.0, "resolution": 128,
                         "area": "around the object"}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd-v1-5-inpainting.safetensors"}},
        "5": {"class_type": "DioramaDinoV2Loader", "inputs": {"clip_name": DINOV2}},
        "6": {"class_type": "DioramaIdentityAdapterLoader", "inputs": {"adapter_name": ADAPTER}},
        "10": {"class_type": "ImageInvert", "inputs": {"image": ["1", 2]}},
        "7": {"class_type": "DioramaIdentityEncode",
              "inputs": {"clip_vision": ["5", 0], "identity_adapter": ["6", 0],
                         "reference": ["10", 0] if invert_reference else ["1", 2], "reference_mask": ["1", 3]}},
        "8": {"class_type": "DioramaCompositeSample",
              "inputs": {"model": ["4", 0], "positive": ["7", 0], "negative": ["7", 1], "vae": ["4", 2],
                         "background": ["1", 0], "window": ["3", 0], "blend_mask": ["2", 0], "seed": 7, "steps": 1,
                         "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, "batch_size": 1,
                         "feather_px": 4.0, "colour_match": True, "stitch": "blend"}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 1], "filename_prefix": f"latents/{prefix}"}},
    }


@pytest.fixture(scope="module")
def sample(run_prompt, base_dir, tiny_sd_models, tiny_imprint_models):
    def run(**changes) -> torch.Tensor:
        report = run_prompt(graph(**changes))
        saved = report.outputs["9"]["latents"][0]
        return safetensors.torch.load_file(str(Path(base_dir) / "output" / saved["subfolder"] / saved["filename"]))[
            "latent_tensor"]

    return run


def test_reference_tokens_reach_the_inpainting_model(sample):
    base = sample()
    assert base.shape == (1, 4, 16, 16)
    assert torch.equal(sample(prefix="imprint_repeat"), base), "the same graph samples the same latent"
    changed = sample(invert_reference=True, prefix="imprint_inverted")
    assert not torch.allclose(changed, base, atol=1e-6), "another reference image must change the sample"
