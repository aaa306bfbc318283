"""Vision-language models (LLaVA-1.5, Qwen2.5-VL, Qwen3-VL, Florence-2) from transformers folders.

Loading is offline and safetensors-only; the architecture comes from config.json's model_type and
transformers' own classes (never remote code). The model sits in a ModelPatcher so ComfyUI can move
it between devices like any other model.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import comfy.model_management
import comfy.model_patcher
import torch

from ..ops.checks import file_pixels
from .patching import model_patcher

log = logging.getLogger(__name__)

MODEL_CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "florence2": "Florence2ForConditionalGeneration",
}
DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
QWEN_FAMILIES = ("qwen2_5_vl", "qwen3_vl")


def _available_families() -> tuple[str, ...]:
    import transformers

    # Qwen3-VL arrived in transformers 4.57; older installs simply do not offer it.
    return tuple(f for f in MODEL_CLASSES if hasattr(transformers, MODEL_CLASSES[f]))


FAMILIES = _available_families()


@dataclass(frozen=True)
class VisionLanguageModel:
    patcher: comfy.model_patcher.ModelPatcher  # holds the transformers model (ManagedModule.network)
    processor: Any  # the folder's transformers processor
    family: str  # one of FAMILIES, from config.json model_type
    name: str  # folder name


def read_family(folder: str) -> str:
    """The family of a transformers folder, or an error naming the supported ones."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{folder}: no config.json; expected a transformers model folder")
    with open(config_path) as f:
        model_type = json.load(f).get("model_type")
    if model_type not in FAMILIES:
        hint = " (original LLaVA layout: convert it first with `python -m diorama.convert llava-bifrost`)" \
            if model_type == "llava_llama" else ""
        raise ValueError(f"{folder}: model_type {model_type!r} is not a supported vision-language model; "
                         f"expected one of {list(FAMILIES)}{hint}")
    return model_type


def _check_weights(folder: str) -> None:
    names = os.listdir(folder)
    if not any(n.endswith(".safetensors") for n in names):
        pickled = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
        found = f" (found pickled {pickled}, which are never loaded here)" if pickled else ""
        raise FileNotFoundError(f"{folder}: no .safetensors weights{found}; convert pickled weights to safetensors "
                                "in an explicit conversion step first")


def _resolve_dtype(dtype: str, config_dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is unknown; expected one of {list(DTYPES)}")
    if DTYPES[dtype] is not None:
        return DTYPES[dtype]
    # auto: the dtype the weights were published in, when the device computes in it; else fp32.
    stored = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(str(config_dtype))
    if stored is torch.bfloat16 and comfy.model_management.should_use_bf16(device):
        return torch.bfloat16
    if stored is torch.float16 and comfy.model_management.should_use_fp16(device):
        return torch.float16
    return torch.float32


def load_vlm(folder: str, dtype: str = "auto") -> VisionLanguageModel:
    """Load a VLM folder offline (safetensors, no remote code) into a ModelPatcher."""
    import transformers

    family = read_family(folder)
    _check_weights(folder)
    with open(os.path.join(folder, "config.json")) as f:
        config_dict = json.load(f)
    torch_dtype = _resolve_dtype(dtype, config_dict.get("dtype", config_dict.get("torch_dtype")),
                                 comfy.model_management.get_torch_device())
    model_class = getattr(transformers, MODEL_CLASSES[family])
    model, info = model_class.from_pretrained(folder, local_files_only=True, use_safetensors=True, dtype=torch_dtype,
                                              trust_remote_code=False, output_loading_info=True)
    # transformers only warns about weights it did not find and leaves them random; a VLM with random
    # parts would answer nonsense, so a layout that does not match the class is an error here.
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        raise ValueError(f"{folder}: the weights do not match transformers' {MODEL_CLASSES[family]} layout; "
                         f"{len(missing)} weights are missing, e.g. {missing[:8]} (a remote-code layout? use the "
                         "transformers-native release of the model)")
    model.eval()
    processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    log.info("loaded %s VLM %s (%s)", family, os.path.basename(os.path.normpath(folder)), torch_dtype)
    return VisionLanguageModel(model_patcher(model), processor, family, os.path.basename(os.path.normpath(folder)))


def _pil(image: torch.Tensor):
    from PIL import Image

    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be one RGB image [H,W,3] with values in 0..1; got shape {tuple(image.shape)}")
    array = file_pixels(image.detach().float()).cpu().numpy()
    return Image.fromarray(array)


def _pad_to_square(picture, mean: list[float]):
    """LLaVA-1.5's "pad" aspect mode (BIFRÖST trained with it): centre the image on a square filled
    with the processor's mean colour, so the vision tower's centre crop cuts nothing away."""
    from PIL import Image

    width, height = picture.size
    if width == height:
        return picture
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), tuple(int(m * 255) for m in mean))
    canvas.paste(picture, ((side - width) // 2, (side - height) // 2))
    return canvas


def _qwen_messages(user_text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text}]}]


def qwen_prompt(vlm: VisionLanguageModel, user_text: str) -> str:
    """The exact text a Qwen-VL model receives: the processor's chat template over one user turn
    (image, then `user_text`) with the assistant turn opened."""
    if vlm.family not in QWEN_FAMILIES:
        raise ValueError(f"qwen_prompt is for Qwen-VL models; {vlm.name!r} is {vlm.family!r}")
    return vlm.processor.apply_chat_template(_qwen_messages(user_text), tokenize=False, add_generation_prompt=True)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen-VL's resize rule: both sides multiples of `factor`, area within [min_pixels, max_pixels],
    aspect ratio kept as nearly as the rounding allows."""
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen_input_size(vlm: VisionLanguageModel, height: int, width: int) -> tuple[int, int]:
    """(h, w) in pixels that the processor resizes an image of (height, width) to: Qwen2.5-VL
    answers boxes in these pixels."""
    if vlm.family not in QWEN_FAMILIES:
        raise ValueError(f"qwen_input_size is for Qwen-VL models; {vlm.name!r} is {vlm.family!r}")
    images = vlm.processor.image_processor
    size = images.size if isinstance(images.size, dict) else dict(images.size)
    min_pixels = size.get("shortest_edge") or getattr(images, "min_pixels", None)
    max_pixels = size.get("longest_edge") or getattr(images, "max_pixels", None)
    if not min_pixels or not max_pixels:
        raise ValueError(f"{vlm.name}: the image processor gives no min/max pixels (size={size})")
    return smart_resize(height, width, images.patch_size * images.merge_size, int(min_pixels), int(max_pixels))


def _inputs(vlm: VisionLanguageModel, image: torch.Tensor, prompt: str) -> dict:
    picture = _pil(image)
    processor = vlm.processor
    if vlm.family in QWEN_FAMILIES:
        return processor(images=[picture], text=[qwen_prompt(vlm, prompt)], return_tensors="pt")
    if vlm.family == "llava":
        if processor.image_token not in prompt:
            raise ValueError(f"LLaVA prompts must hold the image token {processor.image_token!r}; got {prompt!r}")
        picture = _pad_to_square(picture, list(processor.image_processor.image_mean))
    return processor(images=[picture], text=[prompt], return_tensors="pt")


def generate(vlm: VisionLanguageModel, image: torch.Tensor, prompt: str, max_new_tokens: int = 64,
             temperature: float = 0.0, seed: int = 0) -> str:
    """The model's answer to `prompt` about one image [H,W,3] in 0..1: only the new text, special
    tokens stripped (Florence-2: the raw decoded text, <loc_…> tokens kept). Greedy at temperature 0."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; got {temperature}")
    inputs = _inputs(vlm, image, prompt)
    comfy.model_management.load_model_gpu(vlm.patcher)
    network = vlm.patcher.model.network
    device, dtype = vlm.patcher.load_device, network.dtype
    inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
              for k, v in inputs.items()}
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 \
        else {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    # A private RNG stream: the answer depends on `seed` only, and other nodes' randomness is untouched.
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        output = network.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=1, **sampling)
    # Decoder-only models echo the prompt; Florence-2's encoder-decoder output is new text only.
    new_tokens = output[0] if vlm.family == "florence2" else output[0, inputs["input_ids"].shape[1]:]
    tokenizer = vlm.processor.tokenizer
    if vlm.family == "florence2":
        text = tokenizer.decode(new_tokens, skip_special_tokens=False)
        for token in (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token):
            text = text.replace(token, "") if token else text
        return text
    return tokenizer.decode(new_tokens, skip_special_tokens=True)


def generate_each(vlm: VisionLanguageModel, images: torch.Tensor, prompt: str, **options) -> list[str]:
    """generate() for every image of a batch [B,H,W,3], one at a time (prompt lengths differ per image
    for Qwen), with ComfyUI's progress bar as the cancel point."""
    import comfy.utils

    if images.dim() != 4:
        raise ValueError(f"images must be a batch [B,H,W,3]; got shape {tuple(images.shape)}")
    progress = comfy.utils.ProgressBar(images.shape[0])
    answers = []
    for index in range(images.shape[0]):
        answers.append(generate(vlm, images[index], prompt, **options))
        progress.update(1)
    return answers
