"""What a stack file may say: the pydantic models of the config, camelCase in YAML, snake_case in Python.

Pydantic only: every field's type, bound, default and description live here and nowhere else.
Cross-field rules are in ``stacks.config.rules``; reading files and Pulumi config in ``stacks.config.loading``.
Secrets (``hfToken``, ``apiKeys``, ``vllmApiKey``) never enter these models.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from typing import Annotated, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from stacks.errors import shown
from stacks.keys import KEY_NAME

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

# Image references as Docker reads them (github.com/distribution/reference, regexp.go: namePat, tag, digestPat;
# IPv6 hosts left out): an image value goes into a Dockerfile ARG line and a container spec, so nothing else passes.
_HOST = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = rf"(?:{_HOST}/)?{_PATH}(?:/{_PATH})*"
IMAGE_REF = re.compile(rf"^{REPOSITORY}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{{32,}})?$")
Image = Annotated[str, Field(pattern=IMAGE_REF.pattern)]
Repository = Annotated[str, Field(pattern=rf"^{REPOSITORY}$")]
URL = re.compile(
    r"^(?P<scheme>https?)://(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::(?P<port>[0-9]{1,5}))?(?P<path>(?:/[A-Za-z0-9._~-]+)*)/?$"
)
"""An endpoint's base URL: scheme, host name or IPv4 address, optional port and path; no query, user or fragment. Each part
goes into nginx's config (upstream server, Host header, TLS name, path rewrite), so nothing else passes."""
FORMS = {
    IMAGE_REF.pattern: "an image reference: [registry/]repository[:tag][@sha256:digest], lowercase, e.g. vllm/vllm-openai:v0.11.2",
    rf"^{REPOSITORY}$": "an image repository: registry/path, lowercase, no tag, e.g. registry.example/ml/vllm",
    URL.pattern: "a base URL: http(s)://host[:port][/path] without query or user, e.g. http://model-runner.docker.internal/engines/v1",
}
"""Patterns too long to show a reader, by what they mean (error messages and the configuration reference)."""
SERVED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$")
MODEL_REF = r"^[A-Za-z0-9_./][A-Za-z0-9_./-]{0,255}$"
"""A Hugging Face repository id (``namespace/name``) or a path inside the model cache: it goes into vLLM's command line,
the plan and logs, so no whitespace, control or non-ASCII character, and no leading ``-`` (vLLM would read a flag)."""
ModelRef = Annotated[str, Field(pattern=MODEL_REF)]
FORMS[MODEL_REF] = "a Hugging Face id such as Qwen/Qwen3-8B, or a path inside the model cache: ASCII letters, digits and . _ - /"
GPU_NAME = r"^[A-Za-z0-9][ -~]{0,63}$"
FORMS[GPU_NAME] = "a GPU name such as RTX 5090: printable ASCII, at most 64 characters"


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
        allow_inf_nan=False,  # .nan and .inf are no setting's value (and NaN passes no bound check)
    )


DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.26.0"
"""The release the planner was calibrated on (an H100, 2026-11-23); the per-release rules cover 0.11.2-0.34.x."""


class ImageConfig(Section):
    base: Image = DEFAULT_VLLM_IMAGE
    """Pinned vllm/vllm-openai base image (version tag or digest)."""
    vllm_version: Annotated[str | None, Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")] = None
    """The vLLM release ``base`` is, e.g. ``0.26.0``, when its reference does not say it (pinned by digest alone, or a
    tag of your own); the plan follows that release's rules."""
    apt_packages: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?$")]] = []
    """Extra Debian packages installed into the image."""
    registry: Repository | None = None
    """Registry repository to push the built image to (kubernetes target), e.g. ``registry.example/ml/vllm``."""
    cuda: Literal["12.9"] | None = None
    """``12.9`` runs the release's CUDA 12.9 build (the ``-cu129`` tag, vLLM 0.20-0.32) on hosts whose driver is older than
    R580; left out, the release's default build (CUDA 13 from vLLM 0.20, which needs an R580+ driver)."""
    run_as_non_root: bool | None = None
    """Run vLLM as the image's ``vllm`` user (UID 2000, vLLM 0.22+) with its caches under /home/vllm/.cache. Default: on
    for the kubernetes target (fsGroup makes the volumes writable), off for docker (new named volumes are root-owned)."""


class GpuConfig(Section):
    index: Annotated[int, Field(ge=0, le=63)]
    """CUDA device index on the docker host (as ``nvidia-smi`` lists it)."""
    name: Annotated[str, Field(pattern=GPU_NAME)] = "GPU"
    """Human name, e.g. ``RTX 5090``."""
    memory_gib: Annotated[float, Field(gt=0, le=1024)]
    """Total memory of the GPU in GiB as CUDA reports it, which is what vLLM's fraction multiplies: nvidia-smi's
    memory.total less memory.reserved (an H100: 81,559 - 480 MiB = 79.18 GiB). ``python -m stacks doctor --inventory`` prints it."""
    reserved_gib: Annotated[float, Field(ge=0)] = 0.0
    """Memory other processes hold on this GPU (a desktop session, say), kept out of the plan."""


class VisionArchConfig(Section):
    """A multimodal checkpoint's vision tower and projector (``vision_config``), for a model the catalog lacks."""

    parameters_b: Annotated[float, Field(gt=0, le=100)]
    """Tower and projector parameters in billions (counted in ``arch.parametersB`` too)."""
    layers: Annotated[int, Field(gt=0, le=1000)]
    """ViT layers (``vision_config.num_hidden_layers`` / ``depth``)."""
    hidden_size: Annotated[int, Field(gt=0, le=65536)]
    """ViT width (``vision_config.hidden_size``)."""
    intermediate_size: Annotated[int, Field(gt=0, le=1_000_000)]
    """ViT MLP width (``vision_config.intermediate_size``)."""
    heads: Annotated[int, Field(gt=0, le=1024)]
    """ViT attention heads."""
    gated_mlp: bool = False
    """A SiLU-gated MLP (gate and up projections; Qwen-VL, Pixtral) rather than one GELU projection (SigLIP, CLIP)."""
    patch_size: Annotated[int, Field(gt=0, le=1024)] = 14
    """Pixels on a side of one ViT patch."""
    embeds_per_image: Annotated[int, Field(gt=0, le=1_000_000)]
    """Most embeddings the processor makes of one image (its largest size): what vLLM's encoder budget counts."""
    positions_per_embed: Annotated[float, Field(gt=0, le=1024)] = 1.0
    """ViT positions behind one embedding (4 with a 2x2 spatial merge, 16 for Gemma 3's 4x4 pooling)."""


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
    # Llama 4 Scout's config.json has 10,485,760 positions: the bound leaves room for it and stays far below overflow
    context_length: Annotated[int | None, Field(gt=0, le=16_777_216)] = None
    """Maximum context (``max_position_embeddings``)."""
    dtype: Literal["float16", "bfloat16", "float32"] | None = None
    """Checkpoint dtype (``torch_dtype``)."""
    intermediate_size: Annotated[int | None, Field(gt=0, le=1_000_000)] = None
    """MLP intermediate size (``intermediate_size``); drives the activation estimate."""
    vocab_size: Annotated[int | None, Field(gt=0, le=10_000_000)] = None
    """Vocabulary size (``vocab_size``); the sampler's logits grow with it."""
    tied_embeddings: bool | None = None
    """``tie_word_embeddings``: the LM head shares the embedding weights."""
    sliding_window: Annotated[int | None, Field(gt=0, le=10_000_000)] = None
    """Window of the sliding-window attention layers (``sliding_window``)."""
    sliding_layers: Annotated[int | None, Field(ge=0, le=1000)] = None
    """How many layers use the sliding window (the others attend to the whole sequence)."""
    experts: Annotated[int | None, Field(ge=0, le=4096)] = None
    """Routed experts per MoE layer (``num_experts`` / ``num_local_experts``); 0 for a dense model."""
    experts_per_token: Annotated[int | None, Field(ge=0, le=4096)] = None
    """Experts each token is routed to (``num_experts_per_tok``)."""
    expert_intermediate_size: Annotated[int | None, Field(gt=0, le=1_000_000)] = None
    """Intermediate size of one expert (``moe_intermediate_size``)."""
    encoder_only: bool | None = None
    """A bidirectional encoder (BERT-style embedding model): vLLM keeps no KV cache for it."""
    qk_norm: bool | None = None
    """Per-head RMSNorm on queries and keys (Qwen3, Gemma 3: config.json's ``model_type`` qwen3* or gemma3*): more activation
    memory per token. Taken as true for a model outside the catalog when left out (the safe side)."""
    vision: VisionArchConfig | None = None
    """The vision tower of a multimodal checkpoint the catalog lacks (images only)."""


class MediaPerPrompt(Section):
    """Items of each kind one request may carry (vLLM's ``--limit-mm-per-prompt``); 0 turns the kind off."""

    images: Annotated[int | None, Field(ge=0, le=999)] = None
    """Images per prompt; ``0`` with every other kind 0 serves the checkpoint as text only (vLLM skips its tower)."""
    videos: Annotated[int | None, Field(ge=0, le=999)] = None
    """Videos per prompt (models that take video: Qwen2.5-VL)."""


class LoraModule(Section):
    name: Annotated[str, Field(pattern=SERVED_NAME.pattern)]
    """Served name of the adapter."""
    path: ModelRef
    """HF id or path of the adapter."""


class AutoscalingConfig(Section):
    enabled: bool = False
    """Create a KEDA ScaledObject for this model (kubernetes target; KEDA must be installed)."""
    min_replicas: Annotated[int, Field(ge=0, le=100)] = 1
    """Fewest replicas; 0 lets KEDA scale to zero and needs ``activationQuery`` to wake the model again."""
    max_replicas: Annotated[int, Field(ge=1, le=100)] = 4
    """Most replicas."""
    waiting_requests: Annotated[int, Field(ge=1, le=10_000)] = 8
    """Target of ``vllm:num_requests_waiting`` per replica."""
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    """Prometheus that scrapes the vLLM pods, queried by KEDA."""
    activation_query: str | None = None
    """With ``minReplicas: 0``: PromQL counting requests for this model that reports while none of its pods runs; wakes it, scales like ``waitingRequests``."""
    activation_threshold: Annotated[float, Field(ge=0, le=1_000_000)] = 0.0
    """With ``minReplicas: 0``: KEDA scales from zero when ``activationQuery`` is above this (KEDA's ``activationThreshold``)."""


SwapGroupName = Annotated[str, Field(pattern=DNS_LABEL.pattern, max_length=40)]
"""Short enough that ``swap-<group>`` is a DNS label too (its server's name)."""


class SwapConfig(Section):
    """Membership of a swap group: more models on a GPU than fit awake, woken on demand with vLLM's sleep mode."""

    group: SwapGroupName
    """The swap group (``swapGroups`` holds its settings): its members share their GPUs and take turns being awake."""
    level: Literal[1, 2] = 1
    """vLLM sleep level: 1 copies the weights to host memory (a wake copies them back: seconds; the host needs the RAM),
    2 drops them (a wake reloads them from the model cache: slower, no host RAM)."""
    idle_seconds: Annotated[int | None, Field(ge=1, le=7 * 24 * 3600)] = None
    """Put the model to sleep after this long without a request; left out, it stays awake until another member needs its place."""


class SwapGroupConfig(Section):
    """How a swap group takes turns (``stacks/swap/swapper.py`` runs it)."""

    awake: Annotated[int, Field(ge=1, le=16)] = 1
    """Members awake at once; the plan reserves GPU memory for the largest such set."""
    queue_size: Annotated[int, Field(ge=1, le=100_000)] = 64
    """Requests that may wait for their model to wake; more get 429 with Retry-After."""
    max_wait_seconds: Annotated[int, Field(ge=1, le=3600)] = 120
    """Longest a request waits for its model to wake (swaps ahead of it included) before it gets 503 with Retry-After."""
    drain_seconds: Annotated[int, Field(ge=0, le=3600)] = 30
    """How long the requests a member is serving may run on before it is put to sleep for another member; what still runs then is aborted."""
    wake_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 120
    """Longest a wake may take (level 2: the weights reloaded) before it counts as failed (503, the member put back to sleep)."""


Fraction = Annotated[float, Field(gt=0, le=1)]


class ModelConfig(Section):
    name: str
    """DNS-1123 label, unique; also the served model name."""
    model: ModelRef
    """HF model id or a path inside the model cache."""
    served_model_names: list[Annotated[str, Field(pattern=SERVED_NAME.pattern)]] = []
    """Extra names the model answers to (aliases)."""
    gpus: list[Annotated[int, Field(ge=0)]] | None = None
    """Docker target: device indices from ``gpus``; may be left out on a one-GPU host."""
    tensor_parallel: Annotated[int | None, Field(ge=1, le=64)] = None
    """Tensor-parallel size; defaults to the GPUs given / pipelineParallel."""
    pipeline_parallel: Annotated[int, Field(ge=1, le=64)] = 1
    """Pipeline-parallel size; with ``nodes`` above 1 it is the node count (one pipeline stage per node)."""
    nodes: Annotated[int, Field(ge=1, le=64)] = 1
    """Kubernetes target: nodes one server spans, as a LeaderWorkerSet of this many pods (a leader serving the API and
    workers joining it), each with ``tensorParallel`` GPUs: tensor parallel within a node, pipeline parallel across nodes."""
    gpu_memory_utilization: Fraction | Literal["auto"] = "auto"
    """Fraction of each GPU's total memory this server may use, or ``auto`` to let the planner split."""
    max_model_len: Annotated[int | None, Field(ge=16, le=16_777_216)] = None
    """Longest sequence (prompt + output); defaults to the model's context length."""
    max_num_seqs: Annotated[int, Field(ge=1, le=4096)] = 16
    """Most sequences in one batch; ``auto`` sizes the KV cache to hold this many full sequences."""
    max_num_batched_tokens: Annotated[int | None, Field(ge=16, le=1_000_000)] = None
    """Token budget of one scheduler step (vLLM's own default when left out)."""
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    """Weights/activation dtype; ``auto`` uses the checkpoint's."""
    quantization: Literal["awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "bitsandbytes", "compressed-tensors", "mxfp4", "modelopt"] | None = None
    """Quantization method of the checkpoint; read from the catalog's config.json when left out (vLLM detects it too)."""
    task: Literal["generate", "embed"] | None = None
    """``embed`` serves an embedding model on /v1/embeddings (vLLM's pooling runner); defaults to the catalog's."""
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
    tool_call_parser: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = None
    """vLLM's tool-call parser (``--enable-auto-tool-choice --tool-call-parser``); defaults to the one of the model's family
    (``stacks/catalog/tool_calls.py``); ``none`` turns tool calling off, and Open WebUI then sends the model no tools."""
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
    media_per_prompt: MediaPerPrompt | None = None
    """Multimodal checkpoints: images/videos one request may carry; vLLM profiles the vision encoder for the largest and
    plans memory for it. Left out, vLLM allows 999 of every kind the model takes."""
    arch: ArchConfig | None = None
    """Architecture facts overriding the catalog (required for models the catalog lacks)."""
    swap: SwapConfig | None = None
    """Join a swap group: the model sleeps (vLLM sleep mode) until a request wakes it, so a GPU serves more models than fit awake."""


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
    token_usage: bool = False
    """Read vLLM's ``usage`` from every answer into the access log (``prompt_tokens``, ``completion_tokens``, per key
    name) and, with ``requestMetrics``, the token metrics: an njs filter on each answer, about a quarter more nginx CPU
    per request (README, gateway benchmark). Streams are read when they ask for usage (``stream_options.include_usage``)."""
    request_metrics: bool = False
    """Count every finished request for the gateway's Prometheus metrics (requests by model, status class and key
    name; upstream latency; tokens), its dashboard panels and its 5xx alert: an njs call per request, about a quarter
    more nginx CPU per request (README, gateway benchmark). Off, the gateway's metrics are the requests in flight
    (vLLM's own metrics count each model's requests either way)."""
    image: Image = "nginx:1.30.0"
    """Pinned NGINX image (the official image ships the njs module; 1.30.0 has njs 0.9.6)."""
    js_engine: Literal["qjs", "njs"] = "qjs"
    """JavaScript engine of the gateway's njs scripts: ``qjs`` (QuickJS, which the official image's njs module is built
    with; it frees what a long stream passes through) or ``njs`` (for an image whose njs lacks QuickJS; it holds every
    chunk of a filtered answer until the answer ends)."""
    replicas: Annotated[int, Field(ge=1, le=20)] = 2
    """Kubernetes target: gateway replicas."""
    ingress: IngressConfig = IngressConfig()
    """Kubernetes target: optional Ingress."""


class OidcConfig(Section):
    provider_url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    """The provider's ``.well-known/openid-configuration`` URL (``OPENID_PROVIDER_URL``)."""
    client_id: Annotated[str, Field(min_length=1)]
    """OAuth client id (``OAUTH_CLIENT_ID``)."""
    provider_name: str = "SSO"
    """Name on the sign-in button (``OAUTH_PROVIDER_NAME``)."""
    scopes: str = "openid email profile"
    """Scopes asked for (``OAUTH_SCOPES``)."""
    enable_signup: bool = False
    """Create an account on first sign-in through the provider (``ENABLE_OAUTH_SIGNUP``)."""
    merge_accounts_by_email: bool = False
    """Attach a provider sign-in to an existing account with the same email (``OAUTH_MERGE_ACCOUNTS_BY_EMAIL``)."""
    redirect_uri: Annotated[str | None, Field(pattern=r"^https?://\S+$")] = None
    """Callback URL registered with the provider, when Open WebUI cannot derive it (``OPENID_REDIRECT_URI``)."""
    password_login: bool = True
    """Keep the email/password form beside the provider's button (``ENABLE_LOGIN_FORM``)."""


class WebuiConfig(Section):
    enabled: bool = True
    """Run Open WebUI."""
    port: Annotated[int, Field(ge=1, le=65535)] = 3000
    """Host port (docker) / Service port (kubernetes)."""
    enable_signup: bool = False
    """Let visitors create accounts (the first account becomes admin)."""
    image: Image = "ghcr.io/open-webui/open-webui:v0.12.4"
    """Pinned Open WebUI image (v0.12.4: the connection settings the stack passes were read from that release)."""
    replicas: Annotated[int, Field(ge=1, le=20)] = 1
    """Kubernetes target: more than one needs ``redisUrl`` and ``databaseUrl``."""
    redis_url: str | None = None
    """Redis for websockets when running several replicas."""
    database_url: str | None = None
    """External database when running several replicas."""
    storage_size: str = "10Gi"
    """Kubernetes target: size of the data PVC."""
    embedding_model: str | None = None
    """Served name of an embedding model (``task: embed``) for Open WebUI's document search (RAG), through the gateway."""
    model_access: Literal["all", "restricted"] = "all"
    """Who may chat with the stack's models: ``all`` signed-in users, or ``restricted`` to admins and the users and groups
    an admin grants each model in Open WebUI (Admin Panel, Models)."""
    oidc: OidcConfig | None = None
    """Sign-in through an OpenID Connect provider; the client secret is ``vllm-stack:webuiOidcClientSecret`` (a secret)."""


class AlertsConfig(Section):
    """Thresholds of the alert rules (``stacks/render/monitoring/alerts.py`` says what each rule watches)."""

    enabled: bool = True
    """Render the alert rules: Prometheus' rule file on docker, a PrometheusRule with ``prometheusOperator``."""
    for_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 5
    """How long a condition must hold before its alert fires (XID errors and restarts fire at once)."""
    kv_cache_usage: Annotated[float, Field(gt=0, le=1)] = 0.9
    """KV-cache use of a server (``vllm:kv_cache_usage_perc``, 0-1) above which it is nearly full."""
    waiting_requests: Annotated[int, Field(ge=1, le=100_000)] = 10
    """Requests waiting in one server's queue above which it is overloaded."""
    ttft_p95_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0
    """95th-percentile time to first token (seconds) above which a model is too slow."""
    gpu_memory_usage: Annotated[float, Field(gt=0, le=1)] = 0.95
    """Share of a GPU's memory in use above which it is nearly full; a GPU the plan fills further gets the plan's share + 0.01."""
    gateway_5xx_ratio: Annotated[float, Field(gt=0, le=1)] = 0.05
    """Share of a model's gateway requests answered 5xx above which the model is failing."""
    swap_time_share: Annotated[float, Field(gt=0, le=1)] = 0.25
    """Share of the time a swap group spends waking members and putting them to sleep above which it thrashes."""


# dcgm-exporter 4.5.3-4.8.2 (NVIDIA/dcgm-exporter tag 4.5.3-4.8.2, README l.14): only the distroless image is published now
# (NVIDIA/dcgm-exporter#703); the ubuntu22.04 variant stopped at 4.5.2-4.8.1.
DEFAULT_DCGM_IMAGE = "nvcr.io/nvidia/k8s/dcgm-exporter:4.5.3-4.8.2-distroless"
# prometheus/prometheus tag v3.14.0 (VERSION file); the image's default args and /prometheus volume are unchanged since 2.x.
DEFAULT_PROMETHEUS_IMAGE = "prom/prometheus:v3.14.0"
# Grafana 13.2.0: appVersion of the Grafana chart 12.11.1 (grafana-community/helm-charts charts/grafana/Chart.yaml).
DEFAULT_GRAFANA_IMAGE = "grafana/grafana:13.2.0"


class MonitoringConfig(Section):
    dcgm: bool | None = None
    """Run NVIDIA's DCGM exporter: on by default where the stack has NVIDIA GPUs (a docker stack without ``gpus`` has
    none to watch); turn it off on clusters whose GPU Operator already runs one."""
    dcgm_image: Image = DEFAULT_DCGM_IMAGE
    """Pinned DCGM exporter image."""
    dcgm_port: Annotated[int, Field(ge=1, le=65535)] = 9400
    """Port of the DCGM exporter's /metrics."""
    prometheus: bool | None = None
    """Run Prometheus scraping DCGM and every vLLM server: on by default on docker; kubernetes uses the cluster's own."""
    prometheus_image: Image = DEFAULT_PROMETHEUS_IMAGE
    """Pinned Prometheus image."""
    prometheus_port: Annotated[int, Field(ge=1, le=65535)] = 9090
    """Host port of Prometheus."""
    scrape_interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 15
    """How often Prometheus scrapes."""
    bind_address: str = "127.0.0.1"
    """Docker target: host address the metrics ports (Prometheus, Grafana, DCGM exporter) bind to; 127.0.0.1 keeps them on the host."""
    grafana: bool | None = None
    """Grafana dashboards: docker runs Grafana with them, reading the stack's Prometheus (on by default when Prometheus runs);
    kubernetes renders them as ConfigMaps for the cluster's Grafana sidecar."""
    grafana_image: str = DEFAULT_GRAFANA_IMAGE
    """Pinned Grafana image (docker target)."""
    grafana_port: Annotated[int, Field(ge=1, le=65535)] = 3001
    """Host port of Grafana (docker target)."""
    prometheus_operator: bool = False
    """Kubernetes target: ServiceMonitors and a PrometheusRule for the prometheus-operator instead of prometheus.io annotations."""
    operator_labels: dict[str, str] = {}
    """Labels the operator's Prometheus selects ServiceMonitors and PrometheusRules by (kube-prometheus-stack: ``{release: <its release>}``)."""
    alerts: AlertsConfig = AlertsConfig()
    """Alert rules and their thresholds."""


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
    name: Annotated[str, Field(pattern=GPU_NAME)]
    """GPU type of the cluster's GPU nodes, e.g. ``NVIDIA L40S``."""
    memory_gib: Annotated[float, Field(gt=0, le=1024)]
    """Memory of one such GPU in GiB as CUDA reports it (nvidia-smi's memory.total less memory.reserved)."""
    per_node: Annotated[int | None, Field(ge=1, le=64)] = None
    """GPUs each GPU node has: a pod (``tensorParallel`` x ``pipelineParallel`` GPUs per node) must fit on one, and refusals
    suggest the node count a model needs. Unchecked when left out."""


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


SECRET_CONFIG_KEY = r"^[a-z][A-Za-z0-9]{0,62}$"
"""A Pulumi config key (camelCase) of this stack's namespace that holds a secret, e.g. ``openaiKey``."""
OLLAMA_TAG = r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*(:[A-Za-z0-9._-]{1,128})?$"
"""An Ollama model name with an optional tag (``llama3.2:3b``, ``hf.co/org/repo:Q4_K_M`` lowercased): safe in a shell word."""


class EndpointModelConfig(Section):
    name: str
    """Served name (DNS-1123 label, unique across the stack): what clients put in ``model``, and in the path
    ``/<name>/v1/...``."""
    model: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@+=~-]{0,255}$")] = None
    """The model id the endpoint knows it by (``ai/smollm2``, ``gpt-4.1-mini``); the gateway puts it in the request's
    ``model``. Defaults to ``name``."""
    served_model_names: list[Annotated[str, Field(pattern=SERVED_NAME.pattern)]] = []
    """Extra names the model answers to (aliases)."""
    task: Literal["generate", "embed"] = "generate"
    """``embed``: an embedding model, never offered to Open WebUI as a chat model."""
    max_model_len: Annotated[int | None, Field(ge=16, le=16_777_216)] = None
    """Its context length, listed in ``GET /v1/models`` (left out when unknown)."""


class EndpointTlsConfig(Section):
    ca_pem: Annotated[str | None, Field(min_length=1, max_length=1_000_000)] = None
    """PEM certificates of the CAs the gateway trusts for this endpoint (a private CA); left out, the gateway image's system
    bundle. Set it with ``pulumi config set --path 'vllm-stack:endpoints[0].tls.caPem' "$(cat ca.pem)"``."""
    server_name: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9*](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")] = None
    """Name sent in SNI and required in the endpoint's certificate; defaults to the URL's host."""


class EndpointConfig(Section):
    """A server the stack does not run: a Mac's Docker Model Runner, an Ollama box, another vLLM host, a hosted API."""

    name: str
    """DNS-1123 label naming the endpoint in the plan, logs and errors."""
    url: Annotated[str, Field(pattern=URL.pattern)]
    """Base URL of its OpenAI-compatible API, under which ``/chat/completions`` and ``/models`` live (Docker Model Runner from
    a container: ``http://model-runner.docker.internal/engines/v1``; Ollama: ``http://host:11434/v1``; vLLM:
    ``http://host:8000/v1``). https is verified against ``tls``."""
    api_key_secret: Annotated[str | None, Field(pattern=SECRET_CONFIG_KEY)] = None
    """Name of the config key holding this endpoint's key (set it with ``pulumi config set --secret vllm-stack:<name>
    <key>``); the gateway sends it instead of the client's key. Left out, the endpoint gets no key."""
    key_header: Literal["authorization", "x-api-key"] = "authorization"
    """How the key is sent: ``Authorization: Bearer <key>`` (OpenAI-compatible servers) or ``x-api-key: <key>``
    (Anthropic's API)."""
    messages: bool = False
    """The endpoint answers Anthropic's Messages API at ``<url>/messages`` and ``<url>/messages/count_tokens`` (vLLM,
    Docker Model Runner, Ollama, Anthropic); the gateway routes ``/v1/messages`` for its models there."""
    tls: EndpointTlsConfig = EndpointTlsConfig()
    """Certificate verification for an https URL (always on)."""
    connect_timeout_seconds: Annotated[int, Field(ge=1, le=600)] = 10
    """Longest wait for a connection (and the TLS handshake)."""
    read_timeout_seconds: Annotated[int | None, Field(ge=1, le=86_400)] = None
    """Longest wait for data from the endpoint; defaults to ``gateway.readTimeoutSeconds``, which it may not exceed."""
    models: Annotated[list[EndpointModelConfig], Field(min_length=1)]
    """The models the gateway serves from this endpoint."""


DEFAULT_OLLAMA_IMAGE = "ollama/ollama:0.32.15"
"""ollama/ollama v0.32.15 (2026-08-19): Docker Hub tags are the release without its ``v`` (.github/workflows/release.yaml,
docker/metadata-action ``type=semver,pattern={{version}}``). The settings below were read from that release's envconfig."""


class OllamaModelConfig(Section):
    name: str
    """Served name (DNS-1123 label, unique across the stack)."""
    model: Annotated[str, Field(pattern=OLLAMA_TAG)]
    """The Ollama model to pull and serve, e.g. ``llama3.2:3b``."""
    served_model_names: list[Annotated[str, Field(pattern=SERVED_NAME.pattern)]] = []
    """Extra names the model answers to (aliases)."""
    task: Literal["generate", "embed"] = "generate"
    """``embed``: an embedding model (``nomic-embed-text``), never offered as a chat model."""
    memory_gib: Annotated[float | None, Field(gt=0, le=2048)] = None
    """GPU memory it holds once loaded at this stack's ``contextLength`` and ``numParallel`` (``ollama ps`` shows it);
    left out, the plan estimates it for the tags it knows (file size plus KV cache)."""


class OllamaConfig(Section):
    """Ollama run by the stack (docker target): its models are served through the gateway like any other."""

    image: Image = DEFAULT_OLLAMA_IMAGE
    """Pinned ollama/ollama image."""
    gpus: list[Annotated[int, Field(ge=0)]] = []
    """Device indices from ``gpus`` it may use; empty: CPU only. On a GPU shared with vLLM servers the plan sets its memory aside."""
    models: Annotated[list[OllamaModelConfig], Field(min_length=1)]
    """Models pulled at start (when missing from the volume) and served."""
    keep_alive: Annotated[str, Field(pattern=r"^(-1|[0-9]{1,9}|([0-9]{1,9}(\.[0-9]{1,6})?(h|m|s|ms))+)$")] = "5m"
    """How long a model stays loaded after its last request (``OLLAMA_KEEP_ALIVE``: a duration like ``30m``, seconds, or
    ``-1`` for ever)."""
    num_parallel: Annotated[int, Field(ge=1, le=64)] = 1
    """Requests each model serves at once (``OLLAMA_NUM_PARALLEL``); its KV cache holds contextLength x numParallel tokens."""
    context_length: Annotated[int, Field(ge=256, le=1_048_576)] = 4096
    """Context of every request (``OLLAMA_CONTEXT_LENGTH``; Ollama's own default depends on the GPU's memory, so the stack
    always sets it)."""
    max_loaded_models: Annotated[int | None, Field(ge=1, le=64)] = None
    """Models loaded at once (``OLLAMA_MAX_LOADED_MODELS``); defaults to all of ``models``, which the plan reserves memory for."""
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = "f16"
    """KV cache precision (``OLLAMA_KV_CACHE_TYPE``); q8_0 halves it, q4_0 quarters it (flash attention is turned on for them)."""
    startup_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 30
    """Time allowed for pulling the models on first start."""


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
    models: list[ModelConfig] = []
    """The models vLLM serves on the stack's GPUs; drives servers, routes, Open WebUI and scrape targets."""
    swap_groups: dict[SwapGroupName, SwapGroupConfig] = {}
    """Settings of the swap groups that models join (``models[].swap.group``); a group not listed here takes the defaults."""
    endpoints: list[EndpointConfig] = []
    """Servers the stack does not run whose models the gateway serves too (external endpoints)."""
    ollama: OllamaConfig | None = None
    """Ollama run by the stack (docker target)."""
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
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            # OSError: a region folder (``Europe``) or a name too long for a file name
            near = difflib.get_close_matches(v[:64], sorted(zoneinfo.available_timezones()), n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(near[:-1]) + ' or ' if near[:-1] else ''}{near[-1]}?)" if near else ""
            raise ValueError(f"unknown time zone {shown(v, 64)!r}{hint}; use an IANA name such as Asia/Seoul or UTC") from None
        return v

    @property
    def runs_prometheus(self) -> bool:
        """``monitoring.prometheus``, defaulting to on for docker and off for kubernetes."""
        return self.monitoring.prometheus if self.monitoring.prometheus is not None else self.target == "docker"

    def docker_gpus(self, m: ModelConfig) -> list[int]:
        """A docker model's device indices: ``models[].gpus``, else the first of ``gpus`` (none when the stack lists none)."""
        return list(m.gpus) if m.gpus is not None else [self.gpus[0].index] if self.gpus else []

    @property
    def runs_dcgm(self) -> bool:
        """``monitoring.dcgm``, defaulting to on where there are NVIDIA GPUs: a kubernetes stack, or a docker stack listing ``gpus``."""
        return self.monitoring.dcgm if self.monitoring.dcgm is not None else (self.target == "kubernetes" or bool(self.gpus))

    @property
    def grafana_dashboards(self) -> bool:
        """``monitoring.grafana``, defaulting to on for docker when the stack runs Prometheus (its Grafana reads that one) and off for kubernetes."""
        return self.monitoring.grafana if self.monitoring.grafana is not None else self.target == "docker" and self.runs_prometheus


def _scalar(annotation: object) -> bool:
    return annotation in (bool, str) or get_origin(annotation) is Literal


SCALAR_KEYS = tuple(yaml_key(n) for n, f in StackConfig.model_fields.items() if _scalar(f.annotation))
"""Keys Pulumi hands over as plain strings (declared in Pulumi.yaml); the others hold YAML mappings or lists."""
STRUCTURED_KEYS = tuple(yaml_key(n) for n, f in StackConfig.model_fields.items() if not _scalar(f.annotation))
BOOLEAN_KEYS = tuple(yaml_key(n) for n, f in StackConfig.model_fields.items() if f.annotation is bool)
