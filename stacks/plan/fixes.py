"""The fixes a refusal offers for a GPU that cannot hold its models: changes to the stack file, each kept only when
the stack plans with it (``works`` plans the edited config), the one closest to the cause first.

Order: a fixed fraction that took the memory (lower it, or auto), another GPU for a model (docker), fp8 KV cache,
a shorter maxModelLen, more tensor-parallel GPUs, a quantized checkpoint. At most two of a kind, six in all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from stacks.catalog import resolve
from stacks.config.schema import StackConfig
from stacks.plan.sharing import GpuShortfall

Works = Callable[[StackConfig], bool]
PER_KIND = 2
MOST = 6
MAX_TENSOR_PARALLEL = 64


def _edit(config: StackConfig, changes: dict[int, dict[str, object]]) -> StackConfig:
    """The config with some models' fields changed (the pydantic copy keeps every other field as it was)."""
    models = [m.model_copy(update=changes[i]) if i in changes else m for i, m in enumerate(config.models)]
    return config.model_copy(update={"models": models})


def _largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The largest n in [lo, hi] with ok(n), ok being true up to some n and false above it; None when ok(lo) is false."""
    if lo > hi or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def _smallest(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The smallest n in [lo, hi] with ok(n), ok being false up to some n and true above it; None when ok(hi) is false."""
    if lo > hi or not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


def _fractions(config: StackConfig, p: GpuShortfall, total: float, works: Works) -> Iterator[str]:
    fixed = sorted((i for i in p.models if config.models[i].gpu_memory_utilization != "auto"), key=lambda i: -float(config.models[i].gpu_memory_utilization))
    for i in fixed:
        now = round(float(config.models[i].gpu_memory_utilization) * 1000)

        def at(n: int, i: int = i) -> bool:
            return works(_edit(config, {i: {"gpu_memory_utilization": n / 1000}}))

        auto = works(_edit(config, {i: {"gpu_memory_utilization": "auto"}}))
        # lowering frees memory for the others (until its own sequence no longer fits); the shortfall says how far
        guess = math.floor((now / 1000 - p.short_gib / total) * 1000)
        anchor = next((n for n in (guess, guess - 10, guess - 50) if n >= 1 and at(n)), None)
        lower = _largest(anchor, now - 1, at) if anchor is not None else None
        if lower is not None:
            yield f"lower models[{i}].gpuMemoryUtilization from {now / 1000:.3f} to {lower / 1000:.3f}" + (" (or set it to auto)" if auto else "")
            continue
        # raising gives its own sequence room (until the others no longer fit)
        higher = _smallest(now + 1, min(1000, math.ceil((now / 1000 + p.short_gib / total) * 1000)), at)
        if higher is not None:
            yield f"raise models[{i}].gpuMemoryUtilization from {now / 1000:.3f} to {higher / 1000:.3f}" + (" (or set it to auto)" if auto else "")
        elif auto:
            yield f"set models[{i}].gpuMemoryUtilization to auto"
    if len(fixed) > 1 and works(_edit(config, {i: {"gpu_memory_utilization": "auto"} for i in fixed})):
        yield "set " + " and ".join(f"models[{i}].gpuMemoryUtilization" for i in fixed) + " to auto"


def _moves(config: StackConfig, p: GpuShortfall, works: Works) -> Iterator[str]:
    if config.target != "docker":
        return  # a pod's GPUs are the scheduler's to choose
    for i in reversed(p.models):
        m = config.models[i]
        if len(config.docker_gpus(m)) != 1:
            continue
        for g in config.gpus:
            if g.index != p.gpu and works(_edit(config, {i: {"gpus": [g.index]}})):
                yield f"move {m.name} to GPU {g.index} (models[{i}].gpus: [{g.index}])"
                break


def _kv_fp8(config: StackConfig, p: GpuShortfall, works: Works) -> Iterator[str]:
    auto_kv = [i for i in reversed(p.models) if config.models[i].kv_cache_dtype == "auto"]
    single = [i for i in auto_kv if works(_edit(config, {i: {"kv_cache_dtype": "fp8"}}))]
    yield from (f"set models[{i}].kvCacheDtype: fp8 (half the KV cache memory)" for i in single)
    if not single and len(auto_kv) > 1 and works(_edit(config, {i: {"kv_cache_dtype": "fp8"} for i in auto_kv})):
        yield "set kvCacheDtype: fp8 on " + ", ".join(f"models[{i}]" for i in sorted(auto_kv))


def _lengths(config: StackConfig, p: GpuShortfall, works: Works) -> Iterator[str]:
    for i in reversed(p.models):
        m = config.models[i]
        arch = resolve(m.model, m.arch)
        current = m.max_model_len or (arch.context_length if not isinstance(arch, list) else 0)

        def at(blocks: int, i: int = i) -> bool:
            return works(_edit(config, {i: {"max_model_len": blocks * 16}}))

        longest = _largest(1, math.ceil(current / 16) - 1, at)
        if longest is not None:
            yield f"lower models[{i}].maxModelLen from {current} to {longest * 16}"


def _tensor_parallel(config: StackConfig, p: GpuShortfall, works: Works) -> Iterator[str]:
    for i in reversed(p.models):
        m = config.models[i]
        if config.target == "docker":
            mine = config.docker_gpus(m)
            others = [g.index for g in config.gpus if g.index not in mine]
            for tp in range(len(mine) + 1, len(mine) + len(others) + 1):
                gpus = mine + others[: tp - len(mine)]
                if works(_edit(config, {i: {"gpus": gpus, "tensor_parallel": tp, "pipeline_parallel": 1}})):
                    yield f"spread {m.name} over GPUs {gpus} (models[{i}].gpus: {gpus}, tensorParallel: {tp})"
                    break
        else:
            now = m.tensor_parallel or 1
            # a pod holds every pipeline stage, or one of them when the server spans nodes (one pod per node)
            stages = m.pipeline_parallel if m.nodes == 1 else 1
            pods = f", {m.nodes} pods" if m.nodes > 1 else ""
            for tp in range(now + 1, MAX_TENSOR_PARALLEL // stages + 1):
                if works(_edit(config, {i: {"tensor_parallel": tp}})):
                    yield f"set models[{i}].tensorParallel: {tp} ({tp * stages} GPUs per pod{pods})"
                    break


def _quantized(config: StackConfig, p: GpuShortfall, works: Works) -> Iterator[str]:
    for i in reversed(p.models):
        m = config.models[i]
        arch = resolve(m.model, m.arch)
        if m.quantization or isinstance(arch, list) or arch.quantization:
            continue
        if works(_edit(config, {i: {"quantization": "fp8"}})):
            # a 16-bit checkpoint quantized as it loads (Fp8Config without a serialized checkpoint takes the online
            # method: vllm/model_executor/layers/quantization/fp8.py and online/fp8.py, vLLM 0.26.0; compute capability 7.5+)
            yield f"set models[{i}].quantization: fp8 (vLLM quantizes {m.name}'s 16-bit weights to 8 bits as it loads them)"
        elif works(_edit(config, {i: {"quantization": "awq"}})):
            yield f"serve a 4-bit AWQ or GPTQ checkpoint of {m.model} where one is published (its id in models[{i}].model, with quantization: awq)"


def fixes(config: StackConfig, p: GpuShortfall, total: float, works: Works) -> list[str]:
    """The changes that make the stack plan, closest to the cause first; empty when no single change does."""
    kinds = (
        _fractions(config, p, total, works),
        _moves(config, p, works),
        _kv_fp8(config, p, works),
        _lengths(config, p, works),
        _tensor_parallel(config, p, works),
        _quantized(config, p, works),
    )
    out: list[str] = []
    for kind in kinds:
        for n, fix in enumerate(kind):
            if n == PER_KIND or len(out) == MOST:
                break
            out.append(fix)
    return out


def with_fixes(config: StackConfig, p: GpuShortfall, total: float, works: Works) -> GpuShortfall:
    """The problem with its fixes said (or that no single change fixes it)."""
    found = fixes(config, p, total, works)
    if found:
        tail = "fixes that work (each alone; checked by planning the stack with it): " + "; ".join(found)
    elif config.target == "docker":
        tail = "no single change to this stack file makes it fit: serve fewer models on this GPU, or add a GPU to gpus and give a model to it"
    else:
        tail = "no single change to this stack file makes it fit: a GPU type with more memory (kubernetes.gpu) or fewer models"
    return GpuShortfall(p.key, f"{p.message}; {tail}", gpu=p.gpu, models=p.models, short_gib=p.short_gib)
