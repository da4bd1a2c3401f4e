"""GPU memory arithmetic: weights, activations and KV cache per server, and the split of each GPU.

Memory semantics are vLLM's (V1 engine): ``--gpu-memory-utilization`` is the fraction of the GPU's
*total* memory one server may use for weights, activations and KV cache. The CUDA context of each
process lives outside that fraction, and vLLM refuses to start when free memory is below its
fraction, so on one GPU: sum(fractions) * total + contexts + reserved + safety <= total, and
servers sharing a GPU start one after another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stacks.catalog import Arch
from stacks.config.schema import GpuConfig
from stacks.errors import Problem
from stacks.plan.types import GpuPlan, MemoryFigures

GIB = 1024**3
CUDA_CONTEXT_GIB = 0.5
"""Per process, outside its fraction: CUDA context, cuBLAS/NCCL handles (0.3-0.5 GiB measured on recent GPUs)."""
SAFETY_FRACTION = 0.02
"""Of each GPU kept free for fragmentation and allocator slack."""
AUTO_MAX_FRACTION = 0.95
"""``auto`` never hands one server more than this of a GPU."""
ACTIVATION_BASE_GIB = 0.4
"""Peak activation floor inside the fraction: sampler buffers, workspace, small CUDA graphs."""
ACTIVATION_BYTES_PER_TOKEN_HIDDEN = 20
"""Peak activation bytes per batched token per hidden unit (MLP intermediates of one layer, fp16)."""
BLOCK_TOKENS = 16
"""vLLM's KV cache block size: capacity is counted in whole blocks."""

DTYPE_BYTES = {"float16": 2.0, "bfloat16": 2.0, "float32": 4.0}
QUANT_BYTES = {
    # 4-bit weights plus scales and the unquantized embeddings/head, about 0.6 bytes per parameter
    "awq": 0.6,
    "awq_marlin": 0.6,
    "gptq": 0.6,
    "gptq_marlin": 0.6,
    "bitsandbytes": 0.6,
    "fp8": 1.05,
    "compressed-tensors": 1.05,
}


@dataclass
class Need:
    """Memory facts of one server, per GPU it runs on."""

    index: int
    """Position in the config's model list (for error keys)."""
    name: str
    arch: Arch
    gpu_ids: list[int]
    tp: int
    max_model_len: int
    max_num_seqs: int
    weights_gib: float
    activation_gib: float
    kv_per_token_gpu: float
    kv_bytes_per_token: int
    fixed: float | None


def kv_dtype_bytes(kv_cache_dtype: str, dtype_bytes: float) -> float:
    return 1.0 if kv_cache_dtype.startswith("fp8") else dtype_bytes


def figures(n: Need, fraction: float, gpu_gib: float) -> MemoryFigures:
    kv_gib = fraction * gpu_gib - n.weights_gib - n.activation_gib
    tokens_per_gpu = max(0.0, kv_gib) * GIB / n.kv_per_token_gpu
    blocks = int(tokens_per_gpu // BLOCK_TOKENS)
    per_seq = math.ceil(n.max_model_len / BLOCK_TOKENS)
    return MemoryFigures(
        fraction=fraction,
        weights_gib=round(n.weights_gib, 3),
        activation_gib=round(n.activation_gib, 3),
        kv_gib=round(kv_gib, 3),
        kv_tokens=blocks * BLOCK_TOKENS,
        max_full_sequences=blocks // per_seq,
    )


def min_fraction(n: Need, gpu_gib: float, sequences: float) -> float:
    return (n.weights_gib + n.activation_gib + sequences * n.max_model_len * n.kv_per_token_gpu / GIB) / gpu_gib


def kubernetes_fractions(needs: list[Need], gpu_gib: float, problems: list[Problem]) -> dict[int, float]:
    """Each pod owns its GPUs: ``auto`` takes what the CUDA context and the safety margin leave."""
    fractions = {}
    for n in needs:
        usable = 1 - (CUDA_CONTEXT_GIB / gpu_gib) - SAFETY_FRACTION
        fractions[n.index] = n.fixed if n.fixed is not None else math.floor(min(usable, AUTO_MAX_FRACTION) * 1000) / 1000
        if n.fixed is not None and n.fixed > usable:
            problems.append(
                Problem(
                    f"models[{n.index}].gpuMemoryUtilization",
                    f"{n.fixed} leaves no room for the CUDA context on a {gpu_gib} GiB GPU; use at most {usable:.2f} or auto",
                )
            )
    return fractions


def docker_fractions(gpu_specs: list[GpuConfig], needs: list[Need], problems: list[Problem], notes: list[str]) -> tuple[dict[int, float], list[GpuPlan]]:
    """Explicit fractions are checked; ``auto`` ones are water-filled.

    auto: every auto server on a GPU gets its weights and activations, then KV cache in proportion to
    its demand (maxNumSeqs full maxModelLen sequences) - the same multiple of demand for all, as large as
    the tightest GPU allows. A multiple >= 1 means every model can run maxNumSeqs sequences; the rest
    is shared in proportion to demand. GPUs are settled tightest first, so a server spanning several
    GPUs takes the fraction its fullest GPU allows.
    """
    gpus = {g.index: g for g in gpu_specs}
    on_gpu: dict[int, list[Need]] = {g: [] for g in gpus}
    for n in needs:
        for g in n.gpu_ids:
            on_gpu[g].append(n)

    def usable(g: int) -> float:
        spec = gpus[g]
        return 1 - (len(on_gpu[g]) * CUDA_CONTEXT_GIB + spec.reserved_gib) / spec.memory_gib - SAFETY_FRACTION

    fractions: dict[int, float] = {n.index: n.fixed for n in needs if n.fixed is not None}
    pending = {n.index: n for n in needs if n.fixed is None}
    while pending:
        best: tuple[float, int] | None = None
        for g in gpus:
            autos = [n for n in on_gpu[g] if n.index in pending]
            if not autos:
                continue
            mem = gpus[g].memory_gib
            room = usable(g) - sum(fractions.get(n.index, 0.0) for n in on_gpu[g] if n.index not in pending)
            base = sum((n.weights_gib + n.activation_gib) / mem for n in autos)
            demand = sum(n.max_num_seqs * n.max_model_len * n.kv_per_token_gpu / GIB / mem for n in autos)
            scale = (room - base) / demand
            if best is None or scale < best[0]:
                best = (scale, g)
        assert best is not None
        scale, g = best
        mem = gpus[g].memory_gib
        settled = [n for n in on_gpu[g] if n.index in pending]
        for n in settled:
            seqs = n.max_num_seqs * max(scale, 0.0)
            fractions[n.index] = math.floor(min(min_fraction(n, mem, seqs), AUTO_MAX_FRACTION) * 1000) / 1000
            del pending[n.index]
        names = ", ".join(n.name for n in settled)
        if scale >= 1:
            notes.append(f"GPU {g}: auto sized KV cache for {scale:.2f}x maxNumSeqs full-length sequences of {names}")
        elif scale > 0:
            notes.append(f"GPU {g}: too small for maxNumSeqs full-length sequences of {names}; each gets {scale:.2f}x its demand")
        else:
            notes.append(f"GPU {g}: weights and activations of {names} alone exceed its usable memory")

    plans = []
    for g, spec in sorted(gpus.items()):
        here = on_gpu[g]
        total = sum(fractions[n.index] for n in here)
        overhead = len(here) * CUDA_CONTEXT_GIB + SAFETY_FRACTION * spec.memory_gib
        headroom = spec.memory_gib * (1 - total) - overhead - spec.reserved_gib
        fixed = [n for n in here if n.fixed is not None]
        # an all-auto GPU that cannot fit is reported per model (maxModelLen), with its figures
        if fixed and headroom < 0:
            keys = ", ".join(f"models[{n.index}] ({fractions[n.index]:.3f})" for n in here)
            fix = f"lower models[{fixed[-1].index}].gpuMemoryUtilization or set it to auto"
            problems.append(
                Problem(
                    f"models[{fixed[-1].index}].gpuMemoryUtilization",
                    f"GPU {g} ({spec.name}, {spec.memory_gib} GiB) is over-committed: {keys} sum to {total:.3f} of it, plus "
                    f"{overhead:.2f} GiB CUDA contexts and safety margin; {fix}",
                )
            )
        plans.append(
            GpuPlan(
                index=g,
                name=spec.name,
                memory_gib=spec.memory_gib,
                reserved_gib=spec.reserved_gib,
                models=[n.name for n in here],
                fraction_sum=round(total, 3),
                overhead_gib=round(overhead, 3),
                headroom_gib=round(headroom, 3),
            )
        )
    return fractions, plans
