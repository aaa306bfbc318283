"""Tiny VLMs that give one fixed answer, so LocatePlacement's parsing is exercised end to end.

A random tiny model answers gibberish. Instead of touching its weights, its generation_config.json
gets a `sequence_bias` (a standard transformers generation setting): +1e4 on each token of the
wanted answer given the chat's closing tokens and the answer so far, and on the end token after it.
Greedy decoding then emits exactly that answer whatever the image, through the real processor,
model, generate and decode path.
"""
from __future__ import annotations

import json
from pathlib import Path

QWEN_ANSWER_PREFIX = "<|im_end|>\n<|im_start|>assistant\n"  # how every Qwen chat prompt ends
BIAS = 1e4


def rig_answer(folder: Path, answer: str, prompt_end: str = QWEN_ANSWER_PREFIX) -> list[int]:
    """Make the model in `folder` answer `answer` (after a prompt ending in `prompt_end`)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    prefix = tokenizer(prompt_end, add_special_tokens=False)["input_ids"]
    tokens = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    path = Path(folder) / "generation_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    config["sequence_bias"] = [[prefix + tokens[:i + 1], BIAS] for i in range(len(tokens))]
    path.write_text(json.dumps(config, indent=1))
    return tokens


# The example workflow's bundled scene is 512x384; the tiny Qwen2.5-VL resizes it to 252x168 (its
# smart_resize with 28 px cells and at most 64 cells), so this box is x 0.552..0.802, y 0.518..0.810:
# where the crate stands behind the table in the true render.
EXAMPLE_ANSWER = '{"bbox_2d": [139, 87, 202, 136], "label": "crate"}'


# BIFRÖST's LLaVA answer for locate_bifrost.json: the box where the crate stands, depth max/median/min.
BIFROST_ANSWER = "[0.56, 0.5, 0.74, 0.8], 0.9, 0.8, 0.7."
BIFROST_FOLDER = "llava-bifrost"


def write_example_models(llm_dir: Path) -> dict[str, Path]:
    """The tiny VLMs under the example workflows' names; the Qwen2.5-VL one rigged to EXAMPLE_ANSWER, and a
    copy of the tiny LLaVA as BIFRÖST's converted LLaVA rigged to BIFROST_ANSWER."""
    import shutil

    import tiny_vlm

    folders = tiny_vlm.write_vlm_models(llm_dir)
    rig_answer(folders["qwen2_5_vl"], EXAMPLE_ANSWER)
    bifrost = llm_dir / BIFROST_FOLDER
    shutil.copytree(folders["llava"], bifrost, dirs_exist_ok=True)
    rig_answer(bifrost, BIFROST_ANSWER, prompt_end="ASSISTANT:")
    return {**folders, "llava_bifrost": bifrost}
