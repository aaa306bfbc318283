"""Locate Placement with a real-size Qwen2.5-VL-3B-shaped model (random weights) on one 1024² image.

The model has Qwen2.5-VL-3B-Instruct's published shapes (36-layer 2048-wide text model, 32-block
1280-wide vision tower with windowed attention, 151936-token vocabulary) and its processor's resize
rule (28 px cells, up to 12845056 pixels: 1024² → 1036²). The tokenizer is the tests' tiny trained one
(real weights and vocabulary cannot be had here): token ids only index the embedding, so the cost per
token is the real model's. Random weights answer gibberish, so generation is held to exactly
`max_new_tokens` (min_new_tokens) and the answer is not parsed; the node's own work around the model
(preprocessing, parsing, preview) is timed with a stub answer of the right form.

Reported: prefill (vision tower + prompt) seconds, decode tokens/s, peak RSS, and the share of the
Locate → Depth Fuse → Depth-Aware Paste workflow spent outside the VLM (target ≤ 2%).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from .measure import median_seconds, peak_rss_mib

SIZE = 1024
MAX_NEW_TOKENS = 32
# Qwen2.5-VL-3B-Instruct's config.json (text and vision parts) and preprocessor_config.json.
TEXT = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
            num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000, rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0})
VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048, patch_size=14,
              spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31])
MIN_PIXELS, MAX_PIXELS = 3136, 12845056


def qwen25_vl_3b(dtype: torch.dtype):
    """(model, processor) with the real shapes; the tests' tokenizer supplies the special token ids."""
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import tiny_vlm

    tokenizer = tiny_vlm.train_tokenizer(tiny_vlm.QWEN_SPECIALS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tiny_vlm.QWEN_SPECIALS}
    text = dict(TEXT, bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    config = transformers.Qwen2_5_VLConfig(
        text_config=text, vision_config=VISION, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    model = transformers.Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype).eval()
    # Random weights reach the end token at random: hold every run to the same number of new tokens.
    model.generation_config.min_new_tokens = MAX_NEW_TOKENS
    images = transformers.Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2,
                                                   min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    videos = transformers.Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = transformers.Qwen2_5_VLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=videos,
                                                 chat_template=tiny_vlm.QWEN_CHAT_TEMPLATE)
    return model, processor


def bf16_capable(device: torch.device) -> bool:
    """bf16 where the CPU computes it natively (AVX-512 BF16 / AMX; ComfyUI itself never picks bf16 on a
    CPU), else what ComfyUI would choose for the device."""
    import comfy.model_management

    if device.type != "cpu":
        return comfy.model_management.should_use_bf16(device)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bench_locate(node: dict, repeats: int) -> None:
    import comfy.model_management

    from diorama.loaders.patching import model_patcher

    # The loader module as the node sees it (ComfyUI imports the pack under its own module name).
    vlm_loader = sys.modules[node["DioramaLocatePlacement"].__module__].vlm_loader

    device = comfy.model_management.get_torch_device()
    dtype = torch.bfloat16 if bf16_capable(device) else torch.float32
    started = time.perf_counter()
    model, processor = qwen25_vl_3b(dtype)
    params = sum(p.numel() for p in model.parameters())
    print(f"Qwen2.5-VL-3B-shaped model: {params / 1e9:.2f} B parameters, {dtype}, built in "
          f"{time.perf_counter() - started:.0f} s; threads: {torch.get_num_threads()}")
    vlm = vlm_loader.VisionLanguageModel(model_patcher(model), processor, "qwen2_5_vl", "Qwen2.5-VL-3B-shaped")
    print(f"input {SIZE}² → model input {vlm_loader.qwen_input_size(vlm, SIZE, SIZE)}")

    scene = node["DioramaBundledScene"].execute(SIZE, SIZE, 256).result
    background, background_depth, obj, obj_mask, obj_depth = scene[:5]
    inputs = dict(vlm=vlm, background=background, instruction="Place the crate behind the table", max_new_tokens=MAX_NEW_TOKENS,
                  retry_strict=False, seed=0, object_name="crate", background_depth=background_depth)

    # Each forward of the network is one step: the first is the prefill (vision tower + prompt).
    stamps: list[float] = []
    hook = model.register_forward_hook(lambda *_: stamps.append(time.perf_counter()))
    real_generate = vlm_loader.generate
    spent = {"vlm": 0.0}
    answer = {"text": ""}

    def timed_generate(*args, **kwargs):
        start = time.perf_counter()
        answer["text"] = real_generate(*args, **kwargs)
        spent["vlm"] += time.perf_counter() - start
        stamps.insert(0, start)
        # Random weights answer gibberish: hand the node an answer of the form it asks for, so parsing,
        # depth and preview run as they would.
        return '{"bbox_2d": [571, 536, 829, 839], "label": "crate"}'

    vlm_loader.generate = timed_generate
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            placement = node["DioramaLocatePlacement"].execute(**inputs).result[0]
            locate = time.perf_counter() - start
            fuse_paste = median_seconds(lambda: paste(node, background, background_depth, obj, obj_mask, obj_depth,
                                                      placement), repeats)
    finally:
        vlm_loader.generate = real_generate
        hook.remove()
    prefill = stamps[1] - stamps[0]
    decode_steps = len(stamps) - 2
    decode = (stamps[-1] - stamps[1]) / decode_steps if decode_steps else float("nan")
    total = locate + fuse_paste
    outside = total - spent["vlm"]
    print(f"generate: {spent['vlm']:.1f} s for {len(stamps) - 1} new tokens: prefill (vision + prompt) {prefill:.1f} s, "
          f"decode {1 / decode:.2f} tokens/s, {(len(stamps) - 1) / spent['vlm']:.2f} tokens/s overall")
    print(f"Locate node outside generate: {(locate - spent['vlm']) * 1000:.0f} ms; Depth Fuse + Depth-Aware Paste "
          f"at {SIZE}²: {fuse_paste * 1000:.0f} ms (median of {repeats})")
    verdict = "met" if outside / total <= 0.02 else "NOT met"
    print(f"share of Locate → Paste outside the VLM: {outside / total:.2%} (target ≤ 2%: {verdict}); "
          f"peak RSS {peak_rss_mib():.0f} MiB")


def paste(node, background, background_depth, obj, obj_mask, obj_depth, placement):
    visible = node["DioramaDepthFuse"].execute(background_depth, obj_depth, obj_mask, placement).result[1]
    return node["DioramaDepthAwarePaste"].execute(background, obj, obj_mask, placement, 2.0, 0.4, visible_mask=visible)
