"""How GPUs are shared: each server's KV cache and fraction, the fit of every GPU, and the start order's checks.

``auto`` is fair in three stages: first every model gets one full ``maxModelLen`` sequence, then up to its
``maxNumSeqs`` (all models the same share of what they still ask for), then what is left is shared in
proportion to ``maxNumSeqs``. A server spanning several GPUs gets what its tightest GPU allows; the tightest
GPU is settled first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from stacks.errors import Problem
from stacks.plan.memory import GIB, SAFETY_FRACTION, KvLayout, Overhead

AUTO_MAX_FRACTION = 0.95
"""``auto`` never budgets one server more than this of a GPU (room for what the overhead model does not see)."""


@dataclass
class Server:
    """One vLLM server as the sharing sees it; sizes per GPU, in GiB unless named bytes."""

    index: int
    """Position in the config's model list (for error keys)."""
    name: str
    gpus: list[int]
    overhead: Overhead
    layout: KvLayout | None
    max_model_len: int
    max_num_seqs: int
    fixed: float | None
    """The configured fraction, or None for ``auto``."""
    longest_len: Callable[[float], int] = field(repr=False, default=lambda _: 0)
    """The longest maxModelLen whose one sequence fits in the given GiB of KV (for refusals)."""
    kv_bytes: int = 0
    fraction: float = 0.0

    @property
    def base(self) -> float:
        """Inside the budget, besides KV."""
        return self.overhead.weights + self.overhead.in_budget

    @property
    def sequence_gib(self) -> float:
        return self.layout.sequence_bytes(self.max_model_len) / GIB if self.layout else 0.0

    def sequences(self, level: float) -> float:
        """Full sequences ``auto`` gives at ``level``: 0-1 one sequence, 1-2 up to maxNumSeqs, then a share."""
        if level <= 1:
            return level
        if level <= 2:
            return 1 + (level - 1) * (self.max_num_seqs - 1)
        return self.max_num_seqs * (level - 1)

    def kv_gib_at(self, level: float) -> float:
        return self.sequences(level) * self.sequence_gib

    def gpu_total(self, gpus: dict[int, Gpu]) -> float:
        """The total its fraction is planned against: its smallest GPU's (the tightest binds)."""
        return min(gpus[g].total for g in self.gpus)

    def footprint(self, gpu_total: float, exact: bool) -> float:
        """Physical GiB on each of its GPUs: what its budget holds (base and exact KV, else the whole budget vLLM
        fills) plus what it holds outside the budget."""
        in_budget = self.base + self.kv_bytes / GIB if exact else self.fraction * gpu_total
        return in_budget + self.overhead.outside_budget


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total: float
    """GiB as CUDA reports it (what vLLM multiplies the fraction with)."""
    reserved: float = 0.0

    @property
    def room(self) -> float:
        """What the servers may hold on it in all: its total less the safety margin and the reservation."""
        return self.total * (1 - SAFETY_FRACTION) - self.reserved


def usable(gpu: Gpu, servers: list[Server]) -> float:
    """What the servers' budgets may take of ``gpu``: its total less reservation, safety and what each holds outside its budget."""
    return gpu.room - sum(s.overhead.outside_budget for s in servers)


def _settle_kv(s: Server, kv_gib: float, gpu_total: float, exact: bool) -> None:
    """Whole blocks of KV and the fraction: exact mode sizes KV and rounds the start gate up; otherwise the fraction
    (3 decimals, down) decides and KV is what it leaves."""
    block = s.layout.block_bytes if s.layout else 0
    if s.fixed is not None:
        s.fraction = s.fixed
        kv_gib = s.fixed * gpu_total - s.base
    elif exact:
        s.fraction = math.ceil((s.base + kv_gib) / gpu_total * 1000) / 1000
    else:
        s.fraction = math.floor((s.base + kv_gib) / gpu_total * 1000) / 1000
        kv_gib = s.fraction * gpu_total - s.base
    s.kv_bytes = int(max(0.0, kv_gib) * GIB // block) * block if block else 0


@dataclass(frozen=True)
class GpuShortfall(Problem):
    """One GPU (or one pod's GPUs) that cannot hold what its servers need: said once, whatever the number of models.

    The planner appends the fixes that work, each checked by planning the stack with it (``stacks.plan.fixes``)."""

    gpu: int = -1
    """The GPU's index in the sharing (docker: the host's index; kubernetes: a pod's GPU, never shown)."""
    models: tuple[int, ...] = ()
    """Positions in the config's model list of the servers on it."""
    short_gib: float = 0.0
    """How much memory it lacks."""


def gpu_name(gpu: Gpu, pods: bool) -> str:
    """How a refusal names a GPU: docker by its index; kubernetes by type, since the scheduler picks the GPUs."""
    return f"each {gpu.name} GPU of its pod ({gpu.total} GiB)" if pods else f"GPU {gpu.index} ({gpu.name}, {gpu.total} GiB)"


def share(gpus: dict[int, Gpu], servers: list[Server], *, exact: bool, notes: list[str], problems: list[Problem], gpu_key: str, pods: bool = False) -> None:
    """Settle every server's KV bytes and fraction; report each GPU that cannot fit its servers once (``pods``: kubernetes,
    where every server owns its GPUs)."""
    on: dict[int, list[Server]] = {g: [s for s in servers if g in s.gpus] for g in gpus}
    for s in servers:
        if s.fixed is not None:
            _settle_kv(s, 0.0, s.gpu_total(gpus), exact)
    pending = [s for s in servers if s.fixed is None]
    while pending:
        best: tuple[float, int] | None = None
        for g, here in on.items():
            autos = [s for s in here if s in pending]
            if not autos:
                continue
            room = usable(gpus[g], here) - sum(s.fraction * gpus[g].total if s not in pending else 0.0 for s in here)
            level = _level(autos, room)
            if best is None or level < best[0]:
                best = (level, g)
        assert best is not None
        level, g = best
        settled = [s for s in on[g] if s in pending]
        total = gpus[g].total
        names = ", ".join(s.name for s in settled)
        if level < 1:
            problems.append(_refuse_auto(gpus[g], on[g], settled, gpu_key, pods))
        elif level < 2:
            notes.append(f"GPU {g}: {names} get one full sequence each and {math.floor((level - 1) * 100)}% of the rest of their maxNumSeqs")
        else:
            notes.append(f"GPU {g}: {names} get their maxNumSeqs full sequences, and {level - 2:.2f}x more shared in proportion")
        for s in settled:
            cap = _cap(s, total)
            kv = min(s.kv_gib_at(max(level, 0.0)), cap)
            if level >= 1 and kv < s.sequence_gib:
                problems.append(_one_sequence(s, cap, gpus[g], pods))
            _settle_kv(s, kv, s.gpu_total(gpus), exact)
            pending.remove(s)


def auto_budget(total: float) -> float:
    """The most ``auto`` budgets one server of a GPU of ``total`` GiB: under AUTO_MAX_FRACTION once the start gate
    (three decimals) is rounded up."""
    return (AUTO_MAX_FRACTION - 0.001) * total


def _cap(s: Server, total: float) -> float:
    """The most KV auto gives one server."""
    return auto_budget(total) - s.base


def _one_sequence(s: Server, left: float, gpu: Gpu, pods: bool) -> GpuShortfall:
    """One server alone: its budget reaches auto's cap before one maxModelLen sequence fits."""
    return GpuShortfall(
        f"models[{s.index}].maxModelLen",
        f"auto cannot give {s.name} one maxModelLen={s.max_model_len} sequence on {gpu_name(gpu, pods)}: it needs {s.sequence_gib:.2f} GiB of KV "
        f"and {max(left, 0):.2f} GiB are left for it after {s.base:.2f} GiB of weights and runtime overhead "
        f"(auto budgets one server at most {AUTO_MAX_FRACTION} of a GPU)",
        gpu=gpu.index,
        models=(s.index,),
        short_gib=s.sequence_gib - max(left, 0),
    )


def _level(servers: list[Server], room: float) -> float:
    """The highest level whose KV, with every server's weights and overhead, fits in ``room`` GiB (bisection)."""

    def need(level: float) -> float:
        return sum(s.base + s.kv_gib_at(level) for s in servers)

    if need(0.0) > room:
        return -1.0
    if all(s.sequence_gib == 0 for s in servers):
        return 2.0  # nothing to share: embedding encoders hold no KV
    hi = 2.0
    while need(hi) <= room and hi < 1e6:
        hi *= 2
    lo = 0.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if need(mid) <= room else (lo, mid)
    return lo


def _refuse_auto(gpu: Gpu, here: list[Server], autos: list[Server], gpu_key: str, pods: bool) -> GpuShortfall:
    """What the GPU lacks for every server on it to start with one maxModelLen sequence: one problem, each share named
    (a fixed fraction takes its whole budget)."""
    settled = [s for s in here if s not in autos]
    room = usable(gpu, here) - sum(s.fraction * gpu.total for s in settled)
    bases = sum(s.base for s in autos)
    need = bases + sum(s.sequence_gib for s in autos)
    shares = [
        f"{s.name}'s {'fixed gpuMemoryUtilization' if s.fixed is not None else 'fraction'} {s.fraction:.3f} takes {s.fraction * gpu.total:.2f} GiB"
        for s in settled
    ]
    shares += [f"{s.name} needs {s.base:.2f} GiB of weights and runtime overhead + {s.sequence_gib:.2f} GiB for one sequence" for s in autos]
    outside = sum(s.overhead.outside_budget for s in here)
    shares.append(f"CUDA contexts and graphs outside the budgets take {outside:.2f} GiB")
    alone = " (the weights and runtime overhead alone do not fit)" if bases > room else ""
    reserved = f" and {gpu.reserved} GiB reserved" if gpu.reserved else ""
    fixed = [s for s in settled if s.fixed is not None]
    # the key to change: the fixed fraction that took the memory, else the last model placed on the GPU (likely the new one)
    if fixed:
        key = f"models[{max(fixed, key=lambda s: s.fixed or 0).index}].gpuMemoryUtilization"
    elif len(here) == 1 and bases <= room:
        key = f"models[{autos[0].index}].maxModelLen"  # alone on its GPU, its weights fit: its sequence is too long
    else:
        key = gpu_key.format(i=max(s.index for s in autos))
    return GpuShortfall(
        key,
        f"{gpu_name(gpu, pods)} is {need - room:.2f} GiB short{alone}: " + "; ".join(shares) + f"; {gpu.room:.2f} GiB are usable "
        f"(after the {SAFETY_FRACTION:.0%} safety margin{reserved})",
        gpu=gpu.index,
        models=tuple(sorted(s.index for s in here)),
        short_gib=need - room,
    )
