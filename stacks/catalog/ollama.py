"""Ollama models the plan can size without being told: each tag's download size and the model it packs.

Sizes are the "Model library" table of ollama/ollama's README (v0.16.0, the last release whose README lists them),
rounded there to two figures; ``weights_bytes`` takes the top of that rounding. The architecture (layers, KV heads,
vocabulary) is the packed model's ``config.json`` in ``models.json``. A tag missing here needs ``memoryGiB`` when it
shares a GPU with vLLM servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from stacks.catalog import Arch, lookup

_LIBRARY: dict[str, tuple[str, str]] = {
    # default tag (what `ollama run <name>` pulls): (README size in GB, the model it packs, in models.json)
    "llama3.2": ("2.0", "meta-llama/Llama-3.2-3B-Instruct"),
    "llama3.2:1b": ("1.3", "meta-llama/Llama-3.2-1B-Instruct"),
    "llama3.1": ("4.7", "meta-llama/Llama-3.1-8B-Instruct"),
    "llama3.3": ("43", "meta-llama/Llama-3.3-70B-Instruct"),
    "gemma3": ("3.3", "google/gemma-3-4b-it"),
    "gemma3:12b": ("8.1", "google/gemma-3-12b-it"),
    "gemma3:27b": ("17", "google/gemma-3-27b-it"),
    "mistral": ("4.1", "mistralai/Mistral-7B-Instruct-v0.3"),
    "phi4": ("9.1", "microsoft/phi-4"),
    "phi4-mini": ("2.5", "microsoft/Phi-4-mini-instruct"),
    "deepseek-r1": ("4.7", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"),
}
_SIZE_TAGS = {"llama3.2:3b": "llama3.2", "llama3.1:8b": "llama3.1", "llama3.3:70b": "llama3.3", "gemma3:4b": "gemma3", "mistral:7b": "mistral"}
_SIZE_TAGS |= {"phi4:14b": "phi4", "phi4-mini:3.8b": "phi4-mini", "deepseek-r1:7b": "deepseek-r1"}
"""The library publishes each default tag under its size as well (``llama3.2:3b`` is ``llama3.2``), and as ``:latest``."""

KV_BYTES = {"f16": Decimal(2), "q8_0": Decimal(34) / 32, "q4_0": Decimal(18) / 32}
"""Bytes per KV element by ``OLLAMA_KV_CACHE_TYPE``: ggml's blocks of 32 values (ggml-common.h: block_q8_0 is 32 int8 and an
fp16 scale, 34 bytes; block_q4_0 16 bytes of nibbles and an fp16 scale, 18 bytes)."""
DEVICE_MINIMUM_BYTES = 457 * 2**20
"""What Ollama sets aside on a CUDA device for context structures (ml/device.go MinimumMemory, v0.32.15); each loaded
model is its own llama-server process with its own CUDA context."""
BATCH = 512
"""Ollama's default generation batch (llamaServerGenerationBatchDefault, server/sched.go v0.32.15): llama-server keeps
float32 logits of a batch over the vocabulary, the bulk of a small model's compute buffer (an estimate, not measured)."""


@dataclass(frozen=True)
class OllamaModel:
    tag: str
    """The library's default tag it resolves to."""
    weights_bytes: int
    arch: Arch


def _top_of_rounding(figure: str) -> Decimal:
    """``"2.0"`` -> 2.05, ``"43"`` -> 43.5: the largest size that rounds to the figure shown."""
    exponent = Decimal(figure).as_tuple().exponent
    assert isinstance(exponent, int)
    return Decimal(figure) + Decimal(5) * Decimal(10) ** (exponent - 1)


def find(model: str) -> OllamaModel | None:
    """The catalog entry of an Ollama model name (``llama3.2``, ``llama3.2:latest``, ``llama3.2:3b``), if known."""
    name = model.strip().lower().removesuffix(":latest")
    tag = _SIZE_TAGS.get(name, name)
    if tag not in _LIBRARY:
        return None
    size, hf_id = _LIBRARY[tag]
    arch = lookup(hf_id)
    assert arch is not None, f"{hf_id} is in models.json"
    return OllamaModel(tag, int(_top_of_rounding(size) * 10**9), arch)


def memory_bytes(m: OllamaModel, context: int, parallel: int, kv_cache_type: str) -> int:
    """GPU memory of one loaded model: its file, the KV cache of ``context`` x ``parallel`` tokens (llama-server runs with
    ``-c`` = context x parallel, llm/llama_server.go v0.32.15; the context is capped at the model's own), the device
    minimum and the batch's logits."""
    a = m.arch
    ctx = min(context, a.context_length)
    full_layers = a.layers - a.sliding_layers
    # sliding-window layers keep the window (llama.cpp's SWA cache) rather than the whole context
    tokens = full_layers * ctx + a.sliding_layers * min(ctx, a.sliding_window or ctx)
    kv = Decimal(2 * tokens * parallel * a.kv_heads * a.head_dim) * KV_BYTES[kv_cache_type]
    return m.weights_bytes + int(kv) + DEVICE_MINIMUM_BYTES + BATCH * a.vocab_size * 4
