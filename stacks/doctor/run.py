"""The doctor's one entry: which checks apply to the plan's target, in the order a person fixes them."""

from __future__ import annotations

from stacks.doctor.docker_checks import daemon_check, gpu_runtime_check
from stacks.doctor.endpoint_checks import endpoint_checks
from stacks.doctor.gpu_checks import DEPENDENT, gpu_checks
from stacks.doctor.host_checks import disk_check, port_checks, published, pvc_check, token_check
from stacks.doctor.kube_checks import kube_checks
from stacks.doctor.probes import DockerInfo, Probes, is_remote
from stacks.doctor.result import Check, skipped
from stacks.doctor.swap_checks import host_memory_check
from stacks.plan.types import StackPlan

GPU_CHECKS = ["NVIDIA driver", *DEPENDENT]
"""Every check of the gpu area, skipped as one where none applies."""


def doctor(plan: StackPlan, probes: Probes, *, hf_token_set: bool) -> list[Check]:
    """Every check for ``plan`` on this machine; ``hf_token_set``: the stack file holds ``vllm-stack:hfToken``."""
    if plan.target == "docker":
        out = _docker_host(plan, probes)
    else:
        assert plan.kubernetes is not None, "a kubernetes plan has kubernetes settings"
        out = skipped("gpu", ["GPUs"], "kubernetes target: the GPUs are on the cluster's nodes (see the kubernetes checks)")
        if plan.image.build:
            out.append(daemon_check(probes.docker, "it builds and pushes the customised vLLM image")[0])
        out.append(pvc_check(plan, plan.kubernetes))
        out += kube_checks(plan, plan.kubernetes, probes.kube)
    out.append(token_check(plan, hf_token_set))
    if probes.endpoints is not None:
        out += endpoint_checks(plan, probes.endpoints)
    return out


def _uses_gpus(plan: StackPlan) -> bool:
    return bool(plan.models) or bool(plan.ollama and plan.ollama.gpus)


def _gpu_access(info: DockerInfo | None, probes: Probes) -> list[Check]:
    return [gpu_runtime_check(info, probes.host)] if info is not None else skipped("docker", ["GPU access"], "needs the Docker daemon")


def _docker_host(plan: StackPlan, probes: Probes) -> list[Check]:
    daemon, info = daemon_check(probes.docker, "it runs every container of the stack")
    out = [daemon]
    if is_remote(probes.docker.host):
        # answering or not, the daemon is on another machine: this one's GPUs, disk and ports say nothing about it
        away = f"the Docker daemon is remote ({probes.docker.host}): this machine's GPUs, disk and ports are not the ones that count"
        fix = "run `python -m stacks doctor STACK` on that host"
        out += _gpu_access(info, probes)
        return [
            *out,
            *skipped("gpu", GPU_CHECKS, away, fix),
            *skipped("disk", ["model cache"], away, fix),
            *(skipped("host", ["host memory"], away, fix) if plan.swap_groups else []),
            *skipped("ports", [p.name for p in published(plan)], away, fix),
        ]
    if not _uses_gpus(plan):
        out += skipped("gpu", GPU_CHECKS, "the stack uses no NVIDIA GPU (no vLLM; Ollama, if any, on the CPU)")
    else:
        out += _gpu_access(info, probes)
        out += gpu_checks(plan, probes.gpu)
    out.append(disk_check(plan, probes.host, info))
    out += host_memory_check(plan, probes.host)
    out += port_checks(plan, probes.host, probes.docker if info is not None else None)
    return out
