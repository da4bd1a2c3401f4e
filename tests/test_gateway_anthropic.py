"""Anthropic's Messages API through the rendered gateway on a real nginx + njs (127.0.0.1), driven by the anthropic SDK:
keys as x-api-key or Bearer, streams event by event, token counting, Anthropic-shaped errors, and the Messages API of
endpoints that speak it (a fake Docker Model Runner) beside vLLM models (the fake vLLM answers it as vLLM 0.26.0 does)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from anthropic._constants import ANTHROPIC_API_VERSION

from tests.conftest import docker_raw
from tests.gateway_harness import Running, free_port, require_nginx_njs, running_gateway, start_backend, stop

KEY = "sk-team-a-key-0123456789"
TINY = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
HELLO: list[Any] = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module", autouse=True)
def _nginx_with_njs() -> None:
    require_nginx_njs()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    ports = {n: free_port() for n in ("dmr", "plain", "ollama")}
    fakes = [
        start_backend("dmr", ["ai/smollm2:latest"], ports["dmr"], "--prefix", "/engines/v1", "--latest"),
        start_backend("plain", ["gpt-4.1-mini"], ports["plain"]),
        start_backend("ollama", ["llama3.2:3b"], ports["ollama"], "--ollama", "--no-count-tokens"),
    ]
    raw = docker_raw(
        models=[
            {"name": "alpha", "model": TINY, "gpus": [0], "servedModelNames": ["claude-local"], "maxModelLen": 1024},
            {"name": "beta", "model": TINY, "gpus": [1], "maxModelLen": 1024},
        ],
        gateway={"tokenUsage": True, "maxBodyMiB": 1, "keyLimits": {"limited": {"requestsPerMinute": 2}}},
        endpoints=[
            {"name": "mac", "url": f"http://127.0.0.1:{ports['dmr']}/engines/v1", "messages": True, "models": [{"name": "smollm2", "model": "ai/smollm2"}]},
            {"name": "plain", "url": f"http://127.0.0.1:{ports['plain']}/v1", "models": [{"name": "gpt", "model": "gpt-4.1-mini"}]},
        ],
        ollama={"models": [{"name": "llama", "model": "llama3.2:3b"}]},
    )
    try:
        keys = [f"team-a:{KEY}", "limited:sk-limited-key"]
        with running_gateway(
            raw, tmp_path_factory.mktemp("anthropic"), api_keys=keys, endpoint_addresses={"ep-ollama": f"127.0.0.1:{ports['ollama']}"}
        ) as running:
            yield running
    finally:
        for proc in fakes:
            stop(proc)


def sdk(gw: Running, *, x_api_key: str | None = None, bearer: str | None = None, base: str = "") -> anthropic.Anthropic:
    """The SDK as users set it up: ``api_key`` (2.x sends it as Authorization: Bearer) or an x-api-key header (what 1.x
    and Claude Code's ANTHROPIC_API_KEY send)."""
    headers = {"x-api-key": x_api_key} if x_api_key is not None else None
    return anthropic.Anthropic(base_url=gw.url + base, api_key=bearer, default_headers=headers, max_retries=0, timeout=20)


def _text(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


@pytest.mark.parametrize("how", ["x-api-key", "bearer"])
def test_messages_with_either_key_header(gw: Running, how: str) -> None:
    client = sdk(gw, x_api_key=KEY) if how == "x-api-key" else sdk(gw, bearer=KEY)
    raw = client.messages.with_raw_response.create(model="alpha", max_tokens=5, messages=HELLO, extra_headers={"X-Request-ID": f"msg-{how}"})
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == "alpha"
    assert "backend=alpha model=alpha" in _text(message) and (message.usage.input_tokens, message.usage.output_tokens) == (7, 5)
    # the client's key, whichever header carried it, never goes on: vLLM gets the gateway's own key and no x-api-key
    assert raw.headers["X-Seen-Authorization"] == "Bearer internal-vllm-key" and "X-Seen-Api-Key" not in raw.headers
    assert raw.headers["X-Seen-Anthropic-Version"] == ANTHROPIC_API_VERSION
    assert raw.headers["X-Seen-Path"] == "/v1/messages"
    line = gw.log_line(f"msg-{how}")
    assert (line["key"], line["model"], line["status"], line["prompt_tokens"], line["completion_tokens"]) == ("team-a", "alpha", 200, 7, 5)


def test_streams_pass_event_by_event(gw: Running) -> None:
    client = sdk(gw, x_api_key=KEY)
    stamps: list[float] = []
    kinds: list[str] = []
    t0 = time.perf_counter()
    with client.messages.stream(
        model="claude-local", max_tokens=5, messages=HELLO, extra_body={"delay_ms": 200}, extra_headers={"X-Request-ID": "msg-stream"}
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "content_block_delta":
                stamps.append(time.perf_counter() - t0)
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and kinds.count("content_block_delta") == 5
    assert "backend=alpha model=claude-local" in _text(final) and final.usage.output_tokens == 5
    # the backend sends a delta every 200 ms: they arrive spread over 800 ms, not together at the end
    assert stamps[-1] - stamps[0] > 0.6 and sum(b - a > 0.1 for a, b in itertools.pairwise(stamps)) >= 3, stamps
    line = gw.log_line("msg-stream")
    assert (line["prompt_tokens"], line["completion_tokens"]) == (7, 5), "a Messages API stream always carries its usage"


def test_count_tokens_and_path_routing(gw: Running) -> None:
    assert sdk(gw, x_api_key=KEY).messages.count_tokens(model="beta", messages=HELLO).input_tokens == 7
    by_path = sdk(gw, bearer=KEY, base="/beta").messages.create(model="beta", max_tokens=3, messages=HELLO)
    assert "backend=beta" in _text(by_path)


def test_models_list_in_anthropics_shape(gw: Running) -> None:
    ids = [m.id for m in sdk(gw, x_api_key=KEY).models.list()]
    assert ids[:3] == ["alpha", "claude-local", "beta"] and {"smollm2", "gpt", "llama"} <= set(ids)
    openai_list = httpx.get(gw.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert openai_list["object"] == "list" and openai_list["data"][0]["object"] == "model"


def test_endpoints_that_speak_it_get_it_at_their_base_url(gw: Running) -> None:
    raw = sdk(gw, x_api_key=KEY).messages.with_raw_response.create(model="smollm2", max_tokens=3, messages=HELLO)
    assert "backend=dmr model=ai/smollm2" in _text(raw.parse()) and raw.headers["X-Seen-Path"] == "/engines/v1/messages"
    assert "X-Seen-Api-Key" not in raw.headers and raw.headers["X-Seen-Authorization"] == ""
    with pytest.raises(anthropic.NotFoundError) as plain:
        sdk(gw, x_api_key=KEY).messages.create(model="gpt", max_tokens=3, messages=HELLO)
    assert plain.value.type == "not_found_error" and "does not answer the Messages API" in str(plain.value.api_message)
    ollama = sdk(gw, x_api_key=KEY)
    assert "backend=ollama model=llama3.2:3b" in _text(ollama.messages.create(model="llama", max_tokens=3, messages=HELLO))
    with pytest.raises(anthropic.NotFoundError) as counted:
        ollama.messages.count_tokens(model="llama", messages=HELLO)
    assert "does not count tokens" in str(counted.value.api_message)


@pytest.mark.parametrize("how", ["x-api-key", "bearer"])
def test_wrong_keys_are_refused_in_anthropics_shape(gw: Running, how: str) -> None:
    for wrong in ("sk-wrong", KEY.upper(), KEY + "0", KEY[:-1]):
        client = sdk(gw, x_api_key=wrong) if how == "x-api-key" else sdk(gw, bearer=wrong)
        with pytest.raises(anthropic.AuthenticationError) as denied:
            client.messages.create(model="alpha", max_tokens=3, messages=HELLO)
        assert denied.value.status_code == 401 and denied.value.type == "authentication_error"
        assert "x-api-key" in str(denied.value.api_message)


def _anthropic_error(r: httpx.Response, status: int, etype: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == etype, body
    return str(body["error"]["message"])


def test_the_gateways_own_errors_on_the_messages_api_are_anthropics(gw: Running, tmp_path: Path) -> None:
    key = {"x-api-key": KEY}
    url = gw.url + "/v1/messages"
    assert "`nope`" in _anthropic_error(httpx.post(url, headers=key, json={"model": "nope", "max_tokens": 1, "messages": []}), 404, "not_found_error")
    assert "not valid JSON" in _anthropic_error(httpx.post(url, headers=key, content=b"{nope"), 400, "invalid_request_error")
    _anthropic_error(httpx.post(url, headers=key, json={"max_tokens": 1}), 400, "invalid_request_error")
    _anthropic_error(httpx.get(url, headers=key), 405, "invalid_request_error")
    _anthropic_error(httpx.post(url, headers=key, content=b'{"model":"alpha","x":"' + b"y" * (2 * 2**20) + b'"}'), 413, "request_too_large")
    _anthropic_error(httpx.post(gw.url + "/nope/v1/messages", headers=key, json={"model": "x"}), 404, "not_found_error")
    _anthropic_error(httpx.post(gw.url + "/v1/messages/count_tokens", json={"model": "alpha"}), 401, "authentication_error")
    limited = {"x-api-key": "sk-limited-key"}
    for _ in range(2):
        assert httpx.post(url, headers=limited, json={"model": "alpha", "max_tokens": 1, "messages": []}).status_code == 200
    _anthropic_error(httpx.post(url, headers=limited, json={"model": "alpha", "max_tokens": 1, "messages": []}), 429, "rate_limit_error")
    # the OpenAI side keeps OpenAI's shape, whichever header carried the key
    chat = httpx.post(gw.url + "/v1/chat/completions", headers={"x-api-key": "sk-wrong"}, json={"model": "alpha"})
    assert chat.status_code == 401 and chat.json()["error"]["code"] == "invalid_api_key"
    ok = httpx.post(gw.url + "/v1/chat/completions", headers={"x-api-key": KEY}, json={"model": "alpha", "messages": []})
    assert ok.status_code == 200 and "X-Seen-Api-Key" not in ok.headers


def test_a_backend_that_is_down_is_an_anthropic_502(tmp_path: Path) -> None:
    raw = docker_raw(models=[{"name": "alpha", "model": TINY, "gpus": [0], "maxModelLen": 1024}])
    with running_gateway(raw, tmp_path) as down:
        stop(down.backends["alpha"])
        r = httpx.post(down.url + "/v1/messages", json={"model": "alpha", "max_tokens": 1, "messages": []})
        assert "not reachable" in _anthropic_error(r, 502, "api_error")
        with pytest.raises(anthropic.InternalServerError):
            anthropic.Anthropic(base_url=down.url, api_key="open", max_retries=0).messages.create(model="alpha", max_tokens=1, messages=HELLO)
