"""The Kubernetes cluster: reachable, with GPU nodes of the planned type the model pods can land on."""

from __future__ import annotations

import re

from stacks.doctor.probes import KubeNode, KubeProbe, ProbeError
from stacks.doctor.result import Check, skipped
from stacks.plan.types import KubernetesPlan, StackPlan

PRODUCT_LABEL = "nvidia.com/gpu.product"
"""Set by NVIDIA GPU Feature Discovery (part of the GPU Operator), e.g. ``NVIDIA-L40S``."""
MEMORY_LABEL = "nvidia.com/gpu.memory"
"""GPU Feature Discovery: the GPU's memory in MiB (NVML's total)."""
NAMES = ["cluster", "GPU nodes", "GPU type"]


def _norm(name: str) -> str:
    return re.sub(r"[\s_-]+", "-", name.strip().lower())


def kube_checks(plan: StackPlan, kube: KubernetesPlan, probe: KubeProbe) -> list[Check]:
    if kube.render_yaml_to:
        return skipped("kubernetes", NAMES, f"render mode (renderYamlTo: {kube.render_yaml_to}): nothing is applied from here")
    if not probe.installed():
        return skipped("kubernetes", NAMES, "kubectl is not installed", "install kubectl to check the cluster before `pulumi up`")
    try:
        context = probe.current_context(kube.kubeconfig, kube.context)
        if context is None:
            return skipped("kubernetes", NAMES, "no cluster configured (no kubeconfig context)", "set kubernetes.context or `kubectl config use-context`")
        nodes = probe.nodes(kube.kubeconfig, kube.context)
    except ProbeError as err:
        return [Check("kubernetes", "cluster", "fail", err.message, err.fix), *skipped("kubernetes", NAMES[1:], "needs the cluster")]
    out = [Check("kubernetes", "cluster", "pass", f"context {context}: {len(nodes)} node(s)")]
    out += _gpu_nodes(plan, kube, nodes)
    return out


def _gpu_nodes(plan: StackPlan, kube: KubernetesPlan, nodes: list[KubeNode]) -> list[Check]:
    gpu_nodes = [n for n in nodes if n.gpus > 0]
    if not gpu_nodes:
        return [
            Check(
                "kubernetes",
                "GPU nodes",
                "fail",
                "no node advertises nvidia.com/gpu",
                "install the NVIDIA GPU Operator (or the NVIDIA device plugin) on the GPU nodes",
            ),
            *skipped("kubernetes", ["GPU type"], "needs GPU nodes"),
        ]
    selector = kube.gpu_node_selector
    chosen = [n for n in gpu_nodes if all(n.labels.get(k) == v for k, v in selector.items())]
    sel = ", ".join(f"{k}={v}" for k, v in selector.items()) or "none"
    if not chosen:
        return [
            Check(
                "kubernetes",
                "GPU nodes",
                "fail",
                f"{len(gpu_nodes)} node(s) advertise nvidia.com/gpu, none matches gpuNodeSelector ({sel})",
                "label the GPU nodes or change kubernetes.gpuNodeSelector",
            ),
            *skipped("kubernetes", ["GPU type"], "needs selectable GPU nodes"),
        ]
    most = max(n.gpus for n in chosen)
    # a pod's GPUs sit on one node; a model spanning nodes needs as many nodes with that many
    widest = max(plan.models, key=lambda m: m.gpus_per_node)
    detail = f"{len(chosen)} GPU node(s) match gpuNodeSelector ({sel}); up to {most} GPU(s) per node"
    spread = max(plan.models, key=lambda m: m.nodes)
    roomy = sum(1 for n in chosen if n.gpus >= spread.gpus_per_node)
    # a swap group's pod and a KEDA-scaled model stay on one node (the config refuses nodes for them)
    spreadable = " (or spread it with nodes)" if widest.swap is None and widest.autoscaling is None else ""
    if widest.gpus_per_node > most:
        nodes_check = Check(
            "kubernetes",
            "GPU nodes",
            "fail",
            f"{detail}; {widest.name} needs {widest.gpus_per_node} on one node",
            f"lower {widest.name}'s tensorParallel x pipelineParallel{spreadable} or add nodes with {widest.gpus_per_node} GPUs",
        )
    elif spread.nodes > roomy:
        nodes_check = Check(
            "kubernetes",
            "GPU nodes",
            "fail",
            f"{detail}; {spread.name} spans {spread.nodes} nodes of {spread.gpus_per_node} GPUs but {roomy} have that many",
            f"add GPU nodes or lower {spread.name}'s nodes",
        )
    else:
        needs = f"{widest.gpus_per_node}" + (f", {spread.name} {spread.nodes} such nodes" if spread.nodes > 1 else "")
        nodes_check = Check("kubernetes", "GPU nodes", "pass", f"{detail}; the widest model ({widest.name}) needs {needs}")
    return [nodes_check, _gpu_type(kube, chosen)]


def _gpu_type(kube: KubernetesPlan, nodes: list[KubeNode]) -> Check:
    products = sorted({n.labels[PRODUCT_LABEL] for n in nodes if PRODUCT_LABEL in n.labels})
    if not products:
        return Check(
            "kubernetes",
            "GPU type",
            "warn",
            f"the GPU nodes carry no {PRODUCT_LABEL} label, so the planned {kube.gpu_name} cannot be confirmed",
            "install GPU Feature Discovery (part of the GPU Operator)",
        )
    want = _norm(kube.gpu_name)
    matching = [p for p in products if want in _norm(p) or _norm(p) in want]
    if not matching:
        return Check(
            "kubernetes",
            "GPU type",
            "fail",
            f"planned {kube.gpu_name}; the selected GPU nodes have {', '.join(products)}",
            "set kubernetes.gpu (name and memoryGiB) to the nodes' GPU, or select nodes that have the planned one",
        )
    mems = sorted({int(n.labels[MEMORY_LABEL]) for n in nodes if n.labels.get(PRODUCT_LABEL) in matching and n.labels.get(MEMORY_LABEL, "").isdigit()})
    detail = f"planned {kube.gpu_name}, {kube.gpu_memory_gib} GiB; nodes: {', '.join(matching)}"
    if mems:
        smallest = mems[0] / 1024
        detail += f" ({', '.join(f'{m:,}' for m in mems)} MiB by NVML)"
        if kube.gpu_memory_gib > smallest * 1.01:
            return Check(
                "kubernetes",
                "GPU type",
                "fail",
                detail + ": the plan assumes more than the GPUs have",
                f"set kubernetes.gpu.memoryGiB to what CUDA reports on a node (NVML's total less reserved memory, under {smallest:.2f} GiB)",
            )
    return Check("kubernetes", "GPU type", "pass", detail)
