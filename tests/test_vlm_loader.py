"""VLM loading (LLaVA-1.5, Qwen2.5-VL, Qwen3-VL, Florence-2) on tiny random models saved offline, and the
conversion of BIFRÖST's LLaVA (original layout + LoRA) into a transformers folder."""
from __future__ import annotations

import json

import pytest
import torch

import tiny_vlm

FAMILIES = tiny_vlm.available_families()
PROMPTS = {
    "llava": "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
             "detailed, and polite answers to the user's questions. USER: <image>\nPlace the cat behind the bed, "
             "output the bounding box and the depth value of the center point. ASSISTANT:",
    "qwen2_5_vl": "Locate the bed, output its bbox coordinates using JSON format.",
    "qwen3_vl": "Locate the bed, output its bbox coordinates using JSON format.",
    "florence2": "<CAPTION_TO_PHRASE_GROUNDING>the bed",
}


@pytest.fixture(scope="module")
def llm_dir(base_dir):
    folder = base_dir / "models" / "LLM"
    tiny_vlm.write_vlm_models(folder)
    return folder


@pytest.fixture(scope="module")
def vlms(llm_dir, node_class):
    loader = node_class("DioramaVLMLoader")
    return {family: loader.execute(tiny_vlm.EXAMPLE_NAMES[family], "auto").result[0] for family in FAMILIES}


def image(seed: int, height: int = 48, width: int = 64) -> torch.Tensor:
    return torch.rand(height, width, 3, generator=torch.Generator().manual_seed(seed))


def test_loader_lists_the_llm_folders(llm_dir, node_class):
    spec = node_class("DioramaVLMLoader").INPUT_TYPES()["required"]["model_name"]
    options = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
    assert {tiny_vlm.EXAMPLE_NAMES[f] for f in FAMILIES} <= set(options)


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_returns_new_text_deterministically(vlms, family):
    from diorama.loaders.vlm import generate

    vlm = vlms[family]
    assert vlm.family == family and vlm.name == tiny_vlm.EXAMPLE_NAMES[family]
    first = generate(vlm, image(0), PROMPTS[family], max_new_tokens=12, seed=3)
    assert isinstance(first, str) and first.strip()
    assert generate(vlm, image(0), PROMPTS[family], max_new_tokens=12, seed=3) == first
    sampled = generate(vlm, image(0), PROMPTS[family], max_new_tokens=12, temperature=1.0, seed=5)
    assert generate(vlm, image(0), PROMPTS[family], max_new_tokens=12, temperature=1.0, seed=5) == sampled
    # Only the new text: no prompt echo, no end-of-sequence or chat-frame tokens.
    for leftover in ("USER:", "ASSISTANT:", "<|im_end|>", "<|im_start|>", "</s>", "<s>", "Locate the"):
        assert leftover not in first and leftover not in sampled


def test_greedy_answer_depends_on_the_image(vlms):
    """The image reaches the model: with spread random weights, different pixels change the answer."""
    from diorama.loaders.vlm import generate

    for family in FAMILIES:
        answers = {generate(vlms[family], image(seed), PROMPTS[family], max_new_tokens=8) for seed in range(4)}
        assert len(answers) > 1, family


def test_model_goes_through_comfy_model_management(vlms):
    import comfy.model_management as mm

    from diorama.loaders.vlm import generate

    vlm = vlms["qwen2_5_vl"]
    generate(vlm, image(1), PROMPTS["qwen2_5_vl"], max_new_tokens=2)
    assert any(loaded.model is vlm.patcher for loaded in mm.current_loaded_models)
    mm.unload_all_models()
    assert not any(loaded.model is vlm.patcher for loaded in mm.current_loaded_models)
    # Loads again after being offloaded.
    assert isinstance(generate(vlm, image(1), PROMPTS["qwen2_5_vl"], max_new_tokens=2), str)


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_of_two_is_answered_image_by_image(vlms, family):
    from diorama.loaders.vlm import generate, generate_each

    batch = torch.stack([image(10), image(11)])
    answers = generate_each(vlms[family], batch, PROMPTS[family], max_new_tokens=6)
    assert answers == [generate(vlms[family], batch[i], PROMPTS[family], max_new_tokens=6) for i in range(2)]


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.startswith("qwen")])
@pytest.mark.parametrize("height, width", [(48, 64), (500, 333), (1024, 1024), (30, 200), (7, 9)])
def test_qwen_input_size_is_the_processors_resize(vlms, family, height, width):
    from diorama.loaders.vlm import qwen_input_size

    vlm = vlms[family]
    processed = vlm.processor.image_processor(images=[tiny_vlm_picture(height, width)], return_tensors="pt")
    _, grid_h, grid_w = processed["image_grid_thw"][0].tolist()
    patch = vlm.processor.image_processor.patch_size
    assert qwen_input_size(vlm, height, width) == (grid_h * patch, grid_w * patch)


def tiny_vlm_picture(height: int, width: int):
    from PIL import Image

    return Image.new("RGB", (width, height), (120, 60, 30))


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.startswith("qwen")])
def test_qwen_prompt_is_the_published_chat_layout(vlms, family):
    from diorama.loaders.vlm import qwen_prompt

    # Qwen2.5-VL's documented chat layout for one image + text user turn, assistant turn opened.
    expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|vision_start|><|image_pad|><|vision_end|>Find the lamp.<|im_end|>\n<|im_start|>assistant\n")
    assert qwen_prompt(vlms[family], "Find the lamp.") == expected


def test_florence_answer_is_raw_text_with_location_tokens(vlms):
    """Florence-2 returns the decoded text as is (<loc_…> tokens kept for the caller's parser)."""
    from diorama.loaders.vlm import generate

    answers = [generate(vlms["florence2"], image(s), PROMPTS["florence2"], max_new_tokens=24) for s in range(3)]
    assert any("<loc_" in a for a in answers), answers
    assert not any("</s>" in a or "<pad>" in a for a in answers)


@pytest.mark.parametrize("dtype, expected", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_dtype_choice(llm_dir, node_class, dtype, expected):
    from diorama.loaders.vlm import generate

    vlm = node_class("DioramaVLMLoader").execute(tiny_vlm.EXAMPLE_NAMES["qwen2_5_vl"], dtype).result[0]
    assert vlm.patcher.model.network.dtype == expected
    assert isinstance(generate(vlm, image(2), PROMPTS["qwen2_5_vl"], max_new_tokens=3), str)


def test_missing_folder_names_the_folders_searched(llm_dir, node_class):
    with pytest.raises(FileNotFoundError) as error:
        node_class("DioramaVLMLoader").execute("no-such-model", "auto")
    assert "no-such-model" in str(error.value) and str(llm_dir) in str(error.value)


def test_unsupported_family_is_refused(llm_dir):
    from diorama.loaders.vlm import load_vlm

    folder = llm_dir / "some-bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"'bert' is not a supported vision-language model.*llava"):
        load_vlm(str(folder))


def test_original_llava_layout_points_to_the_conversion(llm_dir):
    from diorama.loaders.vlm import load_vlm

    folder = llm_dir / "llava-v1.5-original"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llava_llama"}))
    with pytest.raises(ValueError, match="llava-bifrost"):
        load_vlm(str(folder))


def test_pickled_weights_are_refused(llm_dir, tmp_path):
    from diorama.loaders.vlm import load_vlm

    folder = tmp_path / "pickled-llava"
    tiny_vlm.write_model(folder, "llava")
    (folder / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"pickled \['pytorch_model.bin'\]"):
        load_vlm(str(folder))
