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
