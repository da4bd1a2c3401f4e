"""Models served elsewhere, through the rendered gateway on a real nginx + njs (all on 127.0.0.1): a fake Docker Model
Runner (its /engines/v1 layout), https endpoints with a CA of the test's own (keys, SNI, refused certificates), a fake
Ollama as the stack's own, and a vLLM model beside them, driven by the openai client."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import docker_raw
from tests.gateway_harness import Running, free_port, require_nginx_njs, running_gateway, start_backend, stop
from tests.tls_ca import TestCA

KEY = "sk-client-key"
HOSTED_KEY = "sk-hosted-endpoint-0123456789"
ANTHROPIC_KEY = "sk-ant-endpoint-0123456789"
TINY = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
NAME = "endpoint.test"
"""The name the https endpoints' certificates carry (their URLs say 127.0.0.1; tls.serverName says this)."""


@dataclass
class Endpoints:
    gw: Running
    ports: dict[str, int]
    ca: TestCA


@pytest.fixture(scope="module", autouse=True)
def _nginx_with_njs() -> None:
    require_nginx_njs()


@contextlib.contextmanager
def _fakes(tmp: Path) -> Iterator[tuple[dict[str, int], TestCA, Any]]:
    ca = TestCA(tmp / "pki")
    good = ca.issue("good", [NAME])
    misnamed = ca.issue("misnamed", ["other.test"])
    stranger = TestCA(tmp / "other-pki", name="someone else's CA").issue("stranger", [NAME])
    ports = {n: free_port() for n in ("dmr", "hosted", "anthropic", "stranger", "misnamed", "down", "ollama")}
    procs = []
    tls = ["--tls-cert", str(good.cert), "--tls-key", str(good.key)]
    try:
        procs.append(start_backend("dmr", ["ai/smollm2:latest"], ports["dmr"], "--prefix", "/engines/v1", "--latest"))
        procs.append(start_backend("hosted", ["gpt-4.1-mini"], ports["hosted"], "--key", HOSTED_KEY, *tls))
        procs.append(start_backend("anthropic", ["claude-x"], ports["anthropic"], "--key", ANTHROPIC_KEY, *tls))
        procs.append(start_backend("stranger", ["m"], ports["stranger"], "--tls-cert", str(stranger.cert), "--tls-key", str(stranger.key)))
        procs.append(start_backend("misnamed", ["m"], ports["misnamed"], "--tls-cert", str(misnamed.cert), "--tls-key", str(misnamed.key)))
        procs.append(start_backend("ollama", ["llama3.2:3b"], ports["ollama"], "--ollama", "--no-count-tokens"))
        yield ports, ca, procs
    finally:
        for proc in procs:
            stop(proc)


def raw_config(ports: dict[str, int], ca_pem: str, **gateway: Any) -> dict[str, Any]:
    tls = {"caPem": ca_pem, "serverName": NAME}

    def https(name: str, port: int, **more: Any) -> dict[str, Any]:
        return {"name": name, "url": f"https://127.0.0.1:{port}/v1", "tls": tls, **more}

    return docker_raw(
        models=[{"name": "tiny", "model": TINY, "gpus": [0], "maxModelLen": 1024}],
        gateway={"readTimeoutSeconds": 5, **gateway},
        endpoints=[
            {
                "name": "mac",
                "url": f"http://127.0.0.1:{ports['dmr']}/engines/v1",
                "messages": True,
                "models": [{"name": "smollm2", "model": "ai/smollm2", "servedModelNames": ["ai/smollm2"]}],
            },
            https("hosted", ports["hosted"], apiKeySecret="hostedKey", models=[{"name": "gpt", "model": "gpt-4.1-mini", "maxModelLen": 8192}]),
            https(
                "anthropic",
                ports["anthropic"],
                apiKeySecret="anthropicKey",
                keyHeader="x-api-key",
                messages=True,
                models=[{"name": "claude", "model": "claude-x"}],
            ),
            https("stranger", ports["stranger"], messages=True, models=[{"name": "stranger-model", "model": "m"}]),
            https("misnamed", ports["misnamed"], messages=True, models=[{"name": "misnamed-model", "model": "m"}]),
            https("down", ports["down"], messages=True, connectTimeoutSeconds=2, models=[{"name": "down-model", "model": "m"}]),
        ],
        ollama={"models": [{"name": "llama", "model": "llama3.2:3b"}]},
        hostedKey={"secure": "v1:fake"},
        anthropicKey={"secure": "v1:fake"},
    )


@pytest.fixture(scope="module")
def eps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    tmp = tmp_path_factory.mktemp("endpoints")
    with _fakes(tmp) as (ports, ca, _):
        raw = raw_config(ports, ca.pem, tokenUsage=True)
        keys = {"hostedKey": HOSTED_KEY, "anthropicKey": ANTHROPIC_KEY}
        with running_gateway(
            raw, tmp / "gw", api_keys=[f"team-a:{KEY}"], endpoint_keys=keys, endpoint_addresses={"ep-ollama": f"127.0.0.1:{ports['ollama']}"}
        ) as gw:
            yield Endpoints(gw, ports, ca)


def client(eps: Endpoints) -> openai.OpenAI:
    return openai.OpenAI(base_url=eps.gw.url + "/v1", api_key=KEY, max_retries=0, timeout=20)


def _chat(eps: Endpoints, model: str, **more: Any) -> Any:
    return client(eps).chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "hi"}], **more)


@pytest.mark.parametrize(
    ("model", "backend", "upstream_id", "path", "authorization"),
    [
        ("smollm2", "dmr", "ai/smollm2", "/engines/v1/chat/completions", ""),
        ("ai/smollm2", "dmr", "ai/smollm2", "/engines/v1/chat/completions", ""),
        ("gpt", "hosted", "gpt-4.1-mini", "/v1/chat/completions", f"Bearer {HOSTED_KEY}"),
        ("llama", "ollama", "llama3.2:3b", "/v1/chat/completions", ""),
    ],
)
def test_each_endpoint_gets_its_path_its_model_id_and_its_own_key(
    eps: Endpoints, model: str, backend: str, upstream_id: str, path: str, authorization: str
) -> None:
    raw = _chat(eps, model, extra_headers={"X-Request-ID": f"ext-{backend}-{len(model)}"})
    answer = raw.parse().choices[0].message.content or ""
    assert f"backend={backend} model={upstream_id} " in answer
    assert raw.headers["X-Seen-Path"] == path
    # the endpoint's own key or none: never the client's, never the key the gateway sends vLLM
    assert raw.headers["X-Seen-Authorization"] == authorization
    assert "X-Seen-Api-Key" not in raw.headers
    assert raw.headers["X-Request-ID"] == raw.headers["X-Seen-Request-ID"] == f"ext-{backend}-{len(model)}"
    line = eps.gw.log_line(f"ext-{backend}-{len(model)}")
    assert (line["model"], line["status"], line["key"]) == (model, 200, "team-a")
    assert (line["prompt_tokens"], line["completion_tokens"]) == (7, 1), "usage is read from an endpoint's answer too"


def test_an_endpoint_taking_x_api_key_gets_its_key_there(eps: Endpoints) -> None:
    """Anthropic's API takes its key as x-api-key (keyHeader: x-api-key): the fake refuses any other."""
    auth = {"Authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
    r = httpx.post(eps.gw.url + "/v1/messages", headers=auth, json={"model": "claude", "max_tokens": 3, "messages": []}, timeout=20)
    assert r.status_code == 200, r.text
    assert r.headers["X-Seen-Api-Key"] == ANTHROPIC_KEY and r.headers["X-Seen-Authorization"] == ""
    assert r.headers["X-Seen-Anthropic-Version"] == "2023-06-01" and r.headers["X-Seen-Path"] == "/v1/messages"
    assert "model=claude-x" in r.json()["content"][0]["text"]


def test_streams_and_the_rest_of_the_body_pass_unchanged(eps: Endpoints) -> None:
    chunks = list(client(eps).chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}], stream=True, max_tokens=6))
    assert len(chunks) == 6 and "model=gpt-4.1-mini" in (chunks[0].choices[0].delta.content or "")
    # a body whose other fields mention the served name keeps them; only the top-level model is the endpoint's id
    body = {"model": "smollm2", "messages": [{"role": "user", "content": '"model": "smollm2"'}], "metadata": {"model": "smollm2"}}
    r = httpx.post(eps.gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, content=json.dumps(body))
    assert r.status_code == 200, r.text
    sent = len(json.dumps(body)) - len('"smollm2"') + len('"ai/smollm2"')
    assert f"model=ai/smollm2 rid={r.headers['X-Request-ID']} bytes={sent}" in r.json()["choices"][0]["message"]["content"]


def test_path_routing_and_models_list(eps: Endpoints) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(eps.gw.url + "/smollm2/v1/chat/completions", headers=auth, json={"model": "smollm2", "messages": []})
    assert r.status_code == 200 and r.headers["X-Seen-Path"] == "/engines/v1/chat/completions"
    listed = httpx.get(eps.gw.url + "/smollm2/v1/models", headers=auth)
    assert listed.status_code == 200 and [m["id"] for m in listed.json()["data"]] == ["ai/smollm2:latest"], "the endpoint's own list"
    models = {m.id: m for m in client(eps).models.list()}
    assert {"tiny", "smollm2", "ai/smollm2", "gpt", "claude", "llama"} <= set(models)
    assert models["gpt"].model_dump()["root"] == "gpt-4.1-mini" and models["gpt"].model_dump()["max_model_len"] == 8192
    assert models["llama"].owned_by == "vllm-stack:ollama"


def test_vllm_model_still_gets_the_vllm_key(eps: Endpoints) -> None:
    raw = _chat(eps, "tiny")
    assert raw.headers["X-Seen-Authorization"] == "Bearer internal-vllm-key" and raw.headers["X-Seen-Path"] == "/v1/chat/completions"


def _error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    return str(body["error"]["message"])


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ("stranger-model", "the TLS handshake failed: its certificate is not valid for endpoint.test"),
        ("misnamed-model", "the TLS handshake failed: its certificate is not valid for endpoint.test"),
        ("down-model", "is not reachable"),
    ],
)
def test_a_refused_certificate_or_a_host_that_is_down_is_a_json_502_that_says_why(eps: Endpoints, model: str, why: str) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    message = _error(httpx.post(eps.gw.url + "/v1/chat/completions", headers=auth, json={"model": model, "messages": []}, timeout=20), 502)
    endpoint = model.removesuffix("-model")
    assert f"The endpoint `{endpoint}` (https://127.0.0.1:{eps.ports[endpoint]}/v1)" in message and why in message, message
    if model != "down-model":
        assert "answers on its port" in message
    anthropic = httpx.post(eps.gw.url + "/v1/messages", headers=auth, json={"model": model, "max_tokens": 5, "messages": []}, timeout=20)
    assert anthropic.status_code == 502 and anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "api_error" and why in anthropic.json()["error"]["message"]


def test_the_endpoints_ca_alone_is_trusted(tmp_path: Path) -> None:
    """The same endpoint is refused when the stack trusts another CA (the system bundle, or someone else's)."""
    with _fakes(tmp_path) as (ports, _ca, _):
        raw = raw_config(ports, TestCA(tmp_path / "third").pem)
        keys = {"hostedKey": HOSTED_KEY, "anthropicKey": ANTHROPIC_KEY}
        with running_gateway(raw, tmp_path / "gw", endpoint_keys=keys, endpoint_addresses={"ep-ollama": f"127.0.0.1:{ports['ollama']}"}) as gw:
            r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "gpt", "messages": []}, timeout=20)
            assert "TLS handshake failed" in _error(r, 502)


def test_keys_and_the_private_ca_stay_out_of_nginx_conf(eps: Endpoints) -> None:
    conf = (eps.gw.dir / "nginx.conf").read_text()
    for secret in (HOSTED_KEY, ANTHROPIC_KEY, KEY, "internal-vllm-key"):
        assert secret not in conf
    keys = (eps.gw.dir / "keys.conf").read_text()
    assert f'"Bearer {HOSTED_KEY}"' in keys and f'"{ANTHROPIC_KEY}"' in keys
    assert "BEGIN CERTIFICATE" not in conf and (eps.gw.dir / "ca" / "endpoint-hosted-ca.pem").read_text() == eps.ca.pem


def test_a_slow_endpoint_is_a_json_504_naming_it(tmp_path: Path) -> None:
    port = free_port()
    backend = start_backend("slow", ["m"], port)
    try:
        raw = docker_raw(
            models=[],
            gpus=[],
            monitoring={"grafana": False},
            endpoints=[{"name": "slow", "url": f"http://127.0.0.1:{port}/v1", "readTimeoutSeconds": 1, "models": [{"name": "s", "model": "m"}]}],
        )
        with running_gateway(raw, tmp_path) as gw:
            r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "s", "messages": [], "sleep_ms": 2500}, timeout=20)
            assert "did not answer within 1 s" in _error(r, 504)
            assert gw.log_line(r.headers["X-Request-ID"])["model"] == "s"
    finally:
        stop(backend)
