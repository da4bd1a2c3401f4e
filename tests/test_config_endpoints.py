"""Config and plan of models served elsewhere: external endpoints, the stack's Ollama and a stack without NVIDIA GPUs.
Every refusal names its key and says how to fix it, before anything is planned."""

from __future__ import annotations

from typing import Any

import pytest

from stacks.catalog import ollama as ollama_catalog
from stacks.config import parse
from stacks.errors import ConfigError
from stacks.plan import plan
from tests.conftest import docker_raw, kube_raw

TINY = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"


def endpoint(**kw: Any) -> dict[str, Any]:
    return {"name": "mac", "url": "http://model-runner.docker.internal/engines/v1", "models": [{"name": "smollm2", "model": "ai/smollm2"}]} | kw


def no_gpu(**kw: Any) -> dict[str, Any]:
    return docker_raw(models=[], gpus=[], endpoints=[endpoint()]) | kw


def problems(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as err:
        plan(parse(raw))
    return {p.key: p.message for p in err.value.problems}


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("url with a query", docker_raw(endpoints=[endpoint(url="http://h/v1?key=x")]), "endpoints[0].url", "is not a base URL"),
    ("url with a user", docker_raw(endpoints=[endpoint(url="https://user:pw@h/v1")]), "endpoints[0].url", "without query or user"),
    ("port out of range", docker_raw(endpoints=[endpoint(url="http://h:70000/v1")]), "endpoints[0].url", "not a TCP port"),
    ("tls on http", docker_raw(endpoints=[endpoint(tls={"serverName": "h"})]), "endpoints[0].tls", "https URLs only"),
    (
        "read timeout over the gateway's",
        docker_raw(endpoints=[endpoint(readTimeoutSeconds=901)]),
        "endpoints[0].readTimeoutSeconds",
        "raise gateway.readTimeoutSeconds",
    ),
    ("key named like a stack key", docker_raw(endpoints=[endpoint(apiKeySecret="apiKeys")]), "endpoints[0].apiKeySecret", "one of the stack's own keys"),
    ("key not set", docker_raw(endpoints=[endpoint(apiKeySecret="macKey")]), "endpoints[0].apiKeySecret", "pulumi config set --secret vllm-stack:macKey"),
    ("key in plain text", docker_raw(endpoints=[endpoint(apiKeySecret="macKey")], macKey="sk-plain"), "macKey", "is in plain text"),
    ("model id with a dollar", docker_raw(endpoints=[endpoint(models=[{"name": "m", "model": "a$b"}])]), "endpoints[0].models[0].model", "does not match"),
    ("endpoint named twice", docker_raw(endpoints=[endpoint(), endpoint(models=[{"name": "other"}])]), "endpoints[1].name", "name each endpoint once"),
    (
        "ollama's endpoint name",
        docker_raw(endpoints=[endpoint(name="ollama")], ollama={"models": [{"name": "l", "model": "llama3.2"}]}),
        "endpoints[0].name",
        "already the name of ollama",
    ),
    ("served name of a vLLM model", docker_raw(endpoints=[endpoint(models=[{"name": "tiny"}])]), "endpoints[0].models[0].name", "already served by models[0]"),
    (
        "alias differing in case",
        docker_raw(endpoints=[endpoint(models=[{"name": "s", "servedModelNames": ["QWEN"]}])]),
        "endpoints[0].models[0].servedModelNames[0]",
        "matched ignoring case",
    ),
    ("ollama name clash", docker_raw(ollama={"models": [{"name": "qwen", "model": "llama3.2"}]}), "ollama.models[0].name", "already served by models[1]"),
    ("nothing to serve", docker_raw(models=[]), "models", "serves no model"),
    ("vLLM models without gpus", docker_raw(gpus=[]), "gpus", "serve every model from endpoints"),
    ("vLLM image on a GPU-less stack", no_gpu(image={"base": "vllm/vllm-openai:v0.26.0"}), "image.base", "no vLLM image is built"),
    ("DCGM on a GPU-less stack", no_gpu(monitoring={"dcgm": True}), "monitoring.dcgm", "no NVIDIA GPU for the DCGM exporter"),
    ("DCGM port on a GPU-less stack", no_gpu(monitoring={"dcgmPort": 9500}), "monitoring.dcgmPort", "runs no DCGM exporter"),
    ("ollama GPU on a Mac", no_gpu(ollama={"gpus": [0], "models": [{"name": "l", "model": "llama3.2"}]}), "ollama.gpus", "passes no GPU into containers"),
    ("ollama GPU unknown", docker_raw(ollama={"gpus": [3], "models": [{"name": "l", "model": "llama3.2"}]}), "ollama.gpus", "known: [0, 1]"),
    ("ollama on kubernetes", kube_raw(ollama={"models": [{"name": "l", "model": "llama3.2"}]}), "ollama", "docker target only"),
    ("ollama unpinned", docker_raw(ollama={"image": "ollama/ollama:latest", "models": [{"name": "l", "model": "llama3.2"}]}), "ollama.image", "moves"),
    (
        "keep-alive not a duration",
        docker_raw(ollama={"keepAlive": "forever", "models": [{"name": "l", "model": "llama3.2"}]}),
        "ollama.keepAlive",
        "does not match",
    ),
    (
        "more loaded than listed",
        docker_raw(ollama={"maxLoadedModels": 3, "models": [{"name": "l", "model": "llama3.2"}]}),
        "ollama.maxLoadedModels",
        "exceeds the 1 models",
    ),
    (
        "unknown tag on a shared GPU",
        docker_raw(ollama={"gpus": [0], "models": [{"name": "l", "model": "someone/model:7b"}]}),
        "ollama.models[0].memoryGiB",
        "`ollama ps`",
    ),
    (
        "ollama too big for its shared GPU",
        docker_raw(ollama={"gpus": [0], "models": [{"name": "l", "model": "x:1b", "memoryGiB": 30}]}),
        "ollama",
        "give Ollama a GPU of its own",
    ),
    (
        "ollama beside a swap group that then does not fit",
        docker_raw(
            gpus=[{"index": 0, "name": "RTX 4090", "memoryGiB": 23.52}],
            models=[
                {"name": "a", "model": "Qwen/Qwen3-8B", "gpus": [0], "maxModelLen": 8192, "maxNumSeqs": 2, "swap": {"group": "chat"}},
                {"name": "b", "model": "mistralai/Mistral-7B-Instruct-v0.3", "gpus": [0], "maxModelLen": 8192, "maxNumSeqs": 2, "swap": {"group": "chat"}},
            ],
            ollama={"gpus": [0], "models": [{"name": "l", "model": "llama3.1"}]},
        ),
        "ollama",
        "give Ollama a GPU of its own",
    ),
]


@pytest.mark.parametrize(("raw", "key", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refusals_name_the_key_and_the_fix(raw: dict[str, Any], key: str, words: str) -> None:
    found = problems(raw)
    assert key in found, found
    assert words in found[key], found[key]


def test_a_gpu_less_stack_plans_no_vllm_no_dcgm_and_routes_its_endpoints() -> None:
    p = plan(parse(no_gpu(ollama={"models": [{"name": "llama", "model": "llama3.2"}]})))
    assert (p.models, p.gpus, p.dcgm, p.image.build) == ([], [], None, False)
    assert [(r.served_name, r.service, r.kind) for r in p.routes] == [("smollm2", "ext-smollm2", "external"), ("llama", "ext-llama", "external")]
    assert [s.job for s in p.scrape_targets] == ["gateway"]
    assert p.ollama is not None and p.ollama.gpus == [] and p.ollama.reserved_gib == 0 and p.ollama.models[0].memory_source == "none"
    assert p.webui is not None and p.webui.chat_models == ["smollm2", "llama"]


def test_endpoint_plan() -> None:
    raw = docker_raw(
        endpoints=[
            endpoint(),
            {
                "name": "hosted",
                "url": "https://api.example.test:8443/openai/v1/",
                "apiKeySecret": "hostedKey",
                "keyHeader": "x-api-key",
                "tls": {"serverName": "edge.example.test"},
                "models": [{"name": "emb", "model": "text-embed-1", "task": "embed"}],
            },
        ],
        webui={"embeddingModel": "emb"},
        hostedKey={"secure": "v1:x"},
    )
    p = plan(parse(raw))
    mac, hosted = p.endpoints
    assert (mac.host, mac.port, mac.base_path, mac.scheme, mac.tls_name, mac.read_timeout_seconds) == (
        "model-runner.docker.internal",
        80,
        "/engines/v1",
        "http",
        None,
        900,
    )
    assert (hosted.host, hosted.port, hosted.base_path, hosted.tls_name, hosted.key_secret, hosted.key_header) == (
        "api.example.test",
        8443,
        "/openai/v1",
        "edge.example.test",
        "hostedKey",
        "x-api-key",
    )
    assert p.external("emb").upstream_model == "text-embed-1"
    assert p.webui is not None and "emb" not in p.webui.chat_models and p.webui.embedding_model == "emb"


def test_ollama_memory_from_the_catalog_is_file_plus_kv_plus_runtime() -> None:
    """llama3.2:3b: 2.0 GB in the library (up to 2.05e9 bytes), Llama-3.2-3B's 28 layers x 8 KV heads x 128 x 2 bytes x K and V
    per token, for 8192 tokens x 2 in parallel, plus Ollama's 457 MiB device minimum and a 512-token batch's logits."""
    m = ollama_catalog.find("llama3.2:3b")
    assert m is not None and m.tag == "llama3.2" and m.weights_bytes == 2_050_000_000
    assert ollama_catalog.find("llama3.2:latest") == ollama_catalog.find("llama3.2") == m
    kv = 2 * 28 * 8 * 128 * 2 * 8192 * 2
    assert ollama_catalog.memory_bytes(m, 8192, 2, "f16") == 2_050_000_000 + kv + 457 * 2**20 + 512 * 128256 * 4
    assert ollama_catalog.memory_bytes(m, 8192, 2, "q8_0") == 2_050_000_000 + kv * 34 // 64 + 457 * 2**20 + 512 * 128256 * 4
    # the context is capped at the model's own (Ollama: NumCtx above the training context is lowered to it)
    assert ollama_catalog.memory_bytes(m, 10**6, 1, "f16") == ollama_catalog.memory_bytes(m, 131072, 1, "f16")
    assert ollama_catalog.find("someone/model:7b") is None


def test_ollama_on_a_shared_gpu_is_planned_around_and_on_its_own_gpu_needs_no_plan() -> None:
    shared = docker_raw(ollama={"gpus": [0], "contextLength": 8192, "numParallel": 2, "models": [{"name": "llama", "model": "llama3.2:3b"}]})
    p = plan(parse(shared))
    reserved = ollama_catalog.memory_bytes(ollama_catalog.find("llama3.2") or pytest.fail("catalog"), 8192, 2, "f16") / 2**30
    assert p.ollama is not None and p.ollama.shared_gpus == [0] and p.ollama.reserved_gib == pytest.approx(reserved, abs=0.001)
    assert p.gpus[0].reserved_gib == pytest.approx(reserved, abs=0.001) and p.gpus[1].reserved_gib == 0
    alone = plan(parse(docker_raw()))
    assert p.model("tiny").memory.fraction < alone.model("tiny").memory.fraction
    assert p.model("qwen").memory.fraction == alone.model("qwen").memory.fraction
    assert any("set aside for Ollama" in n for n in p.notes)
    own = docker_raw(
        models=[{"name": "tiny", "model": TINY, "gpus": [0], "maxModelLen": 2048}], ollama={"gpus": [1], "models": [{"name": "x", "model": "someone/model:7b"}]}
    )
    q = plan(parse(own))
    assert q.ollama is not None and q.ollama.shared_gpus == [] and q.gpus[1].reserved_gib == 0


def test_ollama_loaded_at_once_and_declared_memory() -> None:
    raw = docker_raw(
        ollama={
            "gpus": [0],
            "maxLoadedModels": 1,
            "kvCacheType": "q8_0",
            "models": [{"name": "a", "model": "x:1b", "memoryGiB": 3}, {"name": "b", "model": "y:1b", "memoryGiB": 5}],
        }
    )
    p = plan(parse(raw))
    assert p.ollama is not None and p.ollama.reserved_gib == 5  # only the largest is loaded at a time
    assert p.ollama.env["OLLAMA_MAX_LOADED_MODELS"] == "1" and p.ollama.env["OLLAMA_KV_CACHE_TYPE"] == "q8_0"
    assert p.ollama.env["OLLAMA_FLASH_ATTENTION"] == "1" and p.ollama.pull == ["x:1b", "y:1b"]


def test_a_cluster_gateway_carries_the_endpoint_servers_and_their_ca_in_its_config_map() -> None:
    from stacks.render import kubernetes as manifests

    pem = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----"
    raw = kube_raw(endpoints=[endpoint(url="https://10.0.0.9/v1", tls={"caPem": pem, "serverName": "lab.internal"})])
    p = plan(parse(raw))
    [config_map] = [o for o in manifests.stack_objects(p) if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "gateway-files"]
    assert config_map["data"]["endpoint-mac-ca.pem"] == pem + "\n"
    conf = config_map["data"]["nginx.conf"]
    assert 'proxy_ssl_trusted_certificate "/etc/nginx/ca/endpoint-mac-ca.pem";' in conf and 'proxy_ssl_name "lab.internal";' in conf
    assert "listen 127.0.0.1:9200;" in conf and "server 10.0.0.9:443 max_fails=0;" in conf


def test_gateway_memory_counts_endpoint_bodies_and_plans_without_vllm_models() -> None:
    from stacks.render.gateway import ENDPOINT_BODY_COPIES, memory_mib

    njs = {"jsEngine": "njs", "tokenUsage": True}
    # no vLLM model to take the longest answer from: the endpoint's maxModelLen, or an assumed one
    assert memory_mib(plan(parse(no_gpu(gateway=njs))))[1] > memory_mib(plan(parse(no_gpu())))[1]
    plain = memory_mib(plan(parse(docker_raw())))[1]
    with_endpoint = memory_mib(plan(parse(docker_raw(endpoints=[endpoint()]))))[1]
    # 8 large requests of 16 MiB, each with two more copies of its body
    expected = 8 * 16 * ENDPOINT_BODY_COPIES * 1.2
    assert abs(with_endpoint - plain - expected) <= 16


@pytest.mark.parametrize(
    "raw",
    [
        kube_raw(models=[], endpoints=[endpoint()]),
        kube_raw(models=[], endpoints=[endpoint()], monitoring={"prometheusOperator": True, "grafana": True}),
        no_gpu(gateway={"requestMetrics": True, "tokenUsage": True}, monitoring={"alerts": {"forMinutes": 2}}),
    ],
    ids=["cluster", "cluster with the operator", "docker with metrics"],
)
def test_a_stack_serving_only_endpoints_renders_every_file(raw: dict[str, Any]) -> None:
    from stacks.render import render_all

    files = render_all(plan(parse(raw)))
    assert "gateway/nginx.conf" in files and "vllm/Dockerfile" not in files
    assert "server model-runner.docker.internal:80 max_fails=0;" in files["gateway/nginx.conf"]
