"""Tiny random vision-language models in transformers folder format, built entirely in code.

Each folder holds config.json + model.safetensors, a byte-level BPE tokenizer trained here with the
family's special tokens, and a processor built from settings (no downloads). The names under
`EXAMPLE_NAMES` are the ones the example workflows load; here they are tiny random models.
"""
from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "Place the cat behind the bed, output the bounding box and the depth value of the center point.",
    "Place the backpack to the left of the vase, output the bounding box and the max, median and min depth values.",
    "[0.338, 0.521, 0.538, 0.841], 0.220, 0.160, 0.100.",
    '[{"bbox_2d": [12, 40, 200, 310], "label": "cat"}]',
    "A chat between a curious user and an artificial intelligence assistant. USER: ASSISTANT:",
    "Locate the phrases in the caption: a bed, a table, a chair, a lamp next to the window.",
    "You are a helpful assistant. system user assistant",
] * 4

# Qwen2-VL / Qwen2.5-VL / Qwen3-VL chat format (Qwen's published layout): a default system turn, each
# turn framed by <|im_start|>role\n ... <|im_end|>\n, images as <|vision_start|><|image_pad|><|vision_end|>.
QWEN_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]
FLORENCE_TASKS = ["<OD>", "<CAPTION>", "<DETAILED_CAPTION>", "<CAPTION_TO_PHRASE_GROUNDING>",
                  "<OPEN_VOCABULARY_DETECTION>", "<REGION_PROPOSAL>"]
FLORENCE_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>", *FLORENCE_TASKS,
                     *[f"<loc_{i}>" for i in range(1000)]]

EXAMPLE_NAMES = {"llava": "llava-bifrost-tiny", "qwen2_5_vl": "Qwen2.5-VL-3B-Instruct",
                 "florence2": "Florence-2-base", "qwen3_vl": "Qwen3-VL-2B-Instruct"}
IMAGE = 56  # LLaVA / Florence input side in the tiny models


def train_tokenizer(specials: list[str], vocab_size: int = 400, **named):
    """A byte-level BPE trained on a few sentences, with `specials` as single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **named)


def _spread(model: torch.nn.Module) -> torch.nn.Module:
    # Random init gives near-uniform logits; larger weights make greedy output depend on the input.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0, 0.3)
    return model.eval()


def qwen_parts(family: str):
    """(model, processor) of a tiny Qwen2.5-VL or Qwen3-VL."""
    import transformers
    from transformers import Qwen2VLImageProcessorPil

    tokenizer = train_tokenizer(QWEN_SPECIALS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                tie_word_embeddings=True)
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if family == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
        config = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
        model = transformers.Qwen2_5_VLForConditionalGeneration(config)
        patch = 14
    else:
        text["head_dim"] = 16
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True,
                                   "rope_theta": 10000.0}
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[0])
        config = transformers.Qwen3VLConfig(text_config=text, vision_config=vision, **tokens)
        model = transformers.Qwen3VLForConditionalGeneration(config)
        patch = 16
    # Small pixel bounds keep the tiny models fast; the resize rule is the real one.
    image_processor = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                               min_pixels=4 * (2 * patch) ** 2, max_pixels=64 * (2 * patch) ** 2)
    processor_class = transformers.Qwen2_5_VLProcessor if family == "qwen2_5_vl" else transformers.Qwen3VLProcessor
    video_class = transformers.Qwen2VLVideoProcessor if family == "qwen2_5_vl" else transformers.Qwen3VLVideoProcessor
    video_processor = video_class(patch_size=patch, merge_size=2, temporal_patch_size=2)
    processor = processor_class(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                                chat_template=QWEN_CHAT_TEMPLATE)
    return _spread(model), processor


def llava_tokenizer():
    return train_tokenizer(LLAVA_SPECIALS, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def clip_image_processor():
    """LLaVA-1.5's CLIP preprocessing at the tiny size (CLIP's published mean/std)."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE},
                                 image_mean=[0.48145466, 0.4578275, 0.40821073],
                                 image_std=[0.26862954, 0.26130258, 0.27577711])


def llava_parts():
    import transformers

    tokenizer = llava_tokenizer()
    config = transformers.LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=1, image_size=IMAGE, patch_size=14, projection_dim=32),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), projector_hidden_act="gelu",
        vision_feature_layer=-2, vision_feature_select_strategy="default")
    model = transformers.LlavaForConditionalGeneration(config)
    processor = transformers.LlavaProcessor(image_processor=clip_image_processor(), tokenizer=tokenizer, patch_size=14,
                                            vision_feature_select_strategy="default", num_additional_image_tokens=1)
    return _spread(model), processor


def florence_parts():
    import transformers

    tokenizer = train_tokenizer(FLORENCE_SPECIALS, vocab_size=1400, bos_token="<s>", eos_token="</s>",
                                pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                extra_special_tokens={"image_token": "<image>"})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "</s>", "<pad>", "<image>")}
    vision = dict(depths=[1, 1], patch_size=[7, 3], patch_stride=[4, 2], patch_padding=[3, 1],
                  patch_prenorm=[False, True], embed_dim=[16, 32], num_heads=[1, 2], num_groups=[1, 2],
                  window_size=4, projection_dim=32, max_position_embeddings=16, drop_path_rate=0.0)
    text = dict(model_type="bart", vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                max_position_embeddings=256, bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
                pad_token_id=ids["<pad>"], decoder_start_token_id=ids["</s>"], forced_bos_token_id=ids["<s>"])
    config = transformers.Florence2Config(vision_config=vision, text_config=text, image_token_id=ids["<image>"])
    model = transformers.Florence2ForConditionalGeneration(config)
    image_processor = transformers.CLIPImageProcessorPil(
        size={"height": IMAGE, "width": IMAGE}, do_center_crop=False, crop_size={"height": IMAGE, "width": IMAGE},
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], image_seq_length=(IMAGE // 8) ** 2 + 1)
    processor = transformers.Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return _spread(model), processor


def available_families() -> tuple[str, ...]:
    import transformers

    families = ("llava", "qwen2_5_vl", "florence2")
    return families + (("qwen3_vl",) if hasattr(transformers, "Qwen3VLForConditionalGeneration") else ())


def build(family: str):
    torch.manual_seed(0)
    if family in ("qwen2_5_vl", "qwen3_vl"):
        return qwen_parts(family)
    return {"llava": llava_parts, "florence2": florence_parts}[family]()


def write_model(folder: Path, family: str) -> Path:
    model, processor = build(family)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_vlm_models(llm_dir: Path) -> dict[str, Path]:
    """Every available family under its example workflow name in `llm_dir` (models/LLM)."""
    return {family: write_model(Path(llm_dir) / EXAMPLE_NAMES[family], family) for family in available_families()}
