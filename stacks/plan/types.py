"""The plan's types: everything downstream (renderers, components, CLI) reads, and nothing else.

Plain frozen dataclasses, JSON-able with ``dataclasses.asdict``; the planner fills them, nobody changes them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Target = Literal["docker", "kubernetes"]


@dataclass(frozen=True)
class SecretRef:
    """One value of a stack secret: Kubernetes Secret ``secret``, key ``key`` (docker: env or an upload)."""

    secret: str
    key: str
    optional: bool = False
    """Left out where the stack has no value for it (an unset ``hfToken``)."""


@dataclass(frozen=True)
class Service:
    """One network service of the stack, as its peers and its users reach it."""

    name: str
    """DNS name on the stack's network: docker alias, Kubernetes Service and Deployment."""
    port: int
    """Port the process listens on inside its container."""
    published: int | None
    """Host port (docker) or Service port (kubernetes); None keeps it internal (a Service on ``port``)."""
    address: str
    """``host:port`` other services of the stack use."""
    health_path: str | None
    metrics_path: str | None
    metrics_port: int | None = None
    """Where ``metrics_path`` is served when not on ``port`` (the gateway's internal metrics server)."""

    @property
    def metrics_address(self) -> str:
        """``host:port`` of the metrics endpoint inside the stack's network (the pod's port on Kubernetes)."""
        return f"{self.address.rsplit(':', 1)[0]}:{self.metrics_port}" if self.metrics_port else self.address


@dataclass(frozen=True)
class MemoryFigures:
    """What one server holds on each of its GPUs (GiB unless named otherwise)."""

    fraction: float
    """``--gpu-memory-utilization``: the share of the GPU's total vLLM may budget, and what must be free for it to start."""
    weights_gib: float
    """Per GPU (split over tensor/pipeline ranks)."""
    activation_gib: float
    """Peak activation of vLLM's profiling run."""
    non_torch_gib: float
    cudagraph_gib: float
    cudagraph_in_budget: bool
    """Whether vLLM takes the CUDA graphs out of the fraction's budget (the release and model runner decide)."""
    outside_budget_gib: float
    """CUDA context (and CUDA graphs where they are not in the budget): physical memory beyond the fraction."""
    kv_gib: float
    """KV cache per GPU."""
    kv_cache_bytes: int
    """KV cache per GPU in bytes, whole blocks."""
    exact_kv: bool
    """The release has --kv-cache-memory-bytes: vLLM allocates exactly ``kv_cache_bytes``."""
    kv_tokens: int
    """What vLLM reports as its KV cache size in tokens."""
    max_full_sequences: int
    """Concurrent maxModelLen sequences that fit."""
    footprint_gib: float
    """Physical memory on each GPU once it runs: its budget's use plus what it holds outside it."""
    free_at_start_gib: float
    """Memory free on its GPU when its turn to start comes (everything started before it running)."""


@dataclass(frozen=True)
class Autoscaling:
    """Kubernetes: replicas follow a Prometheus query (KEDA)."""

    min_replicas: int
    max_replicas: int
    prometheus_url: str
    query: str
    threshold: int
    activation_query: str | None = None
    """What wakes the model from zero replicas (the queue metric has no series without a pod)."""
    activation_threshold: float = 0.0


@dataclass(frozen=True)
class ModelPlan:
    name: str
    model: str
    served_names: list[str]
    gpus: list[int]
    """Docker device indices; empty on kubernetes (the scheduler picks)."""
    gpu_count: int
    tensor_parallel: int
    pipeline_parallel: int
    max_model_len: int
    max_num_seqs: int
    task: Literal["generate", "embed"]
    """``embed``: an embedding model (vLLM's pooling runner), served on /v1/embeddings and never offered as a chat model."""
    kv_bytes_per_token: int
    """Whole model, all ranks: 2 x layers x kv_heads x head_dim x kv dtype bytes."""
    memory: MemoryFigures
    fraction_source: Literal["config", "auto"]
    entrypoint: list[str]
    args: list[str]
    env: dict[str, str]
    start_after: list[str]
    replicas: int
    service: str
    """Network alias / Service name."""
    port: int
    health_path: str
    metrics_path: str
    address: str
    """``host:port`` the gateway and Prometheus reach it at."""
    startup_seconds: int
    shm_size_gib: float | None
    autoscaling: Autoscaling | None


@dataclass(frozen=True)
class GpuPlan:
    index: int
    name: str
    memory_gib: float
    reserved_gib: float
    models: list[str]
    fraction_sum: float
    overhead_gib: float
    """What its servers hold outside their budgets (CUDA contexts, graphs) plus the safety margin."""
    headroom_gib: float
    """Left unclaimed after every server's footprint, the reservation and the safety margin."""


@dataclass(frozen=True)
class Route:
    served_name: str
    model: str
    service: str
    port: int


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    target: str
    metrics_path: str
    labels: dict[str, str] = field(default_factory=dict)
    service: str = ""
    """The Service it is reached through (a ServiceMonitor selects it by name on kubernetes)."""


@dataclass(frozen=True)
class ImagePlan:
    base: str
    """The vLLM image the servers run (or the build starts from): ``image.base``, with ``-cu129`` for ``image.cuda: "12.9"``."""
    timezone: str
    apt_packages: list[str]
    build: bool
    """Built by the stack (the docker target always bakes the time zone; a cluster only for aptPackages)."""
    vllm_version: str
    vllm_rules: str
    """Which release's rules (flags, memory accounting) planned it, e.g. "vLLM 0.26's rules (read from its source)"."""
    registry: str | None
    run_as_non_root: bool
    """vLLM runs as the image's ``vllm`` user (UID 2000)."""


@dataclass(frozen=True)
class IngressPlan:
    host: str
    class_name: str | None
    tls_secret: str | None


@dataclass(frozen=True)
class KeyLimitPlan:
    requests_per_minute: int | None
    concurrent: int | None


@dataclass(frozen=True)
class GatewayPlan:
    service: Service
    """``metrics_port``/``metrics_path``: the internal Prometheus endpoint."""
    image: str
    routing: Literal["model", "path"]
    max_body_mib: int
    read_timeout_seconds: int
    client_timeout_seconds: int
    max_concurrent_per_model: int | None
    max_concurrent_requests: int
    """Per replica (one nginx), large ones included."""
    max_concurrent_large_requests: int
    worker_processes: int
    key_limits: dict[str, KeyLimitPlan]
    """Key name -> limits; names are not secret, the keys are."""
    cors_allow_origins: list[str]
    token_usage: bool
    request_metrics: bool
    """Per-request counters (njs shared dictionary) behind the gateway's request, latency and token metrics."""
    js_engine: Literal["qjs", "njs"]
    replicas: int
    ingress: IngressPlan | None


@dataclass(frozen=True)
class WebuiPlan:
    service: Service
    image: str
    enable_signup: bool
    replicas: int
    redis_url: str | None
    database_url: str | None
    storage_size: str
    startup_seconds: int
    chat_models: list[str]
    """Served names offered as chat models (embedding models left out)."""
    embedding_model: str | None
    """Served name Open WebUI's document search embeds with, through the gateway."""
    oidc: dict[str, str]
    """Open WebUI's OpenID Connect settings as its environment (empty without ``webui.oidc``); the client secret is a SecretRef."""


@dataclass(frozen=True)
class DcgmPlan:
    service: Service
    image: str


@dataclass(frozen=True)
class PrometheusPlan:
    service: Service
    image: str
    scrape_interval_seconds: int


@dataclass(frozen=True)
class GrafanaPlan:
    """Docker: a Grafana with the stack's data source and dashboards provisioned, keeping no state of its own."""

    service: Service
    image: str


@dataclass(frozen=True)
class AlertThresholds:
    """``monitoring.alerts``; GPU memory per GPU where the plan fills a GPU beyond the configured share."""

    for_minutes: int
    kv_cache_usage: float
    waiting_requests: int
    ttft_p95_seconds: float
    gpu_memory_usage: float
    """Every GPU not in ``gpu_memory_by_gpu`` (all of them on kubernetes)."""
    gpu_memory_by_gpu: dict[int, float]
    """Docker: GPUs whose planned use exceeds ``gpu_memory_usage`` alert only beyond their plan."""
    gateway_5xx_ratio: float


@dataclass(frozen=True)
class MonitoringPlan:
    """What watches the stack: scrape settings, alert thresholds, dashboards and the prometheus-operator objects."""

    scrape_interval_seconds: int
    bind_address: str | None
    """Docker: host address the metrics ports bind to."""
    alerts: AlertThresholds | None
    grafana: GrafanaPlan | None
    """Docker: the Grafana the stack runs."""
    dashboards: bool
    """Grafana dashboards are rendered (docker: provisioned into ``grafana``; kubernetes: ConfigMaps for the Grafana sidecar)."""
    operator_labels: dict[str, str] | None
    """Kubernetes with ``prometheusOperator``: labels of the ServiceMonitors and PrometheusRule; None without the operator."""

    @property
    def operator(self) -> bool:
        return self.operator_labels is not None


@dataclass(frozen=True)
class DockerPlan:
    network: str
    bind_address: str
    host: str
    """Host name published URLs use: localhost for a wildcard bind."""
    restart: str
    log_max_size: str
    log_max_files: int


@dataclass(frozen=True)
class KubernetesPlan:
    namespace: str
    kubeconfig: str | None
    context: str | None
    render_yaml_to: str | None
    gpu_name: str
    gpu_memory_gib: float
    storage_class: str | None
    model_cache_size: str
    model_cache_access_mode: str
    gpu_node_selector: dict[str, str]
    tolerations: list[dict[str, str]]
    service_type: str
    model_cpu_request: str
    model_memory_request: str
    shm_size: str


@dataclass(frozen=True)
class Urls:
    """Where users reach the stack (the program's exports)."""

    gateway: str
    webui: str | None
    metrics: str | None
    grafana: str | None = None


@dataclass(frozen=True)
class StackPlan:
    target: Target
    timezone: str
    retain_data: bool
    """Data volumes and PVCs survive ``pulumi destroy``."""
    image: ImagePlan
    models: list[ModelPlan]
    gpus: list[GpuPlan]
    routes: list[Route]
    gateway: GatewayPlan
    webui: WebuiPlan | None
    dcgm: DcgmPlan | None
    prometheus: PrometheusPlan | None
    scrape_targets: list[ScrapeTarget]
    docker: DockerPlan | None
    kubernetes: KubernetesPlan | None
    urls: Urls
    notes: list[str]
    monitoring: MonitoringPlan

    @property
    def webui_api_base(self) -> str:
        """The gateway's OpenAI base URL inside the stack's network (what Open WebUI calls)."""
        return f"http://{self.gateway.service.address}/v1"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def model(self, name: str) -> ModelPlan:
        return next(m for m in self.models if m.name == name)
