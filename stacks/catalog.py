"""Architecture facts of common open models, from each model's published ``config.json``.

Nothing is downloaded: unknown models need ``arch`` in the stack config.
Gemma 3 interleaves sliding-window layers; counting every layer as full attention over-estimates
its KV use, which errs on the safe side.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from stacks.config import ArchConfig

Dtype = Literal["float16", "bfloat16", "float32"]


@dataclass(frozen=True)
class Arch:
    parameters_b: float
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    context_length: int
    dtype: Dtype = "bfloat16"


def _a(p: float, layers: int, heads: int, kv: int, head_dim: int, hidden: int, ctx: int, dtype: Dtype = "bfloat16") -> Arch:
    return Arch(p, layers, heads, kv, head_dim, hidden, ctx, dtype)


# repo id -> facts. Instruct/chat variants share the base model's architecture.
CATALOG: dict[str, Arch] = {
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": _a(1.100, 22, 32, 4, 64, 2048, 2048),
    "Qwen/Qwen2.5-0.5B-Instruct": _a(0.494, 24, 14, 2, 64, 896, 32768),
    "Qwen/Qwen2.5-3B-Instruct": _a(3.086, 36, 16, 2, 128, 2048, 32768),
    "Qwen/Qwen2.5-7B-Instruct": _a(7.616, 28, 28, 4, 128, 3584, 32768),
    "Qwen/Qwen3-4B": _a(4.022, 36, 32, 8, 128, 2560, 40960),
    "Qwen/Qwen3-8B": _a(8.191, 36, 32, 8, 128, 4096, 40960),
    "Qwen/Qwen3-14B": _a(14.768, 40, 40, 8, 128, 5120, 40960),
    "Qwen/Qwen3-32B": _a(32.762, 64, 64, 8, 128, 5120, 40960),
    "meta-llama/Llama-3.2-3B-Instruct": _a(3.213, 28, 24, 8, 128, 3072, 131072),
    "meta-llama/Llama-3.1-8B-Instruct": _a(8.030, 32, 32, 8, 128, 4096, 131072),
    "meta-llama/Llama-3.1-70B-Instruct": _a(70.554, 80, 64, 8, 128, 8192, 131072),
    "01-ai/Yi-6B-Chat": _a(6.061, 32, 32, 4, 128, 4096, 4096),
    "mistralai/Mistral-7B-Instruct-v0.3": _a(7.248, 32, 32, 8, 128, 4096, 32768),
    "google/gemma-3-12b-it": _a(12.187, 48, 16, 8, 256, 3840, 131072),
    "google/gemma-3-27b-it": _a(27.432, 62, 32, 16, 128, 5376, 131072),
}

ALIASES: dict[str, str] = {
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "Qwen/Qwen2.5-0.5B": "Qwen/Qwen2.5-0.5B-Instruct",
    "Qwen/Qwen2.5-3B": "Qwen/Qwen2.5-3B-Instruct",
    "Qwen/Qwen2.5-7B": "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen3-4B-Base": "Qwen/Qwen3-4B",
    "Qwen/Qwen3-8B-Base": "Qwen/Qwen3-8B",
    "Qwen/Qwen3-14B-Base": "Qwen/Qwen3-14B",
    "meta-llama/Llama-3.2-3B": "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Llama-3.1-8B": "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B": "meta-llama/Llama-3.1-70B-Instruct",
    "meta-llama/Meta-Llama-3.1-70B-Instruct": "meta-llama/Llama-3.1-70B-Instruct",
    "01-ai/Yi-6B": "01-ai/Yi-6B-Chat",
    "mistralai/Mistral-7B-v0.3": "mistralai/Mistral-7B-Instruct-v0.3",
    "google/gemma-3-12b-pt": "google/gemma-3-12b-it",
    "google/gemma-3-27b-pt": "google/gemma-3-27b-it",
}

REQUIRED_FOR_UNKNOWN = ("parametersB", "layers", "kvHeads", "headDim", "contextLength")

_INDEX = {k.lower(): v for k, v in CATALOG.items()} | {k.lower(): CATALOG[v] for k, v in ALIASES.items()}


def lookup(model: str) -> Arch | None:
    """Catalog facts for an HF id (case-insensitive; instruct/base variants share facts)."""
    return _INDEX.get(model.strip().lower())


def resolve(model: str, override: ArchConfig | None) -> Arch | list[str]:
    """Facts for a model: catalog entry with ``arch`` overrides applied.

    Returns the camelCase names of the missing fields when the model is unknown and ``arch`` is incomplete.
    """
    base = lookup(model)
    fields = override.model_dump(exclude_none=True) if override else {}
    if base is None:
        missing = [name for name in REQUIRED_FOR_UNKNOWN if _snake(name) not in fields]
        if missing:
            return missing
        heads = fields.get("attention_heads", fields["kv_heads"])
        base = Arch(
            parameters_b=fields["parameters_b"],
            layers=fields["layers"],
            attention_heads=heads,
            kv_heads=fields["kv_heads"],
            head_dim=fields["head_dim"],
            hidden_size=fields.get("hidden_size", heads * fields["head_dim"]),
            context_length=fields["context_length"],
            dtype=fields.get("dtype", "bfloat16"),
        )
        return base
    return replace(base, **fields)


def _snake(camel: str) -> str:
    return "parameters_b" if camel == "parametersB" else "".join("_" + c.lower() if c.isupper() else c for c in camel)
