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


# In their own subfolder: the example workflows' fixture rigs the same-named Qwen folder to a fixed answer.
SUBFOLDER = "loader-tests"
NAMES = {family: f"{SUBFOLDER}/{name}" for family, name in tiny_vlm.EXAMPLE_NAMES.items()}


@pytest.fixture(scope="module")
def llm_dir(base_dir):
    folder = base_dir / "models" / "LLM"
    tiny_vlm.write_vlm_models(folder / SUBFOLDER)
    return folder


@pytest.fixture(scope="module")
def vlms(llm_dir, node_class):
    loader = node_class("DioramaVLMLoader")
    return {family: loader.execute(NAMES[family], "auto").result[0] for family in FAMILIES}


def image(seed: int, height: int = 48, width: int = 64) -> torch.Tensor:
    return torch.rand(height, width, 3, generator=torch.Generator().manual_seed(seed))


def test_loader_lists_the_llm_folders(llm_dir, node_class):
    spec = node_class("DioramaVLMLoader").INPUT_TYPES()["required"]["model_name"]
    options = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
    assert {NAMES[f] for f in FAMILIES} <= set(options)


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

    vlm = node_class("DioramaVLMLoader").execute(NAMES["qwen2_5_vl"], dtype).result[0]
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


# --- BIFRÖST LLaVA conversion: original LLaVA layout + LoRA → transformers folder -----------------------------

TEXT, INNER, LAYERS, VISION, VISION_INNER, PATCH = 32, 64, 2, 64, 128, 14
POSITIONS = (tiny_vlm.IMAGE // PATCH) ** 2 + 1
LORA_R, LORA_ALPHA = 4, 8
LORA_TARGETS = {"self_attn.q_proj": (TEXT, TEXT), "self_attn.k_proj": (TEXT, TEXT), "self_attn.v_proj": (TEXT, TEXT),
                "self_attn.o_proj": (TEXT, TEXT), "mlp.gate_proj": (INNER, TEXT), "mlp.up_proj": (INNER, TEXT),
                "mlp.down_proj": (TEXT, INNER)}


def original_llava_state(vocab: int) -> dict[str, torch.Tensor]:
    """haotian-liu/LLaVA's LlavaLlamaForCausalLM key layout, shapes written out by hand."""
    g = torch.Generator().manual_seed(7)
    shapes = {"model.embed_tokens.weight": (vocab, TEXT), "model.norm.weight": (TEXT,), "lm_head.weight": (vocab, TEXT),
              "model.mm_projector.0.weight": (TEXT, VISION), "model.mm_projector.0.bias": (TEXT,),
              "model.mm_projector.2.weight": (TEXT, TEXT), "model.mm_projector.2.bias": (TEXT,)}
    for i in range(LAYERS):
        for module, shape in LORA_TARGETS.items():
            shapes[f"model.layers.{i}.{module}.weight"] = shape
        shapes[f"model.layers.{i}.input_layernorm.weight"] = (TEXT,)
        shapes[f"model.layers.{i}.post_attention_layernorm.weight"] = (TEXT,)
        shapes[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = (TEXT // 4,)  # saved by older transformers
    tower = "model.vision_tower.vision_tower.vision_model."
    shapes |= {tower + "embeddings.class_embedding": (VISION,),
               tower + "embeddings.patch_embedding.weight": (VISION, 3, PATCH, PATCH),
               tower + "embeddings.position_embedding.weight": (POSITIONS, VISION),
               tower + "pre_layrnorm.weight": (VISION,), tower + "pre_layrnorm.bias": (VISION,),
               tower + "post_layernorm.weight": (VISION,), tower + "post_layernorm.bias": (VISION,)}
    for i in range(LAYERS):
        layer = f"{tower}encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes |= {f"{layer}self_attn.{name}.weight": (VISION, VISION), f"{layer}self_attn.{name}.bias": (VISION,)}
        for name in ("layer_norm1", "layer_norm2"):
            shapes |= {f"{layer}{name}.weight": (VISION,), f"{layer}{name}.bias": (VISION,)}
        shapes |= {f"{layer}mlp.fc1.weight": (VISION_INNER, VISION), f"{layer}mlp.fc1.bias": (VISION_INNER,),
                   f"{layer}mlp.fc2.weight": (VISION, VISION_INNER), f"{layer}mlp.fc2.bias": (VISION,)}
    state = {k: torch.randn(shape, generator=g) * 0.3 for k, shape in shapes.items()}
    state[tower + "embeddings.position_ids"] = torch.arange(POSITIONS)[None]
    return state


@pytest.fixture()
def original_llava(tmp_path):
    """A tiny BIFRÖST-style release: base folder (original layout) + LoRA folder (PEFT, non_lora_trainables)."""
    from safetensors.torch import save_file

    base, lora = tmp_path / "llava-v1.5-tiny", tmp_path / "llava-bifrost-lora"
    base.mkdir(), lora.mkdir()
    tokenizer = tiny_vlm.train_tokenizer(["<unk>", "<s>", "</s>"], unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(base)
    vocab = len(tokenizer)
    state = original_llava_state(vocab)
    save_file(state, base / "model.safetensors")
    (base / "config.json").write_text(json.dumps({
        "model_type": "llava_llama", "architectures": ["LlavaLlamaForCausalLM"], "vocab_size": vocab,
        "hidden_size": TEXT, "intermediate_size": INNER, "num_hidden_layers": LAYERS, "num_attention_heads": 2,
        "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "mm_hidden_size": VISION,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "mm_vision_tower": "openai/clip-vit-large-patch14-336", "image_aspect_ratio": "pad"}))
    g = torch.Generator().manual_seed(8)
    adapter = {}
    for i in range(LAYERS):
        for module, (out, into) in LORA_TARGETS.items():
            prefix = f"base_model.model.model.layers.{i}.{module}"
            adapter[f"{prefix}.lora_A.weight"] = torch.randn(LORA_R, into, generator=g)
            adapter[f"{prefix}.lora_B.weight"] = torch.randn(out, LORA_R, generator=g)
    save_file(adapter, lora / "adapter_model.safetensors")
    (lora / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": LORA_R, "lora_alpha": LORA_ALPHA, "lora_dropout": 0.05, "bias": "none",
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}))
    trained = {f"base_model.model.model.mm_projector.{i}.{p}": torch.randn(state[f"model.mm_projector.{i}.{p}"].shape,
                                                                            generator=g)
               for i in (0, 2) for p in ("weight", "bias")}
    torch.save(trained, lora / "non_lora_trainables.bin")  # LLaVA's own trainer writes this pickled file
    return base, lora, state, adapter, trained


def test_llava_conversion_merges_the_lora_and_loads(original_llava, tmp_path, llm_dir):
    from transformers import LlavaForConditionalGeneration

    from diorama.convert import main
    from diorama.loaders.vlm import generate, load_vlm

    base, lora, state, adapter, trained = original_llava
    assert main(["llava-bifrost", str(base), str(lora), "--out", "bifrost-converted", "--models-dir", str(tmp_path)]) == 0
    out = tmp_path / "LLM" / "bifrost-converted"
    model = LlavaForConditionalGeneration.from_pretrained(out, local_files_only=True, use_safetensors=True)
    converted = model.state_dict()
    scale = LORA_ALPHA / LORA_R
    for i in range(LAYERS):
        for module in LORA_TARGETS:
            lora_key = f"base_model.model.model.layers.{i}.{module}"
            expected = state[f"model.layers.{i}.{module}.weight"] + scale * (
                adapter[f"{lora_key}.lora_B.weight"] @ adapter[f"{lora_key}.lora_A.weight"])
            torch.testing.assert_close(converted[f"model.language_model.layers.{i}.{module}.weight"], expected)
    torch.testing.assert_close(converted["model.multi_modal_projector.linear_1.weight"],
                               trained["base_model.model.model.mm_projector.0.weight"])
    torch.testing.assert_close(converted["model.multi_modal_projector.linear_2.bias"],
                               trained["base_model.model.model.mm_projector.2.bias"])
    tower = "model.vision_tower.vision_tower.vision_model."
    vision_keys = [k for k in converted if k.endswith("encoder.layers.1.mlp.fc2.weight") and "vision" in k]
    torch.testing.assert_close(converted[vision_keys[0]], state[tower + "encoder.layers.1.mlp.fc2.weight"])
    # <image> and <pad> are new tokens: the original rows are kept, new rows start at the mean row.
    vocab = state["model.embed_tokens.weight"].shape[0]
    embed = converted["model.language_model.embed_tokens.weight"]
    assert embed.shape[0] == vocab + 2
    torch.testing.assert_close(embed[:vocab], state["model.embed_tokens.weight"])
    torch.testing.assert_close(embed[vocab:], state["model.embed_tokens.weight"].mean(0).expand(2, -1))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<image>") >= vocab
    assert model.config.vision_config.image_size == tiny_vlm.IMAGE and model.config.vision_feature_layer == -2

    # Copied into models/LLM, it loads and answers through the loader.
    vlm = load_vlm(str(out))
    assert vlm.family == "llava"
    prompt = "USER: <image>\nPlace the cat behind the bed. ASSISTANT:"
    assert isinstance(generate(vlm, torch.rand(40, 60, 3), prompt, max_new_tokens=5), str)


def test_llava_conversion_accounts_for_every_key(original_llava, tmp_path):
    from diorama.loaders.llava_conversion import convert_llava

    base, lora, state, adapter, trained = original_llava
    report = convert_llava(str(base), str(lora), str(tmp_path / "out"))
    dropped = {k for k in state if k.endswith(("inv_freq", "position_ids"))}
    assert set(report.dropped) == dropped
    assert report.converted == len(state) - len(dropped)
    assert len(report.merged) == LAYERS * len(LORA_TARGETS) and len(report.replaced) == 4
    assert report.added_tokens == ["<image>", "<pad>"]


def test_llava_conversion_refuses_unknown_or_missing_keys(original_llava, tmp_path):
    from safetensors.torch import save_file

    from diorama.loaders.llava_conversion import LlavaConversionError, convert_llava

    base, lora, state, adapter, trained = original_llava
    extra = dict(state) | {"model.mystery_head.weight": torch.zeros(2)}
    save_file(extra, base / "model.safetensors")
    with pytest.raises(LlavaConversionError, match="model.mystery_head.weight"):
        convert_llava(str(base), str(lora), str(tmp_path / "a"))
    fewer = {k: v for k, v in state.items() if k != "model.norm.weight"}
    save_file(fewer, base / "model.safetensors")
    with pytest.raises(LlavaConversionError, match=r"missing keys: \['model.language_model.norm.weight'\]"):
        convert_llava(str(base), str(lora), str(tmp_path / "b"))
    save_file(state, base / "model.safetensors")
    save_file(adapter | {"base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight": torch.zeros(LORA_R, TEXT),
                         "base_model.model.model.layers.9.self_attn.q_proj.lora_B.weight": torch.zeros(TEXT, LORA_R)},
              lora / "adapter_model.safetensors")
    with pytest.raises(LlavaConversionError, match="no base weight.*layers.9.self_attn.q_proj"):
        convert_llava(str(base), str(lora), str(tmp_path / "c"))


def test_llava_conversion_command_errors(original_llava, tmp_path, capsys):
    from diorama.convert import main

    base, lora, *_ = original_llava
    (lora / "adapter_config.json").write_text(json.dumps({"r": 4}))
    assert main(["llava-bifrost", str(base), str(lora), "--out", "x", "--models-dir", str(tmp_path)]) == 2
    assert "lora_alpha" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["llava-bifrost", str(base), "--out", "x"])


def test_weights_in_another_layout_are_refused(tmp_path):
    """Weights missing from the class's layout (e.g. a remote-code release) are an error, not random parts."""
    from safetensors.torch import load_file, save_file

    from diorama.loaders.vlm import load_vlm

    folder = tiny_vlm.write_model(tmp_path / "renamed-qwen", "qwen2_5_vl")
    tensors = load_file(folder / "model.safetensors")
    save_file({k.replace("visual.", "vision_tower_v0."): v for k, v in tensors.items()}, folder / "model.safetensors")
    with pytest.raises(ValueError, match="weights are missing"):
        load_vlm(str(folder))
