"""What the policies look at, read once from resource inputs: every container of a docker Container or a
Kubernetes pod template, with the name its peers reach it by, in one shape for both targets.

Inputs arrive as the engine sends them to the analyzer: camelCase property names, secrets already
unwrapped (pulumi_policy 1.21.0 ``Analyze`` deserializes without keeping secret markers) and, during a
preview, unknown values that raise ``UnknownValueError`` when read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy.proxy import UnknownValueError

DOCKER_CONTAINER = "docker:index/container:Container"
DOCKER_VOLUME = "docker:index/volume:Volume"
DOCKER_REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
DOCKER_IMAGE = "docker:index/image:Image"
KUBE_PVC = "kubernetes:core/v1:PersistentVolumeClaim"
KUBE_NAMESPACE = "kubernetes:core/v1:Namespace"
KUBE_SERVICE = "kubernetes:core/v1:Service"
KUBE_INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
KUBE_POD_OWNERS = {
    "kubernetes:apps/v1:Deployment",
    "kubernetes:apps/v1:DaemonSet",
    "kubernetes:apps/v1:StatefulSet",
    "kubernetes:apps/v1:ReplicaSet",
    "kubernetes:batch/v1:Job",
}
KUBE_POD = "kubernetes:core/v1:Pod"
KUBE_CRON_JOB = "kubernetes:batch/v1:CronJob"
KUBE_LEADER_WORKER_SET = "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"
"""A custom resource (the stack declares it with apiextensions.CustomResource): a leader and a worker pod template."""


def known(props: Mapping[str, Any], *path: str | int) -> Any:
    """The value at ``path``, or None when it is absent or not known yet (a preview)."""
    value: Any = props
    try:
        for key in path:
            if isinstance(key, int):
                if not isinstance(value, Sequence) or isinstance(value, str) or key >= len(value):
                    return None
            elif not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
    except UnknownValueError:
        return None
    return value


@dataclass
class Env:
    """One environment variable: a literal ``value``, or a reference to a Kubernetes Secret key."""

    value: str | None = None
    secret_ref: tuple[str, str] | None = None


@dataclass
class Box:
    """One container and what the policies ask of it."""

    workload: str
    """The name peers reach it by: the docker network alias, or the Kubernetes workload's name."""
    image: str | None
    command: list[str] = field(default_factory=list)
    """Entrypoint (docker) / command (Kubernetes) followed by the arguments."""
    env: dict[str, Env] = field(default_factory=dict)
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    host_ports: list[int] = field(default_factory=list)
    """Ports bound on the host (docker published ports, Kubernetes hostPort)."""
    host_network: bool = False
    requests: dict[str, Any] | None = None
    """Kubernetes resource requests; None on docker."""
    gpu_devices: list[str] | None = None
    """Docker GPU devices (``["0", "1"]``, or ``["all"]``); None when it claims none."""


def docker_box(props: Mapping[str, Any]) -> Box:
    aliases = known(props, "networksAdvanced", 0, "aliases") or []
    name = aliases[0] if aliases else str(known(props, "name") or "")
    env: dict[str, Env] = {}
    for entry in known(props, "envs") or []:
        key, _, value = str(entry).partition("=")
        env[key] = Env(value=value)
    ports = [int(p["external"]) for p in known(props, "ports") or [] if known(p, "external") is not None]
    gpus = known(props, "gpus")
    devices = None
    if gpus:
        devices = ["all"] if gpus == "all" else str(gpus).removeprefix("device=").split(",")
    return Box(
        workload=name,
        image=known(props, "image"),
        command=[*(known(props, "entrypoints") or []), *(known(props, "command") or [])],
        env=env,
        privileged=bool(known(props, "privileged")),
        cap_add=list(known(props, "capabilities", "adds") or []),
        cap_drop=list(known(props, "capabilities", "drops") or []),
        host_ports=ports,
        host_network=known(props, "networkMode") == "host",
        gpu_devices=devices,
    )


def pod_specs(resource_type: str, props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The pod specs a Kubernetes workload runs (none unless ``resource_type`` runs pods)."""
    paths: list[tuple[str, ...]] = []
    if resource_type in KUBE_POD_OWNERS:
        paths = [("spec", "template", "spec")]
    elif resource_type == KUBE_CRON_JOB:
        paths = [("spec", "jobTemplate", "spec", "template", "spec")]
    elif resource_type == KUBE_POD:
        paths = [("spec",)]
    elif resource_type == KUBE_LEADER_WORKER_SET:
        # the leader template is optional (the workers' is used for it then)
        paths = [("spec", "leaderWorkerTemplate", t, "spec") for t in ("leaderTemplate", "workerTemplate")]
    return [spec for spec in (known(props, *path) for path in paths) if spec is not None]


def kube_boxes(resource_type: str, props: Mapping[str, Any]) -> Iterator[Box]:
    for spec in pod_specs(resource_type, props):
        yield from _pod_boxes(spec, str(known(props, "metadata", "name") or ""))


def _pod_boxes(spec: Mapping[str, Any], workload: str) -> Iterator[Box]:
    for c in [*(known(spec, "initContainers") or []), *(known(spec, "containers") or [])]:
        env: dict[str, Env] = {}
        for e in known(c, "env") or []:
            ref = known(e, "valueFrom", "secretKeyRef")
            env[str(e["name"])] = Env(value=known(e, "value"), secret_ref=(str(known(ref, "name")), str(known(ref, "key"))) if ref else None)
        yield Box(
            workload=workload,
            image=known(c, "image"),
            command=[*(known(c, "command") or []), *(known(c, "args") or [])],
            env=env,
            privileged=bool(known(c, "securityContext", "privileged")),
            cap_add=list(known(c, "securityContext", "capabilities", "add") or []),
            cap_drop=list(known(c, "securityContext", "capabilities", "drop") or []),
            host_ports=[int(p["hostPort"]) for p in known(c, "ports") or [] if known(p, "hostPort")],
            host_network=bool(known(spec, "hostNetwork")),
            requests=dict(known(c, "resources", "requests") or {}),
        )


def boxes(resource_type: str, props: Mapping[str, Any]) -> list[Box]:
    """Every container ``resource_type`` runs: one for a docker Container, all of a pod template's."""
    if resource_type == DOCKER_CONTAINER:
        return [docker_box(props)]
    return list(kube_boxes(resource_type, props))


def labels(resource_type: str, props: Mapping[str, Any]) -> dict[str, str]:
    """A resource's labels: docker's ``[{label, value}]`` list, or Kubernetes ``metadata.labels``."""
    if resource_type.startswith("docker:"):
        return {str(x["label"]): str(x["value"]) for x in known(props, "labels") or []}
    return {str(k): str(v) for k, v in (known(props, "metadata", "labels") or {}).items()}
