"""Endpoints the stack does not run: each reachable from here, and listing the model ids the gateway will ask it for."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

from stacks.doctor.probes import EndpointProbe, KeyRefused, ProbeError
from stacks.doctor.result import Check
from stacks.plan.types import EndpointPlan, StackPlan

HOST_EQUIVALENTS = {"model-runner.docker.internal": "localhost:12434", "host.docker.internal": "localhost"}
"""Names that resolve only inside Docker Desktop's containers, and where the host reaches the same server: Docker Model
Runner on its TCP port 12434 once host access is on (docs.docker.com, DMR REST API: "Determine the base URL")."""


def key_variable(secret: str) -> str:
    """The environment variable the doctor reads an endpoint's key from: ``hostedKey`` -> ``VLLM_STACK_HOSTED_KEY``."""
    return "VLLM_STACK_" + re.sub(r"(?<!^)(?=[A-Z])", "_", secret).upper()


def _from_host(url: str) -> tuple[str, str]:
    """The URL as this host reaches it, and a note when that differs from what the gateway's container uses."""
    parts = urlsplit(url)
    if parts.hostname in HOST_EQUIVALENTS and parts.port is None:
        here = HOST_EQUIVALENTS[parts.hostname]
        return urlunsplit(parts._replace(netloc=here)), f" (from this host: {here}; {parts.hostname} resolves inside containers)"
    return url, ""


def _listed(model: str, ids: list[str]) -> bool:
    """Docker Model Runner and Ollama list ``ai/smollm2:latest`` for ``ai/smollm2`` (DMR v1.2.6 models/api_test.go)."""
    return model in ids or (":" not in model.rsplit("/", 1)[-1] and f"{model}:latest" in ids)


def _check(plan: StackPlan, e: EndpointPlan, probe: EndpointProbe) -> Check:
    name = f"endpoint {e.name}"
    url, note = _from_host(e.url)
    headers: dict[str, str] = {}
    env = key_variable(e.key_secret) if e.key_secret else None
    key = os.environ.get(env) if env else None
    if key:
        headers = {"x-api-key": key} if e.key_header == "x-api-key" else {"Authorization": f"Bearer {key}"}
    wanted = [m.upstream_model for m in plan.externals if m.endpoint == e.name]
    try:
        ids = probe.models(url, headers, e.ca_pem, e.tls_name)
    except KeyRefused as err:
        if env and not key:
            return Check("endpoints", name, "warn", f"{url} answers{note}, but {err.message}", f"export {env}=<the key> to let the doctor list its models")
        return Check(
            "endpoints", name, "fail", f"{url}{note}: {err.message}", f"check the key in vllm-stack:{e.key_secret}" if e.key_secret else "set apiKeySecret"
        )
    except ProbeError as err:
        return Check("endpoints", name, "fail", f"{err.message}{note}", err.fix)
    missing = [m for m in wanted if not _listed(m, ids)]
    if missing:
        pull = "; on Docker Model Runner: " + ", ".join(f"docker model pull {m}" for m in missing) if "/engines" in e.url else ""
        shown = ", ".join(ids[:8]) + (" ..." if len(ids) > 8 else "") or "none"
        return Check(
            "endpoints",
            name,
            "fail",
            f"{url}{note} does not list {', '.join(missing)} (it lists {shown})",
            f"pull or load the model there, or fix its model id{pull}",
        )
    return Check("endpoints", name, "pass", f"{url}{note} lists {', '.join(wanted)}")


def endpoint_checks(plan: StackPlan, probe: EndpointProbe) -> list[Check]:
    """One check per external endpoint; the stack's own Ollama starts with the stack and is not there yet."""
    return [_check(plan, e, probe) for e in plan.endpoints if e.kind == "external"]
