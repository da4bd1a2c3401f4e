"""Keys people try for what the stack does not do: an unknown key among these says so, and what to do instead, rather
than "unknown key". Only for features no key of the schema provides (a key the schema knows never reaches here)."""

from __future__ import annotations

PLATFORM = (
    "not supported: the stack runs vLLM's CUDA images on NVIDIA GPUs under Linux (docker or kubernetes), there is no other "
    "device to choose; other hardware (a Mac, AMD, CPU) serves its models itself behind the stack's gateway "
    '(README, "What it runs on")'
)
TLS = (
    "not supported: the gateway serves plain HTTP; on kubernetes terminate TLS at the Ingress (gateway.ingress.tlsSecret), "
    "on docker put a TLS proxy in front of it and keep docker.bindAddress: 127.0.0.1"
)

UNSUPPORTED: dict[str, dict[str, str]] = {
    # section (the pydantic model's name) -> key as people write it (compared without case, '_' or '-') -> message
    "StackConfig": {
        "platform": PLATFORM,
        "device": PLATFORM,
        "accelerator": PLATFORM,
        "tls": TLS,
        "backup": "not supported: the data volumes are kept on destroy; docs/guides/backup-restore.md copies them",
        "logging": (
            "not supported: the stack runs no log collector; containers log to json-file with rotation (docker.logMaxSize, "
            "docker.logMaxFiles), pods to the cluster's logging"
        ),
    },
    "GatewayConfig": {
        "tls": TLS,
        "https": TLS,
        "ssl": TLS,
        "certificate": TLS,
        "rateLimit": "not a key: per-key limits are gateway.keyLimits: {<key name>: {requestsPerMinute: 600, concurrent: 16}}",
        "apiKeys": "API keys are a secret, never in the stack file: pulumi config set --secret vllm-stack:apiKeys 'name:key,...'",
    },
    "ModelConfig": {
        "device": PLATFORM,
        "image": "not supported: one vLLM image serves every model of a stack (image.base)",
        "speculativeConfig": (
            "not supported as a key: the plan does not count a draft model's memory; --speculative-config in extraArgs "
            "passes through, with room left for it (a fixed gpuMemoryUtilization)"
        ),
        "draftModel": "not supported as a key: see models[].extraArgs and --speculative-config (the plan does not count the draft)",
        "cpuOffloadGb": "not supported: the plan holds every weight on the GPU; use a quantized checkpoint or tensorParallel",
        "dataParallel": (
            "not supported: one server per model entry; more copies are replicas on kubernetes, or another entry on other "
            "GPUs on docker (the gateway routes each name to one server)"
        ),
    },
    "GpuConfig": {
        "mig": "not supported: a GPU is addressed by its index and shared by memory fractions; MIG instances are not planned",
        "migProfile": "not supported: a GPU is addressed by its index and shared by memory fractions; MIG instances are not planned",
        "vendor": PLATFORM,
    },
    "WebuiConfig": {
        "ldap": "not supported: Open WebUI's sign-in through the stack is OpenID Connect (webui.oidc), or its own accounts",
    },
}


def _fold(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def unsupported(section: str, key: str) -> str | None:
    """The message for a key of ``section`` (a config model's name) that names a feature the stack lacks, if it is one."""
    return {_fold(k): v for k, v in UNSUPPORTED.get(section, {}).items()}.get(_fold(key))
