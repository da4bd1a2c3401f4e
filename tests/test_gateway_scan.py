"""nginx's own scan of a request body for its top-level "model" (issue #12's CPU work), run by a real nginx's PCRE.

The gateway routes ordinary bodies with it and leaves the rest to router.js, so the scan may give up but, on valid
JSON, must never name a model JSON.parse would not (an invalid body it routes is vLLM's to refuse): these properties
are checked on generated JSON (hypothesis), with duplicate and escaped keys, deep nesting and strings full of
brackets, quotes and backslashes. Then the whole gateway: a body sent with Content-Length (nginx scans it) and
chunked (router.js decides) ends the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stacks.render.gateway import SCAN_DEPTH
from tests.conftest import docker_raw
from tests.gateway_harness import Running, require_nginx_njs, running_gateway, running_scanner

KEY = "sk-test-key"
EXAMPLES = int(os.environ.get("SCAN_EXAMPLES", "400"))
"""Generated bodies per property (SCAN_EXAMPLES=10000 for a longer hunt)."""
TINY = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"


@pytest.fixture(scope="module", autouse=True)
def _nginx() -> None:
    require_nginx_njs()


@pytest.fixture(scope="module")
def scanner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with running_scanner(tmp_path_factory.mktemp("scan")) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield client


def scan(client: httpx.Client, body: bytes) -> str | None:
    """What nginx's scan caught: the model, "" (matched, no plain model), or None (no match). The answer wraps it in
    "=" (a header loses its outer spaces)."""
    r = client.post("/", content=body)
    assert r.status_code == 200, r.text
    text = r.content.decode("utf-8")
    return None if text == "!" else text.removeprefix("=").removesuffix("=")


# JSON as text, written by hand so that keys may repeat or hide "model" behind escapes

SPECIAL = '{}[]":,\\ \n\tü€'
numbers = st.integers(-(10**12), 10**12) | st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | numbers | st.text(SPECIAL + "abmodel", max_size=12)
keys = st.sampled_from(["model", "model", "messages", "x", "Model", "model ", 'mo"del', "mo\\del", "{", "]"]) | st.text(SPECIAL + "model", max_size=6)
Json = Any  # a value: scalar, ("list", [values]) or ("obj", [(key, value, escaped_key)])


def containers(inner: st.SearchStrategy[Json]) -> st.SearchStrategy[Json]:
    return st.tuples(st.just("list"), st.lists(inner, max_size=4)) | st.tuples(st.just("obj"), st.lists(st.tuples(keys, inner, st.booleans()), max_size=4))


values: st.SearchStrategy[Json] = st.recursive(scalars, containers, max_leaves=24)


def write(v: Json, ws: str) -> str:
    if isinstance(v, tuple) and v[0] == "list":
        return "[" + ws + ("," + ws).join(write(x, ws) for x in v[1]) + ws + "]"
    if isinstance(v, tuple) and v[0] == "obj":
        members = [f"{key_text(k, esc)}{ws}:{ws}{write(x, ws)}" for k, x, esc in v[1]]
        return "{" + ws + ("," + ws).join(members) + ws + "}"
    return json.dumps(v, ensure_ascii=False)


def key_text(k: str, escaped: bool) -> str:
    """A key as JSON text; ``escaped``: its first letter as a \\u escape (JSON.parse reads the same key)."""
    text = json.dumps(k, ensure_ascii=False)
    if escaped and k and k[0].isalpha():
        return f'"\\u{ord(k[0]):04x}' + text[2:]
    return text


top_level = st.tuples(st.just("obj"), st.lists(st.tuples(keys, values, st.booleans()), max_size=6)) | values


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(v=top_level, model_at=st.integers(0, 7), model=st.text("ab.-", min_size=1, max_size=4) | scalars, ws=st.sampled_from(["", " ", "\n  "]))
def test_scan_names_only_the_model_json_parse_finds(scanner: httpx.Client, v: Json, model_at: int, model: Any, ws: str) -> None:
    if isinstance(v, tuple) and v[0] == "obj":  # a "model" somewhere among the top-level members, maybe twice
        v = ("obj", [*v[1][:model_at], ("model", model, False), *v[1][model_at:]])
    body = write(v, ws)
    parsed = json.loads(body)  # Python's json, like JSON.parse, keeps the last of repeated keys
    found = scan(scanner, body.encode())
    if found:
        assert isinstance(parsed, dict) and parsed.get("model") == found, body


def nested(depth: int, leaf: Json) -> Json:
    for i in range(depth):
        leaf = {"x": [leaf, "}]"], "y": i}
    return leaf


plain_models = st.text(st.characters(exclude_categories=["Cs"], exclude_characters='"\\', min_codepoint=32), min_size=1, max_size=20)


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    model=plain_models,
    depth=st.integers(0, SCAN_DEPTH // 2),
    before=st.dictionaries(st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=5), scalars, max_size=3),
    indent=st.sampled_from([None, 2]),
)
def test_scan_finds_an_ordinary_model(scanner: httpx.Client, model: str, depth: int, before: dict[str, Any], indent: int | None) -> None:
    """What clients send (json.dumps of a dict: no repeated or escaped keys) nested up to the scan's depth."""
    obj = {**{k: v for k, v in before.items() if k != "model"}, "messages": nested(depth, "{[\"'"), "model": model, "stream": True}
    assert scan(scanner, json.dumps(obj, ensure_ascii=False, indent=indent).encode()) == model


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ('{"model": "a", "prompt": "hi"}', "a"),
        ('{"model": 5, "model": "a"}', "a"),  # the last one
        ('{"model": "a", "model": 5}', ""),  # the last one is not a string: router.js decides
        ('{"model": "a", "mod\\u0065l": "b"}', ""),  # a later key that may spell model
        ('{"mo\\u0064el": "b", "model": "a"}', "a"),
        ('{"model": "a\\u0062"}', ""),  # an escaped value
        ('{"x": "mo\\"del", "model": "a"}', "a"),
        ('{"a": "\\":", "model": "a"}', "a"),  # an escaped quote, then a colon, inside a value (found by hypothesis)
        ('{"model": "a", "x": {"model": "b"}}', "a"),
        ('{"x": "{\\"model\\": \\"b\\"}", "model": "a"}', "a"),
        ('["model", "a"]', None),
        ('{"model": "a"} trailing', None),
        ('{"model": "a"', None),
        ("{}", ""),
        (json.dumps({"model": "deep", "x": nested(SCAN_DEPTH // 2, 1)}), "deep"),
        (json.dumps({"model": "deeper", "x": nested(SCAN_DEPTH, 1)}), None),  # beyond the scan: router.js
    ],
)
def test_scan_on_the_edges(scanner: httpx.Client, body: str, found: str | None) -> None:
    assert scan(scanner, body.encode()) == found


# the whole gateway: nginx's scan and router.js end alike


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    models = [
        {"name": "alpha", "model": TINY, "gpus": [0], "servedModelNames": ["alpha-chat"], "maxModelLen": 1024},
        {"name": "beta", "model": TINY, "gpus": [0], "maxModelLen": 1024},
    ]
    with running_gateway(docker_raw(models=models, gateway={"maxBodyMiB": 2}), tmp_path_factory.mktemp("gw"), api_keys=[KEY]) as running:
        yield running


def outcome(gw: Running, body: bytes, chunked: bool) -> str:
    content: bytes | Iterator[bytes] = iter([body[: len(body) // 2], body[len(body) // 2 :]]) if chunked else body
    r = httpx.post(gw.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, content=content, timeout=20)
    return f"backend {r.headers['X-Backend']}" if r.status_code == 200 else f"{r.status_code} {r.json()['error']['code']}"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"model": "beta", "prompt": "x"}, "backend beta"),
        ({"prompt": '{"model": "beta"}', "model": "alpha-chat"}, "backend alpha"),
        ({"messages": nested(SCAN_DEPTH, "x"), "model": "beta"}, "backend beta"),
        ({"prompt": "x", "model": "nope"}, "404 model_not_found"),
        ({"prompt": "x"}, "400 missing_model"),
        ({"model": 5}, "400 missing_model"),
        ('{"model": "be\\u0074a", "prompt": "x"}', "backend beta"),
        ('{"model": "alpha", "model": "beta"}', "backend beta"),
        ('{"model": "beta", "model": null}', "400 missing_model"),
        ("{not json", "400 invalid_json"),
        ('{"model": "beta"} x', "400 invalid_json"),
    ],
)
def test_gateway_routes_alike_whoever_reads_the_body(gw: Running, body: Any, expected: str) -> None:
    data = (body if isinstance(body, str) else json.dumps(body)).encode()
    assert outcome(gw, data, chunked=False) == expected
    assert outcome(gw, data, chunked=True) == expected


def test_client_cannot_speak_for_the_router(gw: Running) -> None:
    """The headers that carry router verdicts to the metrics server are the gateway's own, never the client's."""
    spoof = {"Authorization": f"Bearer {KEY}", "X-Gateway-Route-Error": "invalid_json", "X-Gateway-Model": "evil`"}
    ok = httpx.post(gw.url + "/v1/completions", headers=spoof, json={"model": "beta", "prompt": "x"})
    assert ok.status_code == 200 and ok.headers["X-Backend"] == "beta"
    unknown = httpx.post(gw.url + "/v1/completions", headers=spoof, json={"model": "nope", "prompt": "x"})
    assert unknown.status_code == 404 and "`nope`" in unknown.json()["error"]["message"] and "evil" not in unknown.text
    odd = httpx.post(gw.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, json={"model": 'a"b`c', "prompt": "x"})
    assert odd.status_code == 404 and odd.json()["error"]["code"] == "model_not_found"  # named only when safe
    for model in ("x\n", "x\r\nX-Injected: 1", "x\nX-Injected: 1\n"):  # a header line of its own, were it echoed
        r = httpx.post(gw.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, json={"model": model, "prompt": "x"})
        assert r.status_code == 404 and "x-injected" not in r.headers and "X-Injected" not in r.text
        assert r.json()["error"]["code"] == "model_not_found"


def test_log_names_the_routed_model_only(gw: Running) -> None:
    for rid, body in (("scan-1", {"model": "alpha-chat", "prompt": "x"}), ("scan-2", {"model": "nope", "prompt": "x"})):
        httpx.post(gw.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": rid}, json=body)
    lines = {rid: gw.log_line(rid) for rid in ("scan-1", "scan-2")}
    assert lines["scan-1"]["model"] == "alpha-chat" and lines["scan-1"]["upstream"].startswith("127.0.0.1:")
    assert lines["scan-2"]["model"] == "-" and lines["scan-2"]["status"] == 404 and lines["scan-2"]["upstream"] == ""
