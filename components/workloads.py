"""What runs, as plain data: one Workload per server, built from the plan. No Pulumi imports here.

The components declare these through a platform (docker containers or Kubernetes objects), and
``python -m stacks render`` turns the very same Workloads into manifests offline. Secrets appear
only as references (``SecretRef``); each platform resolves them its own way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from components.files import gateway as gateway_files
from components.files import prometheus as prometheus_files
from components.files.dockerfile import content_tag
from stacks.plan import ModelPlan, StackPlan

if TYPE_CHECKING:
    import pulumi

    Ref = pulumi.Input[str]
else:
    Ref = Any

HF_HOME = "/root/.cache/huggingface"
VLLM_CACHE = "/root/.cache/vllm"
GATEWAY_CONF_DIR = "/etc/nginx"
WEBUI_DATA_DIR = "/app/backend/data"
WEBUI_PORT = 8080
WEBUI_STARTUP_SECONDS = 300
DCGM_PORT_IN_CONTAINER = 9400
PROMETHEUS_PORT_IN_CONTAINER = 9090


@dataclass(frozen=True)
class SecretRef:
    """One value of a stack secret: Kubernetes Secret ``secret``, key ``key``."""

    secret: str
    key: str
    optional: bool = False
    """Left out where the stack has no value for it (an unset ``hfToken``)."""


HF_TOKEN = SecretRef("hf-token", "token", optional=True)
VLLM_API_KEY = SecretRef("vllm-api-key", "key")
GATEWAY_KEYS = SecretRef("gateway-keys", gateway_files.KEYS_FILE)
WEBUI_SECRET_KEY = SecretRef("open-webui", "secret-key")
WEBUI_GATEWAY_KEY = SecretRef("open-webui", "gateway-key")


@dataclass(frozen=True)
class Autoscale:
    """Kubernetes: scale replicas on a Prometheus query (KEDA)."""

    min_replicas: int
    max_replicas: int
    prometheus_url: str
    query: str
    threshold: int


@dataclass
class Workload:
    name: str
    """DNS name on the stack's network (docker alias / Kubernetes Service and Deployment)."""
    component: str
    """Role, for labels: model-server, gateway, webui, gpu-metrics, metrics."""
    image: Ref
    entrypoint: list[str] | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, SecretRef] = field(default_factory=dict)
    """Environment variables whose values are stack secrets."""
    port: int | None = None
    """Port the process listens on inside the container."""
    publish: int | None = None
    """Host port (docker) or Service port (kubernetes); None keeps it internal (kubernetes: Service on ``port``)."""
    health_path: str | None = None
    startup_seconds: int = 60
    """Budget for the first healthy answer (model download and load for vLLM)."""
    metrics_path: str | None = None
    """Prometheus metrics endpoint on ``port``."""
    gpus: list[int] | None = None
    """Docker device indices."""
    all_gpus: bool = False
    """Sees every GPU of its host without claiming any (the DCGM exporter)."""
    gpu_count: int = 0
    """Kubernetes: nvidia.com/gpu per pod."""
    daemon: bool = False
    """Kubernetes: one pod on every GPU node (DaemonSet) instead of a Deployment."""
    exclusive: bool = False
    """Two copies may never run at once (GPUs, a single-writer volume): Kubernetes uses Recreate."""
    volumes: dict[str, str] = field(default_factory=dict)
    """Logical volume name -> mount path."""
    files: dict[str, Ref] = field(default_factory=dict)
    """Path in the container -> content (plain)."""
    secret_files: dict[str, SecretRef] = field(default_factory=dict)
    """Path in the container -> stack secret holding its content."""
    shm_size_gib: float | None = None
    ipc_host: bool = False
    cap_add: list[str] = field(default_factory=list)
    wait_healthy: bool = False
    """Dependents wait until it answers its health check."""
    replicas: int = 1
    autoscale: Autoscale | None = None
    cpu_request: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


def vllm_server(plan: StackPlan, m: ModelPlan, image: Ref) -> Workload:
    auto = next(c for c in plan.config.models if c.name == m.name).autoscaling
    kube = plan.config.kubernetes
    return Workload(
        name=m.service,
        component="model-server",
        image=image,
        entrypoint=m.entrypoint,
        args=m.args,
        env={"HF_HOME": HF_HOME, "VLLM_CACHE_ROOT": VLLM_CACHE, **m.env},
        secret_env={"HF_TOKEN": HF_TOKEN, "VLLM_API_KEY": VLLM_API_KEY},
        port=m.port,
        health_path=m.health_path,
        startup_seconds=m.startup_seconds,
        metrics_path="/metrics",
        gpus=m.gpus,
        gpu_count=m.gpu_count,
        exclusive=True,
        volumes={"model-cache": HF_HOME, "vllm-cache": VLLM_CACHE},
        shm_size_gib=m.shm_size_gib,
        # NCCL and PyTorch workers share memory through /dev/shm: host IPC unless a size is set
        ipc_host=m.shm_size_gib is None,
        wait_healthy=True,
        replicas=m.replicas,
        autoscale=(
            Autoscale(
                min_replicas=auto.min_replicas,
                max_replicas=auto.max_replicas,
                prometheus_url=auto.prometheus_url,
                # vLLM labels its metrics with the first served name, which is the model's name
                query=f'sum(vllm:num_requests_waiting{{model_name="{m.name}"}})',
                threshold=auto.waiting_requests,
            )
            if auto and auto.enabled
            else None
        ),
        cpu_request=kube.cpu_request if kube else None,
        memory_request=kube.memory_request if kube else None,
        labels={"vllm-stack.model": m.name},
    )


def gateway(plan: StackPlan, image: Ref) -> Workload:
    rendered = gateway_files.render(plan)
    return Workload(
        name=plan.gateway_service,
        component="gateway",
        image=image,
        args=["nginx", "-g", "daemon off;"],
        env={"TZ": plan.config.timezone},
        port=plan.gateway_port_in_container,
        publish=plan.config.gateway.port,
        health_path="/health",
        files={f"{GATEWAY_CONF_DIR}/nginx.conf": rendered["nginx.conf"], f"{GATEWAY_CONF_DIR}/njs/router.js": rendered["router.js"]},
        secret_files={f"{GATEWAY_CONF_DIR}/secrets/{gateway_files.KEYS_FILE}": GATEWAY_KEYS},
        replicas=plan.config.gateway.replicas,
        cpu_request="100m",
        memory_request="128Mi",
        memory_limit="512Mi",
        labels={"vllm-stack.component": "gateway"},
    )


def open_webui(plan: StackPlan, image: Ref) -> Workload:
    cfg = plan.config.webui
    env = {
        "OPENAI_API_BASE_URLS": plan.webui_api_base.rstrip("/"),
        "ENABLE_OPENAI_API": "True",
        "ENABLE_OLLAMA_API": "False",
        "ENABLE_PERSISTENT_CONFIG": "False",
        "ENABLE_SIGNUP": str(cfg.enable_signup),
        "TZ": plan.config.timezone,
        "ANONYMIZED_TELEMETRY": "False",
    }
    if cfg.redis_url:
        env |= {"WEBSOCKET_MANAGER": "redis", "ENABLE_WEBSOCKET_SUPPORT": "True", "WEBSOCKET_REDIS_URL": cfg.redis_url, "REDIS_URL": cfg.redis_url}
    if cfg.database_url:
        env["DATABASE_URL"] = cfg.database_url
    return Workload(
        name="open-webui",
        component="webui",
        image=image,
        env=env,
        secret_env={"OPENAI_API_KEYS": WEBUI_GATEWAY_KEY, "WEBUI_SECRET_KEY": WEBUI_SECRET_KEY},
        port=WEBUI_PORT,
        publish=cfg.port,
        health_path="/health",
        startup_seconds=WEBUI_STARTUP_SECONDS,
        # one replica owns its data volume; several share an external database instead
        exclusive=cfg.replicas == 1,
        volumes={"webui-data": WEBUI_DATA_DIR},
        replicas=cfg.replicas,
        cpu_request="250m",
        memory_request="1Gi",
        memory_limit="4Gi",
        labels={"vllm-stack.component": "open-webui"},
    )


def dcgm_exporter(plan: StackPlan, image: Ref) -> Workload:
    env = {"DCGM_EXPORTER_LISTEN": f":{DCGM_PORT_IN_CONTAINER}"}
    if plan.target == "kubernetes":
        # maps GPUs to the pods using them, through the kubelet's pod-resources socket
        env["DCGM_EXPORTER_KUBERNETES"] = "true"
    return Workload(
        name="dcgm-exporter",
        component="gpu-metrics",
        image=image,
        env=env,
        port=DCGM_PORT_IN_CONTAINER,
        publish=plan.config.monitoring.dcgm_port,
        health_path="/health",
        metrics_path="/metrics",
        all_gpus=True,
        daemon=True,
        # profiling metrics need SYS_ADMIN; nothing else, and never privileged
        cap_add=["SYS_ADMIN"],
        cpu_request="100m",
        memory_request="256Mi",
        memory_limit="1Gi",
        labels={"vllm-stack.component": "dcgm-exporter"},
    )


def prometheus(plan: StackPlan, image: Ref) -> Workload:
    return Workload(
        name="prometheus",
        component="metrics",
        image=image,
        args=["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--storage.tsdb.retention.time=15d"],
        port=PROMETHEUS_PORT_IN_CONTAINER,
        publish=plan.config.monitoring.prometheus_port,
        files={"/etc/prometheus/prometheus.yml": prometheus_files.render(plan)},
        exclusive=True,
        volumes={"prometheus-data": "/prometheus"},
        labels={"vllm-stack.component": "prometheus"},
    )


@dataclass
class StackWorkloads:
    """Everything a stack runs; which services exist is decided here, once."""

    servers: list[Workload]
    gateway: Workload
    webui: Workload | None
    dcgm: Workload | None
    prometheus: Workload | None

    def all(self) -> list[Workload]:
        return [w for w in (*self.servers, self.gateway, self.webui, self.dcgm, self.prometheus) if w is not None]

    def secret_refs(self) -> list[SecretRef]:
        """Every stack secret value the workloads read, once each (what to create by hand for rendered YAML)."""
        found: dict[tuple[str, str], SecretRef] = {}
        for w in self.all():
            for ref in (*w.secret_env.values(), *w.secret_files.values()):
                found.setdefault((ref.secret, ref.key), ref)
        return list(found.values())


def image_refs(plan: StackPlan) -> dict[str, str]:
    """Pinned image of each service, by the key ``stack_workloads`` asks ``image`` for.

    A customised vLLM image on a cluster is the content-tagged build in ``image.registry``; the
    program itself runs it by the digest the push returns.
    """
    cfg = plan.config
    vllm = f"{plan.image.registry}:{content_tag(plan.image)}" if plan.image.customised and plan.image.registry else plan.image.base
    return {
        "vllm": vllm,
        "gateway": cfg.gateway.image,
        "webui": cfg.webui.image,
        "dcgm": cfg.monitoring.dcgm_image,
        "prometheus": cfg.monitoring.prometheus_image,
    }


def stack_workloads(plan: StackPlan, image: Callable[[str], Ref]) -> StackWorkloads:
    """The stack's workloads; ``image(key)`` gives each service's image, asked once and only for the services that run."""
    cfg = plan.config
    vllm = image("vllm")
    return StackWorkloads(
        servers=[vllm_server(plan, m, vllm) for m in plan.models],
        gateway=gateway(plan, image("gateway")),
        webui=open_webui(plan, image("webui")) if cfg.webui.enabled else None,
        dcgm=dcgm_exporter(plan, image("dcgm")) if cfg.monitoring.dcgm else None,
        prometheus=prometheus(plan, image("prometheus")) if cfg.runs_prometheus else None,
    )
