"""Cross-field rules of swap groups: who may share a group, and what its settings allow."""

from __future__ import annotations

from stacks.config.schema import StackConfig
from stacks.errors import Problem


def swap_problems(c: StackConfig) -> list[Problem]:
    """Every problem of ``models[].swap`` and ``swapGroups`` that needs more than one field to see."""
    members: dict[str, list[int]] = {}
    for i, m in enumerate(c.models):
        if m.swap is not None:
            members.setdefault(m.swap.group, []).append(i)
    out: list[Problem] = []
    for name in c.swap_groups:
        if name not in members:
            out.append(Problem(f"swapGroups.{name}", f"no model joins it; add swap: {{group: {name}}} to two or more models, or remove it"))
    for name, indices in members.items():
        first = indices[0]
        if len(indices) < 2:
            out.append(
                Problem(
                    f"models[{first}].swap.group",
                    f"{name!r} has only this model; a swap group takes turns between two or more models on the same GPUs: add another, or remove swap",
                )
            )
            continue
        awake = c.swap_groups[name].awake if name in c.swap_groups else 1
        if awake >= len(indices):
            out.append(
                Problem(
                    f"swapGroups.{name}.awake",
                    f"{awake} of its {len(indices)} members awake at once means none ever sleeps; lower it below {len(indices)}, or drop swap from them",
                )
            )
        out += _placement(c, name, indices)
    for name, g in c.swap_groups.items():
        if g.max_wait_seconds >= c.gateway.read_timeout_seconds:
            # nginx hears nothing from the swapper while a request waits: past its read timeout it answers 504 itself
            out.append(
                Problem(
                    f"swapGroups.{name}.maxWaitSeconds",
                    f"the gateway stops waiting for an answer after gateway.readTimeoutSeconds ({c.gateway.read_timeout_seconds}) and answers 504; "
                    f"lower it below {c.gateway.read_timeout_seconds} or raise gateway.readTimeoutSeconds",
                )
            )
    return out


def _placement(c: StackConfig, name: str, indices: list[int]) -> list[Problem]:
    """Members share their GPUs (docker: the same devices; kubernetes: one pod holds them all, so the same GPU count)."""
    first = indices[0]
    out = []
    head = c.models[first]
    shared = sorted(c.docker_gpus(head))
    for i in indices[1:]:
        m = c.models[i]
        if c.target == "docker" and sorted(c.docker_gpus(m)) != shared:
            out.append(Problem(f"models[{i}].gpus", f"swap group {name!r} shares its GPUs: give it the GPUs of models[{first}] ({shared}), or another group"))
        ranks, head_ranks = (m.tensor_parallel or 1, m.pipeline_parallel), (head.tensor_parallel or 1, head.pipeline_parallel)
        if c.target == "kubernetes" and ranks != head_ranks:
            out.append(
                Problem(
                    f"models[{i}].tensorParallel",
                    f"swap group {name!r} runs in one pod on the same GPUs: use tensorParallel {head_ranks[0]} and pipelineParallel {head_ranks[1]} "
                    f"as models[{first}] does, or another group",
                )
            )
    for i in indices:
        m = c.models[i]
        if m.replicas != 1 and c.target == "kubernetes":
            out.append(Problem(f"models[{i}].replicas", f"swap group {name!r} runs each member once, in one pod; remove replicas or swap"))
        if m.autoscaling is not None and m.autoscaling.enabled:
            out.append(Problem(f"models[{i}].autoscaling", f"a member of swap group {name!r} wakes on demand instead; remove autoscaling or swap"))
        if m.nodes > 1:
            out.append(
                Problem(f"models[{i}].nodes", f"swap group {name!r} runs in one pod on one node; a model spanning nodes cannot join it: remove swap or nodes")
            )
    return out
