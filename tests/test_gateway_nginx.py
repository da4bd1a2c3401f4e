"""The rendered gateway served by a real nginx + njs on 127.0.0.1, driven by the openai client."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stacks.config import load_stack
from stacks.plan import plan
from stacks.render import endpoints
from tests.conftest import STACKS, docker_raw
from tests.gateway_harness import NGINX, Running, render_into, require_nginx_njs, running_gateway, stop
from tests.loadgen import request_bytes, run_load

KEY = "sk-test-key"
TINY = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"


def _raw(**gateway: Any) -> dict[str, Any]:
    return docker_raw(
        models=[
            {"name": "alpha", "model": TINY, "gpus": [0], "servedModelNames": ["alpha-chat", "Org/Alpha.v1"], "maxModelLen": 1024},
            {"name": "beta", "model": TINY, "gpus": [0], "maxModelLen": 1024},
            {"name": "gamma", "model": TINY, "gpus": [1], "maxModelLen": 1024},
        ],
        gateway={"maxBodyMiB": 2, "readTimeoutSeconds": 2, **gateway},
    )


@pytest.fixture(scope="module", autouse=True)
def _nginx_with_njs() -> None:
    require_nginx_njs()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_gateway(_raw(), tmp_path_factory.mktemp("gw"), api_keys=[KEY, "sk-other"]) as running:
        yield running


def client(gw: Running, key: str = KEY, base: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + base, api_key=key, max_retries=0, timeout=20)


@pytest.mark.parametrize("stack", STACKS)
def test_rendered_config_of_every_stack_passes_nginx_t(stack: str, tmp_path: Path) -> None:
    p = plan(load_stack(stack))
    # endpoints' hosts (model-runner.docker.internal) resolve only where the stack runs: nginx resolves upstreams at start
    upstreams = {m.service: "127.0.0.1:9" for m in p.models} | {endpoints.upstream_name(e): "127.0.0.1:9" for e in p.endpoints}
    conf = render_into(tmp_path, p, 18999, upstreams, ["sk-a"], "vk", endpoint_keys={e.key_secret: "k" for e in p.endpoints if e.key_secret})
    r = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stderr


@pytest.mark.parametrize("name", ["alpha", "alpha-chat", "Org/Alpha.v1", "beta", "gamma"])
def test_chat_and_completions_route_by_body_model(gw: Running, name: str) -> None:
    backend = "alpha" if name.startswith(("alpha", "Org")) else name
    c = client(gw)
    chat = c.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content and f"backend={backend} model={name}" in chat.choices[0].message.content
    comp = c.completions.create(model=name, prompt="hi")
    assert f"backend={backend} model={name}" in comp.choices[0].text
    chunks = list(c.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=6))
    assert len(chunks) == 6 and f"backend={backend}" in (chunks[0].choices[0].delta.content or "")
    text_chunks = list(c.completions.create(model=name, prompt="hi", stream=True, max_tokens=4))
    assert len(text_chunks) == 4 and f"backend={backend}" in text_chunks[0].choices[0].text
    emb = c.embeddings.create(model=name, input="hi")
    assert emb.model == name


def test_path_routing(gw: Running) -> None:
    c = client(gw, base="/gamma/v1")
    out = c.chat.completions.create(model="gamma", messages=[{"role": "user", "content": "x"}])
    assert "backend=gamma" in (out.choices[0].message.content or "")
    raw = httpx.get(gw.url + "/beta/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert raw.status_code == 200 and raw.headers["X-Backend"] == "beta" and raw.headers["X-Seen-Path"] == "/v1/models"
    miss = httpx.post(gw.url + "/nobody/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, json={"model": "x"})
    assert miss.status_code == 404 and miss.json()["error"]["code"] == "model_not_found"


def test_models_lists_every_served_name(gw: Running) -> None:
    ids = [m.id for m in client(gw).models.list()]
    assert ids == ["alpha", "alpha-chat", "Org/Alpha.v1", "beta", "gamma"]


def test_health_needs_no_key(gw: Running) -> None:
    r = httpx.get(gw.url + "/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def _err(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body["error"]) >= {"message", "type", "code"}
    return dict(body["error"])


def test_api_keys_checked(gw: Running) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        _err(httpx.get(gw.url + "/v1/models", headers=headers), 401)
        _err(httpx.post(gw.url + "/v1/chat/completions", headers=headers, json={"model": "alpha"}), 401)
        _err(httpx.post(gw.url + "/beta/v1/completions", headers=headers, json={"model": "beta"}), 401)
    with pytest.raises(openai.AuthenticationError):
        client(gw, key="nope").models.list()
    assert httpx.get(gw.url + "/v1/models", headers={"Authorization": "Bearer sk-other"}).status_code == 200


def test_client_key_is_replaced_by_vllm_key_upstream(gw: Running) -> None:
    raw = client(gw).chat.completions.with_raw_response.create(model="beta", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["X-Seen-Authorization"] == "Bearer internal-vllm-key"


def test_openai_style_errors(gw: Running) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    with pytest.raises(openai.NotFoundError) as nf:
        client(gw).chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert "no-such-model" in str(nf.value)
    assert _err(httpx.post(gw.url + "/v1/chat/completions", headers=auth, content=b"{not json"), 400)["code"] == "invalid_json"
    assert _err(httpx.post(gw.url + "/v1/chat/completions", headers=auth, json={"messages": []}), 400)["code"] == "missing_model"
    assert _err(httpx.post(gw.url + "/v1/chat/completions", headers=auth, json=["alpha"]), 400)["code"] == "missing_model"
    assert _err(httpx.get(gw.url + "/v1/chat/completions", headers=auth), 405)["code"] == "method_not_allowed"
    assert _err(httpx.post(gw.url + "/v1/models", headers=auth), 405)["code"] == "method_not_allowed"
    big = json.dumps({"model": "alpha", "prompt": "x" * (3 * 1024 * 1024)})
    assert _err(httpx.post(gw.url + "/v1/completions", headers=auth, content=big), 413)["code"] == "request_too_large"
    assert _err(httpx.get(gw.url + "/nothing-here", headers=auth), 404)["code"] == "not_found"


def test_one_megabyte_body_routes(gw: Running) -> None:
    prompt = "y" * (1024 * 1024)
    out = client(gw).completions.create(model="beta", prompt=prompt)
    n = int(re.search(r"bytes=(\d+)", out.choices[0].text).group(1))  # type: ignore[union-attr]
    assert n > 1024 * 1024


def test_request_id_kept_generated_echoed_and_logged(gw: Running) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(gw.url + "/v1/chat/completions", headers={**auth, "X-Request-ID": "my-req-42"}, json={"model": "alpha", "messages": []})
    assert r.headers["X-Request-ID"] == "my-req-42" and r.headers["X-Seen-Request-ID"] == "my-req-42"
    r2 = httpx.post(gw.url + "/v1/chat/completions", headers=auth, json={"model": "gamma", "messages": []})
    rid = r2.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid) and r2.headers["X-Seen-Request-ID"] == rid
    unauthorized = httpx.get(gw.url + "/v1/models")
    _err(unauthorized, 401)
    assert re.fullmatch(r"[0-9a-f]{32}", unauthorized.headers["X-Request-ID"])
    mine = gw.log_line(rid)
    assert mine["model"] == "gamma" and mine["status"] == 200
    assert mine["upstream"] == f"127.0.0.1:{gw.backend_ports['gamma']}"
    assert float(mine["request_time"]) >= 0 and mine["upstream_response_time"]
    assert gw.log_line("my-req-42")["model"] == "alpha"


def test_streams_arrive_chunk_by_chunk(gw: Running) -> None:
    """Unbuffered: each token's chunk arrives when the backend sends it, not at the end."""
    c = client(gw)
    stamps = []
    t0 = time.perf_counter()
    for _ in c.chat.completions.create(model="beta", messages=[{"role": "user", "content": "x"}], stream=True, max_tokens=5, extra_body={"delay_ms": 200}):
        stamps.append(time.perf_counter() - t0)
    assert len(stamps) == 5
    assert stamps[0] < 0.15, stamps  # first token long before the last
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) > 0.12, gaps


def test_timeout_is_504(gw: Running) -> None:
    r = httpx.post(gw.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, json={"model": "alpha", "prompt": "x", "sleep_ms": 3500}, timeout=20)
    assert _err(r, 504)["code"] == "backend_timeout"


def test_backend_killed_mid_stream_ends_that_stream_only(tmp_path: Path) -> None:
    with running_gateway(_raw(readTimeoutSeconds=30), tmp_path, api_keys=[KEY]) as g:
        c = client(g)
        stream = c.chat.completions.create(model="gamma", messages=[{"role": "user", "content": "x"}], stream=True, max_tokens=100, extra_body={"delay_ms": 50})
        got = []
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            for chunk in stream:
                got.append(chunk)
                if len(got) == 3:
                    stop(g.backends["gamma"])
        assert 3 <= len(got) < 100
        out = c.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "x"}])
        assert "backend=alpha" in (out.choices[0].message.content or "")
        down = httpx.post(g.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, json={"model": "gamma", "messages": []})
        assert _err(down, 502)["code"] == "backend_unavailable"


def test_per_model_concurrency_limit_is_503(tmp_path: Path) -> None:
    with running_gateway(_raw(maxConcurrentPerModel=2), tmp_path, api_keys=[KEY]) as g:
        statuses: list[int] = []

        def slow() -> None:
            r = httpx.post(
                g.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, json={"model": "alpha", "prompt": "x", "sleep_ms": 1000}, timeout=20
            )
            statuses.append(r.status_code)

        threads = [threading.Thread(target=slow) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        other = httpx.post(g.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, json={"model": "beta", "prompt": "x"})
        for t in threads:
            t.join(30)
        assert sorted(statuses) == [200, 200, 503, 503]
        assert other.status_code == 200  # the limit is per model
        r = httpx.post(g.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, json={"model": "alpha", "prompt": "x"})
        assert r.status_code == 200


def test_open_gateway_when_no_keys(tmp_path: Path) -> None:
    with running_gateway(_raw(), tmp_path, api_keys=[], vllm_key=None) as g:
        r = httpx.post(g.url + "/v1/completions", json={"model": "beta", "prompt": "x"})
        assert r.status_code == 200 and r.headers["X-Seen-Authorization"] == ""


def test_path_only_routing_mode(tmp_path: Path) -> None:
    with running_gateway(_raw(routing="path"), tmp_path, api_keys=[KEY]) as g:
        auth = {"Authorization": f"Bearer {KEY}"}
        assert httpx.post(g.url + "/beta/v1/completions", headers=auth, json={"model": "beta", "prompt": "x"}).status_code == 200
        assert _err(httpx.post(g.url + "/v1/completions", headers=auth, json={"model": "beta", "prompt": "x"}), 404)


def test_bounded_load_10000_requests_64_connections(gw: Running) -> None:
    payloads = [request_bytes(gw.port, "/v1/completions", {"model": m, "prompt": "hi"}, KEY) for m in ("alpha", "beta", "gamma", "alpha-chat")]
    result = run_load(gw.port, payloads, total=10_000, connections=64, max_seconds=240)
    assert result.total == 10_000, result.statuses
    assert result.non_2xx == 0, result.statuses
