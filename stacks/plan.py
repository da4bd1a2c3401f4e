"""The pure planner: config -> StackPlan (GPU memory, launch specs, start order, routes, targets).

Memory semantics are vLLM's (V1 engine): ``--gpu-memory-utilization`` is the fraction of the GPU's
*total* memory one server may use for weights, activations and KV cache. The CUDA context of each
process lives outside that fraction, and vLLM refuses to start when free memory is below its
fraction, so on one GPU: sum(fractions) * total + contexts + reserved + safety <= total, and
servers sharing a GPU start one after another.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from stacks.catalog import Arch, resolve
from stacks.config import StackConfig
from stacks.errors import ConfigError, Problem
from stacks.vllm_args import ENTRYPOINT, VLLM_PORT, extra_arg_problems, image_vllm_version, server_args

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

GATEWAY_PORT_IN_CONTAINER = 8080
WEBUI_PORT_IN_CONTAINER = 8080


@dataclass(frozen=True)
class MemoryFigures:
    fraction: float
    weights_gib: float
    """Per GPU (split over tensor/pipeline ranks)."""
    activation_gib: float
    kv_gib: float
    """KV cache per GPU."""
    kv_tokens: int
    """Tokens the whole server's KV cache holds."""
    max_full_sequences: int
    """Concurrent maxModelLen sequences that fit."""


@dataclass(frozen=True)
class ModelPlan:
    name: str
    model: str
    served_names: list[str]
    gpus: list[int]
    """Docker device indices; empty on kubernetes (the scheduler picks)."""
    gpu_count: int
    tensor_parallel: int
    pipeline_parallel: int
    max_model_len: int
    max_num_seqs: int
    kv_bytes_per_token: int
    """Whole model, all ranks: 2 x layers x kv_heads x head_dim x kv dtype bytes."""
    memory: MemoryFigures
    fraction_source: Literal["config", "auto"]
    entrypoint: list[str]
    args: list[str]
    env: dict[str, str]
    start_after: list[str]
    replicas: int
    service: str
    """Network alias / Service name."""
    port: int
    health_path: str
    startup_seconds: int
    shm_size_gib: float | None


@dataclass(frozen=True)
class GpuPlan:
    index: int
    name: str
    memory_gib: float
    reserved_gib: float
    models: list[str]
    fraction_sum: float
    overhead_gib: float
    """CUDA contexts of its servers plus the safety margin."""
    headroom_gib: float
    """Left unclaimed after fractions, contexts, reservation and safety."""


@dataclass(frozen=True)
class Route:
    served_name: str
    model: str
    service: str
    port: int


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    target: str
    metrics_path: str = "/metrics"
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImagePlan:
    base: str
    timezone: str
    apt_packages: list[str]
    customised: bool
    vllm_version: str
    registry: str | None


@dataclass(frozen=True)
class StackPlan:
    target: Literal["docker", "kubernetes"]
    image: ImagePlan
    models: list[ModelPlan]
    gpus: list[GpuPlan]
    routes: list[Route]
    gateway_service: str
    gateway_port_in_container: int
    webui_api_base: str
    scrape_targets: list[ScrapeTarget]
    notes: list[str]
    config: StackConfig

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = self.config.model_dump(mode="json", by_alias=True, exclude_none=True)
        return d

    def model(self, name: str) -> ModelPlan:
        return next(m for m in self.models if m.name == name)


# --------------------------------------------------------------------------------------------


@dataclass
class _Need:
    """Memory facts of one server, per GPU it runs on."""

    index: int
    arch: Arch
    gpu_ids: list[int]
    tp: int
    max_model_len: int
    weights_gib: float
    activation_gib: float
    kv_per_token_gpu: float
    kv_bytes_per_token: int
    fixed: float | None


def _kv_bytes(arch: Arch, kv_cache_dtype: str, dtype_bytes: float) -> float:
    return 1.0 if kv_cache_dtype.startswith("fp8") else dtype_bytes


def _figures(n: _Need, fraction: float, gpu_gib: float) -> MemoryFigures:
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


def _min_fraction(n: _Need, gpu_gib: float, sequences: float) -> float:
    return (n.weights_gib + n.activation_gib + sequences * n.max_model_len * n.kv_per_token_gpu / GIB) / gpu_gib


def plan(config: StackConfig) -> StackPlan:
    """Plan a validated config, or raise ConfigError listing every problem."""
    problems: list[Problem] = []
    version = image_vllm_version(config.image.base)
    needs: list[_Need] = []
    docker = config.target == "docker"
    gpu_mem = {g.index: g.memory_gi_b for g in config.gpus} if docker else {}
    kube_gib = config.kube.gpu.memory_gi_b if not docker else 0.0

    for i, m in enumerate(config.models):
        problems += extra_arg_problems(i, m, version)
        arch = resolve(m.model, m.arch)
        if isinstance(arch, list):
            problems.append(
                Problem(f"models[{i}].arch", f"{m.model!r} is not in the catalog; add arch: {{{', '.join(f'{k}: ...' for k in arch)}}} from its config.json")
            )
            continue
        if docker:
            ids = m.gpus if m.gpus is not None else [config.gpus[0].index]
            tp = m.tensor_parallel or max(1, len(ids) // m.pipeline_parallel)
        else:
            tp = m.tensor_parallel or 1
            ids = []
        mml = m.max_model_len or arch.context_length
        if mml > arch.context_length:
            problems.append(Problem(f"models[{i}].maxModelLen", f"{mml} exceeds {m.model}'s context length {arch.context_length}; lower it"))
        dtype_bytes = DTYPE_BYTES[arch.dtype if m.dtype == "auto" else m.dtype]
        weight_bytes = QUANT_BYTES.get(m.quantization or "", dtype_bytes)
        ranks = tp * m.pipeline_parallel
        gpu_gib_for_default = min((gpu_mem.get(g, 0.0) for g in ids), default=kube_gib)
        batched = m.max_num_batched_tokens or (8192 if gpu_gib_for_default >= 70 else 2048)
        kv_b = _kv_bytes(arch, m.kv_cache_dtype, dtype_bytes)
        kv_heads_rank = max(1.0, arch.kv_heads / tp)
        layers_rank = math.ceil(arch.layers / m.pipeline_parallel)
        needs.append(
            _Need(
                index=i,
                arch=arch,
                gpu_ids=ids,
                tp=tp,
                max_model_len=mml,
                weights_gib=arch.parameters_b * 1e9 * weight_bytes / ranks / GIB,
                activation_gib=ACTIVATION_BASE_GIB + batched * arch.hidden_size * ACTIVATION_BYTES_PER_TOKEN_HIDDEN / GIB / tp,
                kv_per_token_gpu=2 * layers_rank * kv_heads_rank * arch.head_dim * kv_b,
                kv_bytes_per_token=int(2 * arch.layers * arch.kv_heads * arch.head_dim * kv_b),
                fixed=None if m.gpu_memory_utilization == "auto" else float(m.gpu_memory_utilization),
            )
        )
    if problems:
        raise ConfigError(problems)

    notes: list[str] = []
    if docker:
        fractions, gpu_plans = _docker_fractions(config, needs, problems, notes)
    else:
        fractions = {}
        for n in needs:
            usable = 1 - (CUDA_CONTEXT_GIB / kube_gib) - SAFETY_FRACTION
            fractions[n.index] = n.fixed if n.fixed is not None else math.floor(min(usable, AUTO_MAX_FRACTION) * 1000) / 1000
            if n.fixed is not None and n.fixed > usable:
                problems.append(
                    Problem(
                        f"models[{n.index}].gpuMemoryUtilization",
                        f"{n.fixed} leaves no room for the CUDA context on a {kube_gib} GiB GPU; use at most {usable:.2f} or auto",
                    )
                )
        gpu_plans = []
        notes.append(f"kubernetes: each pod owns its GPUs ({config.kube.gpu.name}, {kube_gib} GiB); auto uses {AUTO_MAX_FRACTION:.2f} or less of each")

    models: list[ModelPlan] = []
    last_on_gpu: dict[int, str] = {}
    for n in needs:
        m = config.models[n.index]
        if n.index not in fractions:
            continue
        gib = min((gpu_mem[g] for g in n.gpu_ids), default=kube_gib)
        fig = _figures(n, fractions[n.index], gib)
        if fig.max_full_sequences < 1 and n.fixed is None:
            problems.append(
                Problem(
                    f"models[{n.index}].maxModelLen",
                    f"auto can give {m.name} only {fig.fraction:.3f} of its {gib} GiB GPU, too little for one maxModelLen={n.max_model_len} "
                    f"sequence after {n.weights_gib:.2f} GiB of weights; lower maxModelLen, set kvCacheDtype: fp8, or move models to another GPU",
                )
            )
        elif fig.max_full_sequences < 1:
            need = _min_fraction(n, gib, 1)
            problems.append(
                Problem(
                    f"models[{n.index}].gpuMemoryUtilization",
                    f"{fig.fraction:.3f} of {gib} GiB leaves {max(fig.kv_gib, 0):.2f} GiB for KV cache ({fig.kv_tokens} tokens) but one "
                    f"maxModelLen={n.max_model_len} sequence needs {n.max_model_len * n.kv_per_token_gpu / GIB:.2f} GiB; "
                    f"raise it to at least {need:.3f}, lower models[{n.index}].maxModelLen, or set kvCacheDtype: fp8",
                )
            )
        after = sorted({last_on_gpu[g] for g in n.gpu_ids if g in last_on_gpu})
        for g in n.gpu_ids:
            last_on_gpu[g] = m.name
        models.append(
            ModelPlan(
                name=m.name,
                model=m.model,
                served_names=m.all_served_names + [lo.name for lo in m.lora_modules],
                gpus=list(n.gpu_ids),
                gpu_count=n.tp * m.pipeline_parallel,
                tensor_parallel=n.tp,
                pipeline_parallel=m.pipeline_parallel,
                max_model_len=n.max_model_len,
                max_num_seqs=m.max_num_seqs,
                kv_bytes_per_token=n.kv_bytes_per_token,
                memory=fig,
                fraction_source="auto" if n.fixed is None else "config",
                entrypoint=list(ENTRYPOINT),
                args=server_args(m, tensor_parallel=n.tp, fraction=fig.fraction, max_model_len=n.max_model_len),
                env={"TZ": config.timezone, **m.env},
                start_after=after,
                replicas=m.replicas,
                service=f"vllm-{m.name}",
                port=VLLM_PORT,
                health_path="/health",
                startup_seconds=m.startup_minutes * 60,
                shm_size_gib=m.shm_size_gi_b,
            )
        )
    if problems:
        raise ConfigError(problems)

    return StackPlan(
        target=config.target,
        image=ImagePlan(
            base=config.image.base,
            timezone=config.timezone,
            apt_packages=list(config.image.apt_packages),
            customised=config.image.customised or docker,
            vllm_version=".".join(map(str, version)),
            registry=config.image.registry,
        ),
        models=models,
        gpus=gpu_plans,
        routes=[Route(s, mp.name, mp.service, mp.port) for mp in models for s in mp.served_names],
        gateway_service="gateway",
        gateway_port_in_container=GATEWAY_PORT_IN_CONTAINER,
        webui_api_base=_webui_api_base(config),
        scrape_targets=_scrape_targets(config, models),
        notes=notes,
        config=config,
    )


def service_address(config: StackConfig, service: str, port: int) -> str:
    """``host:port`` of a service inside the stack's network: the docker alias, or the Service's cluster DNS name."""
    host = service if config.target == "docker" else f"{service}.{config.kube.namespace}.svc"
    return f"{host}:{port}"


def _webui_api_base(config: StackConfig) -> str:
    # docker reaches the container's own port; kubernetes the gateway Service's port
    port = GATEWAY_PORT_IN_CONTAINER if config.target == "docker" else config.gateway.port
    return f"http://{service_address(config, 'gateway', port)}/v1"


def _scrape_targets(config: StackConfig, models: list[ModelPlan]) -> list[ScrapeTarget]:
    out = [ScrapeTarget("vllm", service_address(config, m.service, m.port), labels={"model": m.name}) for m in models]
    if config.monitoring.dcgm:
        out.append(ScrapeTarget("dcgm", service_address(config, "dcgm-exporter", config.monitoring.dcgm_port)))
    return out


def _docker_fractions(config: StackConfig, needs: list[_Need], problems: list[Problem], notes: list[str]) -> tuple[dict[int, float], list[GpuPlan]]:
    """Explicit fractions are checked; ``auto`` ones are water-filled.

    auto: every auto server on a GPU gets its weights and activations, then KV cache in proportion to
    its demand (maxNumSeqs full maxModelLen sequences) - the same multiple of demand for all, as large as
    the tightest GPU allows. A multiple >= 1 means every model can run maxNumSeqs sequences; the rest
    is shared in proportion to demand. GPUs are settled tightest first, so a server spanning several
    GPUs takes the fraction its fullest GPU allows.
    """
    gpus = {g.index: g for g in config.gpus}
    on_gpu: dict[int, list[_Need]] = {g: [] for g in gpus}
    for n in needs:
        for g in n.gpu_ids:
            on_gpu[g].append(n)

    def usable(g: int) -> float:
        spec = gpus[g]
        return 1 - (len(on_gpu[g]) * CUDA_CONTEXT_GIB + spec.reserved_gi_b) / spec.memory_gi_b - SAFETY_FRACTION

    fractions: dict[int, float] = {n.index: n.fixed for n in needs if n.fixed is not None}
    pending = {n.index: n for n in needs if n.fixed is None}
    while pending:
        best: tuple[float, int] | None = None
        for g in gpus:
            autos = [n for n in on_gpu[g] if n.index in pending]
            if not autos:
                continue
            mem = gpus[g].memory_gi_b
            room = usable(g) - sum(fractions.get(n.index, 0.0) for n in on_gpu[g] if n.index not in pending)
            base = sum((n.weights_gib + n.activation_gib) / mem for n in autos)
            demand = sum(config.models[n.index].max_num_seqs * n.max_model_len * n.kv_per_token_gpu / GIB / mem for n in autos)
            scale = (room - base) / demand
            if best is None or scale < best[0]:
                best = (scale, g)
        assert best is not None
        scale, g = best
        mem = gpus[g].memory_gi_b
        settled = [n for n in on_gpu[g] if n.index in pending]
        for n in settled:
            seqs = config.models[n.index].max_num_seqs * max(scale, 0.0)
            fractions[n.index] = math.floor(min(_min_fraction(n, mem, seqs), AUTO_MAX_FRACTION) * 1000) / 1000
            del pending[n.index]
        names = ", ".join(config.models[n.index].name for n in settled)
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
        overhead = len(here) * CUDA_CONTEXT_GIB + SAFETY_FRACTION * spec.memory_gi_b
        headroom = spec.memory_gi_b * (1 - total) - overhead - spec.reserved_gi_b
        fixed = [n for n in here if n.fixed is not None]
        # an all-auto GPU that cannot fit is reported per model (maxModelLen), with its figures
        if fixed and headroom < 0:
            keys = ", ".join(f"models[{n.index}] ({fractions[n.index]:.3f})" for n in here)
            fix = f"lower models[{fixed[-1].index}].gpuMemoryUtilization or set it to auto"
            problems.append(
                Problem(
                    f"models[{fixed[-1].index}].gpuMemoryUtilization",
                    f"GPU {g} ({spec.name}, {spec.memory_gi_b} GiB) is over-committed: {keys} sum to {total:.3f} of it, plus "
                    f"{overhead:.2f} GiB CUDA contexts and safety margin; {fix}",
                )
            )
        plans.append(
            GpuPlan(
                index=g,
                name=spec.name,
                memory_gib=spec.memory_gi_b,
                reserved_gib=spec.reserved_gi_b,
                models=[config.models[n.index].name for n in here],
                fraction_sum=round(total, 3),
                overhead_gib=round(overhead, 3),
                headroom_gib=round(headroom, 3),
            )
        )
    return fractions, plans


def plan_stack(raw: dict[str, Any]) -> StackPlan:
    """Validate and plan an un-namespaced config mapping."""
    from stacks.config import parse

    return plan(parse(raw))
