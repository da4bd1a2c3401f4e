"""GPU memory arithmetic: what one vLLM server holds on each of its GPUs, and how a GPU is shared.

vLLM's budget per server is ``--gpu-memory-utilization`` x the GPU's total as CUDA reports it. Inside it sit the
weights, the peak activation of its profiling run, non-torch memory (NCCL, cuBLAS workspaces) and, in some
releases and runners, CUDA-graph memory; the rest is KV cache. Outside it: the process's CUDA context and,
where the release captures them after sizing the KV cache, the CUDA graphs. Where the release has
``--kv-cache-memory-bytes`` the plan passes the KV cache in whole blocks, so vLLM allocates exactly the planned
KV; the fraction then only gates the start (vLLM refuses to start when less than fraction x total is free).

Every constant below says where its figure comes from: vLLM's source (the release's sdist), the H100
measurements in ``benchmarks/results/h100-vllm-0.26.0-profile.json`` and ``../shared/gpu/README.md``, or a
published log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stacks.catalog import Arch

GIB = 1024**3
BLOCK_TOKENS = 16
"""KV block size on CUDA for full and sliding-window attention up to vLLM 0.33 (CacheConfig.DEFAULT_BLOCK_SIZE; FlashAttention and
FlashInfer keep 16, vLLM 0.26 Platform.update_block_size_for_backend); ``releases.kv_block_tokens`` gives each release's."""

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}

# Weights of quantized checkpoints, bytes per parameter of the layers the method quantizes; embeddings and the
# LM head keep the model dtype (AWQ/GPTQ modules_to_not_convert, gpt-oss quantization_config).
QUANT_BYTES = {
    "awq": 0.5 + 2.5 / 128,  # 4-bit weights, an fp16 scale and a 4-bit zero point per group of 128
    "awq-marlin": 0.5 + 2.5 / 128,
    "gptq": 0.5 + 2.5 / 128,
    "gptq-marlin": 0.5 + 2.5 / 128,
    "bitsandbytes": 0.5 + 4 / 64,  # NF4 with an absmax per 64 values
    "fp8": 1.0,  # fp8 weights, block or channel scales
    "modelopt": 1.0,
    "compressed-tensors": 1.0,  # taken as 8-bit: the method name alone does not say int4 or fp8
    "mxfp4": 4.25 / 8,  # 4-bit values, an 8-bit scale per 32 (only MoE experts are quantized)
}

# Peak activation of vLLM's profiling run (GPUModelRunner.profile_run: one forward over max_num_batched_tokens
# tokens, then the sampler over min(max_num_seqs, tokens) rows of vocabulary logits), fitted to the H100
# measurements (vLLM 0.26.0): bytes per batched token per MLP intermediate unit, per hidden unit and per
# query/key-norm element, and bytes per logit (bf16 logits plus their fp32 copy in the sampler).
ACT_BYTES_PER_INTERMEDIATE = 6
ACT_BYTES_PER_HIDDEN = 8
ACT_BYTES_PER_QK_NORM = 12
SAMPLER_BYTES_PER_LOGIT = 6

NON_TORCH_GIB = 0.22
"""Non-torch memory at TP 1: 0.22 GiB for every model measured on the H100 (vLLM 0.26.0)."""
NON_TORCH_GIB_PARALLEL = 2.0
"""Per GPU at TP or PP >= 2 (NCCL buffers, custom all-reduce): about 2 GiB in published H100 logs; not measured here.
Across nodes the same figure is used: vLLM turns its custom all-reduce off once a server spans nodes (ParallelConfig.
_verify_args, nnodes > 1, vllm/config/parallel.py 0.26), so a rank's non-torch memory is NCCL's communicators (its
tensor-parallel group on the node, one pipeline peer per neighbouring stage); not measured on a multi-node group either."""
CUDAGRAPH_BASE_GIB = 0.07
CUDAGRAPH_GIB_PER_GRAPH_LAYER = (0.48 - CUDAGRAPH_BASE_GIB) / (102 * 22)
"""CUDA-graph memory grows with the graphs captured (two modes, FULL and PIECEWISE, per capture size) and the layers in
each: 0.48 GiB for TinyLlama (22 layers) with maxNumSeqs 512 (51 capture sizes) measured on the H100 with vLLM 0.26.0
(benchmarks/results/h100-vllm-0.26.0-calibrate.json); the README's 0.12-0.17 GiB for 1-8B models with small maxNumSeqs
lie within 0.05 GiB of this line."""
CUDA_CONTEXT_GIB = 0.5
"""Per process, outside any budget: CUDA context and library handles, before vLLM's first memory snapshot."""
SAFETY_FRACTION = 0.02
"""Of each GPU kept free for allocator fragmentation and what the figures above do not see."""


@dataclass(frozen=True)
class KvLayout:
    """How vLLM lays one server's KV cache out on each of its GPUs (vllm/v1/core/kv_cache_utils.py, 0.26).

    Layers of one attention type form groups of ``group_size`` layers (padded); every group draws blocks from
    one pool, and a block of the pool holds ``group_size`` layers' pages.
    """

    page_bytes: int
    """One block of one layer on one GPU: block tokens x 2 (K and V) x KV heads per GPU x head dim x dtype bytes."""
    group_size: int
    windows: tuple[int | None, ...]
    """Per group: None for full attention, else its sliding window."""
    in_flight_tokens: int
    """Tokens scheduled but not settled (concurrent batches x batched tokens): sliding layers keep their blocks."""
    block_tokens: int = BLOCK_TOKENS
    """Tokens per block (the release's)."""

    @property
    def block_bytes(self) -> int:
        return self.page_bytes * self.group_size

    def blocks_per_sequence(self, max_model_len: int) -> int:
        blocks = 0
        for window in self.windows:
            if window is None:
                blocks += math.ceil(max_model_len / self.block_tokens)
            else:
                # SlidingWindowSpec.max_admission_blocks_per_request
                blocks += math.ceil(min(window - 1 + self.in_flight_tokens, max_model_len) / self.block_tokens) + 1
        return blocks

    def sequence_bytes(self, max_model_len: int) -> int:
        return self.blocks_per_sequence(max_model_len) * self.block_bytes

    def reported_tokens(self, blocks: int, max_model_len: int) -> int:
        """What vLLM logs as "GPU KV cache size: N tokens" (get_kv_cache_capacity: concurrency x max_model_len)."""
        per_seq = self.blocks_per_sequence(max_model_len)
        return int(blocks / per_seq * max_model_len) if per_seq else 0


def kv_layout(arch: Arch, *, tp: int, pp: int, kv_bytes: float, in_flight_tokens: int, block_tokens: int = BLOCK_TOKENS) -> KvLayout | None:
    """None for models without a KV cache (bidirectional encoders)."""
    if arch.encoder_only:
        return None
    kv_heads = max(1, arch.kv_heads // tp)  # ModelConfig.get_num_kv_heads: replicated when tp > kv heads
    page = int(block_tokens * 2 * kv_heads * arch.head_dim * kv_bytes)
    full = arch.layers - arch.sliding_layers
    if arch.sliding_layers == 0 or full == 0:
        layers = math.ceil(arch.layers / pp)
        return KvLayout(page, layers, (None if full else arch.sliding_window,), in_flight_tokens, block_tokens)
    # _get_kv_cache_groups_uniform_page_size: the smaller type's layer count is the group size, unless the larger is
    # under 1.5 times it; every type's layers are split into groups of that size (the last one padded)
    small, large = min(full, arch.sliding_layers), max(full, arch.sliding_layers)
    size = large if large < 1.5 * small else small
    windows = (None,) * math.ceil(full / size) + (arch.sliding_window,) * math.ceil(arch.sliding_layers / size)
    return KvLayout(page, math.ceil(size / pp), windows, in_flight_tokens, block_tokens)


@dataclass(frozen=True)
class Overhead:
    """What one server holds on each of its GPUs besides its KV cache, in GiB."""

    weights: float
    activation: float
    non_torch: float
    cudagraphs: float
    cudagraphs_in_budget: bool
    context: float = CUDA_CONTEXT_GIB
    encoder: float = 0.0
    """A multimodal model's vision encoder beyond the text model's peak activation, inside the budget: what vLLM's
    profile reserves for it (stacks.plan.multimodal)."""
    encoder_outside: float = 0.0
    """The rest of the encoder's memory once images are served, on top of the budget."""

    @property
    def in_budget(self) -> float:
        """Inside --gpu-memory-utilization besides weights and KV: activation, non-torch, CUDA graphs and the vision
        encoder where the release counts them."""
        return self.activation + self.non_torch + (self.cudagraphs if self.cudagraphs_in_budget else 0.0) + self.encoder

    @property
    def outside_budget(self) -> float:
        return self.context + (0.0 if self.cudagraphs_in_budget else self.cudagraphs) + self.encoder_outside


def stage_layers(layers: int, pp: int) -> list[int]:
    """Decoder layers of each pipeline stage as vLLM splits them (vllm/distributed/utils.py get_pp_indices, 0.26, without
    VLLM_PP_LAYER_PARTITION): an even share each, the remainder one layer apiece to the stages before the last, counting
    back from it (the first and last stages hold the embedding and the LM head)."""
    partitions = [layers // pp] * pp
    for i in range(2, layers % pp + 2):
        partitions[-i] += 1
    return partitions


def stage_weights_gib(arch: Arch, dtype_bytes: float, quantization: str | None, tp: int, pp: int) -> list[float]:
    """Weights per GPU of each pipeline stage: quantized layers at the method's bytes, embeddings (and an untied LM head)
    at the model dtype, MoE experts counted in full (every expert is resident), the layers split over the stages as vLLM
    splits them, each stage's share split over its tensor ranks. The input embedding lives on the first stage, the LM
    head on the last; a tied model keeps the embedding on the last stage too (vllm/model_executor/models/llama.py and the
    other decoders, 0.26: embed_tokens where is_first_rank or tie_word_embeddings and is_last_rank)."""
    total = arch.parameters_b * 1e9
    vocab = arch.vocab_size * arch.hidden_size
    embeddings = vocab * (1 if arch.tied_embeddings else 2)
    if quantization is None:
        weight_bytes = total * dtype_bytes
    elif quantization == "mxfp4":
        experts = arch.layers * arch.experts * 3 * arch.hidden_size * arch.expert_intermediate_size
        weight_bytes = experts * QUANT_BYTES["mxfp4"] + (total - experts) * dtype_bytes
    else:
        weight_bytes = embeddings * dtype_bytes + max(0.0, total - embeddings) * QUANT_BYTES.get(quantization, 1.0)
    embed = vocab * dtype_bytes
    head = 0.0 if arch.tied_embeddings else vocab * dtype_bytes
    in_layers = max(0.0, weight_bytes - embed - head)
    # rotary cos/sin caches (fp32, per position and rotary dim; Gemma 3 keeps a second one for its local layers)
    rope = arch.context_length * arch.head_dim * 4 * (2 if arch.sliding_layers else 1)
    out = []
    for s, n in enumerate(stage_layers(arch.layers, pp)):
        held = in_layers * n / arch.layers
        if s == 0:
            held += embed
        if s == pp - 1:
            held += head + (embed if arch.tied_embeddings and pp > 1 else 0.0)
        out.append((held / tp + rope) / GIB)
    return out


def weights_gib(arch: Arch, dtype_bytes: float, quantization: str | None, tp: int, pp: int) -> float:
    """Weights per GPU of the heaviest pipeline stage (all of them at pipelineParallel 1)."""
    return max(stage_weights_gib(arch, dtype_bytes, quantization, tp, pp))


def activation_gib(arch: Arch, batched_tokens: int, max_num_seqs: int, tp: int, *, sampler: bool) -> float:
    """Peak activation of vLLM's profiling run on one GPU (see the constants above)."""
    intermediate = arch.experts_per_token * arch.expert_intermediate_size if arch.experts else arch.intermediate_size
    qk = (arch.attention_heads + arch.kv_heads) * arch.head_dim if arch.qk_norm else 0
    per_token = ACT_BYTES_PER_INTERMEDIATE * intermediate + ACT_BYTES_PER_HIDDEN * arch.hidden_size + ACT_BYTES_PER_QK_NORM * qk
    forward = batched_tokens * per_token / tp
    logits = min(max_num_seqs, batched_tokens) * arch.vocab_size * SAMPLER_BYTES_PER_LOGIT if sampler else 0
    return (forward + logits) / GIB


def capture_sizes(max_num_seqs: int, batched_tokens: int) -> list[int]:
    """vLLM's default CUDA-graph capture sizes (VllmConfig._set_cudagraph_sizes, 0.26): up to twice maxNumSeqs, at most 512."""
    top = min(max_num_seqs * 2, 512, batched_tokens)
    sizes = [i for i in (1, 2, 4) if i <= top] + list(range(8, min(top + 1, 256), 8)) + list(range(256, top + 1, 16))
    if batched_tokens <= top:
        sizes.append(batched_tokens)
    return sorted(set(sizes))


def cudagraph_gib(arch: Arch, max_num_seqs: int, batched_tokens: int, pp: int, enforce_eager: bool) -> float:
    if enforce_eager:
        return 0.0
    graphs = 2 * len(capture_sizes(max_num_seqs, batched_tokens))
    return CUDAGRAPH_BASE_GIB + graphs * math.ceil(arch.layers / pp) * CUDAGRAPH_GIB_PER_GRAPH_LAYER


def non_torch_gib(tp: int, pp: int) -> float:
    return NON_TORCH_GIB_PARALLEL if tp * pp > 1 else NON_TORCH_GIB
