"""Bad-input catalogue (issue 12 part 1): one table of (node, bad input, bad-input class, expected error).

Every expected fragment names the input that is wrong and what is expected instead, so a user reading
the error in the UI knows what to change. Inputs are built by small factories from the bundled scene
(DioramaBundledScene) and files written into the session's throw-away model folders. Nodes run through
node_class(...).execute(...) (fast); the cases marked `prompt` run through ComfyUI's executor to show the
error names the node. Odd-but-valid inputs (RGBA, batches, a 4096² background) are in test_bad_inputs.py.
"""
from __future__ import annotations

import io as stdio
import json
import math
import os
import pickle
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import torch
from safetensors.torch import save

from diorama.runner.execute import WorkflowError

NAN = float("nan")


@dataclass(frozen=True)
class Case:
    id: str
    node: str  # node id, or "convert" for the checkpoint converter's command line
    bad: str  # the bad-input class
    inputs: Callable[["Ctx"], dict]  # factory: keyword inputs of execute (or argv for convert, prompt for executor)
    error: str  # regular expression the message must match: names the input and what is expected
    via: str = "execute"  # "execute", "prompt" (ComfyUI's executor) or "convert"


@dataclass
class Ctx:
    scene: dict
    models: Path  # the session's models/ folder
    tmp: Path
    node_class: Callable
    stub_vlm: Callable[[str], object]  # a VLM whose every answer is the given text
    written: list[Path] = field(default_factory=list)  # model files to remove after the case


# ---------------------------------------------------------------- input factories

def scene_dict(node_class) -> dict:
    names = ("background", "background_depth", "object", "object_mask", "object_depth", "placement", "truth")
    return dict(zip(names, node_class("DioramaBundledScene").execute(96, 64, 64).result))


def box(c: Ctx, **overrides) -> dict:
    inputs = dict(background=c.scene["background"], x0=0.2, y0=0.2, x1=0.5, y1=0.9, unit="fractions",
                  depth_source="value", depth=3.0, depth_kind="metric")
    return {**inputs, **overrides}


def from_mask(c: Ctx, **overrides) -> dict:
    return {**dict(mask=c.scene["object_mask"], depth_source="value", depth=3.0, depth_kind="metric"), **overrides}


def depth_range(c: Ctx, **overrides) -> dict:
    inputs = dict(background=c.scene["background"], x=0.5, y=0.6, width=0.3, height=0.4, depth_far=0.2, depth_near=0.6)
    return {**inputs, **overrides}


def bifrost_placement(c: Ctx):
    return c.node_class("DioramaPlacementDepthRange").execute(**depth_range(c)).result[0]


def disparity(c: Ctx, height=64, width=96):
    return c.node_class("DioramaDepthFromImage").execute(torch.rand(1, height, width, 3) * 0.5 + 0.5,
                                                         "disparity (white = near)", 1.0).result[0]


def depth_fuse(c: Ctx, **overrides) -> dict:
    s = c.scene
    inputs = dict(background_depth=s["background_depth"], object_depth=s["object_depth"], object_mask=s["object_mask"],
                  placement=s["placement"])
    return {**inputs, **overrides}


def paste(c: Ctx, **overrides) -> dict:
    s = c.scene
    inputs = dict(background=s["background"], object=s["object"], object_mask=s["object_mask"], placement=s["placement"],
                  feather_px=2.0, colour_match=0.5)
    return {**inputs, **overrides}


def hints(c: Ctx, **overrides) -> dict:
    s = c.scene
    target = torch.zeros(1, 64, 96)
    target[:, 20:50, 30:60] = 1
    inputs = dict(background=s["background"], target_mask=target, reference=s["object"], reference_mask=s["object_mask"],
                  crop_ratio=2.0, detail_threshold=50, mask_growth=0.02, method="BIFRÖST")
    return {**inputs, **overrides}


def window(c: Ctx):
    return c.node_class("DioramaCompositeWindow").execute(c.scene["background"], 2.0, 512, area="whole image").result[0]


ASSETS_JSON = json.dumps({
    "camera": {"image_size": [64, 64], "focal_px": 60, "position": [0, -6, 1], "look_at": [0, 0, 0.5]},
    "objects": [{"centre": [0, 0, 0.5], "size": [1, 1, 1], "yaw_pitch_roll": [0, 0, 0]},
                {"centre": [1, 0, 0.5], "size": [1, 1, 1], "yaw_pitch_roll": [0, 0, 0]}],
})


def assets(c: Ctx):
    return c.node_class("DioramaAssetsFromJSON").execute(ASSETS_JSON).result[0]


def model_file(c: Ctx, folder: str, name: str, data: bytes) -> str:
    """Write raw bytes as a model file in the session's model folder; returns the name the loader takes."""
    path = c.models / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    c.written.append(path)
    return name


def safetensors_bytes(tensors: dict, metadata: dict | None = None) -> bytes:
    return save(tensors, metadata=metadata)


def truncated(c: Ctx, folder: str, name: str) -> str:
    whole = safetensors_bytes({"projection.weight": torch.zeros(8, 8), "projection.bias": torch.zeros(8)})
    return model_file(c, folder, name, whole[: len(whole) // 2])


def garbage(c: Ctx, folder: str, name: str) -> str:
    return model_file(c, folder, name, b"\x00\x01this is not a safetensors file" * 8)


def other_model(c: Ctx, folder: str, name: str) -> str:
    """A valid safetensors file of another model: SD-VAE-like keys, no Diorama metadata."""
    return model_file(c, folder, name, safetensors_bytes({"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3),
                                                          "decoder.conv_out.bias": torch.zeros(3)}))


MARKER = "pickle-payload-ran.txt"


class _Payload:
    """Unpickling this would call os.system to create the marker file: it must never run."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def pickle_with_payload(c: Ctx) -> list[str]:
    path = c.tmp / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": _Payload(str(c.tmp / MARKER))}, path)
    return ["bifrost", str(path), "--models-dir", str(c.tmp / "converted")]


def raw_pickle_with_payload(c: Ctx) -> list[str]:
    path = c.tmp / "evil-raw.ckpt"
    path.write_bytes(pickle.dumps(_Payload(str(c.tmp / MARKER))))
    return ["anydoor", str(path), "--models-dir", str(c.tmp / "converted")]


def truncated_checkpoint(c: Ctx) -> list[str]:
    path = c.tmp / "truncated.ckpt"
    buffer = stdio.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, buffer)
    path.write_bytes(buffer.getvalue()[:300])
    return ["bifrost", str(path), "--models-dir", str(c.tmp / "converted")]


def mask_prompt(target: str, mask_input: str, extra: dict) -> dict:
    """Bundled scene + an all-zero SolidMask fed to `target`'s mask input, then a preview."""
    return {
        "1": {"class_type": "DioramaBundledScene", "inputs": {"width": 96, "height": 64, "reference_size": 64}},
        "2": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}},
        "3": {"class_type": target, "inputs": {mask_input: ["2", 0], **extra}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1] if target != "DioramaDepthAwarePaste" else ["3", 0]}},
    }


def stub_neural_assets_adapter(slots: int):
    return SimpleNamespace(config=SimpleNamespace(slots=slots, dino="dino_vitb8"))


# ---------------------------------------------------------------- the catalogue

PLACEMENT = [
    Case("box-zero-area", "DioramaPlacementFromBox", "zero-area box", lambda c: box(c, x0=0.5, x1=0.5),
         r"zero or negative area"),
    Case("box-outside", "DioramaPlacementFromBox", "box outside the image", lambda c: box(c, x0=1.2, x1=1.5),
         r"outside the 96x64 image"),
    Case("box-nan", "DioramaPlacementFromBox", "NaN", lambda c: box(c, y1=NAN),
         r"box y1=nan: expected finite numbers \(not NaN or infinity\)"),
    Case("box-negative-depth", "DioramaPlacementFromBox", "out-of-range number", lambda c: box(c, depth=-1.0),
         r"metric depth must be > 0"),
    Case("box-ground-without-depth", "DioramaPlacementFromBox", "missing input",
         lambda c: box(c, depth_source="ground contact in background depth"), r"no background_depth is connected"),
    Case("mask-empty", "DioramaPlacementFromMask", "all-zero mask",
         lambda c: from_mask(c, mask=torch.zeros(1, 64, 64)), r"mask: mask is empty"),
    Case("mask-wrong-shape", "DioramaPlacementFromMask", "wrong shape",
         lambda c: from_mask(c, mask=torch.ones(1, 2, 64, 64, 3)), r"mask.*expected"),
    Case("range-outside", "DioramaPlacementDepthRange", "box outside the image", lambda c: depth_range(c, x=1.5),
         r"x.*expected"),
    Case("range-zero-area", "DioramaPlacementDepthRange", "zero-area box", lambda c: depth_range(c, width=0.0),
         r"box width 0.0 and height 0.4 must be > 0"),
    Case("range-far-nearer", "DioramaPlacementDepthRange", "out-of-range number",
         lambda c: depth_range(c, depth_far=0.8, depth_near=0.2), r"depth range far=0.8, near=0.2 must satisfy 0 <= far <= near <= 1"),
    Case("range-inf", "DioramaPlacementDepthRange", "NaN/inf", lambda c: depth_range(c, depth_near=math.inf),
         r"^depth_near=inf: expected finite numbers"),
    Case("locate-unparseable", "DioramaLocatePlacement", "unparseable VLM answer",
         lambda c: dict(vlm=c.stub_vlm("the cat is on the left, I think"), background=c.scene["background"],
                        instruction="Place the crate on the floor", max_new_tokens=64, retry_strict=False, seed=0),
         r"the model's answer 'the cat is on the left, I think' .*expected"),
    Case("locate-empty-instruction", "DioramaLocatePlacement", "empty text",
         lambda c: dict(vlm=c.stub_vlm("[0.5, 0.5, 0.5]"), background=c.scene["background"], instruction="  ",
                        max_new_tokens=64, retry_strict=False, seed=0), r"instruction is empty; expected"),
    Case("save-unbatched", "DioramaSaveImage", "wrong shape",
         lambda c: dict(images=c.scene["background"][0], filename_prefix="never"), r"images must be an IMAGE batch \[B, H, W, C\].*got shape \(64, 96, 3\)"),
]

DEPTH = [
    Case("depth-image-nan", "DioramaDepthFromImage", "NaN/inf",
         lambda c: dict(depth_image=torch.full((1, 32, 32, 3), NAN), meaning="disparity (white = near)", max_metres=1.0),
         r"depth_image: contains 3072 NaN or infinite values"),
    Case("depth-image-meaning", "DioramaDepthFromImage", "out-of-range choice",
         lambda c: dict(depth_image=torch.rand(1, 32, 32, 3), meaning="inverse", max_metres=1.0),
         r"meaning 'inverse' is unknown; expected one of"),
    Case("depth-image-black-metric", "DioramaDepthFromImage", "all-zero image",
         lambda c: dict(depth_image=torch.zeros(1, 32, 32, 3), meaning="metric (white = max_metres)", max_metres=10.0),
         r"metric depth must be > 0"),
    Case("depth-estimate-2d", "DioramaDepthEstimate", "wrong shape",
         lambda c: dict(depth_model=None, image=torch.rand(64, 64)), r"image.*expected"),
    Case("fuse-empty-mask", "DioramaDepthFuse", "all-zero mask",
         lambda c: depth_fuse(c, object_mask=torch.zeros(1, 64, 64)), r"object_mask: mask is empty"),
    Case("fuse-kinds", "DioramaDepthFuse", "mismatched depth kinds",
         lambda c: depth_fuse(c, background_depth=disparity(c)),
         r"object_depth is 'metric' but background_depth is 'disparity'"),
    Case("fuse-bifrost-placement", "DioramaDepthFuse", "placement of the wrong kind",
         lambda c: depth_fuse(c, placement=bifrost_placement(c)), r"depth range relative to the background"),
    Case("bifrost-fuse-metric", "DioramaBifrostDepthFuse", "mismatched depth kinds",
         lambda c: depth_fuse(c, placement=bifrost_placement(c)), r"background_depth.*disparity"),
    Case("bifrost-fuse-box-placement", "DioramaBifrostDepthFuse", "placement of the wrong kind",
         lambda c: depth_fuse(c, background_depth=disparity(c), object_depth=disparity(c, 64, 64)),
         r"placement.*(depth range|PlacementDepthRange)"),
]

COMPOSITE = [
    Case("hints-empty-reference-mask", "DioramaBifrostHints", "all-zero mask",
         lambda c: hints(c, reference_mask=torch.zeros(1, 64, 64)), r"reference_mask.*empty"),
    Case("hints-empty-target-mask", "DioramaBifrostHints", "all-zero mask",
         lambda c: hints(c, target_mask=torch.zeros(1, 64, 96)), r"target_mask.*empty"),
    Case("hints-method", "DioramaBifrostHints", "out-of-range choice", lambda c: hints(c, method="Bifrost v9"),
         r"method 'Bifrost v9' is unknown; expected"),
    Case("shape-mask-empty", "DioramaShapeMask", "all-zero mask",
         lambda c: dict(object_mask=torch.zeros(1, 64, 64), placement=c.scene["placement"], level=1),
         r"object_mask: mask is empty"),
    Case("shape-mask-level", "DioramaShapeMask", "out-of-range number",
         lambda c: dict(object_mask=c.scene["object_mask"], placement=c.scene["placement"], level=9), r"level.*expected"),
    Case("detail-size", "DioramaDetailMap", "size mismatch",
         lambda c: dict(image=c.scene["object"], mask=c.scene["object_mask"][:, :32, :32], threshold=0.2, erode_px=2),
         r"image is 64x64 px but mask is 32x32 px"),
    Case("detail-nan-image", "DioramaDetailMap", "NaN/inf",
         lambda c: dict(image=torch.full((1, 64, 64, 3), NAN), mask=c.scene["object_mask"], threshold=0.2, erode_px=2),
         r"image.*NaN"),
    Case("paste-batch", "DioramaDepthAwarePaste", "batch mismatch",
         lambda c: paste(c, background=c.scene["background"].repeat(2, 1, 1, 1), object=c.scene["object"].repeat(3, 1, 1, 1)),
         r"batch sizes do not match .*background=2, object=3"),
    Case("paste-mask-size", "DioramaDepthAwarePaste", "size mismatch",
         lambda c: paste(c, object_mask=c.scene["object_mask"][:, :32, :32]), r"object is 64x64 px but object_mask is 32x32 px"),
    Case("paste-tiny", "DioramaDepthAwarePaste", "image too small", lambda c: paste(c, background=torch.rand(1, 12, 40, 3)),
         r"background: 40x12 px is too small; both sides must be at least 16 px"),
    Case("paste-empty-mask", "DioramaDepthAwarePaste", "all-zero mask",
         lambda c: paste(c, object_mask=torch.zeros(1, 64, 64)), r"object_mask: mask is empty"),
    Case("paste-nan-object", "DioramaDepthAwarePaste", "NaN/inf",
         lambda c: paste(c, object=torch.full((1, 64, 64, 3), NAN)), r"object.*NaN"),
    Case("window-expansion", "DioramaCompositeWindow", "out-of-range number",
         lambda c: dict(background=c.scene["background"], expansion=0.5, resolution=512, placement=c.scene["placement"]),
         r"expansion 0.5 must be >= 1 \(the window must contain the object\)"),
    Case("window-nothing", "DioramaCompositeWindow", "missing input",
         lambda c: dict(background=c.scene["background"], expansion=2.0, resolution=512), r"placement.*mask"),
    Case("crop-nothing", "DioramaCropToWindow", "missing input", lambda c: dict(window=window(c)),
         r"connect at least one of image, mask or depth"),
    Case("crop-size", "DioramaCropToWindow", "size mismatch",
         lambda c: dict(window=window(c), image=torch.rand(1, 32, 32, 3)), r"window was made for a 96x64 image but image is 32x32 px; make the window from this image"),
    Case("sample-size", "DioramaCompositeSample", "size mismatch",
         lambda c: dict(model=None, positive=None, negative=None, vae=None, background=torch.rand(1, 32, 32, 3),
                        window=window(c)), r"window was made for a 96x64 image but background is 32x32 px"),
]

IDENTITY_AND_ASSETS = [
    Case("identity-empty-mask", "DioramaIdentityEncode", "all-zero mask",
         lambda c: dict(clip_vision=None, identity_adapter=None, reference=c.scene["object"],
                        reference_mask=torch.zeros(1, 64, 64)), r"reference_mask: mask is empty"),
    Case("identity-batch", "DioramaIdentityEncode", "batch mismatch",
         lambda c: dict(clip_vision=None, identity_adapter=None, reference=c.scene["object"].repeat(2, 1, 1, 1),
                        reference_mask=c.scene["object_mask"].repeat(3, 1, 1)), r"reference=2.*reference_mask=3"),
    Case("assets-json", "DioramaAssetsFromJSON", "unparseable text", lambda c: dict(json="{\"camera\": "),
         r"assets JSON is not valid JSON: Expecting value: line 1 column 12"),
    Case("assets-negative-size", "DioramaAssetsFromJSON", "out-of-range number",
         lambda c: dict(json=ASSETS_JSON.replace("[1, 1, 1]", "[1, -1, 1]", 1)), r"objects\[0\].size is \[1.0, -1.0, 1.0\]; every extent must be > 0"),
    Case("assets-nan-look-at", "DioramaAssetsFromJSON", "NaN/inf",
         lambda c: dict(json=ASSETS_JSON.replace("[0, 0, 0.5]", "[NaN, 0, 0.5]", 1)),
         r"camera.look_at\[0\] is nan; expected a finite number"),
    Case("move-asset-index", "DioramaMoveAsset", "out-of-range number",
         lambda c: dict(assets=assets(c), index=5, dx=0.1, dy=0.0, dz=0.0, axes="world"), r"object index 5 is out of range; the scene has 2 object\(s\) \(valid: 0..1\)"),
    Case("neural-assets-slots", "DioramaNeuralAssetPose", "too many objects",
         lambda c: dict(adapter=stub_neural_assets_adapter(1), source_image=c.scene["background"], assets=assets(c)),
         r"the assets hold 2 objects but this adapter has 1 slots"),
    Case("keypoints-json", "DioramaKeypointsFromNumbers", "unparseable text",
         lambda c: dict(keypoints_json="[[1, 2", unit="pixels", width=96, height=64), r"keypoints_json.*expected"),
    Case("keypoints-count", "DioramaKeypointsFromNumbers", "wrong shape",
         lambda c: dict(keypoints_json="[[1, 2], [3, 4]]", unit="pixels", width=96, height=64), r"17"),
]


def loader_cases(node: str, folder: str, name_input: str, ext: str, corrupt: bool = True) -> list[Case]:
    short = node.removeprefix("Diorama")
    cases = [
        Case(f"{short}-traversal", node, "path traversal", lambda c: {name_input: f"../../secrets{ext}"},
             rf"model name '../../secrets{ext}' is refused: expected a name relative to the '{folder}' model folders"),
        Case(f"{short}-absolute", node, "path traversal", lambda c: {name_input: f"/etc/model{ext}"},
             rf"model name '/etc/model{ext}' is refused"),
        Case(f"{short}-missing", node, "missing model file", lambda c: {name_input: f"not-there{ext}"},
             rf"'not-there{ext}' .*was not found in the '{folder}' model folders: .*models/{folder}"),
    ]
    if corrupt:
        cases += [
            Case(f"{short}-truncated", node, "truncated safetensors",
                 lambda c: {name_input: truncated(c, folder, f"cat-truncated-{short}{ext}")},
                 rf"cat-truncated-{short}{ext}: cannot be read as a safetensors file .*truncated, corrupt"),
            Case(f"{short}-not-safetensors", node, "corrupt safetensors",
                 lambda c: {name_input: garbage(c, folder, f"cat-garbage-{short}{ext}")},
                 rf"cat-garbage-{short}{ext}: cannot be read as a safetensors file .*expected a complete .safetensors file"),
            Case(f"{short}-other-model", node, "a file of another model",
                 lambda c: {name_input: other_model(c, folder, f"cat-vae-{short}{ext}")},
                 rf"cat-vae-{short}{ext} is not a (Diorama|DINOv2) .*expected"),
        ]
    return cases


LOADERS = [
    *loader_cases("DioramaIdentityAdapterLoader", "identity_adapters", "adapter_name", ".safetensors"),
    *loader_cases("DioramaPersonAdapterLoader", "person_adapters", "adapter_name", ".safetensors"),
    *loader_cases("DioramaNeuralAssetsAdapterLoader", "neural_assets", "adapter_name", ".safetensors"),
    *loader_cases("DioramaDinoV2Loader", "clip_vision", "clip_name", ".safetensors"),
    *loader_cases("DioramaDepthModelLoader", "depth_estimation", "model_name", "", corrupt=False),
    *loader_cases("DioramaDinoLoader", "dino", "model_name", "", corrupt=False),
    Case("vlm-traversal", "DioramaVLMLoader", "path traversal", lambda c: dict(model_name="../../LLM", dtype="fp32"),
         r"model name '../../LLM' is refused"),
    Case("convert-pickle-payload", "convert", "pickle with code payload", pickle_with_payload,
         r"refused to load: the file's pickle asks for code to be run", via="convert"),
    Case("convert-raw-pickle-payload", "convert", "pickle with code payload", raw_pickle_with_payload,
         r"refused to load|cannot be read as a PyTorch checkpoint", via="convert"),
    Case("convert-truncated", "convert", "truncated checkpoint", truncated_checkpoint,
         r"truncated\.ckpt: cannot be read as a PyTorch checkpoint \(truncated, corrupt", via="convert"),
]

THROUGH_EXECUTOR = [
    Case("prompt-mask-empty", "DioramaPlacementFromMask", "all-zero mask",
         lambda c: mask_prompt("DioramaPlacementFromMask", "mask",
                               {"depth_source": "value", "depth": 3.0, "depth_kind": "metric"}),
         r"node 3 \(DioramaPlacementFromMask\) failed: mask: mask is empty", via="prompt"),
    Case("prompt-paste-empty-mask", "DioramaDepthAwarePaste", "all-zero mask",
         lambda c: mask_prompt("DioramaDepthAwarePaste", "object_mask",
                               {"background": ["1", 0], "object": ["1", 2], "placement": ["1", 5], "feather_px": 2.0,
                                "colour_match": 0.5}),
         r"node 3 \(DioramaDepthAwarePaste\) failed: object_mask: mask is empty", via="prompt"),
]

CATALOGUE = PLACEMENT + DEPTH + COMPOSITE + IDENTITY_AND_ASSETS + LOADERS + THROUGH_EXECUTOR


def test_catalogue_is_big_and_covers_every_node_family():
    assert len(CATALOGUE) >= 30 and len({c.id for c in CATALOGUE}) == len(CATALOGUE)
    nodes = {c.node for c in CATALOGUE}
    for family in ("DioramaPlacementFromBox", "DioramaPlacementFromMask", "DioramaPlacementDepthRange",
                   "DioramaLocatePlacement", "DioramaDepthEstimate", "DioramaDepthFromImage", "DioramaDepthFuse",
                   "DioramaBifrostDepthFuse", "DioramaBifrostHints", "DioramaShapeMask", "DioramaDetailMap",
                   "DioramaDepthAwarePaste", "DioramaCompositeWindow", "DioramaCropToWindow", "DioramaCompositeSample",
                   "DioramaIdentityEncode", "DioramaAssetsFromJSON", "DioramaNeuralAssetPose",
                   "DioramaKeypointsFromNumbers", "DioramaIdentityAdapterLoader", "DioramaDepthModelLoader", "convert"):
        assert family in nodes, family


@dataclass(frozen=True)
class StubVLM:  # the attributes Locate reads before generating; generate itself is replaced
    family: str = "llava"  # answers box and depth, so no background_depth is needed
    name: str = "stub"
    patcher: object = None
    processor: object = None


@pytest.fixture(scope="module")
def scene(node_class):
    return scene_dict(node_class)


@pytest.fixture
def ctx(scene, base_dir, tmp_path, node_class, monkeypatch):
    # The canned VLM answer comes from the node module's own vlm loader (ComfyUI imports the pack under its name).
    loader = sys.modules[node_class("DioramaLocatePlacement").__module__].vlm_loader

    def stub_vlm(answer: str):
        monkeypatch.setattr(loader, "generate", lambda *args, **kwargs: answer)
        return StubVLM()

    context = Ctx(scene=scene, models=base_dir / "models", tmp=tmp_path, node_class=node_class, stub_vlm=stub_vlm)
    yield context
    for path in context.written:  # other tests list these folders
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_bad_input_gives_a_clear_error(case: Case, ctx: Ctx, run_prompt, capsys):
    inputs = case.inputs(ctx)
    if case.via == "execute":
        with pytest.raises((ValueError, FileNotFoundError, RuntimeError)) as error:
            ctx.node_class(case.node).execute(**inputs)
        message = str(error.value)
    elif case.via == "prompt":
        with pytest.raises(WorkflowError) as error:
            run_prompt(inputs)
        assert error.value.node_id == "3" and error.value.node_type == case.node
        message = str(error.value)
    else:
        from diorama.convert import main

        assert main(inputs) == 2
        message = capsys.readouterr().err
        assert not (ctx.tmp / MARKER).exists(), "the pickle's code payload ran"
        assert not (ctx.tmp / "converted").exists() or not any((ctx.tmp / "converted").rglob("*.safetensors"))
    assert re.search(case.error, message), f"{case.bad}: got {message!r}"
