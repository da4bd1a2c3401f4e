"""The gateway as an attacker and a careless client meet it (issue #12), on a real nginx + njs on 127.0.0.1.

Exact key checks, OpenAI-style JSON for every mistake nginx itself detects (malformed request lines included),
body routing for any JSON vLLM takes (deep, chunked), bounded memory, named keys with per-key limits and
token usage, CORS, and the gateway's Prometheus metrics.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stacks.config import parse
from stacks.errors import ConfigError
from stacks.render.gateway import memory_mib
from tests.conftest import docker_raw, require_program
from tests.gateway_harness import JS_ENGINE, SHARED_DICT, Running, require_nginx_njs, running_gateway, stop

KEY = "sk-test-key"
TINY = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _raw(**gateway: Any) -> dict[str, Any]:
    return docker_raw(
        models=[
            {"name": "alpha", "model": TINY, "gpus": [0], "servedModelNames": ["alpha-chat"], "maxModelLen": 1024},
            {"name": "beta", "model": TINY, "gpus": [0], "maxModelLen": 1024},
        ],
        gateway={"maxBodyMiB": 2, "readTimeoutSeconds": 5, **gateway},
    )


@pytest.fixture(scope="module", autouse=True)
def _nginx_with_njs() -> None:
    require_nginx_njs()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    raw = _raw(clientTimeoutSeconds=1, tokenUsage=True, requestMetrics=True)
    with running_gateway(raw, tmp_path_factory.mktemp("gw"), api_keys=[f"team-a:{KEY}", "sk-unnamed"]) as running:
        yield running


def send_raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """One raw HTTP exchange; returns everything the server sent until it closed (or went quiet)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        body = out
    return int(lines[0].split()[1]), headers, body


def json_error(raw: bytes, status: int) -> dict[str, Any]:
    got, headers, body = parse_response(raw)
    assert got == status, raw[:400]
    assert headers["content-type"].startswith("application/json"), raw[:400]
    err = json.loads(body.decode("utf-8"))["error"]
    assert set(err) >= {"message", "type", "code"}
    return dict(err)


def log_lines(gw: Running, want: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The JSON access log; every line must be valid UTF-8 JSON."""
    deadline = time.monotonic() + timeout
    while True:
        raw = gw.access_log.read_bytes()
        lines = [json.loads(ln.decode("utf-8")) for ln in raw.splitlines() if ln.strip()]
        if len(lines) >= want or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


# 1. keys compared exactly; served names differing only in case refused


def test_key_with_other_case_is_refused(gw: Running) -> None:
    for key in (KEY.upper(), "SK-Test-Key", "SK-UNNAMED"):
        r = httpx.get(gw.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 401, key
    assert httpx.get(gw.url + "/v1/models", headers=AUTH).status_code == 200
    assert httpx.get(gw.url + "/v1/models", headers={"Authorization": "Bearer sk-unnamed"}).status_code == 200


def test_served_names_differing_only_in_case_are_refused() -> None:
    raw = _raw()
    raw["models"][1]["servedModelNames"] = ["Alpha-Chat"]
    with pytest.raises(ConfigError) as err:
        parse(raw)
    assert "models[1].servedModelNames[0]" in str(err.value) and "case" in str(err.value)


# 2, 3. malformed request lines and oversized headers get JSON, not nginx's HTML


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /v1/models%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /v1/ models HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"\x01\x02garbage / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + b"r" * 10_000 + b"\r\n\r\n", 431),
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 10_000 + b"\r\n\r\n", 431),
        (b"TRACE /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET /v1/models HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /v1/models HTTP/1.1\r\n\r\n", 400),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ],
)
def test_mistakes_nginx_detects_get_openai_json(gw: Running, request_bytes: bytes, status: int) -> None:
    json_error(send_raw(gw.port, request_bytes), status)


def test_slow_body_is_closed_and_logged_as_408(gw: Running) -> None:
    """nginx never answers a client timeout (ngx_http_finalize_request terminates on 408): no HTML either, and a JSON log line."""
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: slow-408\r\nAuthorization: Bearer " + KEY.encode()
    assert send_raw(gw.port, head + b"\r\nContent-Length: 100\r\n\r\n{", timeout=8) == b""
    assert gw.log_line("slow-408")["status"] == 408


def test_client_gone_is_logged_as_499(gw: Running) -> None:
    body = json.dumps({"model": "alpha", "prompt": "x", "sleep_ms": 1500}).encode()
    req = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: gone-499\r\nAuthorization: Bearer " + KEY.encode()
    req += b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(req)
        time.sleep(0.3)
    line = gw.log_line("gone-499", timeout=8)
    assert line["status"] == 499 and line["model"] == "alpha"


# 4, 6. body routing for any JSON vLLM accepts: deep, chunked, near the limit


def test_json_nested_deeper_than_32_levels_routes(gw: Running) -> None:
    schema: Any = {"type": "string"}
    for _ in range(60):
        schema = {"type": "object", "properties": {"x": schema}}
    body = {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}, "model": "beta"}
    r = httpx.post(gw.url + "/v1/chat/completions", headers=AUTH, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["X-Backend"] == "beta"
    assert json_error(send_raw(gw.port, _post(b'{"a": [[[[' + b"[" * 40 + b"]" * 44 + b', "model": 1}')), 400)["code"] in ("missing_model", "invalid_json")
    for bad in (b"{not json", b'{"model": "beta"', b'["model", "beta"]', b'{"model": "beta"} trailing', b'{"x": "\\q", "model": "beta"'):
        assert json_error(send_raw(gw.port, _post(bad)), 400)["code"] in ("invalid_json", "missing_model"), bad


def _post(body: bytes, extra: bytes = b"", path: bytes = b"/v1/completions") -> bytes:
    head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n" + extra
    return head + b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def test_chunked_body_below_the_limit_routes(gw: Running) -> None:
    prompt = "z" * (2 * 1024 * 1024 - 4096)
    data = json.dumps({"prompt": prompt, "model": "beta"}).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    r = httpx.post(gw.url + "/v1/completions", headers=AUTH, content=chunks(), timeout=30)
    assert r.status_code == 200, r.text
    assert f"bytes={len(data)}" in r.json()["choices"][0]["text"]
    small = httpx.post(gw.url + "/v1/completions", headers=AUTH, content=iter([b'{"model": ', b'"alpha", "prompt": "x"}']))
    assert small.status_code == 200 and small.headers["X-Backend"] == "alpha"
    over = httpx.post(gw.url + "/v1/completions", headers=AUTH, content=iter([data, b" " * 8192]), timeout=30)
    assert json_error(
        b"HTTP/1.1 " + str(over.status_code).encode() + b" x\r\ncontent-type: " + over.headers["content-type"].encode() + b"\r\n\r\n" + over.content, 413
    )


# 7. raw non-UTF-8 bytes never make the access log or an error body unparseable


def test_raw_bytes_keep_log_and_errors_parseable(gw: Running) -> None:
    before = len(log_lines(gw, 0))
    answers = [
        send_raw(gw.port, b"GET /v1/\xff\xfe\x80 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n"),
        send_raw(gw.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-ID: \xff\xc3(\r\n\r\n"),
        send_raw(gw.port, _post(b'{"model": "\xff\xfe\xc3(", "prompt": "x"}')),
        send_raw(gw.port, _post(b'{"model": "\xff\xfe", "prompt": "x"}', path=b"/v1/\xc3\x28")),
        send_raw(gw.port, b"GET /\xff\xfe/v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        send_raw(gw.port, b"PUT /v1/chat/\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n\r\n"),
    ]
    for raw in answers:
        _, headers, body = parse_response(raw)
        assert headers["content-type"].startswith("application/json"), raw[:300]
        json.loads(body.decode("utf-8"))
        rid = headers["x-request-id"]
        assert rid.isascii() and rid.isprintable()
    lines = log_lines(gw, before + len(answers))
    assert len(lines) >= before + len(answers)


# 5. bounded memory: admitted concurrency, large bodies counted apart


def test_large_bodies_beyond_the_admitted_concurrency_get_429(tmp_path: Path) -> None:
    with running_gateway(_raw(maxConcurrentRequests=64, maxConcurrentLargeRequests=2), tmp_path, api_keys=[KEY]) as g:
        body = json.dumps({"model": "alpha", "prompt": "q" * (2 * 1024 * 1024 - 1024), "sleep_ms": 1500}).encode()
        statuses: list[int] = []

        def one() -> None:
            r = httpx.post(g.url + "/v1/completions", headers={**AUTH, "Content-Type": "application/json"}, content=body, timeout=30)
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert r.headers["Retry-After"] and r.json()["error"]["type"] == "rate_limit_error"

        threads = [threading.Thread(target=one) for _ in range(8)]
        with g.peak_rss_mib() as rss:
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        assert sorted(statuses) == [200, 200] + [429] * 6, statuses
        assert rss[1] < memory_mib(g.plan)[1], rss  # the derived pod limit holds what nginx admitted
        small = httpx.post(g.url + "/v1/completions", headers=AUTH, json={"model": "beta", "prompt": "x"})
        assert small.status_code == 200


# named keys, per-key limits, usage


def test_a_backend_that_is_down_is_logged_with_its_model_and_upstream(tmp_path: Path) -> None:
    """A 502 is the backend's failure, not the gateway's answer: the log names the model (its configured served name,
    whatever case the client wrote) and the address tried, whether the body or the path chose it."""
    with running_gateway(_raw(), tmp_path, api_keys=[KEY]) as g:
        stop(g.backends["alpha"])
        sent = {
            "down-body": ("/v1/completions", {"model": "ALPHA-chat", "prompt": "x"}),
            "down-path": ("/Alpha-Chat/v1/completions", {"prompt": "x"}),
        }
        for rid, (path, body) in sent.items():
            r = httpx.post(g.url + path, headers={**AUTH, "X-Request-ID": rid}, json=body)
            assert r.status_code == 502 and r.json()["error"]["code"] == "backend_unavailable"
        for rid in sent:
            line = g.log_line(rid)
            assert (line["model"], line["upstream"]) == ("alpha-chat", f"127.0.0.1:{g.backend_ports['alpha']}"), line


def test_key_name_not_key_is_logged(gw: Running) -> None:
    r = httpx.post(gw.url + "/v1/completions", headers={**AUTH, "X-Request-ID": "named-1"}, json={"model": "alpha", "prompt": "x"})
    assert r.status_code == 200
    assert gw.log_line("named-1")["key"] == "team-a"
    r = httpx.post(gw.url + "/beta/v1/completions", headers={"Authorization": "Bearer sk-unnamed", "X-Request-ID": "named-2"}, json={"model": "beta"})
    assert r.status_code == 200
    assert gw.log_line("named-2")["key"] == "key-1"
    r = httpx.get(gw.url + "/v1/models", headers={"X-Request-ID": "named-3"})
    assert gw.log_line("named-3")["key"] == "-"
    assert KEY not in gw.access_log.read_text() and "sk-unnamed" not in gw.access_log.read_text()


def test_token_usage_is_logged_for_plain_and_streamed_answers(gw: Running) -> None:
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    plain = c.chat.completions.with_raw_response.create(model="alpha", messages=[{"role": "user", "content": "x"}], extra_headers={"X-Request-ID": "use-1"})
    usage = plain.parse().usage
    assert usage is not None
    line = gw.log_line("use-1")
    assert (line["prompt_tokens"], line["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    stream = c.chat.completions.create(
        model="beta",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        max_tokens=7,
        stream_options={"include_usage": True},
        extra_headers={"X-Request-ID": "use-2"},
    )
    last = list(stream)[-1]
    assert last.usage is not None and last.usage.completion_tokens == 7
    line = gw.log_line("use-2")
    assert (line["prompt_tokens"], line["completion_tokens"], line["key"]) == (last.usage.prompt_tokens, 7, "team-a")
    list(
        c.chat.completions.create(model="beta", messages=[{"role": "user", "content": "x"}], stream=True, max_tokens=3, extra_headers={"X-Request-ID": "use-3"})
    )
    assert gw.log_line("use-3")["completion_tokens"] is None


def test_usage_split_between_reads_or_far_down_a_long_answer_is_logged(gw: Running) -> None:
    """The filter hands nginx the answer's tail: a usage event written in two halves (read apart), and a plain
    answer far longer than one read, still log their tokens."""
    stream = {"model": "beta", "prompt": "x", "stream": True, "max_tokens": 5, "split_ms": 150, "stream_options": {"include_usage": True}}
    r = httpx.post(gw.url + "/v1/completions", headers={**AUTH, "X-Request-ID": "split-1"}, json=stream, timeout=20)
    assert r.status_code == 200 and r.text.count("data: ") == 5 + 2
    assert (gw.log_line("split-1")["prompt_tokens"], gw.log_line("split-1")["completion_tokens"]) == (7, 5)
    r = httpx.post(gw.url + "/v1/completions", headers={**AUTH, "X-Request-ID": "long-1"}, json={"model": "alpha", "prompt": "x", "pad_bytes": 60_000})
    assert r.status_code == 200 and len(r.content) > 60_000
    assert (gw.log_line("long-1")["prompt_tokens"], gw.log_line("long-1")["completion_tokens"]) == (7, 1)


@pytest.mark.skipif(JS_ENGINE != "qjs", reason="the njs engine gives each request its own VM: only QuickJS reuses contexts (GATEWAY_JS_ENGINE=qjs)")
def test_usage_of_an_abandoned_stream_is_not_left_to_the_next_request(gw: Running) -> None:
    """QuickJS hands a context back to the pool when its request ends, also when the client left before the end: what
    the filter kept of that answer (its usage) must not turn up in the next request's log."""
    body = json.dumps({"model": "beta", "prompt": "x", "stream": True, "max_tokens": 3, "split_ms": 400, "stream_options": {"include_usage": True}})
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(_post(body.encode(), b"X-Request-ID: left-1\r\n"))
        got = b""
        while b'"completion_tokens": 3' not in got:  # the whole usage event has passed, [DONE] has not
            got += s.recv(65536)
    for n in range(4):  # answers without usage, through the same location (QuickJS pools contexts per location)
        r = httpx.post(gw.url + "/v1/completions", headers={**AUTH, "X-Request-ID": f"after-{n}"}, json={"model": "not-here"})
        assert r.status_code == 404
        assert (gw.log_line(f"after-{n}")["prompt_tokens"], gw.log_line(f"after-{n}")["completion_tokens"]) == (None, None)


def test_long_streams_do_not_grow_the_gateway(gw: Running) -> None:
    """A stream that asked for no usage is passed on without the filter after its first chunk: the njs engine would
    otherwise keep a copy of every chunk until the stream ends (QuickJS keeps none either way)."""
    request = _post(json.dumps({"model": "alpha", "prompt": "x", "stream": True, "max_tokens": 20_000}).encode())
    streams = [threading.Thread(target=send_raw, args=(gw.port, request, 60)) for _ in range(4)]
    with gw.peak_rss_mib() as rss:
        for th in streams:
            th.start()
        for th in streams:
            th.join(60)
    assert rss[1] - rss[0] < 4, rss


def test_per_key_rate_and_concurrency_limits_answer_429(tmp_path: Path) -> None:
    limits = {"slow": {"requestsPerMinute": 3}, "narrow": {"concurrent": 1}}
    with running_gateway(_raw(keyLimits=limits), tmp_path, api_keys=["slow:sk-slow", "narrow:sk-narrow", f"free:{KEY}"]) as g:
        slow = {"Authorization": "Bearer sk-slow"}
        got = [httpx.post(g.url + "/v1/completions", headers=slow, json={"model": "alpha", "prompt": "x"}) for _ in range(5)]
        assert [r.status_code for r in got[:3]] == [200, 200, 200]
        for r in got[3:]:
            err = r.json()["error"]
            assert r.status_code == 429 and err["type"] == "rate_limit_error" and int(r.headers["Retry-After"]) >= 1
        assert httpx.post(g.url + "/v1/completions", headers=AUTH, json={"model": "alpha", "prompt": "x"}).status_code == 200
        statuses: list[int] = []

        def one() -> None:
            r = httpx.post(g.url + "/v1/completions", headers={"Authorization": "Bearer sk-narrow"}, json={"model": "beta", "prompt": "x", "sleep_ms": 800})
            statuses.append(r.status_code)

        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert sorted(statuses) == [200, 429, 429]


# CORS


def test_cors_preflight_needs_no_key_and_answers_carry_the_origin(tmp_path: Path) -> None:
    with running_gateway(_raw(cors={"allowOrigins": ["https://app.example"]}), tmp_path, api_keys=[KEY]) as g:
        pre = httpx.options(
            g.url + "/v1/chat/completions",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"},
        )
        assert pre.status_code == 204
        assert pre.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "POST" in pre.headers["Access-Control-Allow-Methods"]
        assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()
        ok = httpx.post(g.url + "/v1/completions", headers={**AUTH, "Origin": "https://app.example"}, json={"model": "alpha", "prompt": "x"})
        assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "x-request-id" in ok.headers["Access-Control-Expose-Headers"].lower()
        denied = httpx.post(g.url + "/v1/completions", headers={"Origin": "https://app.example"}, json={"model": "alpha"})
        assert denied.status_code == 401 and denied.headers["Access-Control-Allow-Origin"] == "https://app.example"
        other = httpx.options(g.url + "/v1/chat/completions", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert "Access-Control-Allow-Origin" not in other.headers


def test_no_cors_headers_unless_configured(gw: Running) -> None:
    r = httpx.post(gw.url + "/v1/completions", headers={**AUTH, "Origin": "https://app.example"}, json={"model": "alpha", "prompt": "x"})
    assert "Access-Control-Allow-Origin" not in r.headers


# metrics


def scrape(g: Running) -> str:
    r = httpx.get(f"http://127.0.0.1:{g.metrics_port}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


def test_metrics_are_internal_and_need_no_key(gw: Running, tmp_path: Path) -> None:
    text = scrape(gw)
    assert "# TYPE vllm_stack_gateway_requests_in_flight gauge" in text
    assert "vllm_stack_gateway_requests_in_flight 0" in text
    (tmp_path / "m.txt").write_text(text)
    promtool = require_program("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert httpx.get(gw.url + "/metrics", headers=AUTH).status_code == 404  # not on the published port


def test_in_flight_gauge_counts_open_requests(gw: Running) -> None:
    done = threading.Event()

    def slow() -> None:
        httpx.post(gw.url + "/v1/completions", headers=AUTH, json={"model": "alpha", "prompt": "x", "sleep_ms": 1200}, timeout=20)
        done.set()

    threads = [threading.Thread(target=slow) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert "vllm_stack_gateway_requests_in_flight 3" in scrape(gw)
    for t in threads:
        t.join(20)
    assert "vllm_stack_gateway_requests_in_flight 0" in scrape(gw)


@pytest.mark.skipif(not SHARED_DICT, reason="counters need njs 0.8+ (js_shared_dict_zone); Debian 12 ships njs 0.7.9: set GATEWAY_NGINX/GATEWAY_NJS_MODULE")
def test_counters_by_model_status_class_and_key_name(gw: Running) -> None:
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    for _ in range(3):
        c.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "x"}])
    list(
        c.chat.completions.create(model="beta", messages=[{"role": "user", "content": "x"}], stream=True, max_tokens=4, stream_options={"include_usage": True})
    )
    httpx.post(gw.url + "/v1/completions", headers={"Authorization": "Bearer sk-unnamed"}, json={"model": "nope"})
    time.sleep(0.2)
    text = scrape(gw)
    values = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln and not ln.startswith("#")}
    assert values['vllm_stack_gateway_requests_total{model="alpha",status_class="2xx",key="team-a"}'] >= 3
    assert values['vllm_stack_gateway_requests_total{model="-",status_class="4xx",key="key-1"}'] >= 1
    assert values['vllm_stack_gateway_upstream_latency_seconds_count{model="alpha"}'] >= 3
    assert values['vllm_stack_gateway_upstream_latency_seconds_bucket{model="alpha",le="+Inf"}'] >= 3
    assert values['vllm_stack_gateway_completion_tokens_total{model="beta",key="team-a"}'] >= 4
    assert values['vllm_stack_gateway_prompt_tokens_total{model="alpha",key="team-a"}'] >= 21
    assert KEY not in text
    promtool = require_program("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.skipif(not SHARED_DICT, reason="counters need njs 0.8+ (js_shared_dict_zone); Debian 12 ships njs 0.7.9: set GATEWAY_NGINX/GATEWAY_NJS_MODULE")
def test_request_metrics_off_keeps_no_counters(tmp_path: Path) -> None:
    """gateway.requestMetrics off: no njs runs for a plain request (the CPU floor), and the metrics say so."""
    with running_gateway(_raw(requestMetrics=False), tmp_path, api_keys=[KEY]) as g:
        assert httpx.post(g.url + "/v1/completions", headers=AUTH, json={"model": "alpha", "prompt": "x"}).status_code == 200
        text = scrape(g)
        assert 'counters="no"' in text and "vllm_stack_gateway_requests_in_flight 0" in text
        assert "vllm_stack_gateway_requests_total" not in text and "upstream_latency" not in text


def test_pod_memory_follows_body_limit_and_admitted_concurrency() -> None:
    from stacks.plan import plan as make_plan
    from stacks.render.gateway import LARGE_REQUEST_FACTOR, NJS_BYTES_PER_TOKEN, nginx_conf

    def limit(**gateway: Any) -> int:
        return memory_mib(make_plan(parse(_raw(**gateway))))[1]

    base = limit(maxBodyMiB=16, maxConcurrentRequests=256, maxConcurrentLargeRequests=8)
    assert limit(maxBodyMiB=32, maxConcurrentRequests=256, maxConcurrentLargeRequests=8) >= base + 8 * 16 * LARGE_REQUEST_FACTOR
    assert limit(maxBodyMiB=16, maxConcurrentRequests=512, maxConcurrentLargeRequests=8) > base
    assert limit(maxBodyMiB=16, maxConcurrentRequests=256, maxConcurrentLargeRequests=16) > base
    # the njs engine holds a stream asking for usage until it ends: every slot may hold the longest answer (1024 tokens here)
    njs = limit(tokenUsage=True, jsEngine="njs") - limit(tokenUsage=True)
    assert njs >= (256 - 8) * 1024 * NJS_BYTES_PER_TOKEN / 2**20 and limit(jsEngine="njs") == limit()
    off = nginx_conf(make_plan(parse(_raw())))  # the default
    assert "js_body_filter" not in off and "js_body_filter router.usage;" in nginx_conf(make_plan(parse(_raw(tokenUsage=True))))


def test_streams_are_read_for_usage_when_they_ask_or_vllm_always_sends_it() -> None:
    from stacks.plan import plan as make_plan
    from stacks.render.gateway import nginx_conf

    def stream_rule(**model: Any) -> str:
        raw = _raw(tokenUsage=True)
        raw["models"][0] |= model
        conf = nginx_conf(make_plan(parse(raw)))
        start = conf.index('map "$gw_anthropic$upstream_http_content_type" $gw_usage_off {')
        return conf[start : conf.index("}", start)]

    assert "text/event-stream" in stream_rule()  # a stream is filtered only if its request asked for usage
    assert "text/event-stream" not in stream_rule(extraArgs=["--enable-force-include-usage"])  # vLLM sends it always
