"""Swap groups: models sharing GPUs that take turns being awake, with vLLM's sleep mode.

What vLLM keeps while a server sleeps (vLLM 0.26.0: vllm/device_allocator/cumem.py, sleep_mode_backend.py,
v1/worker/gpu_worker.py; the same in 0.34.0): ``--enable-sleep-mode`` puts the weights and the KV cache in two tagged
pools of the cumem allocator. Level 1 copies the ``weights`` pool to pinned host memory and frees both pools; level 2
frees both outright (the weights are reloaded on wake, ``collective_rpc`` ``reload_weights``, from the model cache).
Everything else stays on the GPU: the process's CUDA context, the CUDA graphs' memory pool, non-torch memory (cuBLAS
workspaces, NCCL) and the tensors allocated outside the two pools (the model runner's persistent buffers).

The plan per GPU: every member asleep, plus the largest set of ``awake`` members awake on top, each with exact KV.
A member's ``auto`` KV cache is its ``maxNumSeqs`` full sequences (``auto``'s second stage): what the group's
largest awake set leaves belongs to the GPU's other servers, which share it as usual. Members start one at a time,
each asleep before the next starts, so each needs its own footprint free next to the others asleep (and, when it
restarts later, next to ``awake - 1`` others awake: the swapper counts a starting member as awake).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from stacks.config.schema import ModelConfig, StackConfig, SwapGroupConfig
from stacks.errors import Problem
from stacks.plan import topology as net
from stacks.plan.memory import GIB
from stacks.plan.releases import Version, version_text
from stacks.plan.sharing import Gpu, Server, _settle_kv, gpu_name
from stacks.plan.types import ScrapeTarget, Service, SwapGroupPlan, SwapMember

SLEEP_FLAG = "--enable-sleep-mode"
"""vLLM's flag for the cumem allocator and the sleep/wake engine calls (vllm/config/model.py enable_sleep_mode, 0.26.0)."""
DEV_MODE_ENV = "VLLM_SERVER_DEV_MODE"
"""Mounts /sleep, /wake_up, /is_sleeping (and /collective_rpc, /reset_prefix_cache, /pause, /server_info, ...):
vllm/entrypoints/openai/api_server.py build_app, vllm/envs.py, 0.26.0."""
SWAP_SINCE: Version = (0, 26, 0)
"""The routes and their answers the swapper relies on were read in vLLM 0.26.0 and 0.34.0 (an image whose reference does
not say its release states it in ``image.vllmVersion``)."""

ASLEEP_BUFFERS_GIB = 0.51
"""What a sleeping server keeps besides its CUDA context, CUDA graphs and non-torch memory: tensors outside the sleep
pools (the model runner's input and sampler buffers, and what the caching allocator keeps). Measured on the H100 with
vLLM 0.26.0 (benchmarks/results/h100-vllm-0.26.0-sleep-swap.json, NVML per process, at levels 1 and 2): Qwen3-8B 0.898
GiB asleep, Qwen3-14B 0.924, Llama-3.2-1B 1.322 (the same with the dummy loader: ...-sleep-swap-1b-dummy.json), against
0.82-0.84 GiB of context, graphs and non-torch. 0.51 plans the 1B at 1.329 GiB, above what it kept (the larger rest,
which the log does not explain), and the 8B and 14B 0.47 GiB above what they held."""
HOST_COPY_GIB_S = 35.0
"""Weights copied between pinned host memory and the GPU (cudaMemcpy, vllm/device_allocator/cumem.py). Measured on the
H100 (same file): a level-1 wake brought back 15.28 GiB in 0.43 s (Qwen3-8B, 35.5 GiB/s) and 27.53 GiB in 0.64 s
(Qwen3-14B, 43 GiB/s), a sleep copied them out in 0.34-0.36 s and 0.58 s; the lower rate is the estimate. The first
sleep of a server also allocates its pinned host buffers: 11.2 s and 17.2 s there, paid at start-up, where every
member falls asleep once before the next starts."""
RELOAD_GIB_S = 2.0
"""Level 2: weights read back from the model cache and loaded (page cache or NVMe); an estimate. The one reload timed
on the H100 (benchmarks/results/h100-vllm-0.26.0-sleep-swap.json): Llama-3.2-1B's 2.34 GiB, a sparse file of zeros
in the page cache, woke with its weights reloaded in 0.81 s (2.9 GiB/s), faster than a real checkpoint read from disk
can be counted on; the 8B and 14B had random weights, which vLLM's dummy loader cannot reload."""
PROCESS_HOST_GIB = 3.0
"""Host memory of one vLLM server's processes besides level-1 weights (API server and engine core with torch and CUDA
libraries): 2.82 GiB resident measured awake on the H100 (Qwen3-8B and -14B, same file)."""
HOST_COPY_FACTOR = 1.51
"""Host memory a level-1 sleep adds per GiB of weights copied out: the processes' resident memory grew by 20.9 GiB for
15.28 GiB of Qwen3-8B's weights (1.37) and by 41.5 GiB for 27.53 GiB of Qwen3-14B's (1.51) on the H100 (same file;
resident memory summed over the server's processes, which may count pinned pages shared between them more than once).
The plan takes the larger, the safe side for the host's memory and a Kubernetes pod's request."""


@dataclass
class Member:
    index: int
    config: ModelConfig
    server: Server
    position: int
    """Its place in the group: start order, ports."""


@dataclass
class Group:
    name: str
    settings: SwapGroupConfig
    members: list[Member] = field(default_factory=list)


def asleep_gib(s: Server) -> float:
    """What a sleeping server keeps on each GPU: everything but the weights and the KV cache."""
    o = s.overhead
    return o.context + o.cudagraphs + o.non_torch + ASLEEP_BUFFERS_GIB


def awake_gib(s: Server, total: float, exact: bool) -> float:
    return s.footprint(total, exact)


def waking_gib(s: Server, total: float, exact: bool) -> float:
    """What waking a server adds on each GPU to what it keeps asleep: its weights and KV cache, as the plan sizes them."""
    return awake_gib(s, total, exact) - asleep_gib(s)


def _top(values: Sequence[float], k: int) -> float:
    return sum(sorted(values, reverse=True)[: max(k, 0)])


@dataclass
class Swapping:
    """The swap groups of a plan on their way through the planner."""

    groups: dict[str, Group]
    gpus: dict[int, Gpu]
    """The GPUs with every group's reservation added to what is reserved, for the other servers' sharing."""
    exact: bool

    def member(self, index: int) -> Member | None:
        for g in self.groups.values():
            for m in g.members:
                if m.index == index:
                    return m
        return None

    def group_of(self, index: int) -> Group | None:
        return next((g for g in self.groups.values() if any(m.index == index for m in g.members)), None)

    def held(self, members: list[Member], awake: int, total: float) -> float:
        """What ``members`` hold on each GPU: all of them asleep, the ``awake`` that add the most awake on top."""
        extras = [waking_gib(m.server, total, self.exact) for m in members]
        return sum(asleep_gib(m.server) for m in members) + _top(extras, awake)

    def reservation(self, g: Group, total: float) -> float:
        return self.held(g.members, g.settings.awake, total)

    def largest_awake(self, g: Group, total: float) -> list[str]:
        ranked = sorted(g.members, key=lambda m: waking_gib(m.server, total, self.exact), reverse=True)
        return [m.config.name for m in ranked[: g.settings.awake]]

    def awake_fraction(self, gpu: int) -> float:
        """The fractions of the largest awake set of every group on ``gpu``: what their servers budget at most at once."""
        out = 0.0
        for g in self.groups.values():
            if gpu in g.members[0].server.gpus:
                awake = set(self.largest_awake(g, self.gpus[gpu].total))
                out += sum(m.server.fraction for m in g.members if m.config.name in awake)
        return out

    def free_at_start(self, g: Group, m: Member, total: float, resident: float) -> float:
        """Free on its GPU when ``m`` (re)starts: the GPU's other servers running, the other members asleep and the
        ``awake - 1`` largest of them awake, its own CUDA context made."""
        others = [o for o in g.members if o is not m]
        return total - resident - self.held(others, g.settings.awake - 1, total) - m.server.overhead.context


def prepare(
    config: StackConfig, models: list[tuple[ModelConfig, Server]], gpus: dict[int, Gpu], version: Version, exact: bool
) -> tuple[Swapping, list[Problem]]:
    """Settle every member's KV cache and fraction and reserve each group's memory on its GPUs (before the GPUs'
    other servers share what is left)."""
    groups: dict[str, Group] = {}
    problems: list[Problem] = []
    for m, s in models:
        if m.swap is None:
            continue
        g = groups.setdefault(m.swap.group, Group(m.swap.group, config.swap_groups.get(m.swap.group, SwapGroupConfig())))
        g.members.append(Member(s.index, m, s, len(g.members)))
    swapping = Swapping(groups, dict(gpus), exact)
    if not groups:
        return swapping, problems
    if version < SWAP_SINCE:
        first = next(iter(groups.values())).members[0]
        problems.append(
            Problem(
                f"models[{first.index}].swap",
                f"swap groups were checked against vLLM {version_text(SWAP_SINCE)}-0.34.0 (their sleep and wake routes); the image is "
                f"vLLM {version_text(version)}: pin {version_text(SWAP_SINCE)} or later by tag in image.base",
            )
        )
        return swapping, problems
    for g in groups.values():
        for mem in g.members:
            s = mem.server
            total = s.gpu_total(gpus)
            # auto: maxNumSeqs full sequences, exactly; a configured fraction sizes KV as it does for any server
            _settle_kv(s, s.max_num_seqs * s.sequence_gib if s.fixed is None else 0.0, total, exact)
        for i in g.members[0].server.gpus:
            gpu = swapping.gpus[i]
            swapping.gpus[i] = replace(gpu, reserved=gpu.reserved + swapping.reservation(g, gpu.total))
    return swapping, problems


def fit_problems(swapping: Swapping, gpus: dict[int, Gpu], others: list[Server], gpu_key: str, *, pods: bool = False) -> list[Problem]:
    """A group whose reservation does not fit its GPUs next to what the GPUs' other servers need at least (their
    weights, overhead and one sequence each; configured fractions as configured). ``pods``: kubernetes, where a GPU is
    named by its type (the scheduler picks it)."""
    out: list[Problem] = []
    for g in swapping.groups.values():
        head = g.members[0].server
        for i in head.gpus:
            gpu = gpus[i]
            here = [s for s in others if i in s.gpus]
            least = sum((s.fraction * gpu.total if s.fixed is not None else s.base + s.sequence_gib) + s.overhead.outside_budget for s in here)
            room = gpu.room - least
            need = swapping.reservation(g, gpu.total)
            if need <= room + 1e-9:
                continue
            out.append(_refusal(swapping, g, gpu, room, gpu_key, pods))
            break
    return out


def _refusal(swapping: Swapping, g: Group, gpu: Gpu, room: float, gpu_key: str, pods: bool) -> Problem:
    total = gpu.total
    where = gpu_name(gpu, pods)
    asleep = sum(asleep_gib(m.server) for m in g.members)
    need = swapping.reservation(g, total)
    what = f"swap group {g.name!r} needs {need:.2f} GiB on {where} ({asleep:.2f} asleep, {g.settings.awake} awake on top) and {room:.2f} GiB are left"
    if g.settings.awake > 1 and swapping.held(g.members, 1, total) <= room:
        fits = max(k for k in range(1, g.settings.awake) if swapping.held(g.members, k, total) <= room)
        return Problem(f"swapGroups.{g.name}.awake", f"{what}; lower it to {fits}, or give the members less KV cache (maxNumSeqs, maxModelLen)")
    # the member whose awake footprint sets the bill: its KV cache is the knob
    heavy = max(g.members, key=lambda m: waking_gib(m.server, total, swapping.exact))
    s = heavy.server
    extras = [waking_gib(m.server, total, swapping.exact) for m in g.members if m is not heavy]
    kv_room = room - asleep - _top(extras, g.settings.awake - 1) - waking_gib(s, total, swapping.exact) + s.kv_bytes / GIB
    seqs = math.floor(kv_room / s.sequence_gib) if s.sequence_gib else 0
    if s.base > room - asleep:
        wider = "a larger tensorParallel for every member, " if pods else ""
        away = "" if pods else " and give it GPUs of its own"
        alone = f"its weights and runtime overhead ({s.base:.2f} GiB) do not fit even without a KV cache"
        fix = f"{alone}: use a quantized checkpoint, {wider}or remove swap from it{away}"
        return Problem(gpu_key.format(i=heavy.index), f"{what}; {fix}")
    if s.fixed is not None:
        key, fix = f"models[{heavy.index}].gpuMemoryUtilization", f"lower models[{heavy.index}].gpuMemoryUtilization or set it to auto"
    elif seqs >= 1:
        key, fix = f"models[{heavy.index}].maxNumSeqs", f"lower models[{heavy.index}].maxNumSeqs to {seqs} (its KV cache holds maxNumSeqs full sequences)"
    else:
        longest = s.longest_len(max(kv_room, 0.0))
        key, fix = f"models[{heavy.index}].maxModelLen", f"lower models[{heavy.index}].maxModelLen to {longest} with maxNumSeqs: 1 (one sequence fits)"
    return Problem(key, f"{what}; {fix}, or set kvCacheDtype: fp8")


def member_plan(swapping: Swapping, m: Member, total: float) -> SwapMember:
    """What the member holds awake, asleep and on the host, and what its wake and sleep cost."""
    assert m.config.swap is not None
    s = m.server
    engine_port = net.SWAP_ENGINE_PORT + m.position
    ranks = len(s.gpus)
    weights = s.overhead.weights * ranks
    level = m.config.swap.level
    return SwapMember(
        group=m.config.swap.group,
        level=level,
        idle_seconds=m.config.swap.idle_seconds,
        engine_port=engine_port,
        awake_gib=round(awake_gib(s, total, swapping.exact), 3),
        asleep_gib=round(asleep_gib(s), 3),
        host_gib=round(weights * HOST_COPY_FACTOR if level == 1 else 0.0, 3),
        wake_seconds=round(s.overhead.weights / (HOST_COPY_GIB_S if level == 1 else RELOAD_GIB_S), 1),
        sleep_seconds=round(s.overhead.weights / HOST_COPY_GIB_S if level == 1 else 0.0, 1),
    )


def member_args(args: list[str], engine_port: int) -> list[str]:
    """The plan's vLLM arguments for a member: bound to 127.0.0.1 at its engine port inside the group's server, with sleep mode."""
    out = list(args)
    out[out.index("--host") + 1] = "127.0.0.1"
    out[out.index("--port") + 1] = str(engine_port)
    return [*out, SLEEP_FLAG]


def member_env() -> dict[str, str]:
    return {DEV_MODE_ENV: "1"}


def group_plans(
    config: StackConfig,
    swapping: Swapping,
    gpus: dict[int, Gpu],
    members: dict[str, SwapMember],
    startup: dict[str, int],
    start_after: dict[str, list[str]],
) -> list[SwapGroupPlan]:
    namespace = config.kubernetes.namespace if config.kubernetes else None
    out = []
    for g in swapping.groups.values():
        head = g.members[0].server
        total = head.gpu_total(gpus)
        names = [m.config.name for m in g.members]
        host = sum(members[n].host_gib for n in names) + PROCESS_HOST_GIB * len(names)
        service = net.service(config.target, namespace, net.swap_service(g.name), net.SWAP_PORT, metrics_path=net.METRICS_PATH)
        out.append(
            SwapGroupPlan(
                name=g.name,
                members=names,
                gpus=list(head.gpus) if config.target == "docker" else [],
                gpu_count=len(head.gpus),
                awake=g.settings.awake,
                largest_awake=swapping.largest_awake(g, total),
                reserved_gib=round(swapping.reservation(g, total), 3),
                host_memory_gib=round(host, 2),
                queue_size=g.settings.queue_size,
                max_wait_seconds=g.settings.max_wait_seconds,
                drain_seconds=g.settings.drain_seconds,
                wake_timeout_seconds=g.settings.wake_timeout_seconds,
                service=service,
                startup_seconds=sum(startup[n] for n in names),
                start_after=start_after.get(g.name, []),
            )
        )
    return out


def scrape_targets(groups: list[SwapGroupPlan]) -> list[ScrapeTarget]:
    """The swapper's own metrics, one target per group (its members' are relayed on their own ports, as any server's)."""
    return [ScrapeTarget(net.JOB_SWAP, g.service.address, net.METRICS_PATH, labels={"group": g.name}, service=g.service.name) for g in groups]


def member_service(config: StackConfig, m: Member) -> Service:
    """Where the gateway and Prometheus reach a member: its own port on its group's server, under its usual name."""
    namespace = config.kubernetes.namespace if config.kubernetes else None
    return net.service(config.target, namespace, net.vllm_service(m.config.name), net.SWAP_MEMBER_PORT + m.position, metrics_path=net.METRICS_PATH)
