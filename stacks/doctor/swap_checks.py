"""Host memory for swap groups: members asleep at level 1 keep their weights in the host's memory (pinned, never swapped out)."""

from __future__ import annotations

from stacks.doctor.probes import HostProbe
from stacks.doctor.result import Check
from stacks.plan.memory import GIB
from stacks.plan.types import StackPlan

HOST_SHARE = 0.9
"""Above this share of the host's memory for the swap groups alone, little is left for the OS, Docker and the rest of the stack."""


def host_memory_check(plan: StackPlan, host: HostProbe) -> list[Check]:
    """None without swap groups; else the groups' host memory (the plan's) against this host's."""
    if not plan.swap_groups:
        return []
    need = sum(g.host_memory_gib for g in plan.swap_groups)
    parts = ", ".join(f"{g.name} {g.host_memory_gib:.1f}" for g in plan.swap_groups)
    have = host.memory_bytes()
    if have is None:
        why = f"could not read this host's memory; the swap groups need {need:.1f} GiB ({parts})"
        return [Check("host", "host memory", "warn", why, "check /proc/meminfo")]
    detail = f"{have / GIB:.1f} GiB here; the swap groups need {need:.1f} GiB ({parts}): level-1 weights asleep plus each vLLM server's processes"
    fix = (
        "use sleep level 2 for some members (models[].swap.level: 2: weights reloaded from the model cache on wake, no host memory), "
        "fewer members, or a host with more memory"
    )
    if have < need * GIB:
        return [Check("host", "host memory", "fail", detail, fix)]
    if need * GIB > HOST_SHARE * have:
        return [Check("host", "host memory", "warn", detail + f"; over {HOST_SHARE:.0%} of it", fix)]
    return [Check("host", "host memory", "pass", detail)]
