"""Where everything lives: service names, container ports, paths, volumes, secrets, addresses and URLs.

Each of these facts is written here once. The planner puts the results on the plan; renderers and
components read them from there and never build a name, a port or an address themselves.
"""

from __future__ import annotations

import math

from stacks.plan.types import SecretRef, Service, Target

# Container ports: what each process listens on inside its container.
VLLM_PORT = 8000
"""``vllm serve --port``; the stack passes it explicitly."""
GATEWAY_PORT = 8080
"""nginx's ``listen`` in the rendered config (unprivileged, so the port needs no capability)."""
GATEWAY_METRICS_PORT = 9113
"""The gateway's Prometheus endpoint: a second nginx ``server`` that is never published and needs no client key
(9113 is where nginx exporters conventionally listen)."""
WEBUI_PORT = 8080
"""Open WebUI's image serves on 8080."""
DCGM_PORT = 9400
"""dcgm-exporter's default listen address ``:9400`` (``DCGM_EXPORTER_LISTEN``)."""
PROMETHEUS_PORT = 9090
"""Prometheus' default ``--web.listen-address``."""
GRAFANA_PORT = 3000
"""Grafana's image serves on 3000 (``EXPOSE 3000`` in grafana/grafana's Dockerfile)."""
SWAP_PORT = 8000
"""The swapper's own port on a swap group's server: health, state and metrics (``stacks/swap/swapper.py``)."""
SWAP_MEMBER_PORT = 8001
"""The first member's port on its group's server; each member has its own (the gateway's upstream for it)."""
SWAP_ENGINE_PORT = 18001
"""The first member's vLLM port, on 127.0.0.1 inside the group's server only: vLLM's development routes (sleep, RPC)
answer without a key (vLLM 0.26.0 vllm/entrypoints/serve/utils/server_utils.py: the key guards /v1, /v2 and
/inference only), so nothing outside the swapper may reach them."""
OLLAMA_PORT = 11434
"""ollama/ollama's image: ``ENV OLLAMA_HOST=0.0.0.0:11434``, ``EXPOSE 11434`` (Dockerfile, v0.32.15)."""

VLLM_MASTER_PORT = 29501
"""``vllm serve --master-port`` of a server spanning nodes: the torch.distributed store on the leader that every node's
ranks join (ParallelConfig.master_port's default, vllm/config/parallel.py 0.26; the stack passes it explicitly)."""
LEADER_ADDRESS_ENV = "LWS_LEADER_ADDRESS"
WORKER_INDEX_ENV = "LWS_WORKER_INDEX"
"""What the LeaderWorkerSet controller puts in every container of a group (sigs.k8s.io/lws v0.9.0,
api/leaderworkerset/v1/leaderworkerset_types.go; pkg/utils/pod AddLWSVariables): the leader pod's DNS name
``<set>-<group>.<set>.<namespace>`` and the pod's index in its group (0 for the leader)."""

HEALTH_PATH = "/health"
"""vLLM, the gateway, Open WebUI and dcgm-exporter all answer here."""
METRICS_PATH = "/metrics"
"""vLLM and dcgm-exporter publish Prometheus metrics here."""

# Service names (docker network aliases, Kubernetes Services).
GATEWAY = "gateway"
WEBUI = "open-webui"
DCGM = "dcgm-exporter"
PROMETHEUS = "prometheus"
GRAFANA = "grafana"
OLLAMA = "ollama"
"""The stack's Ollama: its service, and the endpoint name its models are served under."""

# Prometheus job names of the stack's scrape targets (docker scrape config; ServiceMonitor relabelling on kubernetes).
JOB_VLLM = "vllm"
JOB_DCGM = "dcgm"
JOB_GATEWAY = "gateway"
JOB_SWAP = "swap"


def vllm_service(model: str) -> str:
    return f"vllm-{model}"


def vllm_group(model: str) -> str:
    """The LeaderWorkerSet of a model spanning nodes. Not its Service's name: the controller creates a headless Service
    named like the set for the pods' DNS names (pkg/utils/controller CreateHeadlessServiceIfNotExists, lws v0.9.0)."""
    return f"vllm-{model}-group"


GROUP_NAME_MAX = 49
"""Longest LeaderWorkerSet name: its worker StatefulSets are ``<set>-<group index>`` (up to 2 digits for 100 replicas),
and a StatefulSet's name leaves room for the 11 characters of its pods' controller-revision-hash label within 63."""


def swap_service(group: str) -> str:
    """A swap group's server; never a ``vllm-<model>`` name."""
    return f"swap-{group}"


def external_service(model: str) -> str:
    """The gateway's upstream for an endpoint's model (an internal server of the gateway that speaks to the endpoint)."""
    return f"ext-{model}"


# Logical data volumes: docker named volumes, Kubernetes PVCs (or folders in one).
MODEL_CACHE = "model-cache"
VLLM_CACHE = "vllm-cache"
WEBUI_DATA = "webui-data"
PROMETHEUS_DATA = "prometheus-data"
OLLAMA_DATA = "ollama-data"
RETAIN_LABEL = "vllm-stack/retain-on-destroy"
"""Label on every data volume, PVC and the namespace: ``"true"`` where ``pulumi destroy`` keeps it.
Written from the same flag as the resource's ``retainOnDelete`` option, which policy packs cannot see
(the analyzer protocol carries no such option), so ``policy/`` checks this label instead."""


def retain_labels(retain: bool) -> dict[str, str]:
    return {RETAIN_LABEL: str(retain).lower()}


GPU_SHARE_LABEL = "vllm-stack/gpu-share"
"""Label on a docker container that holds GPU memory without a vLLM command line of its own (a swap group's server,
Ollama on GPUs vLLM servers share): ``"0:0.953,1:0.95"``, the plan's reservation over each GPU's total. The policy
pack's gpu-fractions-fit adds it to the fractions of the servers beside it, which it reads from their commands."""


def gpu_share_labels(reserved_gib: float, gpus: dict[int, float]) -> dict[str, str]:
    """``gpus``: device index -> its total in GiB. Rounded up: the policy must never see less than the plan holds."""
    shares = ",".join(f"{g}:{math.ceil(reserved_gib / total * 1000) / 1000:.3f}" for g, total in sorted(gpus.items()))
    return {GPU_SHARE_LABEL: shares} if gpus else {}


def parse_gpu_shares(value: str) -> dict[str, float]:
    """The label's value back as device -> fraction (malformed entries are left out)."""
    shares: dict[str, float] = {}
    for entry in value.split(","):
        device, _, fraction = entry.partition(":")
        try:
            shares[device.strip()] = float(fraction)
        except ValueError:
            continue
    return shares


# Stack secrets as the workloads reference them.
KEYS_FILE = "keys.conf"
"""The gateway's secret include: client keys and vLLM's own key."""
HF_TOKEN = SecretRef("hf-token", "token", optional=True)
VLLM_API_KEY = SecretRef("vllm-api-key", "key")
GATEWAY_KEYS = SecretRef("gateway-keys", KEYS_FILE)
WEBUI_SECRET_KEY = SecretRef("open-webui", "secret-key")
WEBUI_GATEWAY_KEY = SecretRef("open-webui", "gateway-key")
WEBUI_OIDC_CLIENT_SECRET = SecretRef("open-webui", "oidc-client-secret")
GRAFANA_ADMIN_PASSWORD = SecretRef("grafana", "admin-password")


def service(
    target: Target,
    namespace: str | None,
    name: str,
    port: int,
    published: int | None = None,
    health_path: str | None = HEALTH_PATH,
    metrics_path: str | None = None,
    metrics_port: int | None = None,
) -> Service:
    """A service and the address its peers use: the docker alias and container port, or the
    Kubernetes Service's cluster DNS name and Service port (``published``, else ``port``)."""
    address = f"{name}:{port}" if target == "docker" else f"{name}.{namespace}.svc:{published or port}"
    return Service(name=name, port=port, published=published, address=address, health_path=health_path, metrics_path=metrics_path, metrics_port=metrics_port)


def docker_host(bind_address: str) -> str:
    """Host name for URLs of ports published on ``bind_address``."""
    return "localhost" if bind_address in ("0.0.0.0", "::") else bind_address
