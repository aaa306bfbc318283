"""BIFRÖST's LLaVA (original LLaVA-1.5 layout + a PEFT LoRA) → a transformers LLaVA folder.

Original layout (haotian-liu/LLaVA `LlavaLlamaForCausalLM`): `model.embed_tokens`, `model.layers.N.…`,
`model.norm`, `lm_head`, the projector `model.mm_projector.{0,2}` (mlp2x_gelu: Linear, GELU, Linear) and
the CLIP tower `model.vision_tower.vision_tower.vision_model.…` (or a separate CLIP folder). The LoRA
folder holds `adapter_config.json` (r, lora_alpha), `adapter_model.safetensors` with
`base_model.model.<module>.lora_{A,B}.weight`, and optionally `non_lora_trainables` (the projector as
trained, same keys behind `base_model.model.`). Merging: W' = W + (lora_alpha / r)·B·A.

Pickled `.bin` files are read only here, with torch.load(weights_only=True): this is the explicit
conversion step; the loaders never read them.
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

# CLIP's published preprocessing (LLaVA-1.5's vision tower is CLIP ViT-L/14-336).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
CLIP_HEAD_DIM = 64  # every released CLIP ViT uses 64-wide heads; the weights alone do not give the head count
VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."
PROJECTOR = {"model.mm_projector.0.": "model.multi_modal_projector.linear_1.",
             "model.mm_projector.2.": "model.multi_modal_projector.linear_2."}
# Buffers older transformers saved with the weights; current ones recompute them.
RECOMPUTED = (re.compile(r"\.rotary_emb\.inv_freq$"), re.compile(r"embeddings\.position_ids$"))
# Parts of a full CLIP checkpoint that LLaVA does not use (when --vision-tower is a whole CLIP model).
CLIP_UNUSED = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")


class LlavaConversionError(ValueError):
    pass


@dataclass
class ConversionReport:
    converted: int = 0  # base tensors written under their transformers name
    merged: list[str] = field(default_factory=list)  # base weights with a LoRA merged in
    replaced: list[str] = field(default_factory=list)  # base tensors replaced by non_lora_trainables
    dropped: list[str] = field(default_factory=list)  # recomputed buffers / unused CLIP parts, not written
    added_tokens: list[str] = field(default_factory=list)  # tokens the transformers processor needs


def read_tensors(path: str) -> dict[str, torch.Tensor]:
    """One weights file: safetensors, or a pickled .bin read with weights_only=True (conversion only)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(tensors, dict) or not all(torch.is_tensor(v) for v in tensors.values()):
        raise LlavaConversionError(f"{path}: expected a flat dict of tensors")
    return tensors


def read_folder_weights(folder: str, stems: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """All shards of the first weight format found in `folder` (safetensors preferred)."""
    for extension in ("safetensors", "bin"):
        files = sorted(f for stem in stems for f in glob.glob(os.path.join(folder, f"{stem}*.{extension}")))
        if files:
            tensors: dict[str, torch.Tensor] = {}
            for path in files:
                tensors.update(read_tensors(path))
            return tensors
    return {}


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise LlavaConversionError(f"{path} is missing")
    with open(path) as f:
        return json.load(f)


def lora_scale(adapter_config: dict) -> tuple[float, int, float]:
    """(scale, r, alpha) of a PEFT LoRA: alpha/r, or alpha/√r with rsLoRA."""
    unsupported = [k for k in ("rank_pattern", "alpha_pattern") if adapter_config.get(k)]
    unsupported += [k for k in ("use_dora", "fan_in_fan_out") if adapter_config.get(k)]
    if unsupported:
        raise LlavaConversionError(f"adapter_config.json uses {unsupported}, which this conversion does not merge "
                                   "(expected one r and lora_alpha for every module, plain LoRA)")
    if "r" not in adapter_config or "lora_alpha" not in adapter_config:
        raise LlavaConversionError(f"adapter_config.json needs 'r' and 'lora_alpha'; found {sorted(adapter_config)}")
    r, alpha = int(adapter_config["r"]), float(adapter_config["lora_alpha"])
    scale = alpha / math.sqrt(r) if adapter_config.get("use_rslora") else alpha / r
    return scale, r, alpha


def _strip_peft(key: str) -> str:
    return key[len("base_model.model."):] if key.startswith("base_model.model.") else key


def merge_lora(base: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor], scale: float,
               report: ConversionReport) -> None:
    """W += scale·B·A for every LoRA pair, in float32, cast back to W's dtype; in place on `base`."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in adapter.items():
        match = re.fullmatch(r"(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", _strip_peft(key))
        if match is None:
            unknown.append(key)
            continue
        pairs.setdefault(match.group(1), {})[match.group(2)] = tensor
    if unknown:
        raise LlavaConversionError(f"the LoRA adapter has {len(unknown)} keys that are not lora_A/lora_B weights: "
                                   f"{sorted(unknown)[:10]}")
    incomplete = sorted(m for m, p in pairs.items() if set(p) != {"A", "B"})
    missing = sorted(m for m in pairs if f"{m}.weight" not in base)
    if incomplete or missing:
        raise LlavaConversionError(f"LoRA modules without both lora_A and lora_B: {incomplete[:10]}; "
                                   f"LoRA modules with no base weight: {missing[:10]}")
    for module, pair in sorted(pairs.items()):
        weight = base[f"{module}.weight"]
        a, b = pair["A"].float(), pair["B"].float()
        if a.shape[1] != weight.shape[1] or b.shape[0] != weight.shape[0] or a.shape[0] != b.shape[1]:
            raise LlavaConversionError(f"{module}: LoRA A {tuple(a.shape)} / B {tuple(b.shape)} do not fit the base "
                                       f"weight {tuple(weight.shape)}")
        base[f"{module}.weight"] = (weight.float() + scale * (b @ a)).to(weight.dtype)
        report.merged.append(f"{module}.weight")


def transformers_key(key: str, vision_target: str) -> str | None:
    """The transformers LlavaForConditionalGeneration name of an original-layout key (None: unknown)."""
    if key == "lm_head.weight":
        return key
    if key.startswith(VISION_PREFIX):
        return vision_target + key[len(VISION_PREFIX):]
    for old, new in PROJECTOR.items():
        if key.startswith(old):
            return new + key[len(old):]
    if key.startswith(("model.embed_tokens.", "model.layers.", "model.norm.")):
        return "model.language_model." + key[len("model."):]
    return None


def vision_config_from_weights(tensors: dict[str, torch.Tensor]) -> dict:
    """A CLIPVisionConfig from the tower's shapes (heads from CLIP's 64-wide heads)."""
    patch = tensors[VISION_PREFIX + "embeddings.patch_embedding.weight"]
    positions = tensors[VISION_PREFIX + "embeddings.position_embedding.weight"].shape[0]
    layers = {int(m.group(1)) for k in tensors if (m := re.match(re.escape(VISION_PREFIX) + r"encoder\.layers\.(\d+)\.", k))}
    hidden, patch_size = patch.shape[0], patch.shape[-1]
    side = math.isqrt(positions - 1)
    if side * side != positions - 1 or hidden % CLIP_HEAD_DIM:
        raise LlavaConversionError(f"the vision tower's shapes ({positions} positions, width {hidden}) are not a CLIP ViT")
    return dict(model_type="clip_vision_model", hidden_size=hidden, patch_size=patch_size, image_size=side * patch_size,
                num_hidden_layers=len(layers), num_attention_heads=hidden // CLIP_HEAD_DIM,
                intermediate_size=tensors[VISION_PREFIX + "encoder.layers.0.mlp.fc1.weight"].shape[0],
                hidden_act="quick_gelu", layer_norm_eps=1e-5)


TEXT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "hidden_act", "bos_token_id",
               "eos_token_id", "pad_token_id", "attention_bias")


def llava_config(base_config: dict, vision: dict, vocab_size: int, image_token_id: int):
    import transformers

    if base_config.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise LlavaConversionError(f"mm_projector_type {base_config['mm_projector_type']!r} is not supported; "
                                   "LLaVA-1.5 (and BIFRÖST) use 'mlp2x_gelu'")
    select = base_config.get("mm_vision_select_feature", "patch")
    if select not in ("patch", "cls_patch"):
        raise LlavaConversionError(f"mm_vision_select_feature {select!r} is unknown; expected 'patch' or 'cls_patch'")
    text = {k: base_config[k] for k in TEXT_FIELDS if base_config.get(k) is not None}
    text.update(model_type="llama", vocab_size=vocab_size, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": float(base_config.get("rope_theta", 10000.0))})
    return transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                                    projector_hidden_act="gelu",
                                    vision_feature_layer=int(base_config.get("mm_vision_select_layer", -2)),
                                    vision_feature_select_strategy="default" if select == "patch" else "full")


def _with_vision_tower(base: dict[str, torch.Tensor], clip_folder: str | None, report: ConversionReport) -> dict | None:
    """Adds a separate CLIP folder's tower under the original prefix; returns its config if one was given."""
    has_tower = any(k.startswith(VISION_PREFIX) for k in base)
    if clip_folder is None:
        if not has_tower:
            raise LlavaConversionError(f"the base weights hold no vision tower ({VISION_PREFIX}…); pass the CLIP "
                                       "ViT-L/14-336 folder it was trained with as --vision-tower")
        return None
    if has_tower:
        raise LlavaConversionError("the base weights already hold a vision tower; --vision-tower would replace it")
    clip = read_folder_weights(clip_folder, ("model", "pytorch_model"))
    config = _read_json(os.path.join(clip_folder, "config.json"))
    for key, tensor in clip.items():
        if key.startswith("vision_model."):
            base[VISION_PREFIX + key[len("vision_model."):]] = tensor
        elif key.startswith(CLIP_UNUSED) or any(p.search(key) for p in RECOMPUTED):
            report.dropped.append(f"{clip_folder}:{key}")
        else:
            raise LlavaConversionError(f"{clip_folder}: unexpected CLIP key {key!r}")
    vision = config.get("vision_config", config)
    return {k: vision[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                   "image_size", "patch_size", "hidden_act", "layer_norm_eps") if k in vision} | \
        {"model_type": "clip_vision_model"}


def convert_llava(base_folder: str, lora_folder: str, out_folder: str, vision_tower: str | None = None,
                  dtype: torch.dtype | None = None, overwrite: bool = False) -> ConversionReport:
    """Write a transformers LLaVA folder (config, merged safetensors weights, tokenizer, processor)."""
    import transformers

    if os.path.exists(out_folder) and not overwrite:
        raise FileExistsError(f"{out_folder} exists; pass --overwrite to replace it")
    report = ConversionReport()
    base_config = _read_json(os.path.join(base_folder, "config.json"))
    base = read_folder_weights(base_folder, ("model", "pytorch_model"))
    if not base:
        raise LlavaConversionError(f"{base_folder}: no model*.safetensors or pytorch_model*.bin weights")
    vision = _with_vision_tower(base, vision_tower, report) or vision_config_from_weights(base)
    for key in [k for k in base if any(p.search(k) for p in RECOMPUTED)]:
        report.dropped.append(key)
        del base[key]

    # non_lora_trainables: the projector (and anything else trained in full) as it was after training.
    trained = read_folder_weights(lora_folder, ("non_lora_trainables",))
    strange = sorted(k for k in trained if _strip_peft(k) not in base)
    if strange:
        raise LlavaConversionError(f"non_lora_trainables has keys with no base weight: {strange[:10]}")
    for key, tensor in trained.items():
        base[_strip_peft(key)] = tensor
        report.replaced.append(_strip_peft(key))
    scale, r, alpha = lora_scale(_read_json(os.path.join(lora_folder, "adapter_config.json")))
    adapter = read_folder_weights(lora_folder, ("adapter_model",))
    if not adapter:
        raise LlavaConversionError(f"{lora_folder}: no adapter_model.safetensors (or .bin)")
    merge_lora(base, adapter, scale, report)
    log.info("merged %d LoRA modules (r=%d, alpha=%g, scale %g)", len(report.merged), r, alpha, scale)

    tokenizer = transformers.AutoTokenizer.from_pretrained(base_folder, local_files_only=True, trust_remote_code=False)
    # Original LLaVA splices the image in at a placeholder id (-200); transformers needs a real <image> token.
    for token, role in (("<image>", None), ("<pad>", "pad_token")):
        if role and getattr(tokenizer, role) is not None or token in tokenizer.get_vocab():
            continue
        tokenizer.add_special_tokens({role: token} if role else {"additional_special_tokens": [token]})
        report.added_tokens.append(token)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")

    mapped: dict[str, torch.Tensor] = {}
    config = llava_config(base_config, vision, len(tokenizer), image_token_id)
    with torch.device("meta"):
        model = transformers.LlavaForConditionalGeneration(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    vision_target = next(k for k in expected if k.endswith("embeddings.patch_embedding.weight"))[
        :-len("embeddings.patch_embedding.weight")]
    unknown = sorted(k for k in base if transformers_key(k, vision_target) not in expected)
    if unknown:
        raise LlavaConversionError(f"{len(unknown)} base keys have no place in transformers' LLaVA: {unknown[:20]}")
    for key, tensor in base.items():
        mapped[transformers_key(key, vision_target)] = tensor
    for name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        rows = expected[name][0] - mapped[name].shape[0]
        if rows > 0:  # new tokens start at the mean embedding, so they perturb the model least
            mean = mapped[name].float().mean(0, keepdim=True).to(mapped[name].dtype)
            mapped[name] = torch.cat([mapped[name], mean.expand(rows, -1)])
    missing = sorted(set(expected) - set(mapped))
    wrong = sorted(f"{k}: {tuple(mapped[k].shape)} vs {tuple(expected[k])}" for k in mapped if mapped[k].shape != expected[k])
    if missing or wrong:
        raise LlavaConversionError(f"missing keys: {missing[:20]}; wrong shapes: {wrong[:20]}")
    report.converted = len(mapped)

    dtype = dtype or next(iter(mapped.values())).dtype
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in mapped.items()}, assign=True)
    model.config.dtype = dtype
    os.makedirs(out_folder, exist_ok=True)
    model.save_pretrained(out_folder, safe_serialization=True)
    side = vision["image_size"]
    image_processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    processor = transformers.LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                            patch_size=vision["patch_size"],
                                            vision_feature_select_strategy=config.vision_feature_select_strategy,
                                            num_additional_image_tokens=1)
    processor.save_pretrained(out_folder)
    return report
