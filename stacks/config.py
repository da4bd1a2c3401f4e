"""The stack config contract: namespace ``vllm-stack``, camelCase keys, validated with pydantic.

Every default lives here. Secrets (``hfToken``, ``apiKeys``, ``vllmApiKey``) never enter these
models: ``__main__`` reads them as Pulumi secrets, the CLI only checks they are not plain text.
"""

from __future__ import annotations

import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from stacks.errors import ConfigError, Problem

NAMESPACE = "vllm-stack"
SECRET_KEYS = ("hfToken", "apiKeys", "vllmApiKey")
"""Config keys that must be set with ``pulumi config set --secret``."""

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SERVED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$")
UNPINNED_TAGS = {"latest", "main", "nightly", "edge", "stable", "master"}


def image_pin_problem(ref: str) -> str | None:
    """Why an image reference is not pinned, or None when it is (a version tag or a digest)."""
    if "@sha256:" in ref:
        return None
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {ref!r} has no tag; pin a version tag (e.g. {ref}:v1.2.3) or a digest"
    tag = last.split(":", 1)[1]
    if tag in UNPINNED_TAGS:
        return f"image tag {tag!r} in {ref!r} moves; pin a version tag or a digest"
    return None


class Section(BaseModel):
    """camelCase keys in YAML, snake_case in Python, unknown keys rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
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

    @property
    def customised(self) -> bool:
        return bool(self.apt_packages)


class GpuConfig(Section):
    index: Annotated[int, Field(ge=0, le=63)]
    """CUDA device index on the docker host (as ``nvidia-smi`` lists it)."""
    name: str = "GPU"
    """Human name, e.g. ``RTX 5090``."""
    memory_gi_b: Annotated[float, Field(gt=0, le=1024)]
    """Total memory of the GPU in GiB (``nvidia-smi --query-gpu=memory.total``)."""
    reserved_gi_b: Annotated[float, Field(ge=0)] = 0.0
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
    shm_size_gi_b: Annotated[float | None, Field(gt=0, le=512)] = None
    """Size of ``/dev/shm``; docker uses the host IPC namespace when left out."""
    startup_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 30
    """Time allowed for model download and load before health checks count."""
    arch: ArchConfig | None = None
    """Architecture facts overriding the catalog (required for models the catalog lacks)."""

    @property
    def all_served_names(self) -> list[str]:
        return [self.name, *self.served_model_names]


class IngressConfig(Section):
    enabled: bool = False
    """Create an Ingress for the gateway."""
    class_name: str | None = None
    """IngressClass name, e.g. ``nginx``."""
    host: str | None = None
    """Host name the Ingress answers."""
    tls_secret: str | None = None
    """Existing TLS Secret for the host."""


class GatewayConfig(Section):
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    """Port the OpenAI-compatible URL is published on."""
    routing: Literal["model", "path"] = "model"
    """``model``: route by the JSON body's ``model`` (``/<model>/v1/...`` works too); ``path``: path only."""
    max_body_mi_b: Annotated[int, Field(ge=1, le=1024)] = 16
    """Largest request body; bigger ones get 413."""
    read_timeout_seconds: Annotated[int, Field(ge=1, le=86_400)] = 900
    """Longest wait for upstream data (long generations stream well within it)."""
    max_concurrent_per_model: Annotated[int | None, Field(ge=1, le=100_000)] = None
    """Requests in flight per model before the gateway answers 503; unlimited when left out."""
    image: str = "nginx:1.28.0"
    """Pinned NGINX image (the official image ships the njs module)."""
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
    memory_gi_b: Annotated[float, Field(gt=0, le=1024)]
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
    def docker_settings(self) -> DockerConfig:
        return self.docker or DockerConfig()

    @property
    def runs_prometheus(self) -> bool:
        """``monitoring.prometheus``, defaulting to on for docker and off for kubernetes."""
        return self.monitoring.prometheus if self.monitoring.prometheus is not None else self.target == "docker"

    @property
    def kube(self) -> KubernetesConfig:
        assert self.kubernetes is not None, "kubernetes settings are checked before use"
        return self.kubernetes


SCALAR_KEYS = ("target", "timezone", "allowUnpinnedImages", "retainDataOnDestroy")
STRUCTURED_KEYS = ("image", "gpus", "models", "gateway", "webui", "monitoring", "docker", "kubernetes")


# --------------------------------------------------------------------------------------------
# From raw mappings (a stack file or Pulumi config) to a checked StackConfig.


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def _pydantic_problems(err: ValidationError) -> list[Problem]:
    problems = []
    for e in err.errors():
        # Drop union-branch names pydantic adds (e.g. "literal['auto']", "float").
        loc = tuple(p for p in e["loc"] if isinstance(p, int) or (_KEY.match(p) and p not in {"float", "int", "str", "bool"}))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling against schema/stack-config.schema.json"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "string_pattern_mismatch":
            msg = f"{e['input']!r} does not match {e['ctx']['pattern']}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        problems.append(Problem(_path(loc), msg))
    # One problem per key: union branches (0.5 or "auto") report the same location once each.
    merged: dict[str, list[str]] = {}
    for p in problems:
        msgs = merged.setdefault(p.key, [])
        if p.message not in msgs:
            msgs.append(p.message)
    return [Problem(key, "; or ".join(msgs)) for key, msgs in merged.items()]


def parse(raw: dict[str, Any]) -> StackConfig:
    """Validate an un-namespaced mapping (``{"models": [...], ...}``) fully, or raise ConfigError."""
    from stacks.rules import cross_field_problems

    problems: list[Problem] = []
    for key in SECRET_KEYS:
        if key in raw:
            value = raw.pop(key)
            if not (isinstance(value, dict) and set(value) == {"secure"}):
                problems.append(Problem(key, f"is in plain text; run `pulumi config set --secret {NAMESPACE}:{key} <value>`"))
    try:
        config = StackConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(problems + _pydantic_problems(err)) from None
    problems += cross_field_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def strip_namespace(config_block: dict[str, Any]) -> dict[str, Any]:
    """``{"vllm-stack:models": ...}`` -> ``{"models": ...}``; other namespaces (``docker:host``) are left out."""
    raw: dict[str, Any] = {}
    problems = []
    for key, value in (config_block or {}).items():
        ns, sep, name = str(key).partition(":")
        if not sep:
            problems.append(Problem(str(key), f"keys need the namespace: write {NAMESPACE}:{key}"))
        elif ns == NAMESPACE:
            raw[name] = value
    if problems:
        raise ConfigError(problems)
    return raw


def stack_file(stack: str, root: Path | None = None) -> Path:
    """A stack name (``dev`` -> ``Pulumi.dev.yaml`` at the repo root) or a path to a stack file."""
    root = root or Path(__file__).resolve().parent.parent
    p = Path(stack)
    if p.suffix in {".yaml", ".yml"} or p.exists():
        return p
    return root / f"Pulumi.{stack}.yaml"


def read_stack_file(path: Path) -> dict[str, Any]:
    """The un-namespaced config mapping of a stack file."""
    if not path.is_file():
        raise ConfigError([Problem("", f"no stack file at {path}; create it or name an existing stack")])
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError([Problem("", f"{path} is not valid YAML: {err}")]) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}), dict):
        raise ConfigError([Problem("", f"{path} must hold a mapping with a `config:` mapping")])
    return strip_namespace(doc.get("config") or {})


def load_stack(stack: str) -> StackConfig:
    """Read and validate a stack by name or path."""
    return parse(read_stack_file(stack_file(stack)))


def json_schema() -> dict[str, Any]:
    schema = StackConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vllm-stack config (keys under the vllm-stack: namespace)"
    return schema
