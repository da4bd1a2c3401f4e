"""External endpoints and the stack's Ollama as the plan names them: where each lives, how the gateway reaches it,
and which served names it answers. No GPU is planned here; the Ollama's memory reservation is ``plan.ollama``'s."""

from __future__ import annotations

from typing import Literal

from stacks.catalog import ollama as ollama_catalog
from stacks.config.schema import URL, EndpointConfig, OllamaConfig, StackConfig
from stacks.errors import Problem
from stacks.plan import topology as net
from stacks.plan.memory import GIB
from stacks.plan.types import EndpointPlan, ExternalModelPlan, OllamaModelPlan, OllamaPlan

DEFAULT_PORTS = {"http": 80, "https": 443}


def _endpoint(ep: EndpointConfig, gateway_read_timeout: int) -> EndpointPlan:
    url = URL.match(ep.url)
    assert url is not None, "the schema checked the URL"
    scheme: Literal["http", "https"] = "https" if url["scheme"] == "https" else "http"
    https = scheme == "https"
    return EndpointPlan(
        name=ep.name,
        kind="external",
        url=ep.url,
        scheme=scheme,
        host=url["host"],
        port=int(url["port"] or DEFAULT_PORTS[scheme]),
        base_path=url["path"],
        messages=ep.messages,
        count_tokens=ep.messages,
        key_secret=ep.api_key_secret,
        key_header=ep.key_header,
        tls_name=(ep.tls.server_name or url["host"]) if https else None,
        ca_pem=ep.tls.ca_pem if https else None,
        connect_timeout_seconds=ep.connect_timeout_seconds,
        read_timeout_seconds=ep.read_timeout_seconds or gateway_read_timeout,
    )


def external_plans(config: StackConfig) -> tuple[list[EndpointPlan], list[ExternalModelPlan]]:
    """Every endpoint (the stack's Ollama last) and the models the gateway serves from them."""
    read_timeout = config.gateway.read_timeout_seconds
    endpoints = [_endpoint(ep, read_timeout) for ep in config.endpoints]
    models = [
        ExternalModelPlan(
            name=m.name,
            endpoint=ep.name,
            upstream_model=m.model or m.name,
            served_names=[m.name, *m.served_model_names],
            task=m.task,
            max_model_len=m.max_model_len,
            service=net.external_service(m.name),
        )
        for ep in config.endpoints
        for m in ep.models
    ]
    if config.ollama is not None:
        service = net.service(config.target, None, net.OLLAMA, net.OLLAMA_PORT, health_path=None)
        endpoints.append(
            EndpointPlan(
                name=net.OLLAMA,
                kind="ollama",
                url=f"http://{service.address}/v1",
                scheme="http",
                host=service.name,
                port=service.port,
                base_path="/v1",
                # server/routes.go v0.32.15 registers POST /v1/messages, and no /v1/messages/count_tokens
                messages=True,
                count_tokens=False,
                key_secret=None,
                key_header="authorization",
                tls_name=None,
                ca_pem=None,
                connect_timeout_seconds=10,
                read_timeout_seconds=read_timeout,
            )
        )
        models += [
            ExternalModelPlan(
                name=m.name,
                endpoint=net.OLLAMA,
                upstream_model=m.model,
                served_names=[m.name, *m.served_model_names],
                task=m.task,
                max_model_len=config.ollama.context_length,
                service=net.external_service(m.name),
            )
            for m in config.ollama.models
        ]
    return endpoints, models


def _env(o: OllamaConfig, timezone: str) -> dict[str, str]:
    """Ollama's settings (envconfig/config.go, v0.32.15); the context length is always set, since Ollama's own default
    depends on the GPU's memory (4k/32k/256k) and the plan sizes the KV cache by it."""
    env = {
        "OLLAMA_HOST": f"0.0.0.0:{net.OLLAMA_PORT}",
        "OLLAMA_KEEP_ALIVE": o.keep_alive,
        "OLLAMA_NUM_PARALLEL": str(o.num_parallel),
        "OLLAMA_CONTEXT_LENGTH": str(o.context_length),
        "OLLAMA_MAX_LOADED_MODELS": str(o.max_loaded_models or len(o.models)),
        # no remote inference or web search through ollama.com: a private stack's prompts stay on it
        "OLLAMA_NO_CLOUD": "1",
        "TZ": timezone,
    }
    if o.kv_cache_type != "f16":
        # passed to llama-server as --cache-type-k/-v (llm/llama_server.go); a quantized V cache needs flash attention
        env |= {"OLLAMA_KV_CACHE_TYPE": o.kv_cache_type, "OLLAMA_FLASH_ATTENTION": "1"}
    return env


def ollama_plan(config: StackConfig, vllm_gpus: set[int], problems: list[Problem]) -> OllamaPlan | None:
    """The stack's Ollama: its workload's settings and what it holds on GPUs shared with vLLM servers (``vllm_gpus``)."""
    o = config.ollama
    if o is None:
        return None
    shared = sorted(set(o.gpus) & vllm_gpus)
    models: list[OllamaModelPlan] = []
    for i, m in enumerate(o.models):
        known = ollama_catalog.find(m.model)
        if not o.gpus:
            models.append(OllamaModelPlan(m.name, m.model, 0.0, "none"))
        elif m.memory_gib is not None:
            models.append(OllamaModelPlan(m.name, m.model, m.memory_gib, "declared"))
        elif known is not None:
            gib = ollama_catalog.memory_bytes(known, o.context_length, o.num_parallel, o.kv_cache_type) / GIB
            models.append(OllamaModelPlan(m.name, m.model, round(gib, 3), "catalog"))
        else:
            if shared:
                problems.append(
                    Problem(
                        f"ollama.models[{i}].memoryGiB",
                        f"the plan does not know {m.model!r} and Ollama shares GPU {shared} with vLLM servers; set memoryGiB to what "
                        f"`ollama ps` shows for it at contextLength {o.context_length} and numParallel {o.num_parallel}",
                    )
                )
            models.append(OllamaModelPlan(m.name, m.model, 0.0, "declared"))
    loaded = o.max_loaded_models or len(o.models)
    reserved = sum(sorted((m.memory_gib for m in models), reverse=True)[:loaded])
    service = net.service(config.target, None, net.OLLAMA, net.OLLAMA_PORT, health_path=None)
    return OllamaPlan(
        service=service,
        image=o.image,
        gpus=list(o.gpus),
        env=_env(o, config.timezone),
        models=models,
        pull=list(dict.fromkeys(m.model for m in o.models)),
        reserved_gib=round(reserved, 3),
        shared_gpus=shared,
        startup_seconds=o.startup_minutes * 60,
    )
