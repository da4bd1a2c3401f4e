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
    fraction: float
    weights_gib: float
    """Per GPU (split over tensor/pipeline ranks)."""
    activation_gib: float
    kv_gib: float
    """KV cache per GPU."""
    kv_tokens: int
    """Tokens the whole server's KV cache holds."""
    max_full_sequences: int
    """Concurrent maxModelLen sequences that fit."""


@dataclass(frozen=True)
class Autoscaling:
    """Kubernetes: replicas follow a Prometheus query (KEDA)."""

    min_replicas: int
    max_replicas: int
    prometheus_url: str
    query: str
    threshold: int


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
    """CUDA contexts of its servers plus the safety margin."""
    headroom_gib: float
    """Left unclaimed after fractions, contexts, reservation and safety."""


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


@dataclass(frozen=True)
class ImagePlan:
    base: str
    timezone: str
    apt_packages: list[str]
    build: bool
    """Built by the stack (the docker target always bakes the time zone; a cluster only for aptPackages)."""
    vllm_version: str
    registry: str | None


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

    @property
    def webui_api_base(self) -> str:
        """The gateway's OpenAI base URL inside the stack's network (what Open WebUI calls)."""
        return f"http://{self.gateway.service.address}/v1"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def model(self, name: str) -> ModelPlan:
        return next(m for m in self.models if m.name == name)
