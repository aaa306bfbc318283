"""Person insertion conditioning: the adapter file format, the token sequence image ⊕ caption ⊕ pose
and its negative, bad inputs, and the whole graph through ComfyUI's executor with the tiny SD1.5
inpainting checkpoint, a tiny DINOv2 and a tiny adapter: image, caption and pose tokens each reach
the model (change one, the sample changes), and every part can be dropped."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

import tiny_person

# A standing person, COCO-17 order, as fractions of a 512² image.
SKELETON = [[0.5, 0.1, 1], [0.52, 0.08, 1], [0.48, 0.08, 1], [0.54, 0.09, 1], [0.46, 0.09, 1], [0.6, 0.2, 1],
            [0.4, 0.2, 1], [0.65, 0.35, 1], [0.35, 0.35, 1], [0.66, 0.5, 1], [0.34, 0.5, 1], [0.57, 0.5, 1],
            [0.43, 0.5, 1], [0.58, 0.7, 1], [0.42, 0.7, 1], [0.58, 0.9, 1], [0.42, 0.9, 1]]
ARMS_UP = [row[:] for row in SKELETON]
ARMS_UP[9], ARMS_UP[10] = [0.7, 0.05, 1], [0.3, 0.05, 1]  # wrists above the head


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory) -> Path:
    return tiny_person.write_adapter(tmp_path_factory.mktemp("person") / "adapter.safetensors", pose_tokens=3)


def test_save_load_gives_the_same_outputs(adapter_file):
    from diorama.loaders.person_adapter import load_person_adapter

    original = tiny_person.adapter_module(pose_tokens=3)
    loaded = load_person_adapter(str(adapter_file))
    assert loaded.config == original.config
    embedding, pose = torch.randn(2, tiny_person.DINOV2_DIM), torch.rand(2, 51)
    with torch.no_grad():
        for a, b in zip(original(embedding, pose), loaded.module(embedding, pose)):
            assert a.shape[0] == 2 and torch.equal(a, b)
    assert torch.equal(loaded.module.pose_null, original.pose_null)


def test_the_pose_layer_is_one_dense_layer_over_x_y_visibility(adapter_file):
    """Closed form: tokens = reshape(W·[x, y, v]₁₇ + b); an invisible joint contributes nothing."""
    from diorama.loaders.person_adapter import load_person_adapter
    from diorama.ops.keypoints import pose_vector

    module = load_person_adapter(str(adapter_file)).module
    points = torch.tensor(SKELETON, dtype=torch.float32)[None]
    hidden = points.clone()
    hidden[0, 3] = torch.tensor([0.9, 0.9, 0.0])  # left ear hidden at some stale position
    weight, bias = module.pose_projection.weight, module.pose_projection.bias
    numbers = points[0].flatten().clone()
    numbers[9:12] = 0  # COCO's (0, 0, 0) for the hidden joint
    expected = (weight @ numbers + bias).reshape(1, 3, 768)
    with torch.no_grad():
        torch.testing.assert_close(module.pose(pose_vector(hidden)), expected)


@pytest.mark.parametrize("change, message", [
    (dict(metadata={"diorama_format_version": "2"}), "format version '2' is not supported"),
    (dict(metadata={"diorama_format": "identity_adapter"}), "is not a Diorama person insertion adapter"),
    (dict(metadata={"token_dim": "1024"}), r"image_projection.weight has shape \[3072, 64\], expected \[4096, 64\]"),
    (dict(tensor=("pose_projection.weight", torch.zeros(2304, 34))), r"expected \[2304, 51\]"),
    (dict(drop="pose_null"), r"missing \['pose_null'\]"),
    (dict(metadata={"image_encoder": "siglip"}), "image encoder 'siglip' is unknown"),
], ids=["version", "format", "token width", "pose shape", "missing tensor", "encoder"])
def test_wrong_files_are_clear_errors(adapter_file, tmp_path, change, message):
    from diorama.loaders.person_adapter import load_person_adapter

    with safetensors.safe_open(str(adapter_file), "pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    metadata.update(change.get("metadata", {}))
    if "tensor" in change:
        tensors[change["tensor"][0]] = change["tensor"][1]
    tensors.pop(change.get("drop"), None)
    bad = tmp_path / "bad.safetensors"
    safetensors.torch.save_file(tensors, str(bad), metadata=metadata)
    with pytest.raises(ValueError, match=message):
        load_person_adapter(str(bad))


@pytest.fixture(scope="module")
def parts(adapter_file, node_class):
    """Loaded adapter, a CLIP-like 768-wide caption, the skeleton, a reference, and the tiny CLIP vision."""
    from diorama.loaders.person_adapter import load_person_adapter
    from diorama.ops.keypoints import from_numbers

    clip_adapter_path = adapter_file.parent / "clip.safetensors"
    tiny_person.write_adapter(clip_adapter_path, image_encoder="clip_vision", image_dim=tiny_person.CLIP_DIM,
                              image_tokens=2, pose_tokens=3, seed=3)
    reference = torch.rand(1, 96, 64, 3)
    mask = torch.zeros(1, 96, 64)
    mask[:, 10:90, 20:50] = 1
    return dict(adapter=load_person_adapter(str(clip_adapter_path)), clip_vision=tiny_person.tiny_clip_vision(),
                caption=[[torch.randn(1, 77, 768), {"pooled_output": torch.randn(1, 768)}]],
                keypoints=from_numbers(SKELETON, 512, 512, "fractions"), reference=reference, mask=mask)


def condition(node_class, parts, **kwargs):
    inputs = dict(person_adapter=parts["adapter"])
    inputs.update(kwargs)
    return node_class("DioramaPersonInsertConditioning").execute(**inputs).result


@pytest.mark.parametrize("use", ["image", "caption", "pose", "image+caption", "image+pose", "image+caption+pose"])
def test_sequence_is_image_caption_pose_with_null_negative(node_class, parts, use):
    """Token layout [m image | 77 caption | k pose]; the negative holds the adapter's nulls and the
    zeroed caption, in the same places (CLIP vision path: image_embeds of the tiny CLIP)."""
    kwargs = {}
    if "image" in use:
        kwargs.update(clip_vision=parts["clip_vision"], reference=parts["reference"], reference_mask=parts["mask"])
    if "caption" in use:
        kwargs.update(caption=parts["caption"])
    if "pose" in use:
        kwargs.update(keypoints=parts["keypoints"])
    positive, negative, crop = condition(node_class, parts, **kwargs)
    module = parts["adapter"].module
    tokens, neg = positive[0][0], negative[0][0]
    blocks = [("image", 2), ("caption", 77), ("pose", 3)]
    start = 0
    assert tokens.shape == neg.shape == (1, sum(n for name, n in blocks if name in use), 768)
    for name, count in blocks:
        if name not in use:
            continue
        got, null = tokens[:, start:start + count], neg[:, start:start + count]
        if name == "caption":
            assert torch.equal(got, parts["caption"][0][0]) and torch.equal(null, torch.zeros_like(null))
            assert torch.equal(negative[0][1]["pooled_output"], torch.zeros(1, 768))
        else:
            assert torch.equal(null[0], getattr(module, f"{name}_null").detach())
            assert not torch.allclose(got, null)
        start += count
    assert crop.shape == (1, 224, 224, 3)


def test_image_tokens_are_the_clip_image_embedding_projected(node_class, parts):
    from diorama.nodes.person import person_crops

    positive, _, crop = condition(node_class, parts, clip_vision=parts["clip_vision"], reference=parts["reference"],
                                  reference_mask=parts["mask"])
    embeds = parts["clip_vision"].encode_image(person_crops(parts["reference"], parts["mask"], 224), crop=False)
    module = parts["adapter"].module
    with torch.no_grad():
        expected = (module.image_projection.weight @ embeds["image_embeds"][0] + module.image_projection.bias)
    torch.testing.assert_close(positive[0][0][0], expected.reshape(2, 768))
    # Outside the mask the crop is grey, whatever the photo held there.
    assert torch.allclose(crop[0, 0, 0], torch.full((3,), 0.5))


def test_negative_caption_is_used_when_given(node_class, parts):
    empty = [[torch.randn(1, 77, 768), {"pooled_output": torch.randn(1, 768)}]]
    _, negative, _ = condition(node_class, parts, caption=parts["caption"], negative_caption=empty,
                               keypoints=parts["keypoints"])
    assert torch.equal(negative[0][0][:, :77], empty[0][0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "needs at least one part"),
    (dict(caption=[[torch.zeros(1, 77, 1024), {}]]), "1024 wide, but the person adapter makes 768-wide tokens"),
    (dict(reference=torch.rand(1, 64, 64, 3)), "no clip_vision"),
    (dict(reference_mask=torch.ones(1, 64, 64)), "reference is not"),
    (dict(keypoints="other skeleton"), "reads only the target skeleton"),
], ids=["no part", "caption width", "reference without encoder", "mask without reference", "reference skeleton"])
def test_bad_inputs_are_clear_errors(node_class, parts, kwargs, message):
    if kwargs.get("keypoints") == "other skeleton":
        kwargs = dict(keypoints=parts["keypoints"], reference_keypoints=parts["keypoints"])
    with pytest.raises(ValueError, match=message):
        condition(node_class, parts, **kwargs)


def test_wrong_encoder_and_invisible_skeleton_are_clear_errors(node_class, parts, base_dir):
    from diorama.loaders.identity_encoder import load_dinov2
    from diorama.ops.keypoints import Keypoints

    from tiny_dinov2 import write_dinov2_models

    folder = write_dinov2_models(base_dir / "models" / "clip_vision")
    dinov2 = load_dinov2(str(folder / "tiny-dinov2-swiglu.safetensors"))
    with pytest.raises(ValueError, match="trained on clip_vision embeddings but clip_vision is dinov2"):
        condition(node_class, parts, clip_vision=dinov2, reference=parts["reference"])
    outside = Keypoints(parts["keypoints"].points + torch.tensor([2.0, 0.0, 0.0]), (512, 512))
    with pytest.raises(ValueError, match="keypoints inside the image: every keypoint"):
        condition(node_class, parts, keypoints=outside)


def test_target_and_reference_skeletons(node_class, parts, tmp_path):
    from diorama.loaders.person_adapter import load_person_adapter
    from diorama.ops.keypoints import from_numbers, pose_vector

    path = tiny_person.write_adapter(tmp_path / "two.safetensors", pose_inputs="target+reference", seed=9)
    adapter = load_person_adapter(str(path))
    other = from_numbers(ARMS_UP, 512, 512, "fractions")
    positive, _, _ = node_class("DioramaPersonInsertConditioning").execute(
        person_adapter=adapter, keypoints=parts["keypoints"], reference_keypoints=other).result
    numbers = torch.cat([pose_vector(parts["keypoints"].points), pose_vector(other.points)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(positive[0][0], adapter.module.pose(numbers))
    with pytest.raises(ValueError, match="connect reference_keypoints"):
        node_class("DioramaPersonInsertConditioning").execute(person_adapter=adapter, keypoints=parts["keypoints"])


def graph(caption: str = "a person standing", skeleton=SKELETON, invert_reference: bool = False,
          use=("image", "caption", "pose"), prefix: str = "person") -> dict:
    """Scene → placement → skeleton retargeted into it → person conditioning (DINOv2 path) → one
    inpainting step in a 64² window, latent saved."""
    reference = ["15", 0] if invert_reference else ["1", 2]
    conditioning = {"person_adapter": ["9", 0], "window": ["10", 0]}
    if "image" in use:
        conditioning.update(clip_vision=["8", 0], reference=reference, reference_mask=["1", 3])
    if "caption" in use:
        conditioning.update(caption=["3", 0], negative_caption=["4", 0])
    if "pose" in use:
        conditioning.update(keypoints=["7", 0])
    return {
        "1": {"class_type": "DioramaBundledScene", "inputs": {"width": 256, "height": 192, "reference_size": 128}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd-v1-5-inpainting.safetensors"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": caption, "clip": ["2", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 1]}},
        "5": {"class_type": "DioramaKeypointsFromNumbers",
              "inputs": {"keypoints_json": json.dumps(skeleton), "unit": "fractions", "width": 512, "height": 512}},
        "6": {"class_type": "DioramaPlacementFromBox",
              "inputs": {"background": ["1", 0], "x0": 0.4, "y0": 0.3, "x1": 0.6, "y1": 0.9, "unit": "fractions",
                         "depth_source": "value", "depth": 2.0, "depth_kind": "metric"}},
        "7": {"class_type": "DioramaRetargetKeypoints",
              "inputs": {"keypoints": ["5", 0], "anchor": "bottom", "x0": 0.0, "y0": 0.0, "x1": 1.0, "y1": 1.0,
                         "placement": ["6", 0]}},
        "8": {"class_type": "DioramaDinoV2Loader", "inputs": {"clip_name": tiny_person.DINOV2}},
        "9": {"class_type": "DioramaPersonAdapterLoader", "inputs": {"adapter_name": tiny_person.ADAPTER}},
        "10": {"class_type": "DioramaCompositeWindow",
               "inputs": {"background": ["1", 0], "placement": ["6", 0], "expansion": 1.5, "resolution": 64,
                          "area": "around the object"}},
        "11": {"class_type": "DioramaPersonInsertConditioning", "inputs": conditioning},
        "12": {"class_type": "DioramaShapeMask", "inputs": {"object_mask": ["1", 3], "placement": ["6", 0], "level": 0}},
        "13": {"class_type": "DioramaCompositeSample",
               "inputs": {"model": ["2", 0], "positive": ["11", 0], "negative": ["11", 1], "vae": ["2", 2],
                          "background": ["1", 0], "window": ["10", 0], "blend_mask": ["12", 0], "seed": 3, "steps": 1,
                          "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, "batch_size": 1,
                          "feather_px": 2.0, "colour_match": True, "stitch": "blend"}},
        "14": {"class_type": "SaveLatent", "inputs": {"samples": ["13", 1], "filename_prefix": f"latents/{prefix}"}},
        "15": {"class_type": "ImageInvert", "inputs": {"image": ["1", 2]}},
    }


@pytest.fixture(scope="module")
def sample(run_prompt, base_dir, tiny_sd_models, tiny_person_models):
    def run(**changes) -> torch.Tensor:
        report = run_prompt(graph(**changes))
        saved = report.outputs["14"]["latents"][0]
        return safetensors.torch.load_file(str(Path(base_dir) / "output" / saved["subfolder"] / saved["filename"]))[
            "latent_tensor"]

    return run


@pytest.fixture(scope="module")
def base(sample):
    return sample()


def test_the_same_graph_samples_the_same_latent(sample, base):
    assert torch.equal(sample(prefix="person_repeat"), base)


@pytest.mark.parametrize("change", [
    dict(invert_reference=True),
    dict(caption="a person jumping with both arms raised"),
    dict(skeleton=ARMS_UP),
], ids=["image tokens", "caption tokens", "pose tokens"])
def test_each_part_reaches_the_model(sample, base, change):
    changed = sample(**change)
    assert changed.shape == base.shape
    assert not torch.allclose(changed, base, atol=1e-6), f"{change} did not change what the model samples"


# Between them the two drop every part once (the token layouts of every combination are checked above).
@pytest.mark.parametrize("use", [("image",), ("caption", "pose")], ids=lambda u: "+".join(u))
def test_dropping_parts_works(sample, base, use):
    dropped = sample(use=use, prefix="person_" + "_".join(use))
    assert dropped.shape == base.shape and torch.isfinite(dropped).all()
    assert not torch.allclose(dropped, base, atol=1e-6)
