"""What a stack file may say: the pydantic models of the config, camelCase in YAML, snake_case in Python.

Pydantic only: every field's type, bound, default and description live here and nowhere else.
Cross-field rules are in ``stacks.config.rules``; reading files and Pulumi config in ``stacks.config.loading``.
Secrets (``hfToken``, ``apiKeys``, ``vllmApiKey``) never enter these models.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from stacks.keys import KEY_NAME

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SERVED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$")


def yaml_key(field: str) -> str:
    """The stack file's key for a Python field: camelCase, with units spelt as people write them (``memory_gib`` -> ``memoryGiB``)."""
    return re.sub(r"(Gi|Mi)b(?=[A-Z]|$)", r"\1B", to_camel(field))


class Section(BaseModel):
    """camelCase keys in YAML, snake_case in Python, unknown keys rejected."""

    model_config = ConfigDict(
        alias_generator=yaml_key,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )


DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.11.2"


class ImageConfig(Section):
    base: str = DEFAULT_VLLM_IMAGE
    """Pinned vllm/vllm-openai base image (version tag or digest)."""
    apt_packages: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?$")]] = []
    """Extra Debian packages installed into the image."""
    registry: str | None = None
    """Registry repository to push the built image to (kubernetes target), e.g. ``registry.example/ml/vllm``."""


class GpuConfig(Section):
    index: Annotated[int, Field(ge=0, le=63)]
    """CUDA device index on the docker host (as ``nvidia-smi`` lists it)."""
    name: str = "GPU"
    """Human name, e.g. ``RTX 5090``."""
    memory_gib: Annotated[float, Field(gt=0, le=1024)]
    """Total memory of the GPU in GiB (``nvidia-smi --query-gpu=memory.total``)."""
    reserved_gib: Annotated[float, Field(ge=0)] = 0.0
    """Memory other processes hold on this GPU (a desktop session, say), kept out of the plan."""


class ArchConfig(Section):
    """Model architecture facts; overrides the built-in catalog or describes a model it lacks."""

    parameters_b: Annotated[float | None, Field(gt=0, le=2000)] = None
    """Parameter count in billions."""
    layers: Annotated[int | None, Field(gt=0, le=1000)] = None
    """Number of transformer layers (``num_hidden_layers``)."""
    attention_heads: Annotated[int | None, Field(gt=0, le=1024)] = None
    """Number of attention heads (``num_attention_heads``)."""
    kv_heads: Annotated[int | None, Field(gt=0, le=1024)] = None
    """Number of key/value heads (``num_key_value_heads``)."""
    head_dim: Annotated[int | None, Field(gt=0, le=2048)] = None
    """Per-head dimension (``head_dim``, else hidden size / attention heads)."""
    hidden_size: Annotated[int | None, Field(gt=0, le=65536)] = None
    """Hidden size (``hidden_size``)."""
    context_length: Annotated[int | None, Field(gt=0, le=10_000_000)] = None
    """Maximum context (``max_position_embeddings``)."""
    dtype: Literal["float16", "bfloat16", "float32"] | None = None
    """Checkpoint dtype (``torch_dtype``)."""


class LoraModule(Section):
    name: Annotated[str, Field(pattern=SERVED_NAME.pattern)]
    """Served name of the adapter."""
    path: str
    """HF id or path of the adapter."""


class AutoscalingConfig(Section):
    enabled: bool = False
    """Create a KEDA ScaledObject for this model (kubernetes target; KEDA must be installed)."""
    min_replicas: Annotated[int, Field(ge=0, le=100)] = 1
    """Fewest replicas (0 lets KEDA scale to zero)."""
    max_replicas: Annotated[int, Field(ge=1, le=100)] = 4
    """Most replicas."""
    waiting_requests: Annotated[int, Field(ge=1, le=10_000)] = 8
    """Target of ``vllm:num_requests_waiting`` per replica."""
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    """Prometheus that scrapes the vLLM pods, queried by KEDA."""


Fraction = Annotated[float, Field(gt=0, le=1)]


class ModelConfig(Section):
    name: str
    """DNS-1123 label, unique; also the served model name."""
    model: str
    """HF model id or a path inside the model cache."""
    served_model_names: list[Annotated[str, Field(pattern=SERVED_NAME.pattern)]] = []
    """Extra names the model answers to (aliases)."""
    gpus: list[Annotated[int, Field(ge=0)]] | None = None
    """Docker target: device indices from ``gpus``; may be left out on a one-GPU host."""
    tensor_parallel: Annotated[int | None, Field(ge=1, le=64)] = None
    """Tensor-parallel size; defaults to the GPUs given / pipelineParallel."""
    pipeline_parallel: Annotated[int, Field(ge=1, le=64)] = 1
    """Pipeline-parallel size."""
    gpu_memory_utilization: Fraction | Literal["auto"] = "auto"
    """Fraction of each GPU's total memory this server may use, or ``auto`` to let the planner split."""
    max_model_len: Annotated[int | None, Field(ge=16, le=10_000_000)] = None
    """Longest sequence (prompt + output); defaults to the model's context length."""
    max_num_seqs: Annotated[int, Field(ge=1, le=4096)] = 16
    """Most sequences in one batch; ``auto`` sizes the KV cache to hold this many full sequences."""
    max_num_batched_tokens: Annotated[int | None, Field(ge=16, le=1_000_000)] = None
    """Token budget of one scheduler step (vLLM's own default when left out)."""
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    """Weights/activation dtype; ``auto`` uses the checkpoint's."""
    quantization: Literal["awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "bitsandbytes", "compressed-tensors"] | None = None
    """Quantization method of the checkpoint."""
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    """KV cache dtype; fp8 halves KV memory."""
    enforce_eager: bool = False
    """Disable CUDA graphs (saves memory, costs speed)."""
    enable_prefix_caching: bool | None = None
    """Automatic prefix caching; vLLM's default when left out."""
    trust_remote_code: bool = False
    """Allow the model repository's own code to run."""
    lora_modules: list[LoraModule] = []
    """LoRA adapters served beside the base model."""
    extra_args: list[str] = []
    """Further vLLM arguments, passed through."""
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = {}
    """Extra environment variables (never secrets: use the secret keys)."""
    replicas: Annotated[int, Field(ge=1, le=100)] = 1
    """Kubernetes target: replicas of this model's Deployment."""
    autoscaling: AutoscalingConfig | None = None
    """Kubernetes target: KEDA autoscaling on the waiting-request queue."""
    shm_size_gib: Annotated[float | None, Field(gt=0, le=512)] = None
    """Size of ``/dev/shm``; docker uses the host IPC namespace when left out."""
    startup_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 30
    """Time allowed for model download and load before health checks count."""
    arch: ArchConfig | None = None
    """Architecture facts overriding the catalog (required for models the catalog lacks)."""


class IngressConfig(Section):
    enabled: bool = False
    """Create an Ingress for the gateway."""
    class_name: str | None = None
    """IngressClass name, e.g. ``nginx``."""
    host: str | None = None
    """Host name the Ingress answers."""
    tls_secret: str | None = None
    """Existing TLS Secret for the host."""


class KeyLimit(Section):
    requests_per_minute: Annotated[int | None, Field(ge=1, le=1_000_000)] = None
    """Requests this key may start per minute (bursts up to a minute's worth); more get 429 with Retry-After."""
    concurrent: Annotated[int | None, Field(ge=1, le=100_000)] = None
    """Requests of this key in flight at once, per gateway replica; more get 429."""


class CorsConfig(Section):
    allow_origins: list[Annotated[str, Field(pattern=r"^(\*|https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?)$")]] = []
    """Browser origins (``https://app.example``, or ``*``) that may call the gateway; preflights need no key."""


class GatewayConfig(Section):
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    """Port the OpenAI-compatible URL is published on."""
    routing: Literal["model", "path"] = "model"
    """``model``: route by the JSON body's ``model`` (``/<model>/v1/...`` works too); ``path``: path only."""
    max_body_mib: Annotated[int, Field(ge=1, le=1024)] = 16
    """Largest request body; bigger ones get 413."""
    read_timeout_seconds: Annotated[int, Field(ge=1, le=86_400)] = 900
    """Longest wait for upstream data (long generations stream well within it)."""
    client_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    """Longest pause while a client sends its request headers or body (then 408)."""
    max_concurrent_per_model: Annotated[int | None, Field(ge=1, le=100_000)] = None
    """Requests in flight per model before the gateway answers 503; unlimited when left out."""
    max_concurrent_requests: Annotated[int, Field(ge=1, le=100_000)] = 256
    """Requests in flight per gateway replica; more get 429 with Retry-After. Sizes the gateway's memory."""
    max_concurrent_large_requests: Annotated[int, Field(ge=1, le=10_000)] = 8
    """Of those, requests whose body is over 1 MB or sent chunked; more get 429. Sizes the gateway's memory."""
    worker_processes: Annotated[int, Field(ge=1, le=64)] = 2
    """nginx worker processes per gateway replica (fixed, so its memory does not follow the node's core count)."""
    key_limits: dict[Annotated[str, Field(pattern=KEY_NAME.pattern)], KeyLimit] = {}
    """Per API key name (see ``apiKeys``): ``requestsPerMinute`` and ``concurrent``; over them 429."""
    cors: CorsConfig = CorsConfig()
    """Cross-origin access for browser apps."""
    token_usage: bool = True
    """Read vLLM's ``usage`` from every answer into the access log and the token metrics (an njs filter on each
    answer: it costs nginx CPU per request, see the README's gateway benchmark)."""
    image: str = "nginx:1.30.0"
    """Pinned NGINX image (the official image ships the njs module; 1.30.0 has njs 0.9.6)."""
    replicas: Annotated[int, Field(ge=1, le=20)] = 2
    """Kubernetes target: gateway replicas."""
    ingress: IngressConfig = IngressConfig()
    """Kubernetes target: optional Ingress."""


class WebuiConfig(Section):
    enabled: bool = True
    """Run Open WebUI."""
    port: Annotated[int, Field(ge=1, le=65535)] = 3000
    """Host port (docker) / Service port (kubernetes)."""
    enable_signup: bool = False
    """Let visitors create accounts (the first account becomes admin)."""
    image: str = "ghcr.io/open-webui/open-webui:v0.6.34"
    """Pinned Open WebUI image."""
    replicas: Annotated[int, Field(ge=1, le=20)] = 1
    """Kubernetes target: more than one needs ``redisUrl`` and ``databaseUrl``."""
    redis_url: str | None = None
    """Redis for websockets when running several replicas."""
    database_url: str | None = None
    """External database when running several replicas."""
    storage_size: str = "10Gi"
    """Kubernetes target: size of the data PVC."""


class MonitoringConfig(Section):
    dcgm: bool = True
    """Run NVIDIA's DCGM exporter (skip on clusters whose GPU Operator already runs one)."""
    dcgm_image: str = "nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3-4.1.3-ubuntu22.04"
    """Pinned DCGM exporter image."""
    dcgm_port: Annotated[int, Field(ge=1, le=65535)] = 9400
    """Port of the DCGM exporter's /metrics."""
    prometheus: bool | None = None
    """Run Prometheus scraping DCGM and every vLLM server: on by default on docker; kubernetes uses the cluster's own."""
    prometheus_image: str = "prom/prometheus:v3.5.0"
    """Pinned Prometheus image."""
    prometheus_port: Annotated[int, Field(ge=1, le=65535)] = 9090
    """Host port of Prometheus."""
    scrape_interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 15
    """How often Prometheus scrapes."""


class DockerConfig(Section):
    network: str = "vllm"
    """Name of the user-defined network."""
    bind_address: str = "0.0.0.0"
    """Host address published ports bind to (``127.0.0.1`` keeps the stack local)."""
    restart: Literal["no", "on-failure", "always", "unless-stopped"] = "unless-stopped"
    """Restart policy of every container."""
    log_max_size: Annotated[str, Field(pattern=r"^[0-9]+[kmg]$")] = "50m"
    """Log rotation: size of one json-file log."""
    log_max_files: Annotated[int, Field(ge=1, le=100)] = 3
    """Log rotation: files kept."""


class Toleration(Section):
    key: str | None = None
    """Taint key."""
    operator: Literal["Equal", "Exists"] = "Exists"
    """How the value is matched."""
    value: str | None = None
    """Taint value (with Equal)."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect."""


class KubeGpu(Section):
    name: str
    """GPU type of the cluster's GPU nodes, e.g. ``NVIDIA L40S``."""
    memory_gib: Annotated[float, Field(gt=0, le=1024)]
    """Memory of one such GPU in GiB."""


class KubernetesConfig(Section):
    gpu: KubeGpu
    """The GPU type of the nodes, used by the planner."""
    namespace: Annotated[str, Field(pattern=DNS_LABEL.pattern)] = "vllm"
    """Namespace everything is created in."""
    kubeconfig: str | None = None
    """Path to a kubeconfig; the ambient one when left out."""
    context: str | None = None
    """kubeconfig context."""
    render_yaml_to: str | None = None
    """Write manifests to this directory instead of applying them (GitOps)."""
    storage_class: str | None = None
    """StorageClass of the PVCs; the cluster default when left out."""
    model_cache_size: Annotated[str, Field(pattern=r"^[0-9]+(Mi|Gi|Ti)$")] = "200Gi"
    """Size of the model cache PVC."""
    model_cache_access_mode: Literal["ReadWriteMany", "ReadWriteOnce"] = "ReadWriteMany"
    """ReadWriteMany shares one cache among all model pods; ReadWriteOnce needs one node."""
    gpu_node_selector: dict[str, str] = {"nvidia.com/gpu.present": "true"}
    """Node labels of GPU nodes."""
    tolerations: list[Toleration] = [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
    """Tolerations for the GPU nodes' taints."""
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Type of the gateway and Open WebUI Services."""
    cpu_request: str = "2"
    """CPU request of each model pod."""
    memory_request: str = "16Gi"
    """Memory request of each model pod."""
    shm_size: Annotated[str, Field(pattern=r"^[0-9]+(Mi|Gi)$")] = "8Gi"
    """Size limit of the /dev/shm emptyDir of model pods."""


class StackConfig(Section):
    """Everything a stack file says, secrets aside."""

    target: Literal["docker", "kubernetes"] = "docker"
    """Where the stack runs: one docker host or a Kubernetes cluster."""
    timezone: str = "UTC"
    """IANA time zone baked into the vLLM image."""
    allow_unpinned_images: bool = False
    """Accept moving image tags such as ``latest`` (not recommended)."""
    retain_data_on_destroy: bool = True
    """Keep model caches and Open WebUI data on ``pulumi destroy``."""
    image: ImageConfig = ImageConfig()
    """The vLLM image."""
    gpus: list[GpuConfig] = []
    """Docker target: the host's GPUs."""
    models: Annotated[list[ModelConfig], Field(min_length=1)]
    """The models to serve; drives servers, routes, Open WebUI and scrape targets."""
    gateway: GatewayConfig = GatewayConfig()
    """The NGINX gateway."""
    webui: WebuiConfig = WebuiConfig()
    """Open WebUI."""
    monitoring: MonitoringConfig = MonitoringConfig()
    """GPU metrics."""
    docker: DockerConfig | None = None
    """Docker target settings."""
    kubernetes: KubernetesConfig | None = None
    """Kubernetes target settings (required there)."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as Asia/Seoul or UTC") from None
        return v

    @property
    def runs_prometheus(self) -> bool:
        """``monitoring.prometheus``, defaulting to on for docker and off for kubernetes."""
        return self.monitoring.prometheus if self.monitoring.prometheus is not None else self.target == "docker"


def _scalar(annotation: object) -> bool:
    return annotation in (bool, str) or get_origin(annotation) is Literal


SCALAR_KEYS = tuple(yaml_key(n) for n, f in StackConfig.model_fields.items() if _scalar(f.annotation))
"""Keys Pulumi hands over as plain strings (declared in Pulumi.yaml); the others hold YAML mappings or lists."""
STRUCTURED_KEYS = tuple(yaml_key(n) for n, f in StackConfig.model_fields.items() if not _scalar(f.annotation))
BOOLEAN_KEYS = tuple(yaml_key(n) for n, f in StackConfig.model_fields.items() if f.annotation is bool)
