"""Disk for the model cache, free ports for the published services, and the HF token gated models need."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from stacks.doctor.probes import DockerInfo, DockerProbe, HostProbe
from stacks.doctor.result import Check
from stacks.gated import is_gated
from stacks.plan.memory import GIB
from stacks.plan.types import KubernetesPlan, StackPlan

_QUANTITY = {"Mi": 1 / 1024, "Gi": 1.0, "Ti": 1024.0}


def weights_gib(plan: StackPlan) -> dict[str, float]:
    """Checkpoint size per HF id (all ranks; a model served twice downloads once)."""
    out: dict[str, float] = {}
    for m in plan.models:
        out[m.model] = max(out.get(m.model, 0.0), m.memory.weights_gib * m.gpu_count)
    return out


def _listing(sizes: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in sizes.items())


def disk_check(plan: StackPlan, host: HostProbe, docker: DockerInfo | None) -> Check:
    sizes = weights_gib(plan)
    need = sum(sizes.values())
    if docker and docker.root_dir:
        where, why = docker.root_dir, "Docker's data root (the model-cache volume lives there)"
    else:
        where, why = os.getcwd(), "the current directory (Docker's data root is unknown: its daemon did not answer)"
    measured, free = host.disk_free(where)
    detail = f"{free / GIB:.1f} GiB free at {measured}, {why}; the models' weights take {need:.1f} GiB ({_listing(sizes)})"
    if free < need * GIB:
        return Check(
            "disk",
            "model cache",
            "fail",
            detail,
            f"free {need - free / GIB:.1f} GiB there, or move Docker's data-root (daemon.json `data-root`) to a larger disk",
        )
    return Check("disk", "model cache", "pass", detail)


def quantity_gib(size: str) -> float:
    m = re.fullmatch(r"(\d+)(Mi|Gi|Ti)", size)
    return int(m.group(1)) * _QUANTITY[m.group(2)] if m else 0.0


def pvc_check(plan: StackPlan, kube: KubernetesPlan) -> Check:
    sizes = weights_gib(plan)
    shared = kube.model_cache_access_mode == "ReadWriteMany"
    need = sum(sizes.values()) if shared else max(sizes.values())
    have = quantity_gib(kube.model_cache_size)
    what = "all models share it" if shared else "each model has its own claim of that size"
    detail = f"modelCacheSize {kube.model_cache_size} ({what}); the weights take {need:.1f} GiB ({_listing(sizes)})"
    if have < need:
        return Check("disk", "model cache", "fail", detail, f"set kubernetes.modelCacheSize to at least {int(need) + 1}Gi")
    return Check("disk", "model cache", "pass", detail)


@dataclass(frozen=True)
class Published:
    """A port the stack publishes on the docker host, where it binds it and the key that decides the address."""

    service: str
    port: int
    address: str
    address_key: str

    @property
    def name(self) -> str:
        return f"{self.service} port {self.port}"


def published(plan: StackPlan) -> list[Published]:
    """Every published port where the program publishes it (``render.workloads``): the gateway and Open WebUI on
    ``docker.bindAddress``; the DCGM exporter, Prometheus and Grafana on ``monitoring.bindAddress``."""
    if plan.docker is None:
        return []
    metrics = plan.monitoring.bind_address or plan.docker.bind_address
    grafana = plan.monitoring.grafana.service if plan.monitoring.grafana else None
    on_host = [(plan.gateway.service, False), *((s.service, False) for s in (plan.webui,) if s)]
    on_host += [(s, True) for s in (plan.dcgm.service if plan.dcgm else None, plan.prometheus.service if plan.prometheus else None, grafana) if s]
    return [
        Published(s.name, s.published, metrics if m else plan.docker.bind_address, "monitoring.bindAddress" if m else "docker.bindAddress")
        for s, m in on_host
        if s.published is not None
    ]


def port_checks(plan: StackPlan, host: HostProbe, docker: DockerProbe | None) -> list[Check]:
    assert plan.docker is not None, "ports are published on the docker target"
    out = []
    for s in published(plan):
        address, port, name = s.address, s.port, s.name
        problem = host.port_in_use(address, port)
        if problem is None:
            out.append(Check("ports", name, "pass", f"{address}:{port} is free"))
            continue
        holders = docker.port_holders(port) if docker else []
        if any(h.endswith(f"-{s.service}") for h in holders):
            out.append(
                Check("ports", name, "warn", f"{problem}: container {', '.join(holders)}, this stack's own {s.service}", "nothing, if the stack is already up")
            )
        elif "not an address" in problem:
            out.append(Check("ports", name, "fail", problem, f"set vllm-stack:{s.address_key} to an address of this host (or 0.0.0.0)"))
        else:
            owner = f" (container {', '.join(holders)})" if holders else ""
            out.append(
                Check("ports", name, "fail", problem + owner, f"stop what listens there (`ss -ltnp 'sport = :{port}'`) or publish {s.service} on another port")
            )
    return out


def token_check(plan: StackPlan, hf_token_set: bool) -> Check:
    gated = sorted({m.model for m in plan.models if is_gated(m.model)})
    if not gated:
        return Check("secrets", "hfToken", "pass", "no model needs it (none is gated)" + ("; it is set" if hf_token_set else ""))
    if hf_token_set:
        return Check("secrets", "hfToken", "pass", f"set; gated: {', '.join(gated)} (the token's account must have accepted their licenses)")
    return Check(
        "secrets",
        "hfToken",
        "fail",
        f"not set, and {', '.join(gated)} {'is' if len(gated) == 1 else 'are'} gated: the download is refused",
        "accept the license on the model's Hugging Face page, then `pulumi config set --secret vllm-stack:hfToken hf_...`",
    )
