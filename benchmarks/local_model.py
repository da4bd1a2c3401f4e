"""A model folder vLLM can serve with random weights and a real (made-up) tokenizer, nothing downloaded.

``--skip-tokenizer-init`` serves completions of token ids only; chat completions, tool calls and the Anthropic
Messages API need a tokenizer and a chat template. This writes one: a word-level tokenizer (``tokenizers``, as
``transformers`` loads it with ``PreTrainedTokenizerFast``) whose vocabulary fills the model's ``vocab_size``, with
chosen special tokens at chosen ids (a tool parser's markers, a multimodal model's image tokens), and a small chat
template that renders roles, text and tools. Answers are random words (the weights are random); what is checked on
the GPU is how vLLM treats the requests, not the text.

    write_model_dir(folder, config)                       # config.json + tokenizer files
    write_model_dir(folder, config, specials={"<tool_call>": 151657, "</tool_call>": 151658})
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{%- if tools %}<|system|>You may call these tools: {{ tools | tojson }}\n{%- endif %}"
    "{%- for m in messages %}<|{{ m['role'] }}|>"
    "{%- if m['content'] is string %}{{ m['content'] }}"
    "{%- elif m['content'] %}{%- for p in m['content'] %}{%- if p['type'] == 'text' %}{{ p['text'] }}{%- endif %}{%- endfor %}"
    "{%- endif %}\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{%- endif %}"
)
"""Roles, text parts and the tools list (as JSON), in the shape tool-calling templates take them; no model's own."""

BASE_SPECIALS = {"<unk>": 0, "<s>": 1, "</s>": 2}
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")


def tokenizer_json(vocab_size: int, specials: Mapping[str, int]) -> dict[str, Any]:
    """A word-level ``tokenizer.json`` of exactly ``vocab_size`` entries: ``specials`` at their ids, ``w<id>`` elsewhere."""
    taken = {**BASE_SPECIALS, **specials}
    free = (i for i in range(vocab_size) if i not in set(taken.values()))
    for role in ROLE_TOKENS:
        taken.setdefault(role, next(free))
    if max(taken.values()) >= vocab_size or len(set(taken.values())) != len(taken):
        raise ValueError(f"special token ids must be distinct and below vocab_size {vocab_size}: {taken}")
    by_id = {i: t for t, i in taken.items()}
    vocab = {by_id.get(i, f"w{i}"): i for i in range(vocab_size)}
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        for t, i in sorted(taken.items(), key=lambda kv: kv[1])
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }


def write_model_dir(folder: Path, config: Mapping[str, Any], specials: Mapping[str, int] | None = None, chat_template: str = CHAT_TEMPLATE) -> Path:
    """``folder`` with ``config.json`` (``config`` as given) and a tokenizer sized to its ``vocab_size``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(dict(config), indent=1))
    text = config.get("text_config", config)  # multimodal configs keep the text model's vocabulary inside
    vocab_size = int(text.get("vocab_size") or config["vocab_size"])
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json(vocab_size, specials or {})))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "model_max_length": int(text.get("max_position_embeddings", 32768)),
        "chat_template": chat_template,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
    (folder / "special_tokens_map.json").write_text(json.dumps({k: tokenizer_config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}))
    return folder
