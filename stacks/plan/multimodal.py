"""Multimodal checkpoints as vLLM loads and profiles them: the vision tower's weights, the encoder's profiling peak and
encoder cache for the inputs a prompt may carry, where vLLM counts them, and the launch arguments the limits imply.

vLLM 0.26.0, read from its source:

- ``--limit-mm-per-prompt`` (MultiModalConfig.limit_per_prompt, vllm/config/multimodal.py): items per prompt per
  modality, 999 for every modality the model supports unless set. With every limit 0 the tower and projector are never
  built (SupportsMultiModal._mark_tower_model, model_executor/models/interfaces.py; since PR #22299) and nothing is
  profiled (compute_mm_encoder_budget returns 0, v1/core/encoder_cache_manager.py).
- The encoder budget (MultiModalBudget, multimodal/encoder_budget.py): the largest item's embeddings per active
  modality (one item each, ``get_mm_max_toks_per_item``); budget = max(max_num_batched_tokens, that) for both compute
  and cache (SchedulerConfig.max_num_encoder_input_tokens = encoder_cache_size = max_num_batched_tokens). The profile
  takes the modality with the most embeddings per item and ``min(budget // per_item, max_num_seqs x per_prompt)``
  items of it (at least one), ``per_prompt = max(1, min(limit, max_model_len // per_item))``.
- The V1 runner's profile_run (v1/worker/gpu_model_runner.py) runs the encoder on those items, keeps their outputs in
  the encoder cache and runs the text dummy batch beside them: the torch peak vLLM subtracts from the budget is the
  larger of the two. The V2 runner of 0.22-0.26 profiles the text model only (v1/worker/gpu/model_runner.py; encoder
  profiling came with PR #47985 in 0.27.0): the encoder's memory then comes on top of the budget once images arrive.
- Measured on the H100 (benchmarks/results/h100-vllm-0.26.0-multimodal.json and -2.json, Gemma 3 27B, 8 requests of
  4 images at once, the profile's batch): serving images added 5.15 GiB (V2 runner) and 5.06 GiB (V1 runner, encoder
  profiled) to what the server held once started, the encoder's peak and the text model's together (4.93 GiB planned),
  not the larger of the two that the V1 profile reserves: the caching allocator keeps the blocks of the encoder pass
  while the prefill beside it allocates its own. So the plan counts the encoder's whole peak beyond the text model's
  activation, inside the budget as far as vLLM profiles it, the rest outside.
- The processor cache (``--mm-processor-cache-gb``, 4 GiB by default, an LRU mirrored in the API server and the engine
  core) is host memory; vLLM reserves GPU memory for the frontend only with ``--mm-ipc-gpu-memory-gb`` (0 by default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from stacks.catalog import Arch
from stacks.catalog.vision import VisionTower
from stacks.errors import Problem
from stacks.plan.memory import GIB
from stacks.plan.releases import Version, encoder_profiled

DEFAULT_LIMIT = 999
"""MultiModalConfig.get_limit_per_prompt: a modality the flag leaves out takes up to 999 items (vLLM 0.26)."""
PROCESSOR_CACHE_GIB = 4.0
"""MultiModalConfig.mm_processor_cache_gb default (vLLM 0.26), per API server process and per engine core."""
PROCESSOR_CACHE_COPIES = 2
"""``mm_processor_cache_gb x (api_server_count + data_parallel_size)``: one API server and one engine core here."""
PIXEL_BYTES = 4
"""Pixel values reach the GPU as float32 (the HF image processors' output) and stay there through the encoder pass."""
CONFIG_NAMES = {"images": "image", "videos": "video"}
"""The stack's keys for vLLM's modality names."""


@dataclass(frozen=True)
class EncoderFigures:
    """What a multimodal server's vision side takes on each of its GPUs (GiB unless named otherwise)."""

    limits: dict[str, int]
    """Items per prompt per modality, as vLLM applies them."""
    tower_loaded: bool
    weights_gib: float
    """Tower and projector (their share on this GPU)."""
    modality: str | None
    """The modality vLLM profiles with (most embeddings per item)."""
    embeds_per_item: int
    items_per_batch: int
    budget_tokens: int
    """Encoder compute and cache budget, in embeddings."""
    peak_gib: float
    """The encoder pass over ``items_per_batch`` items: activations, pixels and outputs."""
    cache_gib: float
    """The encoder cache full (``budget_tokens`` embeddings at the text model's width)."""
    extra_gib: float
    """Beyond the text model's peak activation once images are served: the encoder pass's peak (see the module)."""
    profiled: bool
    """vLLM profiles the encoder before sizing the KV cache: ``in_budget_gib`` of ``extra_gib`` is inside
    --gpu-memory-utilization."""
    processor_cache_gib: float
    """Host memory of the processor caches (never on the GPU)."""
    in_budget_gib: float = 0.0
    """What the V1 profile reserves beyond the text model's peak: max(encoder peak, text peak + outputs) - text peak."""

    @property
    def outside_budget_gib(self) -> float:
        return self.extra_gib - self.in_budget_gib


def limits(vision: VisionTower, configured: dict[str, int] | None) -> dict[str, int]:
    """vLLM's per-modality limits: the configured ones (stack key names) over 999 for each supported modality."""
    out = {m.name: DEFAULT_LIMIT for m in vision.modalities}
    for key, value in (configured or {}).items():
        out[CONFIG_NAMES.get(key, key)] = value
    return out


def media_problems(i: int, model: str, vision: VisionTower | None, configured: dict[str, int] | None, problems: list[Problem]) -> bool:
    """``mediaPerPrompt`` on a model without a tower, or for a kind its tower does not take (vLLM ignores such a limit)."""
    if configured is None:
        return False
    key = f"models[{i}].mediaPerPrompt"
    if vision is None:
        problems.append(Problem(key, f"{model} takes text only as the plan knows it; remove mediaPerPrompt, or describe its tower in arch.vision"))
        return True
    taken = {m.name for m in vision.modalities}
    found = False
    for name, value in configured.items():
        if value and CONFIG_NAMES.get(name, name) not in taken:
            kinds = ", ".join(k for k, v in CONFIG_NAMES.items() if v in taken)
            problems.append(Problem(f"{key}.{name}", f"{model} takes {kinds} only; remove {name} or set it to 0"))
            found = True
    return found


def limit_args(vision: VisionTower | None, configured: dict[str, int] | None) -> list[str]:
    """``--limit-mm-per-prompt`` with the configured limits (JSON, every release 0.11-0.33 parses it); none unless set."""
    if vision is None or not configured:
        return []
    chosen = {CONFIG_NAMES.get(k, k): v for k, v in sorted(configured.items())}
    return ["--limit-mm-per-prompt", json.dumps(chosen, separators=(",", ":"))]


def _flag_value(extra_args: list[str], flag: str) -> str | None:
    """The value ``extraArgs`` give ``flag`` (``--flag value`` or ``--flag=value``), the last one winning as argparse does."""
    value = None
    for i, arg in enumerate(extra_args):
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        elif arg == flag and i + 1 < len(extra_args):
            value = extra_args[i + 1]
    return value


def _processor_cache_gib(extra_args: list[str]) -> float:
    try:
        per_copy = float(_flag_value(extra_args, "--mm-processor-cache-gb") or PROCESSOR_CACHE_GIB)
    except ValueError:
        per_copy = PROCESSOR_CACHE_GIB
    return per_copy * PROCESSOR_CACHE_COPIES


def vit_bytes_per_position(vision: VisionTower, dtype_bytes: float, tp: int) -> float:
    """Live activation per ViT position at the layer's peak: the residual and the normed input (hidden, replicated) with,
    in attention, q/k/v and the attention output, in the MLP the first projection(s) and the activation (split over TP)."""
    h, i = vision.hidden_size, vision.intermediate_size
    attention = 2 * h + 4 * h / tp
    mlp = 2 * h + (3 if vision.gated_mlp else 2) * i / tp
    return max(attention, mlp) * dtype_bytes


def encoder_figures(
    arch: Arch,
    configured: dict[str, int] | None,
    *,
    version: Version,
    v2_runner: bool,
    batched_tokens: int,
    max_num_seqs: int,
    max_model_len: int,
    tp: int,
    dtype_bytes: float,
    text_activation_gib: float,
    extra_args: list[str],
) -> EncoderFigures | None:
    """The vision side of ``arch`` as the release loads and profiles it; None for a text-only model."""
    vision = arch.vision
    if vision is None:
        return None
    applied = limits(vision, configured)
    active = {m.name: m for m in vision.modalities if applied.get(m.name, 0) > 0}
    profiled = encoder_profiled(version, v2_runner=v2_runner) and "--skip-mm-profiling" not in extra_args
    if not active:
        return EncoderFigures(applied, False, 0.0, None, 0, 0, 0, 0.0, 0.0, 0.0, profiled, 0.0)
    # --mm-encoder-tp-mode data: every TP rank holds the whole tower and encodes its share of the items
    data_parallel = _flag_value(extra_args, "--mm-encoder-tp-mode") == "data"
    weights = vision.parameters * dtype_bytes / (1 if data_parallel else tp) / GIB
    per_item = {name: (vision.video_embeds(max_model_len) if name == "video" else m.embeds_per_item) for name, m in active.items()}
    modality, embeds = max(per_item.items(), key=lambda kv: (kv[1], kv[0]))  # MultiModalBudget.get_modality_with_max_tokens
    budget = max(batched_tokens, max(per_item.values()))
    per_prompt = max(1, min(applied[modality], max_model_len // embeds))
    items = max(1, min(budget // embeds, max_num_seqs * per_prompt))
    positions = items * embeds * active[modality].positions_per_embed
    # data mode: each rank encodes its share of the items with the whole tower (run_dp_sharded_vision_model)
    shard = 1 if not data_parallel else tp
    vit_tp = 1 if data_parallel else tp
    activation = positions / shard * vit_bytes_per_position(vision, dtype_bytes, vit_tp)
    pixels = positions / shard * 3 * vision.patch_size**2 * vision.frames_per_patch * PIXEL_BYTES
    outputs = items * embeds * arch.hidden_size * dtype_bytes
    peak = (activation + pixels + outputs) / GIB
    cache = budget * arch.hidden_size * dtype_bytes / GIB
    reserved = max(peak, text_activation_gib + outputs / GIB) - text_activation_gib
    return EncoderFigures(
        limits=applied,
        tower_loaded=True,
        weights_gib=weights,
        modality=modality,
        embeds_per_item=embeds,
        items_per_batch=items,
        budget_tokens=budget,
        peak_gib=peak,
        cache_gib=cache,
        extra_gib=peak,
        profiled=profiled,
        processor_cache_gib=_processor_cache_gib(extra_args),
        in_budget_gib=reserved if profiled else 0.0,
    )


def text_parameters_b(arch: Arch) -> float:
    """The language model's parameters: the checkpoint's total without the tower and projector."""
    return arch.parameters_b - (arch.vision.parameters / 1e9 if arch.vision else 0.0)
