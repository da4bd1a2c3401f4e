"""What runs, as plain data: one Workload per service, built from the plan. No Pulumi imports here.

The components declare these through a platform (docker containers or Kubernetes objects), and
``python -m stacks render`` turns the very same Workloads into manifests offline. Secrets appear
only as references (``SecretRef``); each platform resolves them its own way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks.plan import ModelPlan, SecretRef, StackPlan
from stacks.plan import topology as net
from stacks.plan.types import Autoscaling, SwapGroupPlan
from stacks.render import gateway as gateway_files
from stacks.render import open_webui_models
from stacks.render import prometheus as prometheus_files
from stacks.render import swap as swap_files
from stacks.render.dockerfile import content_tag
from stacks.render.monitoring import alerts as alert_files
from stacks.render.monitoring import dashboards as dashboard_files
from stacks.render.monitoring import grafana as grafana_files
from stacks.render.monitoring.metrics import COUNTERS_FILE

if TYPE_CHECKING:
    import pulumi

    Ref = pulumi.Input[str]
else:
    Ref = Any

# Where the images keep things (container paths).
HF_HOME = "/root/.cache/huggingface"
VLLM_CACHE = "/root/.cache/vllm"
VLLM_USER = (2000, 0)
"""The vllm-openai image's ``vllm`` user and group (docker/Dockerfile from 0.22.0: useradd --uid 2000 --gid 0)."""
VLLM_USER_CACHE = "/home/vllm/.cache"
"""Its HOME is /home/vllm (/etc/passwd), so Hugging Face and vLLM cache under /home/vllm/.cache."""
GATEWAY_CONF_DIR = gateway_files.GATEWAY_CONF_DIR
WEBUI_DATA_DIR = "/app/backend/data"
WEBUI_MODELS_PROGRAM = "/app/backend/vllm_stack_models.py"
"""Where stacks/render/open_webui_models.py goes in the Open WebUI container: the image runs Open WebUI from its working
directory /app/backend, where the ``open_webui`` package lies uninstalled, and Python finds packages beside the script."""
WEBUI_START = "bash start.sh"
"""The image's own start (its Dockerfile: WORKDIR /app/backend, CMD ["bash", "start.sh"])."""
PROMETHEUS_DIR = "/etc/prometheus"
PROMETHEUS_CONFIG = f"{PROMETHEUS_DIR}/prometheus.yml"
PROMETHEUS_DATA_DIR = "/prometheus"
DCGM_COUNTERS = "/etc/dcgm-exporter/vllm-stack-counters.csv"
"""Beside the image's own counters files (the image copies etc/ to /etc/dcgm-exporter/)."""
OLLAMA_HOME = "/root/.ollama"
"""Ollama keeps models under $HOME/.ollama/models (envconfig.Models, v0.32.15); the ollama/ollama image runs as root."""
OLLAMA_PULLED = "/tmp/vllm-stack-models-pulled"
OLLAMA_START = f"""rm -f {OLLAMA_PULLED}
/bin/ollama serve & server=$!
trap 'kill -TERM "$server"; wait "$server"; exit 0' TERM INT
until /bin/ollama list >/dev/null 2>&1; do kill -0 "$server" 2>/dev/null || exit 1; sleep 1; done
for model in "$@"; do /bin/ollama show "$model" >/dev/null 2>&1 || /bin/ollama pull "$model" || exit 1; done
touch {OLLAMA_PULLED}
wait "$server"
"""
"""Ollama's start (``sh -c`` with the models as arguments): the server, then each model pulled unless the volume has it
(a restart works offline), then a marker the health check waits for. The image's entrypoint is /bin/ollama (``serve``),
and it has no curl or python for a health probe: ``ollama list`` asks the server itself."""


@dataclass(frozen=True)
class Upstreams:
    """Services a workload resolves once, at start (nginx): a platform that replaces one must restart it."""

    services: list[str]
    marker: str
    """A file the platform may write (the upstreams' current ids) so that a change restarts the workload."""


@dataclass(frozen=True)
class Group:
    """Kubernetes: a server spanning nodes runs as a group of pods created, restarted and scaled together (LeaderWorkerSet):
    the leader serves the API, the others join it."""

    name: str
    """The LeaderWorkerSet's name (not the Service's: the controller names a headless Service after the set)."""
    size: int
    """Pods per group, one per node."""
    worker_args: list[str]
    """Arguments of the other pods (the leader runs ``args``)."""


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
    extra_ports: dict[str, int] = field(default_factory=dict)
    """Further services of the same process: name -> container port (docker: network aliases; kubernetes: a Service each).
    A swap group's server answers each member under the member's own name."""
    publish: int | None = None
    """Host port (docker) or Service port (kubernetes); None keeps it internal (kubernetes: Service on ``port``)."""
    bind_address: str | None = None
    """Docker: host address the published port binds to; ``docker.bindAddress`` when None."""
    health_path: str | None = None
    health_command: list[str] | None = None
    """A command that exits 0 once it is healthy, for images without python (docker's CMD healthcheck)."""
    startup_seconds: int = 60
    """Budget for the first healthy answer (model download and load for vLLM)."""
    metrics_path: str | None = None
    """Prometheus metrics endpoint on ``metrics_port`` (else ``port``)."""
    metrics_port: int | None = None
    """A separate, never published port for ``metrics_path`` (the gateway's)."""
    gpus: list[int] | None = None
    """Docker device indices."""
    all_gpus: bool = False
    """Sees every GPU of its host without claiming any (the DCGM exporter)."""
    gpu_count: int = 0
    """Kubernetes: nvidia.com/gpu per pod."""
    group: Group | None = None
    """Kubernetes: several pods, one per node, make one replica (a LeaderWorkerSet instead of a Deployment)."""
    daemon: bool = False
    """Kubernetes: one pod on every GPU node (DaemonSet) instead of a Deployment."""
    exclusive: bool = False
    """Two copies may never run at once (GPUs, a single-writer volume): Kubernetes uses Recreate."""
    volumes: dict[str, str] = field(default_factory=dict)
    """Logical volume name (``topology``) -> mount path."""
    files: dict[str, Ref] = field(default_factory=dict)
    """Path in the container -> content (plain)."""
    secret_files: dict[str, SecretRef] = field(default_factory=dict)
    """Path in the container -> stack secret holding its content."""
    shm_size_gib: float | None = None
    ipc_host: bool = False
    cap_add: list[str] = field(default_factory=list)
    wait_healthy: bool = False
    """Dependents wait until it answers its health check."""
    upstreams: Upstreams | None = None
    replicas: int = 1
    autoscale: Autoscaling | None = None
    cpu_request: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    user: tuple[int, int] | None = None
    """(uid, gid) the process runs as; None keeps the image's user. Kubernetes: runAsNonRoot and an fsGroup for the volumes."""


def cache_dirs(plan: StackPlan) -> tuple[str, str]:
    """HF_HOME and VLLM_CACHE_ROOT in the vLLM image, for its user."""
    return (f"{VLLM_USER_CACHE}/huggingface", f"{VLLM_USER_CACHE}/vllm") if plan.image.run_as_non_root else (HF_HOME, VLLM_CACHE)


def vllm_server(plan: StackPlan, m: ModelPlan, image: Ref) -> Workload:
    kube = plan.kubernetes
    non_root = plan.image.run_as_non_root
    hf_home, vllm_cache = cache_dirs(plan)
    return Workload(
        name=m.service,
        component="model-server",
        image=image,
        entrypoint=m.entrypoint,
        args=m.args,
        env={"HF_HOME": hf_home, "VLLM_CACHE_ROOT": vllm_cache, **m.env},
        secret_env={"HF_TOKEN": net.HF_TOKEN, "VLLM_API_KEY": net.VLLM_API_KEY},
        port=m.port,
        health_path=m.health_path,
        startup_seconds=m.startup_seconds,
        metrics_path=m.metrics_path,
        gpus=m.gpus,
        gpu_count=m.gpus_per_node,
        group=Group(m.group, m.nodes, m.worker_args) if m.group else None,
        exclusive=True,
        volumes={net.MODEL_CACHE: hf_home, net.VLLM_CACHE: vllm_cache},
        user=VLLM_USER if non_root else None,
        shm_size_gib=m.shm_size_gib,
        # NCCL and PyTorch workers share memory through /dev/shm: host IPC unless a size is set
        ipc_host=m.shm_size_gib is None,
        wait_healthy=True,
        replicas=m.replicas,
        autoscale=m.autoscaling,
        cpu_request=kube.model_cpu_request if kube else None,
        memory_request=kube.model_memory_request if kube else None,
        labels={"vllm-stack.model": m.name},
    )


def _gpu_totals(plan: StackPlan, gpus: list[int]) -> dict[int, float]:
    """Docker device index -> the GPU's total the plan used (empty on kubernetes, whose pods own their GPUs)."""
    totals = {gp.index: gp.memory_gib for gp in plan.gpus}
    return {g: totals[g] for g in gpus if g in totals} if plan.docker else {}


def swap_group(plan: StackPlan, g: SwapGroupPlan, image: Ref) -> Workload:
    """One server for a swap group: the swapper as PID 1 (``--supervise``), which starts every member's vLLM on
    127.0.0.1 and answers each member under the member's own name and port."""
    members = [plan.model(n) for n in g.members]
    kube = plan.kubernetes
    hf_home, vllm_cache = cache_dirs(plan)
    files = swap_files.render(plan, g)
    shm = max((m.shm_size_gib for m in members if m.shm_size_gib), default=None)
    # the host memory the plan counts (level-1 weights asleep, each server's processes) is the pod's request; its limit
    # leaves a quarter more (page cache of level-2 reloads, allocator slack): pinned weights cannot be swapped out
    host = f"{math.ceil(g.host_memory_gib)}Gi"
    limit = f"{math.ceil(g.host_memory_gib * 1.25)}Gi"
    return Workload(
        name=g.service.name,
        component="model-server",
        image=image,
        entrypoint=["python3", swap_files.SWAPPER_PATH],
        args=["--config", swap_files.CONFIG_PATH, "--supervise"],
        env={"HF_HOME": hf_home, "VLLM_CACHE_ROOT": vllm_cache, "TZ": plan.timezone, "PYTHONUNBUFFERED": "1"},
        secret_env={"HF_TOKEN": net.HF_TOKEN, "VLLM_API_KEY": net.VLLM_API_KEY},
        port=g.service.port,
        extra_ports={m.service: m.port for m in members},
        health_path=g.service.health_path,
        startup_seconds=g.startup_seconds,
        metrics_path=swap_files.METRICS_ALL,
        gpus=g.gpus,
        gpu_count=g.gpu_count,
        exclusive=True,
        volumes={net.MODEL_CACHE: hf_home, net.VLLM_CACHE: vllm_cache},
        files={swap_files.SWAPPER_PATH: files["swapper.py"], swap_files.CONFIG_PATH: files["swap.json"]},
        user=VLLM_USER if plan.image.run_as_non_root else None,
        shm_size_gib=shm,
        ipc_host=shm is None,
        wait_healthy=True,
        cpu_request=kube.model_cpu_request if kube else None,
        memory_request=host if kube else None,
        memory_limit=limit if kube else None,
        labels={"vllm-stack.swap-group": g.name} | net.gpu_share_labels(g.reserved_gib, _gpu_totals(plan, g.gpus)),
    )


def gateway(plan: StackPlan, image: Ref) -> Workload:
    rendered = gateway_files.render(plan)
    files: dict[str, Ref] = {f"{GATEWAY_CONF_DIR}/nginx.conf": rendered["nginx.conf"], f"{GATEWAY_CONF_DIR}/njs/router.js": rendered["router.js"]}
    # the endpoints' own CA bundles (public certificates)
    files |= {f"{gateway_files.Layout().ca_dir}/{name.removeprefix('ca/')}": text for name, text in rendered.items() if name.startswith("ca/")}
    gw = plan.gateway
    memory_request, memory_limit = gateway_files.memory_mib(plan)
    ollama_service = [plan.ollama.service.name] if plan.ollama else []
    return Workload(
        name=gw.service.name,
        component="gateway",
        image=image,
        args=["nginx", "-g", "daemon off;"],
        env={"TZ": plan.timezone},
        port=gw.service.port,
        publish=gw.service.published,
        health_path=gw.service.health_path,
        metrics_path=gw.service.metrics_path,
        metrics_port=gw.service.metrics_port,
        files=files,
        secret_files={f"{GATEWAY_CONF_DIR}/secrets/{net.KEYS_FILE}": net.GATEWAY_KEYS},
        # nginx resolves upstream names once, at start (a swap group's members are its server's names)
        upstreams=Upstreams(services=[m.service for m in plan.models] + ollama_service, marker=f"{GATEWAY_CONF_DIR}/upstream-ids.txt"),
        # the official image's nginx master runs as root: it chowns its temp folders and drops to the nginx user
        cap_add=["CHOWN", "SETGID", "SETUID"],
        replicas=gw.replicas,
        cpu_request="100m",
        # nginx admits at most maxConcurrentRequests (maxConcurrentLargeRequests with big bodies): the limit covers them all
        memory_request=f"{memory_request}Mi",
        memory_limit=f"{memory_limit}Mi",
        labels={"vllm-stack.component": "gateway"},
    )


def open_webui(plan: StackPlan, image: Ref) -> Workload:
    ui = plan.webui
    assert ui is not None, "built only when Open WebUI is enabled"
    # Open WebUI v0.12.4's settings (open_webui/config.py, env.py): the stack config stays the source of truth, so
    # no setting persists in its database; the one connection lists the chat models itself (model_ids: no /models fetch,
    # so embedding models are never offered as chat models). Its model entries are written before it starts
    # (open_webui_models.py): who may use each model, and whether it gets tools.
    env = {
        "OPENAI_API_BASE_URLS": plan.webui_api_base.rstrip("/"),
        "OPENAI_API_CONFIGS": json.dumps({"0": {"enable": True, "model_ids": ui.chat_models, "connection_type": "local"}}, separators=(",", ":")),
        "ENABLE_OPENAI_API": "True",
        "ENABLE_OLLAMA_API": "False",
        "ENABLE_PERSISTENT_CONFIG": "False",
        "WEBUI_AUTH": "True",
        "ENABLE_SIGNUP": str(ui.enable_signup),
        "TZ": plan.timezone,
        "ANONYMIZED_TELEMETRY": "False",
        # a private stack calls nothing outside it: OFFLINE_MODE turns off the version check (the admin panel asks a
        # public site for the latest release), model downloads (HF_HUB_OFFLINE, RAG_EMBEDDING_MODEL_AUTO_UPDATE: without
        # an embedding model of the stack, Open WebUI's own one is loaded from the image's cache, never downloaded)
        "OFFLINE_MODE": "True",
        "ENABLE_VERSION_UPDATE_CHECK": "False",
        open_webui_models.ENV: open_webui_models.webui_models_env(ui.function_calling, ui.model_access, ui.vision_models),
        **ui.oidc,
    }
    secret_env = {"OPENAI_API_KEYS": net.WEBUI_GATEWAY_KEY, "WEBUI_SECRET_KEY": net.WEBUI_SECRET_KEY}
    if ui.oidc:
        secret_env["OAUTH_CLIENT_SECRET"] = net.WEBUI_OIDC_CLIENT_SECRET
    if ui.embedding_model:
        # document search embeds through the gateway with the same key (RAG_OPENAI_API_BASE_URL defaults to OpenAI's)
        env |= {"RAG_EMBEDDING_ENGINE": "openai", "RAG_EMBEDDING_MODEL": ui.embedding_model, "RAG_OPENAI_API_BASE_URL": plan.webui_api_base.rstrip("/")}
        secret_env["RAG_OPENAI_API_KEY"] = net.WEBUI_GATEWAY_KEY
    if ui.redis_url:
        env |= {"WEBSOCKET_MANAGER": "redis", "ENABLE_WEBSOCKET_SUPPORT": "True", "WEBSOCKET_REDIS_URL": ui.redis_url, "REDIS_URL": ui.redis_url}
    if ui.database_url:
        env["DATABASE_URL"] = ui.database_url
    return Workload(
        name=ui.service.name,
        component="webui",
        image=image,
        args=["bash", "-c", f"python3 {WEBUI_MODELS_PROGRAM} && exec {WEBUI_START}"],
        files={WEBUI_MODELS_PROGRAM: Path(open_webui_models.__file__).read_text()},
        env=env,
        secret_env=secret_env,
        port=ui.service.port,
        publish=ui.service.published,
        health_path=ui.service.health_path,
        startup_seconds=ui.startup_seconds,
        # one replica owns its data volume; several share an external database instead
        exclusive=ui.replicas == 1,
        volumes={net.WEBUI_DATA: WEBUI_DATA_DIR},
        replicas=ui.replicas,
        cpu_request="250m",
        memory_request="1Gi",
        memory_limit="4Gi",
        labels={"vllm-stack.component": "open-webui"},
    )


def ollama(plan: StackPlan, image: Ref) -> Workload:
    """The stack's Ollama: its models pulled at start into a kept volume, served on the stack's network only."""
    o = plan.ollama
    assert o is not None, "built only when the stack runs Ollama"
    return Workload(
        name=o.service.name,
        component="model-server",
        image=image,
        entrypoint=["/bin/sh", "-c", OLLAMA_START, "ollama-start"],
        args=list(o.pull),
        env=dict(o.env),
        port=o.service.port,
        health_command=["/bin/sh", "-c", f"test -f {OLLAMA_PULLED} && /bin/ollama list >/dev/null"],
        startup_seconds=o.startup_seconds,
        gpus=list(o.gpus) or None,
        exclusive=True,
        volumes={net.OLLAMA_DATA: OLLAMA_HOME},
        wait_healthy=True,
        labels={"vllm-stack.component": "ollama"} | net.gpu_share_labels(o.reserved_gib, _gpu_totals(plan, o.shared_gpus)),
    )


def dcgm_exporter(plan: StackPlan, image: Ref) -> Workload:
    dcgm = plan.dcgm
    assert dcgm is not None, "built only when the DCGM exporter runs"
    # DCGM_EXPORTER_COLLECTORS: the counters file (pkg/cmd/app.go, flag -f, default /etc/dcgm-exporter/default-counters.csv)
    env = {"DCGM_EXPORTER_LISTEN": f":{dcgm.service.port}", "DCGM_EXPORTER_COLLECTORS": DCGM_COUNTERS}
    if plan.kubernetes:
        # maps GPUs to the pods using them, through the kubelet's pod-resources socket
        env["DCGM_EXPORTER_KUBERNETES"] = "true"
    return Workload(
        name=dcgm.service.name,
        component="gpu-metrics",
        image=image,
        env=env,
        port=dcgm.service.port,
        publish=dcgm.service.published,
        bind_address=plan.monitoring.bind_address,
        health_path=dcgm.service.health_path,
        metrics_path=dcgm.service.metrics_path,
        files={DCGM_COUNTERS: COUNTERS_FILE.read_text()},
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
    prom = plan.prometheus
    assert prom is not None, "built only when Prometheus runs"
    files: dict[str, Ref] = {PROMETHEUS_CONFIG: prometheus_files.render(plan)}
    if plan.monitoring.alerts:
        files[f"{PROMETHEUS_DIR}/{prometheus_files.RULES_FILE}"] = alert_files.render(plan)
    return Workload(
        name=prom.service.name,
        component="metrics",
        image=image,
        args=[f"--config.file={PROMETHEUS_CONFIG}", f"--storage.tsdb.path={PROMETHEUS_DATA_DIR}", "--storage.tsdb.retention.time=15d"],
        port=prom.service.port,
        publish=prom.service.published,
        bind_address=plan.monitoring.bind_address,
        files=files,
        exclusive=True,
        volumes={net.PROMETHEUS_DATA: PROMETHEUS_DATA_DIR},
        labels={"vllm-stack.component": "prometheus"},
    )


def grafana(plan: StackPlan, image: Ref) -> Workload:
    """Docker: Grafana with the data source and dashboards provisioned; no volume, so every start provisions afresh
    and the admin password always is the stack's (Grafana reads ``GF_SECURITY_ADMIN_PASSWORD`` only into a new database)."""
    g = plan.monitoring.grafana
    assert g is not None, "built only when the stack runs Grafana"
    files: dict[str, Ref] = {
        grafana_files.DATASOURCES_FILE: grafana_files.datasources(plan),
        grafana_files.PROVIDER_FILE: grafana_files.dashboard_provider(grafana_files.DASHBOARDS_DIR),
    }
    files |= {f"{grafana_files.DASHBOARDS_DIR}/{name}": text for name, text in dashboard_files.render(plan).items()}
    return Workload(
        name=g.service.name,
        component="dashboards",
        image=image,
        env={
            "GF_SECURITY_ADMIN_USER": "admin",
            "GF_USERS_ALLOW_SIGN_UP": "false",
            "GF_ANALYTICS_REPORTING_ENABLED": "false",
            "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": f"{grafana_files.DASHBOARDS_DIR}/{next(iter(dashboard_files.render(plan)))}",
            "TZ": plan.timezone,
        },
        secret_env={"GF_SECURITY_ADMIN_PASSWORD": net.GRAFANA_ADMIN_PASSWORD},
        port=g.service.port,
        publish=g.service.published,
        bind_address=plan.monitoring.bind_address,
        health_path=g.service.health_path,
        files=files,
        labels={"vllm-stack.component": "grafana"},
    )


@dataclass
class StackWorkloads:
    """Everything a stack runs; which services exist is the plan's decision."""

    servers: list[Workload]
    """One per model outside swap groups (``plan.servers``)."""
    gateway: Workload
    ollama: Workload | None
    webui: Workload | None
    dcgm: Workload | None
    prometheus: Workload | None
    grafana: Workload | None = None
    swap_groups: list[Workload] = field(default_factory=list)
    """One per swap group (``plan.swap_groups``): its members and the swapper."""

    def all(self) -> list[Workload]:
        return [w for w in (*self.servers, *self.swap_groups, self.ollama, self.gateway, self.webui, self.dcgm, self.prometheus, self.grafana) if w is not None]

    def secret_refs(self) -> list[SecretRef]:
        """Every stack secret value the workloads read, once each (what to create by hand for rendered YAML)."""
        found: dict[tuple[str, str], SecretRef] = {}
        for w in self.all():
            for ref in (*w.secret_env.values(), *w.secret_files.values()):
                found.setdefault((ref.secret, ref.key), ref)
        return list(found.values())


def image_refs(plan: StackPlan) -> dict[str, str]:
    """Pinned image of each service, by the key ``stack_workloads`` asks ``image`` for.

    A vLLM image built for a cluster is the content-tagged build in ``image.registry``; the program
    itself runs it by the digest the push returns.
    """
    vllm = f"{plan.image.registry}:{content_tag(plan.image)}" if plan.image.build and plan.image.registry else plan.image.base
    refs = {"vllm": vllm, "gateway": plan.gateway.image}
    services = (("ollama", plan.ollama), ("webui", plan.webui), ("dcgm", plan.dcgm), ("prometheus", plan.prometheus), ("grafana", plan.monitoring.grafana))
    for key, service in services:
        if service:
            refs[key] = service.image
    return refs


def stack_workloads(plan: StackPlan, image: Callable[[str], Ref]) -> StackWorkloads:
    """The stack's workloads; ``image(key)`` gives each service's image, asked once and only for the services that run
    (no vLLM image for a stack whose models are all served elsewhere)."""
    servers: list[Workload] = []
    swap_groups: list[Workload] = []
    if plan.models:
        vllm = image("vllm")
        servers = [vllm_server(plan, m, vllm) for m in plan.servers]
        swap_groups = [swap_group(plan, g, vllm) for g in plan.swap_groups]
    return StackWorkloads(
        servers=servers,
        swap_groups=swap_groups,
        gateway=gateway(plan, image("gateway")),
        ollama=ollama(plan, image("ollama")) if plan.ollama else None,
        webui=open_webui(plan, image("webui")) if plan.webui else None,
        dcgm=dcgm_exporter(plan, image("dcgm")) if plan.dcgm else None,
        prometheus=prometheus(plan, image("prometheus")) if plan.prometheus else None,
        grafana=grafana(plan, image("grafana")) if plan.monitoring.grafana else None,
    )
