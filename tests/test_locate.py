"""Locate Placement: the node on stub answers (every family, retry, bad inputs) and a tiny real
Qwen2.5-VL rigged to answer one fixed JSON box, through ComfyUI's executor."""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_locate
import tiny_vlm
from diorama.ops.depth_map import DepthMap
from diorama.ops.vlm_answers import bifrost_prompt

H, W = 60, 80


@dataclass(frozen=True)
class StubVLM:  # the contract's attributes; generate is replaced below
    family: str
    name: str = "stub"
    patcher: object = None
    processor: object = None


@pytest.fixture
def answers(monkeypatch, node_class):
    """Queue answers for loaders.vlm.generate and record the prompts it was given."""
    queue, prompts = [], []

    def fake_generate(vlm, image, prompt, max_new_tokens=64, temperature=0.0, seed=0):
        assert image.shape == (H, W, 3)
        prompts.append(prompt)
        return queue.pop(0)

    # The node's own module object (ComfyUI imports the pack under its own module name).
    loader = sys.modules[node_class("DioramaLocatePlacement").__module__].vlm_loader
    monkeypatch.setattr(loader, "generate", fake_generate)
    monkeypatch.setattr(loader, "qwen_input_size", lambda vlm, h, w: (56, 84))
    return queue, prompts


def background(batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, H, W, 3, generator=torch.Generator().manual_seed(0))


def disparity_ramp() -> DepthMap:
    """Disparity 0 (far, top row) → 1 (near, bottom row), in 59 equal steps."""
    return DepthMap(torch.linspace(0, 1, H).view(1, H, 1).expand(1, H, W).contiguous(), "disparity")


def run(node_class, vlm, instruction="Place the cat behind the bed", depth=None, retry=False, **optional):
    out = node_class("DioramaLocatePlacement").execute(vlm=vlm, background=background(), instruction=instruction,
                                                       max_new_tokens=64, retry_strict=retry, seed=0,
                                                       background_depth=depth, **optional)
    return out.result


def test_bifrost_answer_becomes_box_and_depth_range(node_class, answers):
    queue, prompts = answers
    queue.append("[0.25, 0.5, 0.5, 1.0], 0.8, 0.6, 0.4.")
    placement, preview, answer = run(node_class, StubVLM("llava"))
    assert prompts == [bifrost_prompt("Place the cat behind the bed, output the bounding box and the max, median "
                                      "and min depth values of the object.")]
    assert answer == "[0.25, 0.5, 0.5, 1.0], 0.8, 0.6, 0.4."
    assert placement.box == (0.25, 0.5, 0.5, 1.0) and placement.xywh == (0.25, 0.5, 0.25, 0.5)
    assert placement.relative_depth_range == (0.4, 0.8)  # BIFRÖST's depth=[min, max]
    assert (placement.depth, placement.depth_kind) == (0.6, "disparity")
    assert preview.shape == (1, H + 8, W, 3)  # legend strip under the picture
    # The legend marks 0.4..0.8 of the far → near ramp in red.
    strip = preview[0, H + 4]
    red = (strip[:, 0] > 0.9) & (strip[:, 1] < 0.3)
    assert red.nonzero().min() == round(0.4 * (W - 1)) and red.nonzero().max() == round(0.8 * (W - 1))
    # The placement is what BIFRÖST Depth Fuse asks for.
    from diorama.nodes.bifrost import require_range_placement
    assert require_range_placement(placement) == ((0.25, 0.5, 0.25, 0.5), (0.4, 0.8))


def test_bifrost_depth_in_the_maps_scale_and_older_format(node_class, answers):
    queue, prompts = answers
    queue.append("[0.25, 0.5, 0.5, 1.0], 0.25.")
    metric = DepthMap(torch.full((1, H, W), 4.0), "metric")
    metric.values[0, 0, 0] = 1.0  # nearness 1/4 .. 1
    instruction = "Place the cat behind the bed, output the bounding box and the depth value of the center point."
    placement, _, _ = run(node_class, StubVLM("llava"), instruction, depth=metric)
    assert prompts == [bifrost_prompt(instruction)]
    assert placement.relative_depth_range == (0.25, 0.25)
    # 0.25 of the nearness range 0.25..1 m⁻¹ is 0.4375 m⁻¹ → 1/0.4375 m.
    assert placement.depth_kind == "metric" and placement.depth == pytest.approx(1 / 0.4375)


def test_qwen_box_and_ground_contact_depth(node_class, answers):
    queue, prompts = answers
    queue.append('```json\n[{"bbox_2d": [21, 14, 42, 56], "label": "cat"}]\n```')
    placement, preview, answer = run(node_class, StubVLM("qwen2_5_vl"), depth=disparity_ramp())
    assert "Where should the cat be placed" in prompts[0]
    assert placement.box == pytest.approx((0.25, 0.25, 0.5, 1.0))  # of the 84x56 model input
    assert placement.relative_depth_range is None and placement.depth_kind == "disparity"
    assert placement.depth == pytest.approx(58 / 59)  # patch rows 57..59 at the bottom edge: median row 58
    assert preview.shape == (1, H + 8, W, 3)


def test_florence_anchor_and_relation(node_class, answers):
    queue, prompts = answers
    # Two beds: the larger is the anchor; bin centres (k + 0.5) / 1000: x 0.3995..0.5995, y 0.3995..0.7995.
    queue.append("bed<loc_0><loc_0><loc_49><loc_49><loc_399><loc_399><loc_599><loc_799>")
    mask = torch.zeros(1, 30, 30)
    mask[0, 5:25, 10:20] = 1.0  # 10 wide, 20 high: aspect 0.5
    placement, _, answer = run(node_class, StubVLM("florence2"), "Place the cat to the left of the bed",
                               depth=disparity_ramp(), reference_mask=mask)
    assert prompts == ["<CAPTION_TO_PHRASE_GROUNDING>bed"]
    # Anchor 16 x 24 px at x 31.96..47.96, y 23.97..47.97: h 24, w 24 * 0.5, right edge 31.96 - 0.05 * 16.
    x0, y0, x1, y1 = placement.box
    assert (x0 * W, y0 * H, x1 * W, y1 * H) == pytest.approx((19.16, 23.97, 31.16, 47.97), abs=1e-6)


def test_bad_answer_quotes_it_and_retry_is_bounded(node_class, answers):
    queue, prompts = answers
    queue.append("Sure, the cat goes behind the bed.")
    with pytest.raises(ValueError, match="'Sure, the cat goes behind the bed.' has no box"):
        run(node_class, StubVLM("llava"))
    assert len(prompts) == 1  # off by default: no retry
    queue[:] = ["no idea", "[0.1, 0.1, 0.2, 0.2], 0.5."]
    prompts.clear()
    placement, _, answer = run(node_class, StubVLM("llava"), retry=True)
    assert len(prompts) == 2 and prompts[1].endswith("Answer only as [x1, y1, x2, y2], max, median, min. ASSISTANT:")
    assert answer == "[0.1, 0.1, 0.2, 0.2], 0.5." and placement.box == (0.1, 0.1, 0.2, 0.2)
    queue[:] = ["no idea", "still no idea", "never asked"]
    with pytest.raises(ValueError, match="'still no idea'.*the first was 'no idea'"):
        run(node_class, StubVLM("llava"), retry=True)
    assert queue == ["never asked"]  # one retry at most


def test_bad_inputs_fail_before_the_model(node_class, answers):
    queue, prompts = answers
    with pytest.raises(ValueError, match="answers no depth: connect background_depth"):
        run(node_class, StubVLM("qwen2_5_vl"))
    with pytest.raises(ValueError, match="names no relation"):
        run(node_class, StubVLM("florence2"), "Place the cat somewhere nice", depth=disparity_ramp())
    with pytest.raises(ValueError, match="batch of 2 images"):
        node_class("DioramaLocatePlacement").execute(vlm=StubVLM("llava"), background=background(2),
                                                     instruction="Place the cat behind the bed", max_new_tokens=64,
                                                     retry_strict=False, seed=0)
    with pytest.raises(ValueError, match="instruction is empty"):
        run(node_class, StubVLM("llava"), "   ")
    assert prompts == []


RIGGED = "Qwen2.5-VL-locate-rigged"
RIGGED_ANSWER = '{"bbox_2d": [63, 84, 126, 168], "label": "crate"}'


@pytest.fixture(scope="module")
def rigged_qwen(base_dir):
    folder = base_dir / "models" / "LLM" / RIGGED
    shutil.rmtree(folder, ignore_errors=True)
    tiny_vlm.write_model(folder, "qwen2_5_vl")
    tiny_locate.rig_answer(folder, RIGGED_ANSWER)
    return folder


def test_tiny_qwen_through_the_executor(rigged_qwen, run_prompt, base_dir):
    prompt = {
        "1": {"class_type": "DioramaBundledScene", "inputs": {"width": 512, "height": 384, "reference_size": 256}},
        "2": {"class_type": "DioramaVLMLoader", "inputs": {"model_name": RIGGED, "dtype": "fp32"}},
        "3": {"class_type": "DioramaLocatePlacement",
              "inputs": {"vlm": ["2", 0], "background": ["1", 0], "background_depth": ["1", 1],
                         "instruction": "Place the crate in front of the sofa", "object_name": "crate",
                         "max_new_tokens": 48, "retry_strict": False, "seed": 0}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 2]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 1], "filename_prefix": "locate"}},
    }
    report = run_prompt(prompt)
    assert report.outputs["4"]["text"] == [RIGGED_ANSWER]
    # The 512x384 scene reaches the tiny Qwen as 252x168, so the answer is the box (0.25, 0.5, 0.5, 1.0):
    # pixels x 128..256, y 192..384 in the preview, whose red outline (255, 51, 51) sits exactly there.
    image = report.outputs["5"]["images"][0]
    preview = np.asarray(Image.open(base_dir / "output" / image.get("subfolder", "") / image["filename"]))
    assert preview.shape == (384 + 32, 512, 3)  # the legend strip: 384 / 12 rows
    red = (preview[:384, :, 0] == 255) & (preview[:384, :, 1] == 51) & (preview[:384, :, 2] == 51)
    rows, cols = np.nonzero(red)
    assert (cols.min(), cols.max() + 1, rows.min(), rows.max() + 1) == (128, 256, 192, 384)


def test_qwen_prompt_is_the_chat_template_around_the_request(rigged_qwen, node_class):
    from diorama.ops.vlm_answers import qwen_user_text

    vlm = node_class("DioramaVLMLoader").execute(RIGGED, "fp32").result[0]
    user = qwen_user_text("Place the crate behind the table", "crate")
    # Qwen's published chat layout: default system turn, the image placeholder, then the request.
    assert vlm_loader_of(node_class).qwen_prompt(vlm, user) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Place the crate behind the table\nWhere should the crate be "
        'placed in this image? Output its bounding box in JSON format as {"bbox_2d": [x1, y1, x2, y2], '
        '"label": "crate"}.<|im_end|>\n<|im_start|>assistant\n')


def vlm_loader_of(node_class):
    return sys.modules[node_class("DioramaLocatePlacement").__module__].vlm_loader


@pytest.mark.parametrize("family", ["llava", "florence2"])
def test_tiny_random_models_answer_gibberish_and_the_error_quotes_it(family, base_dir, run_prompt):
    """The unrigged tiny LLaVA and Florence-2 run through the executor (processor, model management,
    generate); their random answers must be refused with the raw text, after exactly one retry."""
    from diorama.runner.execute import WorkflowError

    name = f"locate-{family}-tiny"
    folder = base_dir / "models" / "LLM" / name
    if not folder.exists():
        tiny_vlm.write_model(folder, family)
    prompt = {
        "1": {"class_type": "DioramaBundledScene", "inputs": {"width": 128, "height": 96, "reference_size": 64}},
        "2": {"class_type": "DioramaVLMLoader", "inputs": {"model_name": name, "dtype": "auto"}},
        "3": {"class_type": "DioramaLocatePlacement",
              "inputs": {"vlm": ["2", 0], "background": ["1", 0], "background_depth": ["1", 1],
                         "instruction": "Place the crate behind the table", "max_new_tokens": 12,
                         "retry_strict": True, "seed": 0}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 2]}},
    }
    with pytest.raises(WorkflowError, match=r"the model's answer .*\(the stricter retry's answer; the first was"):
        run_prompt(prompt)


def test_bifrosts_llava_through_the_loader_gives_a_placement_bifrost_fuses(node_class, tiny_vlm_models):
    """The example's converted-LLaVA stand-in (rigged to a fixed BIFRÖST answer) through the real loader,
    processor and generate: the placement carries BIFRÖST's box and depth range, and BIFRÖST Depth Fuse
    accepts it."""
    vlm = node_class("DioramaVLMLoader").execute(tiny_locate.BIFROST_FOLDER, "auto").result[0]
    background = torch.rand(1, 96, 128, 3)
    placement, preview, answer = node_class("DioramaLocatePlacement").execute(
        vlm, background, "Place the crate behind the table", max_new_tokens=64, retry_strict=False, seed=0).result
    assert answer == tiny_locate.BIFROST_ANSWER
    assert placement.xywh == pytest.approx((0.56, 0.5, 0.18, 0.3))
    assert placement.relative_depth_range == pytest.approx((0.7, 0.9))
    depth = DepthMap(torch.rand(1, 96, 128) + 0.1, "disparity")
    mask = torch.zeros(1, 96, 128)
    mask[:, 20:70, 30:90] = 1
    fused, visible, _ = node_class("DioramaBifrostDepthFuse").execute(depth, depth, mask, placement).result
    assert fused.values.shape == (1, 96, 128) and preview.shape[0] == 1
