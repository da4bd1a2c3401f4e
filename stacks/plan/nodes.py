"""What the plan refuses about where a server runs across nodes, each refusal with the key and the fix: a release that
cannot span nodes, a LeaderWorkerSet name too long, a model too big for its split (naming the split that fits)."""

from __future__ import annotations

from stacks.catalog import Arch
from stacks.config.rules import one_node_reason
from stacks.config.schema import KubeGpu, ModelConfig
from stacks.errors import Problem
from stacks.plan import topology as net
from stacks.plan.releases import MULTI_NODE_SINCE, Version, version_text
from stacks.plan.stages import MAX_NODES, Model, Sizing, smallest_split


def tp_accepted(arch: Arch, tp: int) -> bool:
    """vLLM splits the attention heads evenly and the KV heads evenly or replicated (ModelConfig.verify_with_parallel_config,
    QKVParallelLinear, vLLM 0.26; the planner's own refusal of other sizes says which it takes)."""
    return arch.attention_heads % tp == 0 and (arch.kv_heads % tp == 0 or tp % arch.kv_heads == 0)


def node_problems(i: int, m: ModelConfig, version: Version) -> list[Problem]:
    """A server spanning nodes: the release must run it without Ray, and its LeaderWorkerSet's name must leave room for
    the StatefulSets the controller names after it."""
    if m.nodes == 1:
        return []
    out = []
    if version < MULTI_NODE_SINCE:
        out.append(
            Problem(
                f"models[{i}].nodes",
                f"vLLM {version_text(version)} is not known to serve across nodes without Ray (--nnodes, read from "
                f"{version_text(MULTI_NODE_SINCE)}); pin image.base vllm/vllm-openai:v{version_text(MULTI_NODE_SINCE)} or later",
            )
        )
    group = net.vllm_group(m.name)
    if len(group) > net.GROUP_NAME_MAX:
        short = net.GROUP_NAME_MAX - len(group) + len(m.name)
        why = f"a model spanning nodes runs as LeaderWorkerSet {group!r}, {len(group) - net.GROUP_NAME_MAX} characters too long"
        out.append(Problem(f"models[{i}].name", f"{why}; use a name of at most {short} characters"))
    for j, arg in enumerate(m.extra_args):
        if arg.split("=", 1)[0] == "--distributed-executor-backend":
            why = "a server spanning nodes runs vLLM's multiprocessing executor on every node (the image has no Ray); remove it"
            out.append(Problem(f"models[{i}].extraArgs[{j}]", why))
    return out


def too_big(i: int, m: ModelConfig, arch: Arch, spec: Model, s: Sizing, max_model_len: int, gpu: KubeGpu) -> Problem | None:
    """Kubernetes, ``auto``: a model whose heaviest GPU cannot hold its weights, overhead and one sequence, refused with
    the split that can (a configured fraction gets its own refusal: raise it, or lower maxModelLen)."""
    total = gpu.memory_gib
    if m.gpu_memory_utilization != "auto" or s.fits(total, max_model_len):
        return None
    if not gpu.per_node and m.nodes == 1:
        # how many GPUs a node has is unknown: the GPU's shortfall is explained with the fixes that work (wider pods
        # first, stacks.plan.fixes); nodes are suggested where kubernetes.gpu.perNode says a pod cannot grow
        return None
    widths = list(range(s.tp, gpu.per_node + 1)) if gpu.per_node and gpu.per_node >= s.tp else [s.tp]
    single = one_node_reason(m)
    better = smallest_split(spec, total, max_model_len, widths, lambda tp: tp_accepted(arch, tp), max_nodes=1 if single else MAX_NODES)
    o = s.overhead
    where = f"{s.tp} x {gpu.name} ({total} GiB)" + (f" per node on {s.pp} nodes" if m.nodes > 1 else "")
    need = (
        f"its heaviest GPU needs {o.weights:.2f} GiB of weights + {o.in_budget:.2f} GiB of runtime overhead + "
        f"{s.sequence_gib(max_model_len):.2f} GiB for one maxModelLen={max_model_len} sequence against {s.room(total):.2f} GiB"
    )
    # a model that must stay on one node is refused by its pod's width, never by nodes
    key = f"models[{i}].tensorParallel" if single else f"models[{i}].nodes"
    if better is None:
        span = f"one node of {widths[-1]} such GPUs ({single})" if single else f"up to {min(MAX_NODES, arch.layers)} nodes of {widths[-1]} such GPUs"
        fix = f"it does not fit on {span}; use a quantized checkpoint, a lower maxModelLen or larger GPUs"
    elif better.pp == 1:
        key = f"models[{i}].tensorParallel"
        fix = f"tensorParallel: {better.tp} fits on one node"
    else:
        split = f"nodes: {better.pp}" + (f" with tensorParallel: {better.tp}" if better.tp != s.tp else "")
        per_gpu = max(st.weights for st in better.stages)
        fix = f"the smallest node count that fits is {split} ({better.pp} nodes x {better.tp} GPUs, {per_gpu:.2f} GiB of weights per GPU)"
    return Problem(key, f"{m.name} does not fit {where}: {need}; {fix}")
