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
class StageMemory:
    """One pipeline stage of a server: what each of its GPUs holds (the stages differ by their layers, embedding and LM head)."""

    stage: int
    node: int
    """Which pod of the group runs it (0: the leader); 0 for a server on one node."""
    first_layer: int
    layers: int
    weights_gib: float
    activation_gib: float
    """Peak activation of the profiling run; the last stage adds the sampler's logits."""
    kv_gib: float
    """vLLM gives every stage the same number of KV blocks, each of its own layers' size."""
    footprint_gib: float


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
    encoder_gib: float = 0.0
    """A multimodal model's vision encoder beyond the text model's peak activation once images are served (its largest
    profiled batch's pass)."""
    encoder_in_budget: bool = True
    """Whether the release profiles the encoder before sizing the KV cache (the part of it the profile reserves)."""
    encoder_outside_gib: float = 0.0
    """Of ``encoder_gib``, what comes on top of the budget (all of it where the encoder is not profiled)."""
    stages: list[StageMemory] = field(default_factory=list)
    """Per pipeline stage (pipelineParallel > 1); the figures above are the heaviest stage's, the one that binds."""


@dataclass(frozen=True)
class EncoderPlan:
    """A multimodal model's vision side as vLLM loads and profiles it (stacks.plan.multimodal)."""

    limits: dict[str, int]
    """Items per prompt per modality (vLLM's names: image, video), as vLLM applies them."""
    modalities: list[str]
    """What the server accepts (limits above 0): Open WebUI offers image input where ``image`` is here."""
    tower_loaded: bool
    weights_gib: float
    """Tower and projector per GPU (inside ``memory.weights_gib``)."""
    profiled_modality: str | None
    embeds_per_item: int
    items_per_batch: int
    budget_tokens: int
    peak_gib: float
    cache_gib: float
    processor_cache_gib: float
    """Host memory of vLLM's multimodal processor caches (API server and engine core)."""


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
class SwapMember:
    """A model in a swap group: how it sleeps, and what it holds awake and asleep (GiB, per GPU unless named)."""

    group: str
    level: int
    """vLLM sleep level: 1 keeps the weights in host memory, 2 drops them (reloaded from the model cache on wake)."""
    idle_seconds: int | None
    """Put to sleep after this long without a request; None: only when another member needs its place."""
    engine_port: int
    """Where its vLLM listens inside the group's container or pod, on 127.0.0.1 only (the development routes never leave it)."""
    awake_gib: float
    """Its footprint awake: what ``memory.footprint_gib`` says."""
    asleep_gib: float
    """What it keeps on each GPU asleep: CUDA context, CUDA graphs, non-torch memory and buffers outside the sleep pools."""
    host_gib: float
    """Host memory its weights take while it sleeps at level 1 (all ranks); 0 at level 2."""
    wake_seconds: float
    """Estimated wake: the weights copied back from host memory (level 1) or reloaded from the model cache (level 2)."""
    sleep_seconds: float
    """Estimated fall asleep: the weights copied to host memory (level 1); level 2 drops them."""


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
    tool_call_parser: str | None
    """vLLM's tool-call parser on its command line; None: no tool calling, and Open WebUI sends the model no tools."""
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
    encoder: EncoderPlan | None = None
    """Multimodal checkpoints: the vision tower, its limits and memory; None for text-only models."""
    nodes: int = 1
    """Kubernetes: pods (nodes) the server spans, one pipeline stage each; above 1 a LeaderWorkerSet runs them."""
    group: str | None = None
    """The LeaderWorkerSet's name when ``nodes`` is above 1."""
    worker_args: list[str] = field(default_factory=list)
    """Arguments after the entrypoint on the group's other pods (headless: no API server)."""

    @property
    def gpus_per_node(self) -> int:
        """GPUs each pod claims."""
        return self.gpu_count // self.nodes

    swap: SwapMember | None = None
    """Member of a swap group: run by the group's server (``StackPlan.swap_groups``), not a server of its own."""


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
class EndpointPlan:
    """A server whose models the gateway serves but whose GPUs the plan does not own: an external endpoint (another
    vLLM, a Mac's Docker Model Runner, an Ollama box, a hosted API) or the Ollama the stack runs."""

    name: str
    kind: Literal["external", "ollama"]
    url: str
    """Base URL of its OpenAI-compatible API, as configured."""
    scheme: Literal["http", "https"]
    host: str
    port: int
    base_path: str
    """The URL's path (``/engines/v1``), where the gateway's ``/v1`` goes; empty for the server's root."""
    messages: bool
    """It answers Anthropic's Messages API at ``<url>/messages``."""
    count_tokens: bool
    """It counts tokens at ``<url>/messages/count_tokens``."""
    key_secret: str | None
    """Config key holding its key (a Pulumi secret, written into the gateway's keys.conf); None: it gets no key."""
    key_header: Literal["authorization", "x-api-key"]
    tls_name: str | None
    """https: the name sent in SNI and required in its certificate."""
    ca_pem: str | None
    """https: the CAs trusted for it; None: the gateway image's system bundle."""
    connect_timeout_seconds: int
    read_timeout_seconds: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ExternalModelPlan:
    """A model served by an endpoint, routed by the gateway like any other (no GPU is planned for it)."""

    name: str
    endpoint: str
    upstream_model: str
    """The id the endpoint knows it by; the gateway writes it into the request's ``model``."""
    served_names: list[str]
    task: Literal["generate", "embed"]
    max_model_len: int | None
    service: str
    """The gateway's upstream for it (an internal server that speaks to the endpoint)."""


@dataclass(frozen=True)
class OllamaModelPlan:
    name: str
    model: str
    """The Ollama model pulled and served (``llama3.2:3b``)."""
    memory_gib: float
    """GPU memory it holds once loaded (declared, or estimated: weights, KV of contextLength x numParallel, runtime)."""
    memory_source: Literal["declared", "catalog", "none"]
    """``none``: a CPU-only Ollama, which holds no GPU memory."""


@dataclass(frozen=True)
class OllamaPlan:
    """The Ollama the stack runs (docker target); its models are served through the gateway as endpoint ``ollama``."""

    service: Service
    image: str
    gpus: list[int]
    """Docker device indices; empty: CPU only."""
    env: dict[str, str]
    models: list[OllamaModelPlan]
    pull: list[str]
    """Models pulled at start when the volume lacks them."""
    reserved_gib: float
    """Memory set aside on each of its GPUs that vLLM servers share (the largest ``maxLoadedModels`` models loaded at once)."""
    shared_gpus: list[int]
    """Its GPUs that vLLM servers use too (the plan holds ``reserved_gib`` back on each)."""
    startup_seconds: int


@dataclass(frozen=True)
class Route:
    served_name: str
    model: str
    service: str
    port: int
    kind: Literal["vllm", "external"] = "vllm"
    """``external``: ``model`` names an ``ExternalModelPlan`` (an endpoint's model, or the stack's Ollama's)."""


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    target: str
    metrics_path: str
    labels: dict[str, str] = field(default_factory=dict)
    service: str = ""
    """The Service it is reached through (a ServiceMonitor selects it by name on kubernetes)."""


@dataclass(frozen=True)
class SwapGroupPlan:
    """Models sharing GPUs that take turns being awake: one server (container or pod) runs them all and the swapper in front."""

    name: str
    members: list[str]
    """Model names, in start order (one at a time, each asleep before the next starts)."""
    gpus: list[int]
    """Docker device indices; empty on kubernetes (the pod's GPUs)."""
    gpu_count: int
    awake: int
    """Members awake at once, at most."""
    largest_awake: list[str]
    """The awake set whose memory the plan reserves (the members with the largest awake footprints)."""
    reserved_gib: float
    """Per GPU: every member asleep plus the largest awake set on top."""
    host_memory_gib: float
    """Host memory the group needs: level-1 weights of every member asleep, plus each vLLM process's own."""
    queue_size: int
    max_wait_seconds: int
    drain_seconds: int
    wake_timeout_seconds: int
    service: Service
    """The swapper's own port: health, metrics (its own; ``/metrics/all`` with every member's) and state (``/status``)."""
    startup_seconds: int
    """Every member's start, one after another."""
    start_after: list[str]
    """Docker: servers on its GPUs that start first (healthy before it starts)."""


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
    function_calling: dict[str, str]
    """Chat model -> Open WebUI's ``function_calling`` for it: ``native`` (tools go to vLLM, whose server has a tool-call
    parser) or ``legacy`` (Open WebUI asks the model in a prompt and sends it no tools)."""
    model_access: str
    """``all``: every signed-in user may use the chat models; ``restricted``: admins and whom an admin grants them."""
    oidc: dict[str, str]
    """Open WebUI's OpenID Connect settings as its environment (empty without ``webui.oidc``); the client secret is a SecretRef."""
    vision_models: list[str] = field(default_factory=list)
    """Of those, the served names whose server takes images (a multimodal model with ``image`` above 0)."""


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
    swap_time_share: float = 0.25
    """Share of the time a swap group may spend waking and putting members to sleep before it thrashes."""


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
    swap_groups: list[SwapGroupPlan] = field(default_factory=list)
    """Models on shared GPUs that take turns being awake (``models[].swap``)."""
    endpoints: list[EndpointPlan] = field(default_factory=list)
    externals: list[ExternalModelPlan] = field(default_factory=list)
    ollama: OllamaPlan | None = None

    @property
    def webui_api_base(self) -> str:
        """The gateway's OpenAI base URL inside the stack's network (what Open WebUI calls)."""
        return f"http://{self.gateway.service.address}/v1"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def model(self, name: str) -> ModelPlan:
        return next(m for m in self.models if m.name == name)

    @property
    def servers(self) -> list[ModelPlan]:
        """Models with a server of their own; swap-group members run in their group's."""
        return [m for m in self.models if m.swap is None]

    def external(self, name: str) -> ExternalModelPlan:
        return next(m for m in self.externals if m.name == name)

    def endpoint(self, name: str) -> EndpointPlan:
        return next(e for e in self.endpoints if e.name == name)
