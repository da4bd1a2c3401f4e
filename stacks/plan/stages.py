"""One server's sizes on each of its GPUs at a tensor x pipeline split, stage by stage, and the split a model needs.

vLLM splits a model's decoder layers over its pipeline stages (``memory.stage_layers``); the first stage holds the
input embedding, the last the LM head and the sampler. Every GPU of one stage holds the same (tensor ranks split each
layer evenly). The stage that holds the most decides what the server's fraction must allow, and vLLM gives every stage
the same number of KV blocks (the fewest any stage can hold: ``get_kv_cache_configs``, vllm/v1/core/kv_cache_utils.py
0.26), so the heaviest stage binds the KV cache too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from stacks.catalog import Arch
from stacks.plan.memory import (
    GIB,
    SAFETY_FRACTION,
    KvLayout,
    Overhead,
    activation_gib,
    cudagraph_gib,
    kv_layout,
    non_torch_gib,
    stage_layers,
    stage_weights_gib,
)
from stacks.plan.multimodal import EncoderFigures, encoder_figures, text_parameters_b
from stacks.plan.releases import Version, concurrent_batches, cudagraphs_in_budget, kv_block_tokens, uses_v2_model_runner
from stacks.plan.sharing import auto_budget

MAX_NODES = 64
"""The most nodes a refusal suggests (``models[].nodes`` allows as many)."""


@dataclass(frozen=True)
class Stage:
    first_layer: int
    layers: int
    weights: float
    """GiB per GPU."""
    activation: float
    """GiB per GPU: the profiling run's peak; the last stage adds the sampler's logits."""


@dataclass(frozen=True)
class Sizing:
    """A server at one split: the heaviest stage's overhead (what its fraction and KV are planned by) and every stage."""

    tp: int
    pp: int
    overhead: Overhead
    layout: KvLayout | None
    stages: list[Stage]
    encoder: EncoderFigures | None = None
    """A multimodal model's vision side at this split (None for text-only models)."""

    def sequence_gib(self, max_model_len: int) -> float:
        return self.layout.sequence_bytes(max_model_len) / GIB if self.layout else 0.0

    def room(self, gpu_total: float) -> float:
        """What one GPU offers weights, overhead and KV under ``auto``: its total less the safety margin and what the
        process holds outside its budget, and at most what ``auto`` budgets one server (sharing.auto_budget)."""
        return min(gpu_total * (1 - SAFETY_FRACTION) - self.overhead.outside_budget, auto_budget(gpu_total))

    def fits(self, gpu_total: float, max_model_len: int) -> bool:
        """One maxModelLen sequence fits beside the heaviest stage's weights and overhead."""
        return self.overhead.weights + self.overhead.in_budget + self.sequence_gib(max_model_len) <= self.room(gpu_total)


@dataclass(frozen=True)
class Model:
    """What sizing needs of a model besides the split (the planner resolves these from the config and the catalog)."""

    arch: Arch
    version: Version
    dtype_bytes: float
    quantization: str | None
    kv_bytes: float
    batched_tokens: int
    max_num_seqs: int
    pooling: bool
    enforce_eager: bool
    max_model_len: int = 0
    media: dict[str, int] | None = None
    """``mediaPerPrompt`` as vLLM's limits (None: the release's defaults)."""
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    """The server's environment (``VLLM_USE_V2_MODEL_RUNNER`` picks the model runner in 0.22-0.28)."""


def size(m: Model, *, tp: int, pp: int) -> Sizing:
    a = m.arch
    v2 = uses_v2_model_runner(m.version, moe=a.experts > 0, pooling=m.pooling, env=m.env)
    batches = concurrent_batches(m.version, pp=pp, v2_runner=v2, pooling=m.pooling)
    layout = kv_layout(a, tp=tp, pp=pp, kv_bytes=m.kv_bytes, in_flight_tokens=batches * m.batched_tokens, block_tokens=kv_block_tokens(m.version))
    forward = activation_gib(a, m.batched_tokens, m.max_num_seqs, tp, sampler=False)
    last = activation_gib(a, m.batched_tokens, m.max_num_seqs, tp, sampler=not m.pooling)
    encoder = encoder_figures(
        a,
        m.media,
        version=m.version,
        v2_runner=v2,
        batched_tokens=m.batched_tokens,
        max_num_seqs=m.max_num_seqs,
        max_model_len=m.max_model_len,
        tp=tp,
        dtype_bytes=m.dtype_bytes,
        text_activation_gib=last,
        extra_args=list(m.extra_args),
    )
    # the tower keeps the model dtype whatever the language model's quantization (its layers are left unquantized);
    # with pipeline stages it is counted on every stage (conservative: vLLM runs it where the first stage's inputs are)
    text = replace(a, parameters_b=text_parameters_b(a))
    tower = encoder.weights_gib if encoder else 0.0
    weights = [w + tower for w in stage_weights_gib(text, m.dtype_bytes, m.quantization, tp, pp)]
    stages, first = [], 0
    for s, layers in enumerate(stage_layers(a.layers, pp)):
        stages.append(Stage(first, layers, weights[s], last if s == pp - 1 else forward))
        first += layers
    heaviest = max(stages, key=lambda st: st.weights + st.activation)
    overhead = Overhead(
        weights=heaviest.weights,
        activation=heaviest.activation,
        non_torch=non_torch_gib(tp, pp),
        cudagraphs=cudagraph_gib(a, m.max_num_seqs, m.batched_tokens, pp, m.enforce_eager),
        cudagraphs_in_budget=cudagraphs_in_budget(m.version, v2_runner=v2),
        encoder=encoder.in_budget_gib if encoder else 0.0,
        encoder_outside=encoder.outside_budget_gib if encoder else 0.0,
    )
    return Sizing(tp, pp, overhead, layout, stages, encoder)


def smallest_split(
    m: Model, gpu_total: float, max_model_len: int, tp_options: list[int], tp_valid: Callable[[int], bool], max_nodes: int = MAX_NODES
) -> Sizing | None:
    """The fewest GPUs that hold the model and one maxModelLen sequence: tensor parallel within a node first (the
    ``tp_options`` vLLM accepts for it), then more nodes of the widest of them (up to ``max_nodes``), one pipeline stage
    per node."""
    widths = [tp for tp in sorted(set(tp_options)) if tp_valid(tp)]
    for tp in widths:
        s = size(m, tp=tp, pp=1)
        if s.fits(gpu_total, max_model_len):
            return s
    if not widths:
        return None
    for nodes in range(2, min(max_nodes, m.arch.layers) + 1):
        s = size(m, tp=widths[-1], pp=nodes)
        if s.fits(gpu_total, max_model_len):
            return s
    return None
