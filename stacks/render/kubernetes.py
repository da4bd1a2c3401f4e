"""Kubernetes objects as plain data, built once from the Workloads. No Pulumi imports here.

The kubernetes platform declares exactly these objects through ``pulumi_kubernetes``, and
``python -m stacks render`` writes them as YAML. Secret *values* never pass through here: Secret
objects are built only by the platform, from Pulumi secrets, and are never rendered.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import yaml

from stacks.plan import SecretRef, StackPlan
from stacks.plan import topology as net
from stacks.plan.types import KubernetesPlan
from stacks.render.workloads import Workload, image_refs, stack_workloads

Obj = dict[str, Any]

PART_OF = "vllm-stack"
NAME_LABEL = "app.kubernetes.io/name"
"""Selects a workload's pods; its value is the workload's name (the Service's too)."""
GPU_RESOURCE = "nvidia.com/gpu"
HEALTH_PERIOD_S = 10
CONFIG_HASH_ANNOTATION = "vllm-stack/config-hash"
POD_RESOURCES = "/var/lib/kubelet/pod-resources"
PORT_NAME = "http"
"""Name of every container's and Service's one port (probes, Ingress backends and ServiceMonitors refer to it)."""
METRICS_PORT_NAME = "metrics"
"""Container port of a metrics endpoint kept off the Service (the gateway's internal metrics server); PodMonitors name it."""
LWS_API = "leaderworkerset.x-k8s.io/v1"
"""The LeaderWorkerSet API (sigs.k8s.io/lws v0.9.0, config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml)."""
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
"""Set on every pod of a group; "0" on the leader (lws v0.9.0 api/leaderworkerset/v1 WorkerIndexLabelKey)."""
AWAIT_ANNOTATION = "pulumi.com/waitFor"
"""pulumi-kubernetes' await for a custom resource (4.18+): ``pulumi up`` waits until the condition holds."""


@dataclass(frozen=True)
class Claim:
    """Where a logical volume lives on Kubernetes: a PVC, and a folder in it."""

    name: str
    size: str
    access_mode: str
    sub_path: str | None = None


def common_labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/managed-by": "pulumi", "app.kubernetes.io/component": component}


def selector(w: Workload) -> dict[str, str]:
    return {NAME_LABEL: w.name, "app.kubernetes.io/part-of": PART_OF}


def labels(w: Workload) -> dict[str, str]:
    return {**selector(w), **common_labels(w.component), **w.labels}


def _kube(plan: StackPlan) -> KubernetesPlan:
    assert plan.kubernetes is not None, "manifests are built for kubernetes stacks only"
    return plan.kubernetes


def _meta(plan: StackPlan, name: str, object_labels: dict[str, str], annotations: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": _kube(plan).namespace, "labels": object_labels}
    if annotations:
        meta["annotations"] = annotations
    return meta


def namespace(plan: StackPlan) -> Obj:
    # deleting a namespace deletes its PVCs: it is kept (and labelled) with the data
    ns_labels = {**common_labels("namespace"), **net.retain_labels(plan.retain_data)}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": _kube(plan).namespace, "labels": ns_labels}}


def secret(plan: StackPlan, name: str, data: Mapping[str, Any]) -> Obj:
    """A stack secret; ``data`` holds Pulumi secrets in the program (never rendered to a file)."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(plan, name, common_labels("secret")), "type": "Opaque", "stringData": dict(data)}


def claim_for(plan: StackPlan, w: Workload, volume: str) -> Claim:
    """The PVC behind logical ``volume`` of ``w``.

    The model cache is one ReadWriteMany PVC shared by every model pod (a model downloads once);
    with ``modelCacheAccessMode: ReadWriteOnce`` each model gets its own PVC instead.
    """
    kube = _kube(plan)
    if volume in (net.MODEL_CACHE, net.VLLM_CACHE):
        name = net.MODEL_CACHE if kube.model_cache_access_mode == "ReadWriteMany" else f"{w.name}-cache"
        return Claim(name, kube.model_cache_size, kube.model_cache_access_mode, "huggingface" if volume == net.MODEL_CACHE else "vllm")
    if volume == net.WEBUI_DATA and plan.webui:
        # one replica owns its volume; several (with an external database) share it
        return Claim(f"{w.name}-data", plan.webui.storage_size, "ReadWriteOnce" if w.exclusive else "ReadWriteMany")
    raise ValueError(f"{w.name}: volume {volume!r} has no claim on kubernetes")


def claims(plan: StackPlan, workloads: list[Workload]) -> list[Obj]:
    """One PVC per claim the workloads mount, in first-use order."""
    seen: dict[str, Claim] = {}
    for w in workloads:
        for volume in w.volumes:
            c = claim_for(plan, w, volume)
            seen.setdefault(c.name, c)
    out = []
    for c in seen.values():
        spec: Obj = {"accessModes": [c.access_mode], "resources": {"requests": {"storage": c.size}}}
        if _kube(plan).storage_class:
            spec["storageClassName"] = _kube(plan).storage_class
        out.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": _meta(plan, c.name, {**common_labels("storage"), **net.retain_labels(plan.retain_data)}),
                "spec": spec,
            }
        )
    return out


def _quantity_gib(gib: float) -> str:
    return f"{int(gib)}Gi" if float(gib).is_integer() else f"{math.ceil(gib * 1024)}Mi"


def _file_key(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _env(w: Workload) -> list[Obj]:
    env: list[Obj] = [{"name": k, "value": v} for k, v in sorted(w.env.items())]
    if w.all_gpus:
        # every GPU of the node is visible without claiming one (the NVIDIA runtime honours this)
        env.append({"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"})
    if w.daemon and w.all_gpus:
        # dcgm-exporter labels its series Hostname=$NODE_NAME (internal/pkg/hostname/hostname.go): the node, not the pod
        env.append({"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
    if w.group:
        # the address a node's ranks advertise to the others (vLLM's get_ip, vllm/utils/network_utils.py 0.26, otherwise
        # guesses from the default route): the pod's own
        env.append({"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    for key, ref in sorted(w.secret_env.items()):
        source: Obj = {"name": ref.secret, "key": ref.key}
        if ref.optional:
            source["optional"] = True
        env.append({"name": key, "valueFrom": {"secretKeyRef": source}})
    return env


def _probes(w: Workload) -> Obj:
    if not (w.health_path and w.port):
        return {}

    def get() -> Obj:
        return {"path": w.health_path, "port": PORT_NAME}

    return {
        # the startup budget covers model download and load; liveness only counts after it
        "startupProbe": {
            "httpGet": get(),
            "periodSeconds": HEALTH_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(w.startup_seconds / HEALTH_PERIOD_S),
        },
        "readinessProbe": {"httpGet": get(), "periodSeconds": HEALTH_PERIOD_S, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": get(), "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 5},
    }


def _resources(w: Workload) -> Obj:
    requests = {k: v for k, v in (("cpu", w.cpu_request), ("memory", w.memory_request)) if v}
    limits: Obj = {k: v for k, v in (("memory", w.memory_limit),) if v}
    if w.gpu_count:
        # a quantity, which the API (and the kubernetes provider's schema: map of strings) writes as a string
        limits[GPU_RESOURCE] = str(w.gpu_count)
    out: Obj = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _security(w: Workload) -> Obj:
    """Least privilege for every container: no privilege escalation, every capability dropped but what it needs.
    The root file systems stay writable: vLLM writes its kernel caches (FlashInfer, Triton) under HOME, nginx its temp
    files, Open WebUI its static assets under /app/backend."""
    caps: Obj = {"drop": ["ALL"]}
    if w.cap_add:
        caps = {"add": list(w.cap_add), "drop": ["ALL"]}
    context: Obj = {"allowPrivilegeEscalation": False, "privileged": False, "capabilities": caps}
    if w.user:
        context |= {"runAsNonRoot": True, "runAsUser": w.user[0], "runAsGroup": w.user[1]}
    return {"securityContext": context}


def _pod_security(w: Workload) -> Obj:
    context: Obj = {"seccompProfile": {"type": "RuntimeDefault"}}
    if w.user:
        # the volumes (model cache PVC, /dev/shm) become group-writable for the non-root user
        context["fsGroup"] = w.user[0]
    return context


def _volumes(plan: StackPlan, w: Workload) -> tuple[list[Obj], list[Obj]]:
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    for volume, path in sorted(w.volumes.items()):
        c = claim_for(plan, w, volume)
        if not any(v["name"] == c.name for v in volumes):
            volumes.append({"name": c.name, "persistentVolumeClaim": {"claimName": c.name}})
        mount: Obj = {"name": c.name, "mountPath": path}
        if c.sub_path:
            mount["subPath"] = c.sub_path
        mounts.append(mount)
    if w.files:
        volumes.append({"name": "files", "configMap": {"name": f"{w.name}-files"}})
        mounts += [{"name": "files", "mountPath": path, "subPath": _file_key(path), "readOnly": True} for path in sorted(w.files)]
    by_secret: dict[str, list[tuple[str, SecretRef]]] = {}
    for path, ref in sorted(w.secret_files.items()):
        by_secret.setdefault(ref.secret, []).append((path, ref))
    for name, refs in by_secret.items():
        volumes.append({"name": f"secret-{name}", "secret": {"secretName": name, "defaultMode": 0o440}})
        mounts += [{"name": f"secret-{name}", "mountPath": path, "subPath": ref.key, "readOnly": True} for path, ref in refs]
    if w.ipc_host or w.shm_size_gib:
        # no host IPC on a cluster: /dev/shm is a memory-backed emptyDir with a size limit
        size = _quantity_gib(w.shm_size_gib) if w.shm_size_gib else _kube(plan).shm_size
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    if w.daemon and w.all_gpus:
        volumes.append({"name": "pod-resources", "hostPath": {"path": POD_RESOURCES, "type": "Directory"}})
        mounts.append({"name": "pod-resources", "mountPath": POD_RESOURCES, "readOnly": True})
    return volumes, mounts


def config_hash(w: Workload) -> str:
    """Changes with the mounted files, so a new config rolls the pods (subPath mounts never refresh)."""
    digest = hashlib.sha256()
    for path, content in sorted(w.files.items()):
        digest.update(f"{path}\0{content}\0".encode())
    return digest.hexdigest()[:16]


def pod_template(plan: StackPlan, w: Workload) -> Obj:
    kube = _kube(plan)
    container: Obj = {"name": w.name, "image": w.image}
    if w.entrypoint:
        container["command"] = list(w.entrypoint)
    if w.args:
        container["args"] = list(w.args)
    env = _env(w)
    if env:
        container["env"] = env
    if w.port:
        container["ports"] = [{"name": PORT_NAME, "containerPort": w.port, "protocol": "TCP"}]
    if w.metrics_port:
        # on the pod only: the Service (possibly a LoadBalancer) never carries it
        container.setdefault("ports", []).append({"name": "metrics", "containerPort": w.metrics_port, "protocol": "TCP"})
    for port in sorted(set(w.extra_ports.values())):
        container.setdefault("ports", []).append({"containerPort": port, "protocol": "TCP"})
    resources = _resources(w)
    if resources:
        container["resources"] = resources
    volumes, mounts = _volumes(plan, w)
    if mounts:
        container["volumeMounts"] = mounts
    container |= _probes(w) | _security(w)
    # service links would inject VLLM_*-looking variables for every Service in the namespace
    spec: Obj = {"enableServiceLinks": False, "securityContext": _pod_security(w), "containers": [container]}
    if volumes:
        spec["volumes"] = volumes
    if w.gpu_count or w.all_gpus:
        spec["nodeSelector"] = dict(kube.gpu_node_selector)
        spec["tolerations"] = [dict(t) for t in kube.tolerations]
    annotations: dict[str, str] = {}
    if w.files:
        annotations[CONFIG_HASH_ANNOTATION] = config_hash(w)
    if w.metrics_path and (w.metrics_port or w.port) and not plan.monitoring.operator:
        # with the prometheus-operator, ServiceMonitors and PodMonitors find the targets (annotations would scrape them twice)
        annotations |= {"prometheus.io/scrape": "true", "prometheus.io/port": str(w.metrics_port or w.port), "prometheus.io/path": w.metrics_path}
    meta: Obj = {"labels": labels(w)}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec}


def _leader_worker_set(plan: StackPlan, w: Workload) -> Obj:
    """One replica is a group of ``size`` pods on as many nodes: the leader runs ``args`` and answers the probes, the
    workers run ``worker_args`` and join it. The group is created, restarted and replaced as a unit."""
    group = w.group
    assert group is not None, "a LeaderWorkerSet runs a group"
    worker = replace(w, args=group.worker_args, port=None, health_path=None, metrics_path=None, metrics_port=None)
    template: Obj = {
        "size": group.size,
        # a pod that fails, or a container that restarts, takes its group's other pods with it: the ranks of a server
        # start together or not at all
        "restartPolicy": "RecreateGroupOnPodRestart",
        "leaderTemplate": pod_template(plan, w),
        "workerTemplate": pod_template(plan, worker),
    }
    spec: Obj = {
        "replicas": w.replicas,
        # the leader turns ready only once every worker has joined: the workers must not wait for it
        "startupPolicy": "LeaderCreated",
        # one group at a time, never a new one beside the old (no spare GPUs needed)
        "rolloutStrategy": {"type": "RollingUpdate", "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0}},
        "leaderWorkerTemplate": template,
    }
    meta = _meta(plan, group.name, labels(w), {AWAIT_ANNOTATION: "condition=Available"})
    return {"apiVersion": LWS_API, "kind": "LeaderWorkerSet", "metadata": meta, "spec": spec}


def _group_network_policy(plan: StackPlan, w: Workload) -> Obj | None:
    """A group's ranks talk over unauthenticated channels (the torch.distributed store on the leader's master port, vLLM's
    message queues, NCCL), which vLLM says must stay on a private network (docs/serving/parallelism_scaling.md, "Network
    security"): only the group's own pods reach them; its API and metrics port stays open as every server's is."""
    if not w.group:
        return None
    own = {"matchLabels": selector(w)}
    spec: Obj = {
        "podSelector": own,
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": own}]}, {"ports": [{"port": PORT_NAME, "protocol": "TCP"}]}],
    }
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(plan, w.group.name, labels(w)), "spec": spec}


def _controller(plan: StackPlan, w: Workload) -> Obj:
    if w.group:
        return _leader_worker_set(plan, w)
    template = pod_template(plan, w)
    if w.daemon:
        spec: Obj = {"selector": {"matchLabels": selector(w)}, "updateStrategy": {"type": "RollingUpdate"}, "template": template}
        return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(plan, w.name, labels(w)), "spec": spec}
    # a rolling update would need spare GPUs (or a second writer on the volume): exclusive workloads Recreate
    strategy: Obj = {"type": "Recreate"} if w.exclusive else {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    spec = {"selector": {"matchLabels": selector(w)}, "strategy": strategy, "revisionHistoryLimit": 3, "template": template}
    if w.autoscale is None:
        # with KEDA the replica count is the autoscaler's; leaving it out keeps `pulumi up` from fighting it
        spec = {"replicas": w.replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(plan, w.name, labels(w)), "spec": spec}


def _service(plan: StackPlan, w: Workload) -> Obj:
    published = w.publish is not None and not w.daemon
    port = w.publish or w.port
    spec: Obj = {
        "type": _kube(plan).service_type if published else "ClusterIP",
        # a group's leader serves the API; its workers answer nothing
        "selector": {**selector(w), LWS_WORKER_INDEX_LABEL: "0"} if w.group else selector(w),
        "ports": [{"name": PORT_NAME, "port": port, "targetPort": PORT_NAME, "protocol": "TCP"}],
    }
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(plan, w.name, labels(w)), "spec": spec}


def _extra_services(plan: StackPlan, w: Workload) -> list[Obj]:
    """A ClusterIP Service per further name of the workload, on its own port (a swap group's members)."""
    out = []
    for name, port in sorted(w.extra_ports.items()):
        spec: Obj = {"type": "ClusterIP", "selector": selector(w), "ports": [{"name": PORT_NAME, "port": port, "targetPort": port, "protocol": "TCP"}]}
        object_labels = {**labels(w), NAME_LABEL: name}
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": _meta(plan, name, object_labels), "spec": spec})
    return out


def _disruption_budget(plan: StackPlan, w: Workload) -> Obj | None:
    if w.group:
        # one pod down takes its whole group down and the group is recreated: a drain evicts one pod, then waits until
        # that group serves again before it takes another group's; pods of a group not yet serving never hold it up
        spec: Obj = {"maxUnavailable": 1, "selector": {"matchLabels": selector(w)}, "unhealthyPodEvictionPolicy": "AlwaysAllow"}
        return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(plan, w.name, labels(w)), "spec": spec}
    least = w.autoscale.min_replicas if w.autoscale else w.replicas
    if w.daemon or least < 2:
        return None
    spec = {"maxUnavailable": 1, "selector": {"matchLabels": selector(w)}}
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(plan, w.name, labels(w)), "spec": spec}


def _ingress(plan: StackPlan, w: Workload) -> Obj | None:
    gw = plan.gateway
    ing = gw.ingress
    if w.name != gw.service.name or ing is None:
        return None
    # streaming answers pass the ingress unbuffered, with the gateway's own body and time limits
    annotations = {
        "nginx.ingress.kubernetes.io/proxy-buffering": "off",
        "nginx.ingress.kubernetes.io/proxy-request-buffering": "off",
        "nginx.ingress.kubernetes.io/proxy-body-size": f"{gw.max_body_mib}m",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": str(gw.read_timeout_seconds),
        "nginx.ingress.kubernetes.io/proxy-send-timeout": str(gw.read_timeout_seconds),
    }
    backend = {"service": {"name": w.name, "port": {"name": PORT_NAME}}}
    spec: Obj = {"rules": [{"host": ing.host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}]}
    if ing.class_name:
        spec = {"ingressClassName": ing.class_name, **spec}
    if ing.tls_secret:
        spec["tls"] = [{"hosts": [ing.host], "secretName": ing.tls_secret}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": _meta(plan, w.name, labels(w), annotations), "spec": spec}


def _scaled_object(plan: StackPlan, w: Workload) -> Obj | None:
    a = w.autoscale
    if a is None:
        return None
    # trigger metadata is a map of strings (KEDA parses the numbers)
    triggers: list[Obj] = [{"type": "prometheus", "metadata": {"serverAddress": a.prometheus_url, "query": a.query, "threshold": str(a.threshold)}}]
    if a.activation_query:
        # active (wakes the Deployment from zero) while the value is above activationThreshold; above one replica
        # the HPA takes the larger of the two triggers' replica counts
        wake = {"serverAddress": a.prometheus_url, "query": a.activation_query, "threshold": str(a.threshold)}
        wake["activationThreshold"] = f"{a.activation_threshold:g}"
        triggers.append({"type": "prometheus", "metadata": wake})
    spec = {
        "scaleTargetRef": {"name": w.name},
        "minReplicaCount": a.min_replicas,
        "maxReplicaCount": a.max_replicas,
        "pollingInterval": 15,
        # a new replica loads its model for minutes: scale down slowly
        "cooldownPeriod": 600,
        "triggers": triggers,
    }
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": _meta(plan, w.name, labels(w)), "spec": spec}


def config_map(plan: StackPlan, w: Workload) -> Obj | None:
    if not w.files:
        return None
    data = {_file_key(path): content for path, content in sorted(w.files.items())}
    if len(data) != len(w.files):
        raise ValueError(f"{w.name}: two files share a name; ConfigMap keys are file names")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(plan, f"{w.name}-files", labels(w)), "data": data}


def workload_objects(plan: StackPlan, w: Workload) -> list[Obj]:
    """Everything that runs ``w``, in apply order; the controller comes right before its Service."""
    found = [config_map(plan, w), _group_network_policy(plan, w), _controller(plan, w), _service(plan, w) if w.port else None, *_extra_services(plan, w)]
    found += [_disruption_budget(plan, w), _ingress(plan, w), _scaled_object(plan, w)]
    return [o for o in found if o is not None]


def stack_objects(plan: StackPlan) -> list[Obj]:
    """Every workload object of a kubernetes stack except the Secrets, with images as the config pins them."""
    refs = image_refs(plan)
    ws = stack_workloads(plan, refs.__getitem__).all()
    out = [namespace(plan), *claims(plan, ws)]
    for w in ws:
        out += workload_objects(plan, w)
    return out


def secret_refs(plan: StackPlan) -> list[SecretRef]:
    """The Secret values the pods read: what a GitOps user creates, since rendered manifests hold no Secret."""
    return stack_workloads(plan, image_refs(plan).__getitem__).secret_refs()


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    # files inside ConfigMaps (nginx.conf, router.js, prometheus.yml) read as themselves, not as one escaped line
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _str)


def to_yaml(obj: Obj) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False)


APPLY_STAGE = {
    "Namespace": 0,
    "PersistentVolumeClaim": 10,
    "ConfigMap": 20,
    "NetworkPolicy": 25,
    "Deployment": 30,
    "DaemonSet": 30,
    "LeaderWorkerSet": 30,
    "Service": 40,
    "PodDisruptionBudget": 50,
    "Ingress": 60,
    "ScaledObject": 70,
}
"""File-name prefix per kind: ``kubectl apply -f DIR`` takes files in name order, so the namespace comes first and
what refers to a workload comes after it. A prefix per kind (not per position) keeps every other file's name when a
model is added or removed. Kinds not listed go last."""
LAST_STAGE = 90


def file_name(obj: Obj) -> str:
    return f"{APPLY_STAGE.get(obj['kind'], LAST_STAGE):02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def render(plan: StackPlan, extra: list[Obj] | None = None) -> dict[str, str]:
    """``kubernetes/<stage>-<kind>-<name>.yaml``: `kubectl apply -f` takes them in a safe order; ``extra`` are the monitoring objects."""
    head = "# Rendered by vllm-stack from the stack config; Secrets are not rendered (see README).\n"
    out: dict[str, str] = {}
    for obj in [*stack_objects(plan), *(extra or [])]:
        name = file_name(obj)
        if name in out:
            raise ValueError(f"two objects render to {name}; kind and name must be unique")
        out[name] = head + to_yaml(obj)
    return out
