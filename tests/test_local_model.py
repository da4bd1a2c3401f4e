"""The made-up tokenizer the GPU benchmarks serve beside random weights (benchmarks/local_model.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.local_model import write_model_dir


def test_vocabulary_fills_vocab_size_with_specials_at_their_ids(tmp_path: Path) -> None:
    folder = write_model_dir(tmp_path / "m", {"model_type": "qwen2", "vocab_size": 1000}, {"<tool_call>": 990, "</tool_call>": 991})
    tok = json.loads((folder / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(1000))
    assert vocab["<tool_call>"] == 990 and vocab["</tool_call>"] == 991 and vocab["</s>"] == 2
    assert {t["content"] for t in tok["added_tokens"]} >= {"<tool_call>", "</tool_call>", "<|user|>", "<|assistant|>"}
    assert "tools" in json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]


def test_multimodal_config_sizes_from_its_text_config(tmp_path: Path) -> None:
    folder = write_model_dir(tmp_path / "g", {"model_type": "gemma3", "text_config": {"vocab_size": 300}}, {"<image_soft_token>": 299})
    assert len(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]) == 300


def test_clashing_or_out_of_range_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct and below"):
        write_model_dir(tmp_path / "x", {"vocab_size": 10}, {"<a>": 10})
    with pytest.raises(ValueError, match="distinct and below"):
        write_model_dir(tmp_path / "y", {"vocab_size": 10}, {"<a>": 2})
