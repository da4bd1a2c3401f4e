"""Architecture facts of common open models, from each model's published ``config.json`` (``models.json``).

Nothing is downloaded at plan time: a model the catalog lacks needs ``arch`` in the stack config. Each
entry keeps the config.json fields vLLM and the planner read, the parameter count (the checkpoint's
safetensors total where published) and where the figures were read (``source``). The calibration
benchmark writes these very fields as the ``config.json`` vLLM serves with dummy weights.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

from stacks.catalog.vision import VisionTower, from_arch
from stacks.catalog.vision import from_config as vision_from_config
from stacks.config.schema import ArchConfig

MODELS = Path(__file__).with_name("models.json")

Dtype = Literal["float16", "bfloat16", "float32"]
Task = Literal["generate", "embed"]

ENCODER_ONLY = {"bert", "xlm-roberta", "roberta", "modernbert", "nomic_bert"}
"""Bidirectional encoders: vLLM allocates them no KV cache (``Attention.get_kv_cache_spec`` returns None, vLLM 0.26)."""
QUANT_IN_ID = re.compile(r"(?i)[-_.](awq|gptq|fp8|int4|int8|w4a16|w8a8|nvfp4|mxfp4|bnb|4bit|8bit|gguf)(?=[-_.]|$)")
"""Words in a repository id that say its weights are quantized."""


@dataclass(frozen=True)
class Arch:
    """What the planner needs to know about a model."""

    parameters_b: float
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    context_length: int
    dtype: Dtype = "bfloat16"
    tied_embeddings: bool = False
    sliding_window: int | None = None
    """Window of the sliding-window layers (their KV holds about this many tokens per sequence)."""
    sliding_layers: int = 0
    """How many of ``layers`` use the sliding window; the rest attend to the whole sequence."""
    experts: int = 0
    """Routed experts per MoE layer (0: a dense model)."""
    experts_per_token: int = 0
    expert_intermediate_size: int = 0
    qk_norm: bool = False
    """RMSNorm on queries and keys per head (Qwen3, Gemma 3): extra activation memory per token."""
    quantization: str | None = None
    """``quantization_config.quant_method`` of the checkpoint; vLLM applies it without ``--quantization``."""
    quant_bits: int | None = None
    task: Task = "generate"
    encoder_only: bool = False
    """A bidirectional encoder (BERT-style embedding models): no KV cache at all."""
    architecture: str = ""
    vision: VisionTower | None = None
    """The vision tower and projector of a multimodal checkpoint (``parameters_b`` counts them too)."""
    assumptions: tuple[str, ...] = ()
    """What the plan took on the safe side for a model described by ``arch`` alone (said in the plan's notes)."""


TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    # transformers 5.5.3 Gemma3TextConfig: Gemma 3's published text_config names only what differs from these
    "gemma3_text": {
        "vocab_size": 262_208,
        "max_position_embeddings": 131_072,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "sliding_window_pattern": 6,
        "tie_word_embeddings": True,
    },
}
"""Defaults of nested text configs (what ``from_pretrained`` fills in), by the text config's ``model_type``."""


def text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The language model's fields: the config itself, or a multimodal config's ``text_config`` over its type's defaults
    (with the checkpoint-wide dtype, quantization and architecture)."""
    if "text_config" not in cfg:
        return cfg
    inner = dict(cfg["text_config"])
    top = {k: cfg[k] for k in ("torch_dtype", "quantization_config", "architectures") if k in cfg}
    return top | TEXT_DEFAULTS.get(str(inner.get("model_type", "")), {}) | inner


def _sliding(cfg: dict[str, Any], layers: int, context: int) -> tuple[int | None, int]:
    """(window, sliding layers) the way the model's config says it, full attention when the window covers the context."""
    window = cfg.get("sliding_window")
    if not window or cfg.get("use_sliding_window") is False or window >= context:
        return None, 0
    if types := cfg.get("layer_types"):
        return window, sum(1 for t in types if t == "sliding_attention")
    if pattern := cfg.get("sliding_window_pattern"):
        # Gemma 3: every pattern-th layer is global, the others slide (transformers' rule)
        return window, sum(1 for i in range(layers) if (i + 1) % pattern != 0)
    return window, layers


def _chunked(cfg: dict[str, Any], layers: int, context: int) -> tuple[int | None, int]:
    """Llama 4: layers with RoPE attend within chunks of ``attention_chunk_size`` (vLLM's chunked local attention), every
    4th layer (NoPE) to the whole sequence (Llama4TextConfig.no_rope_layers); the plan holds a chunk like a window."""
    chunk = cfg.get("attention_chunk_size")
    if not chunk or chunk >= context:
        return None, 0
    rope = cfg.get("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(layers)]
    return int(chunk), sum(1 for r in rope if r)


def from_config(cfg: dict[str, Any], parameters_b: float, task: Task = "generate", processor: dict[str, Any] | None = None) -> Arch:
    """Arch from a published config.json's fields; a multimodal one's text config and its vision tower."""
    full = cfg
    cfg = text_config(cfg)
    layers = int(cfg["num_hidden_layers"])
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    context = int(cfg["max_position_embeddings"])
    window, sliding = _sliding(cfg, layers, context) if "attention_chunk_size" not in cfg else _chunked(cfg, layers, context)
    quant = cfg.get("quantization_config") or {}
    experts = int(cfg.get("num_experts") or cfg.get("num_local_experts") or 0)
    model_type = str(cfg.get("model_type", ""))
    return Arch(
        parameters_b=parameters_b,
        layers=layers,
        attention_heads=heads,
        kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        hidden_size=hidden,
        intermediate_size=int(cfg.get("intermediate_size") or 4 * hidden),
        vocab_size=int(cfg["vocab_size"]),
        context_length=context,
        dtype=cfg.get("torch_dtype") or "bfloat16",
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        sliding_window=window,
        sliding_layers=sliding,
        experts=experts,
        experts_per_token=int(cfg.get("num_experts_per_tok") or cfg.get("experts_per_token") or 0) if experts else 0,
        expert_intermediate_size=int(cfg.get("moe_intermediate_size") or cfg.get("intermediate_size") or 0) if experts else 0,
        qk_norm=model_type.startswith(("qwen3", "gemma3")),
        quantization=str(quant["quant_method"]).lower().replace("_", "-") if quant.get("quant_method") else None,
        quant_bits=quant.get("bits"),
        task=task,
        encoder_only=model_type in ENCODER_ONLY,
        architecture=(cfg.get("architectures") or [""])[0],
        vision=vision_from_config(full, processor or {}, hidden),
    )


@cache
def _entries() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads(MODELS.read_text())
    return data


ALIASES: dict[str, str] = {
    # base and instruct variants share the architecture
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "Qwen/Qwen2.5-3B": "Qwen/Qwen2.5-3B-Instruct",
    "Qwen/Qwen2.5-7B": "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen2.5-14B": "Qwen/Qwen2.5-14B-Instruct",
    "Qwen/Qwen2.5-72B": "Qwen/Qwen2.5-72B-Instruct",
    "Qwen/Qwen3-4B-Base": "Qwen/Qwen3-4B",
    "Qwen/Qwen3-8B-Base": "Qwen/Qwen3-8B",
    "Qwen/Qwen3-14B-Base": "Qwen/Qwen3-14B",
    "Qwen/Qwen3-30B-A3B-Base": "Qwen/Qwen3-30B-A3B",
    "meta-llama/Llama-3.2-1B": "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B": "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Llama-3.1-8B": "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B": "meta-llama/Llama-3.1-70B-Instruct",
    "meta-llama/Meta-Llama-3.1-70B-Instruct": "meta-llama/Llama-3.1-70B-Instruct",
    "01-ai/Yi-6B": "01-ai/Yi-6B-Chat",
    "mistralai/Mistral-7B-v0.3": "mistralai/Mistral-7B-Instruct-v0.3",
    "mistralai/Mixtral-8x7B-v0.1": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "google/gemma-3-1b-pt": "google/gemma-3-1b-it",
    "google/gemma-3-4b-pt": "google/gemma-3-4b-it",
    "google/gemma-3-12b-pt": "google/gemma-3-12b-it",
    "google/gemma-3-27b-pt": "google/gemma-3-27b-it",
}


@cache
def _index() -> dict[str, str]:
    index = {k.lower(): k for k in _entries()}
    index |= {k.lower(): v for k, v in ALIASES.items()}
    return index


def ids() -> list[str]:
    return sorted(_entries())


def config_json(model: str) -> dict[str, Any] | None:
    """The config.json fields the catalog holds for ``model`` (what the calibration benchmark serves)."""
    key = _index().get(model.strip().lower())
    return dict(_entries()[key]["config"]) if key else None


def entry(model: str) -> dict[str, Any] | None:
    key = _index().get(model.strip().lower())
    return _entries()[key] if key else None


def lookup(model: str) -> Arch | None:
    """Catalog facts for an HF id (case-insensitive; instruct/base variants share facts)."""
    e = entry(model)
    return from_config(e["config"], e["parametersB"], e["task"], e.get("processor")) if e else None


CONFIG_NAMES: dict[str, str] = {
    "parametersB": "the parameter count in billions (the model card, or the safetensors total on the model page)",
    "layers": "num_hidden_layers",
    "attentionHeads": "num_attention_heads",
    "kvHeads": "num_key_value_heads (num_attention_heads when absent)",
    "hiddenSize": "hidden_size",
    "intermediateSize": "intermediate_size",
    "vocabSize": "vocab_size",
    "contextLength": "max_position_embeddings",
    "tiedEmbeddings": "tie_word_embeddings (false when absent)",
    "expertsPerToken": "num_experts_per_tok",
    "expertIntermediateSize": "moe_intermediate_size (intermediate_size when absent)",
}
"""Where each ``arch`` key a model outside the catalog needs is found in its config.json (for the refusal)."""
REQUIRED_FOR_UNKNOWN = ("parametersB", "layers", "attentionHeads", "kvHeads", "hiddenSize", "intermediateSize", "vocabSize", "contextLength")
"""Every field that moves the memory figure of any model: weights, embeddings and LM head, activation, sampler, KV."""
REQUIRED_IF_QUANTIZED = ("tiedEmbeddings",)
"""A quantized checkpoint keeps its embeddings and LM head at the model dtype: whether they are one matrix or two moves its weights."""
REQUIRED_IF_MOE = ("expertsPerToken", "expertIntermediateSize")
_ARCH_FIELDS = frozenset(ArchConfig.model_fields)
"""``arch`` keys override the Arch field of the same name (ArchConfig's fields are a subset of Arch's)."""
ASSUMED_QK_NORM = (
    "arch.qkNorm not given: planned with per-head query/key norms (Qwen3 and Gemma 3 have them; the larger activation); "
    "set arch.qkNorm: false when its config.json's model_type is not qwen3* or gemma3*"
)


def _given(override: ArchConfig | None) -> dict[str, Any]:
    return {k: v for k, v in (override.model_dump(exclude_none=True) if override else {}).items() if k in _ARCH_FIELDS}


def missing_arch(override: ArchConfig | None, *, quantized: bool) -> list[str]:
    """The camelCase ``arch`` keys a model outside the catalog still needs (empty when described fully)."""
    given = _given(override)
    need = [*REQUIRED_FOR_UNKNOWN, *(REQUIRED_IF_QUANTIZED if quantized else ()), *(REQUIRED_IF_MOE if given.get("experts") else ())]
    return [name for name in need if _snake(name) not in given]


def resolve(model: str, override: ArchConfig | None, *, quantized: bool = False) -> Arch | list[str]:
    """Facts for a model: catalog entry with ``arch`` overrides applied.

    A model outside the catalog is described by ``arch`` alone: every field that moves its memory figure must be
    there (``quantized``: its embeddings too), else the camelCase names of the missing ones are returned. What is
    left out is taken as its config.json would have it (head dim = hidden / heads, a window on every layer), or on
    the safe side, said in ``Arch.assumptions`` (query/key norms).
    """
    base = lookup(model)
    fields = _given(override)
    if override and override.vision:
        fields["vision"] = from_arch(override.vision)
    if base is None:
        missing = missing_arch(override, quantized=quantized)
        if missing:
            return missing
        fields.setdefault("head_dim", fields["hidden_size"] // fields["attention_heads"])
        if "sliding_window" in fields:
            fields.setdefault("sliding_layers", fields["layers"])
        assumptions = () if "qk_norm" in fields else (ASSUMED_QK_NORM,)
        fields.setdefault("qk_norm", True)
        return Arch(**fields, assumptions=assumptions)
    if "sliding_window" in fields and "sliding_layers" not in fields:
        fields["sliding_layers"] = base.sliding_layers or base.layers
    return replace(base, **fields)


def _snake(camel: str) -> str:
    return "parameters_b" if camel == "parametersB" else "".join("_" + c.lower() if c.isupper() else c for c in camel)


def quantized_by_name(model: str) -> str | None:
    """The word in a repository id that says its weights are quantized (``-AWQ``, ``-FP8``, ``-Int4`` ...), if any."""
    m = QUANT_IN_ID.search(model)
    return m.group(1) if m else None
