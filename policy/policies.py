"""The vllm-stack policy pack's policies: what a preview or update of any stack must never declare.

Each policy reads resource inputs only (see ``policy.workloads``), so it also catches what a hand edit of
the program, or another program in the same stack, would declare. Facts the program writes once (service
names, the retain label, the image pin rule, the planner's safety margin) are imported, not repeated.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy import workloads as w
from stacks.config.rules import image_pin_problem
from stacks.plan import topology as net
from stacks.plan.launch import ENTRYPOINT, GPU_MEMORY_FLAG
from stacks.plan.memory import SAFETY_FRACTION
from stacks.plan.releases import NEWEST_CHECKED, gpu_memory_utilization_default
from stacks.render.kubernetes import NAME_LABEL

PACK_NAME = "vllm-stack"
REACHABLE = frozenset({net.GATEWAY, net.WEBUI, net.DCGM, net.PROMETHEUS, net.GRAFANA})
"""The only services a host port, a NodePort/LoadBalancer Service or an Ingress may expose."""
EXPOSING_SERVICE_TYPES = ("LoadBalancer", "NodePort")
DCGM_CAPABILITIES = frozenset({"SYS_ADMIN"})
"""All the DCGM exporter needs for profiling metrics (the stack adds nothing else)."""


def _images(args: ResourceValidationArgs) -> list[tuple[str, str | None]]:
    """(where, image reference) for every image a resource names."""
    t, props = args.resource_type, args.props
    if t == w.DOCKER_REMOTE_IMAGE:
        return [("name", w.known(props, "name"))]
    if t == w.DOCKER_IMAGE:
        return [("build.args.BASE_IMAGE", w.known(props, "build", "args", "BASE_IMAGE")), ("imageName", w.known(props, "imageName"))]
    return [(f"{b.workload} image", b.image) for b in w.boxes(t, props)]


def images_pinned(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for where, ref in _images(args):
        # an image id (sha256:...) is as pinned as it gets; unknown during a preview: checked at update
        if isinstance(ref, str) and not ref.startswith("sha256:"):
            why = image_pin_problem(ref)
            if why:
                report(f"{args.name}: {where}: {why}", None)


def only_gateway_webui_metrics_reachable(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t, props = args.resource_type, args.props
    for b in w.boxes(t, props):
        if (b.host_ports or b.host_network) and b.workload not in REACHABLE:
            how = "runs on the host network" if b.host_network else f"publishes host port(s) {b.host_ports}"
            report(f"{args.name}: {b.workload!r} {how}; only {sorted(REACHABLE)} may be reachable, vLLM only through the gateway", None)
    if t == w.KUBE_SERVICE and w.known(props, "spec", "type") in EXPOSING_SERVICE_TYPES:
        name = w.known(props, "metadata", "name")
        selected = (w.known(props, "spec", "selector") or {}).get(NAME_LABEL, name)
        if name not in REACHABLE or selected not in REACHABLE:
            report(f"{args.name}: Service {name!r} of type {w.known(props, 'spec', 'type')} exposes {selected!r}; use ClusterIP", None)
    if t == w.KUBE_INGRESS:
        backends = [w.known(props, "spec", "defaultBackend", "service", "name")]
        for rule in w.known(props, "spec", "rules") or []:
            backends += [w.known(p, "backend", "service", "name") for p in w.known(rule, "http", "paths") or []]
        for svc in backends:
            if svc is not None and svc not in REACHABLE:
                report(f"{args.name}: Ingress routes to {svc!r}; only {sorted(REACHABLE)} may be reachable", None)


def _is_webui(b: w.Box) -> bool:
    return b.workload == net.WEBUI or "open-webui" in (b.image or "")


def open_webui_locked_down(args: ResourceValidationArgs, report: ReportViolation) -> None:
    kube = args.resource_type.startswith("kubernetes:")
    for b in filter(_is_webui, w.boxes(args.resource_type, args.props)):
        # Open WebUI reads these as os.environ.get(NAME, "True").lower() == "true"
        persistent = b.env.get("ENABLE_PERSISTENT_CONFIG")
        if persistent is None or persistent.value is None or persistent.value.lower() == "true":
            report(f"{args.name}: set ENABLE_PERSISTENT_CONFIG=False, or settings saved in the UI outlive the stack config", None)
        auth = b.env.get("WEBUI_AUTH")
        if auth is not None and (auth.value or "").lower() != "true":
            report(f"{args.name}: WEBUI_AUTH={auth.value} turns login off: anyone reaching it uses every model", None)
        key = b.env.get("WEBUI_SECRET_KEY")
        if key is None or (kube and key.secret_ref is None) or (not kube and not key.value):
            where = "a secretKeyRef" if kube else "a Pulumi secret (the generated key)"
            report(f"{args.name}: WEBUI_SECRET_KEY must come from {where}; sessions are signed with it", None)


def data_kept_on_destroy(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in (w.DOCKER_VOLUME, w.KUBE_PVC, w.KUBE_NAMESPACE):
        return
    value = w.labels(args.resource_type, args.props).get(net.RETAIN_LABEL)
    if value != "true":
        report(
            f"{args.name}: label {net.RETAIN_LABEL}={value}: pulumi destroy would delete this data "
            "(set vllm-stack:retainDataOnDestroy: true, or disable this policy for a stack that means it)",
            None,
        )


def _is_dcgm(b: w.Box) -> bool:
    return b.workload == net.DCGM or "dcgm-exporter" in (b.image or "")


def containers_not_privileged(args: ResourceValidationArgs, report: ReportViolation) -> None:
    kube = args.resource_type.startswith("kubernetes:")
    for b in w.boxes(args.resource_type, args.props):
        if b.privileged:
            report(f"{args.name}: {b.workload!r} is privileged; add the one capability it needs instead", None)
        if _is_dcgm(b):
            extra = sorted(set(b.cap_add) - DCGM_CAPABILITIES)
            if extra:
                report(f"{args.name}: the DCGM exporter adds {extra}; it needs only {sorted(DCGM_CAPABILITIES)}", None)
            if kube and "ALL" not in b.cap_drop:
                report(f"{args.name}: the DCGM exporter must drop ALL capabilities before adding SYS_ADMIN", None)


def kubernetes_resource_requests(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if not args.resource_type.startswith("kubernetes:"):
        return
    for b in w.boxes(args.resource_type, args.props):
        missing = [r for r in ("cpu", "memory") if not (b.requests or {}).get(r)]
        if missing:
            report(f"{args.name}: container of {b.workload!r} has no {' or '.join(missing)} request; the scheduler cannot place it honestly", None)


def gpu_fraction(command: list[str]) -> float | None:
    """``--gpu-memory-utilization`` of a vLLM command line (vLLM's default without the flag); None for other commands."""
    for i, arg in enumerate(command):
        if arg == GPU_MEMORY_FLAG and i + 1 < len(command):
            return float(command[i + 1])
        if arg.startswith(GPU_MEMORY_FLAG + "="):
            return float(arg.split("=", 1)[1])
    is_vllm = any(command[i : i + len(ENTRYPOINT)] == ENTRYPOINT for i in range(len(command)))
    # a server without the flag gets vLLM's default; the newest releases' is the highest
    return gpu_memory_utilization_default(NEWEST_CHECKED) if is_vllm else None


def gpu_fractions_fit(args: StackValidationArgs, report: ReportViolation) -> None:
    margin = float((args.get_config() or {}).get("margin", SAFETY_FRACTION))
    limit = 1 - margin
    per_device: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for r in args.resources:
        for b in w.boxes(r.resource_type, r.props):
            fraction = gpu_fraction(b.command)
            if fraction is None:
                # a swap group's server or Ollama: what the plan holds for it, on each GPU
                shares = net.parse_gpu_shares(w.labels(r.resource_type, r.props).get(net.GPU_SHARE_LABEL, ""))
                for device, share in shares.items():
                    per_device[device].append((r.name, share))
                continue
            if b.gpu_devices is None:
                # Kubernetes: a pod's GPUs are its own; its one fraction must fit
                if r.resource_type.startswith("kubernetes:") and fraction > limit:
                    report(f"{r.name}: {GPU_MEMORY_FLAG} {fraction} leaves less than the {margin} margin", r.urn)
                continue
            for device in b.gpu_devices:
                per_device[device].append((r.name, fraction))
    shared_all = per_device.get("all", [])
    for device, users in sorted(per_device.items()):
        everyone = users if device == "all" else users + shared_all
        total = sum(f for _, f in everyone)
        if total > limit + 1e-9:
            who = ", ".join(f"{n} {f}" for n, f in everyone)
            report(f"GPU {device}: {GPU_MEMORY_FLAG} adds up to {total:.3f} ({who}), over {limit:.3f} (1 - margin {margin})", None)


POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    ResourceValidationPolicy("images-pinned", "Every image is pinned to a version tag or a digest.", images_pinned),
    ResourceValidationPolicy(
        "only-gateway-webui-metrics-reachable",
        "No vLLM server publishes a host port or gets a LoadBalancer, NodePort or Ingress: only the gateway, Open WebUI and metrics are reachable.",
        only_gateway_webui_metrics_reachable,
    ),
    ResourceValidationPolicy(
        "open-webui-locked-down",
        "Open WebUI runs with persistent config off, login on and its secret key from a secret.",
        open_webui_locked_down,
    ),
    ResourceValidationPolicy(
        "data-kept-on-destroy",
        f"Data volumes, PVCs and the namespace are kept on destroy (label {net.RETAIN_LABEL}=true).",
        data_kept_on_destroy,
    ),
    ResourceValidationPolicy(
        "containers-not-privileged",
        "No container is privileged; the DCGM exporter adds SYS_ADMIN and nothing else.",
        containers_not_privileged,
    ),
    ResourceValidationPolicy(
        "kubernetes-resource-requests",
        "Every Kubernetes container requests CPU and memory.",
        kubernetes_resource_requests,
    ),
    StackValidationPolicy(
        "gpu-fractions-fit",
        f"The {GPU_MEMORY_FLAG} of the vLLM servers sharing a GPU add up to at most 1 minus a margin.",
        gpu_fractions_fit,
        # the planner's own safety margin by default
        config_schema=PolicyConfigSchema({"margin": {"type": "number", "minimum": 0, "maximum": 0.5, "default": SAFETY_FRACTION}}),
    ),
]


def pack_options() -> Mapping[str, Any]:
    """Keyword arguments of the PolicyPack (its name, policies and default enforcement)."""
    return {"name": PACK_NAME, "policies": POLICIES, "enforcement_level": EnforcementLevel.MANDATORY}
