"""A model folder vLLM can serve with random weights and a real (made-up) tokenizer, nothing downloaded.

``--skip-tokenizer-init`` serves completions of token ids only; chat completions, tool calls and the Anthropic
Messages API need a tokenizer and a chat template. This writes one: a word-level tokenizer (``tokenizers``, as
``transformers`` loads it with ``PreTrainedTokenizerFast``) whose vocabulary fills the model's ``vocab_size``, with
chosen special tokens at chosen ids (a tool parser's markers, a multimodal model's image tokens), and a small chat
template that renders roles, text and tools. Answers are random words (the weights are random); what is checked on
the GPU is how vLLM treats the requests, not the text.

    write_model_dir(folder, config)                       # config.json + tokenizer files
    write_model_dir(folder, config, specials={"<tool_call>": 151657, "</tool_call>": 151658})
    write_gemma3_dir(folder, config, preprocessor)        # + Gemma 3's image tokens, processor files, image placeholder
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


def chat_template_with_images(placeholder: str) -> str:
    """CHAT_TEMPLATE that writes ``placeholder`` where a message has an image part (vLLM passes image parts to templates
    that loop over content as ``{"type": "image"}``, vllm/entrypoints/chat_utils.py); the processor expands it."""
    text_part = "{%- if p['type'] == 'text' %}{{ p['text'] }}{%- endif %}"
    return CHAT_TEMPLATE.replace(text_part, text_part + "{%- if p['type'] == 'image' %}" + placeholder + "{%- endif %}")


def write_model_dir(
    folder: Path,
    config: Mapping[str, Any],
    specials: Mapping[str, int] | None = None,
    chat_template: str = CHAT_TEMPLATE,
    *,
    vocab_size: int | None = None,
    named_specials: Mapping[str, str] | None = None,
) -> Path:
    """``folder`` with ``config.json`` (``config`` as given) and a tokenizer sized to its ``vocab_size`` (or the one given,
    for configs that leave it to their type's default). ``named_specials``: attribute name -> special token, as
    ``tokenizer_config.json``'s ``extra_special_tokens`` names them (processors read ``tokenizer.image_token`` ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(dict(config), indent=1))
    text = config.get("text_config", config)  # multimodal configs keep the text model's vocabulary inside
    vocab_size = vocab_size or int(text.get("vocab_size") or config["vocab_size"])
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json(vocab_size, specials or {})))
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "model_max_length": int(text.get("max_position_embeddings", 32768)),
        "chat_template": chat_template,
    }
    if named_specials:
        tokenizer_config["extra_special_tokens"] = dict(named_specials)
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
    (folder / "special_tokens_map.json").write_text(json.dumps({k: tokenizer_config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}))
    return folder


GEMMA3_NEWLINES = ("\n", "\n\n", "\n\n\n", "\n\n\n\n")
"""vLLM's Gemma 3 processor looks these up in the vocabulary (Gemma3MultiModalProcessor._find_mm_placeholders)."""


def write_gemma3_dir(folder: Path, config: Mapping[str, Any], preprocessor: Mapping[str, Any], vocab_size: int = 262_208) -> Path:
    """A Gemma 3 (Gemma3ForConditionalGeneration) folder vLLM serves with images: the published config, a tokenizer with
    the image tokens at the ids the config names (``boi_token_index``, ``eoi_token_index``, ``image_token_index``) and the
    newline tokens, ``preprocessor_config.json`` / ``processor_config.json`` as Google publishes them, and a chat template
    that puts ``<start_of_image>`` where an image goes. ``vocab_size``: Gemma3TextConfig's default (transformers 5.5.3)."""
    boi, eoi, image = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
    specials = {boi: int(config["boi_token_index"]), eoi: int(config["eoi_token_index"]), image: int(config["image_token_index"])}
    # the newlines sit just below the image tokens, clear of the base and role tokens at the bottom
    specials |= {nl: specials[boi] - 1 - n for n, nl in enumerate(GEMMA3_NEWLINES)}
    write_model_dir(
        folder,
        config,
        specials,
        chat_template_with_images(boi),
        vocab_size=vocab_size,
        named_specials={"boi_token": boi, "eoi_token": eoi, "image_token": image},
    )
    seq = int(preprocessor.get("image_seq_length", config.get("mm_tokens_per_image", 256)))
    (folder / "preprocessor_config.json").write_text(json.dumps(dict(preprocessor), indent=1))
    (folder / "processor_config.json").write_text(json.dumps({"image_seq_length": seq, "processor_class": "Gemma3Processor"}, indent=1))
    return folder
