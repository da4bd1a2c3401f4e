"""Swap groups at request time: the real swapper, fake vLLM members that sleep and wake (sharing a stand-in for the
GPU's memory), and the rendered gateway on a real nginx in front, driven with the openai client and raw HTTP.

Every check also reads the GPU ledger the fakes share: never more members awake than planned, never more memory
than the GPU has, and no request served by a sleeping member (or at level 2 before its weights were reloaded).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stacks.config import parse
from stacks.plan import StackPlan, plan
from stacks.render import anthropic
from stacks.swap import swapper
from tests.conftest import require_program
from tests.gateway_harness import require_nginx_njs
from tests.swap_harness import VLLM_KEY, Fake, Group, running_group

RAW: dict[str, Any] = {
    "target": "docker",
    "gpus": [{"index": 0, "name": "H100", "memoryGiB": 79.18}],
    "models": [
        {"name": "plain", "model": "Qwen/Qwen2.5-0.5B-Instruct", "maxModelLen": 2048, "maxNumSeqs": 4},
        {"name": "tiny", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "maxModelLen": 2048, "servedModelNames": ["tiny-chat"], "swap": {"group": "g"}},
        {"name": "qwen", "model": "Qwen/Qwen2.5-0.5B-Instruct", "maxModelLen": 2048, "maxNumSeqs": 4, "swap": {"group": "g"}},
        {"name": "qwen3", "model": "Qwen/Qwen3-0.6B", "maxModelLen": 2048, "maxNumSeqs": 4, "swap": {"group": "g", "level": 2}},
    ],
}
MEMBERS = ["tiny", "qwen", "qwen3"]


def swap_plan(**groups: Any) -> StackPlan:
    return plan(parse({**RAW, "swapGroups": {"g": groups}} if groups else RAW))


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One group behind the gateway for the tests that leave it as they found it (every member asleep or awake)."""
    require_nginx_njs()
    with running_group(swap_plan(drainSeconds=5, maxWaitSeconds=20), tmp_path_factory.mktemp("swap"), fakes={"qwen": Fake(wake_ms=100)}, gateway=True) as g:
        yield g


def post(url: str, body: dict[str, Any], timeout: float = 30.0, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    # straight to a member's port the request needs vLLM's key, as the gateway sends it (the gateway replaces it)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {VLLM_KEY}", **(headers or {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def assert_invariants(g: Group, awake: int = 1) -> None:
    ledger = g.ledger_now()
    assert ledger["violations"] == []
    assert ledger["peak_awake"] <= awake, ledger["events"][-20:]
    states = g.states()
    assert sum(s in ("starting", "waking", "awake", "draining", "sleeping") for s in states.values()) <= awake, states


def test_members_start_one_at_a_time_each_asleep_before_the_next(group: Group) -> None:
    events = [(name, what) for _, name, what in group.ledger_now()["events"]]
    first = events[: 2 * len(MEMBERS)]
    assert first == [(m, what) for m in MEMBERS for what in ("start", "sleep level " + ("2" if m == "qwen3" else "1"))]
    assert_invariants(group)


def test_requests_wake_their_member_and_put_the_other_to_sleep_through_the_gateway(group: Group) -> None:
    assert group.gateway is not None
    client = openai.OpenAI(base_url=group.gateway.url + "/v1", api_key="unused", max_retries=0)
    for model, backend in (("tiny-chat", "tiny"), ("qwen", "qwen"), ("qwen3", "qwen3"), ("tiny", "tiny")):
        answer = client.completions.create(model=model, prompt="hi", max_tokens=3)
        assert f"backend={backend} " in answer.choices[0].text
        assert group.states()[backend] == "awake"
        stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert f"backend={backend} " in text and text.endswith(" t3")
    assert_invariants(group)
    # the model outside the group is served directly, with no swapper in between
    assert "backend=plain " in client.completions.create(model="plain", prompt="hi").choices[0].text


def test_every_member_is_listed_whether_awake_or_not(group: Group) -> None:
    assert group.gateway is not None
    with urllib.request.urlopen(group.gateway.url + "/v1/models", timeout=5) as r:
        ids = {m["id"] for m in json.loads(r.read())["data"]}
    assert {"tiny", "tiny-chat", "qwen", "qwen3", "plain"} <= ids
    assert "asleep" in group.states().values()


def test_streams_pass_through_as_they_are_written(group: Group) -> None:
    """Twelve chunks 150 ms apart: each reaches the client when written, not buffered until the end."""
    assert group.gateway is not None
    post(group.gateway.url + "/v1/completions", {"model": "qwen", "prompt": "wake up"})
    body = json.dumps({"model": "qwen", "prompt": "hi", "stream": True, "max_tokens": 12, "delay_ms": 150}).encode()
    req = urllib.request.Request(group.gateway.url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    arrivals: list[float] = []
    start = time.monotonic()
    with urllib.request.urlopen(req, timeout=30) as r:
        for line in r:
            if line.startswith(b"data: {"):
                arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 12
    assert arrivals[0] < 0.6 and arrivals[-1] > 1.5
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(1 for gap in gaps if gap > 0.08) >= 9, gaps


def test_in_flight_requests_finish_before_their_member_sleeps(group: Group) -> None:
    """A stream on tiny runs 1.5 s; a request for qwen waits for it to end (drain 5 s) instead of cutting it off."""
    assert group.gateway is not None
    url = group.gateway.url + "/v1/completions"
    post(url, {"model": "tiny", "prompt": "wake up"})
    done: dict[str, float] = {}

    def long_stream() -> bytes:
        _, _, data = post(url, {"model": "tiny", "prompt": "x", "stream": True, "max_tokens": 15, "delay_ms": 100})
        done["tiny"] = time.monotonic()
        return data

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stream = pool.submit(long_stream)
        time.sleep(0.3)
        status, _, body = post(url, {"model": "qwen", "prompt": "y"})
        done["qwen"] = time.monotonic()
        data = stream.result()
    assert status == 200 and b"backend=qwen" in body
    assert data.count(b"data: {") == 15 and data.rstrip().endswith(b"data: [DONE]")
    assert done["qwen"] > done["tiny"]
    assert_invariants(group)


def test_every_development_route_stays_behind_the_swapper(group: Group) -> None:
    """vLLM's sleep, wake and RPC routes answer without a key: neither the gateway nor a member's port passes them on."""
    assert group.gateway is not None
    routes = ["/sleep?level=1", "/wake_up", "/collective_rpc", "/reset_prefix_cache", "/pause", "/is_sleeping", "/server_info"]
    for base in (group.gateway.url, f"http://127.0.0.1:{group.ports['tiny']}", f"http://127.0.0.1:{group.admin_port}"):
        for route in routes:
            for method in ("GET", "POST"):
                req = urllib.request.Request(base + route, data=b"{}" if method == "POST" else None, method=method)
                with pytest.raises(urllib.error.HTTPError) as err:
                    urllib.request.urlopen(req, timeout=5)
                assert err.value.code in (401, 404, 405), (base, route, err.value.code)
    # path routing passes only /<model>/v1/...; the swapper passes only /v1/..., /metrics and /health, without dot segments
    for base, paths in (
        (group.gateway.url, ("/tiny/sleep", "/tiny/v1/../sleep", "/tiny/v1/%2e%2e/sleep", "/v1/../sleep")),
        (f"http://127.0.0.1:{group.ports['tiny']}", ("/v1/../sleep", "/v1/%2e%2e/sleep", "/v1/%2E./wake_up", "/v1/./../is_sleeping")),
    ):
        for path in paths:
            status, _, _ = post(base + path, {"model": "tiny"})
            assert status in (400, 404), (base, path, status)
    # and the members' vLLM listens on 127.0.0.1 inside the group's server (the plan's own arguments)
    for name in MEMBERS:
        args = swap_plan().model(name).args
        assert args[args.index("--host") + 1] == "127.0.0.1" and "--enable-sleep-mode" in args
    assert_invariants(group)


def test_metrics_of_the_swapper_and_its_members_are_valid_exposition(group: Group) -> None:
    promtool = require_program("promtool")
    # a request of its own, so the wait histogram has an observation whichever tests ran before on this worker
    assert group.gateway is not None
    assert post(group.gateway.url + "/v1/completions", {"model": "tiny", "prompt": "metrics"})[0] == 200
    code, own = group.get("/metrics")
    assert code == 200 and b"vllm_stack_swap_wakes_total" in own and b"vllm_stack_swap_queue_wait_seconds_bucket" in own
    code, merged = group.get("/metrics/all")
    assert code == 200
    for text in (own, merged):
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
        assert b"error" not in check.stderr.lower() and b"duplicate" not in check.stderr.lower(), check.stderr
    assert merged.count(b"# TYPE process_start_time_seconds") == 1
    for name in MEMBERS:
        assert f'process_start_time_seconds{{model="{name}"}}'.encode() in merged
    # a member's own port relays its own metrics, asleep or not (what Prometheus scrapes per model)
    code, relayed = group.get("/metrics", port=group.ports["qwen3"])
    assert code == 200 and b'model_name="qwen3"' in relayed


def test_a_failed_wake_answers_503_json_and_leaves_the_member_asleep(group: Group) -> None:
    assert group.gateway is not None
    post(group.gateway.url + "/v1/completions", {"model": "tiny", "prompt": "wake up"})
    group.control("qwen", fail_wake=1)
    status, headers, body = post(group.gateway.url + "/v1/completions", {"model": "qwen", "prompt": "x"})
    assert status == 503 and json.loads(body)["error"]["code"] == "model_wake_failed"
    assert int(headers["Retry-After"]) >= 1
    assert group.wait_states(settled=True)["qwen"] == "asleep"
    status, _, body = post(group.gateway.url + "/v1/completions", {"model": "qwen", "prompt": "again"})
    assert status == 200 and b"backend=qwen" in body
    assert_invariants(group)


def test_queue_is_bounded_429_with_retry_after(tmp_path: Path) -> None:
    """Two may wait; four arrive while the member takes a second to wake: two get 429, two are answered."""
    p = swap_plan(queueSize=2)
    with running_group(p, tmp_path, fakes={"qwen": Fake(wake_ms=1000)}) as g:
        url = f"http://127.0.0.1:{g.ports['qwen']}/v1/completions"
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: post(url, {"model": "qwen", "prompt": str(i)}), range(4)))
        codes = sorted(r[0] for r in results)
        assert codes == [200, 200, 429, 429], codes
        for status, headers, body in results:
            if status == 429:
                assert json.loads(body)["error"]["type"] == "rate_limit_error" and int(headers["Retry-After"]) >= 1
        assert_invariants(g)


def test_a_wait_past_max_wait_answers_503_and_a_hung_wake_is_bounded(tmp_path: Path) -> None:
    p = swap_plan(maxWaitSeconds=1, wakeTimeoutSeconds=3)
    with running_group(p, tmp_path) as g:
        g.control("tiny", hang_wake=True)
        started = time.monotonic()
        status, _, body = post(f"http://127.0.0.1:{g.ports['tiny']}/v1/completions", {"model": "tiny", "prompt": "x"})
        assert status == 503 and json.loads(body)["error"]["code"] == "model_wake_timeout"
        assert time.monotonic() - started < 3
        # the wake that hangs is given up after wakeTimeoutSeconds: the member is stopped (known state), then restarted
        states = g.wait_states({"tiny": "asleep"}, timeout=30)
        assert states["tiny"] == "asleep"
        status, _, body = post(f"http://127.0.0.1:{g.ports['qwen']}/v1/completions", {"model": "qwen", "prompt": "x"})
        assert status == 200
        assert_invariants(g)


def test_a_drain_that_runs_long_is_cut_off_after_drain_seconds(tmp_path: Path) -> None:
    p = swap_plan(drainSeconds=1)
    with running_group(p, tmp_path) as g:
        base = "http://127.0.0.1:{}/v1/completions"
        post(base.format(g.ports["tiny"]), {"model": "tiny", "prompt": "wake"})
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            stream = pool.submit(post, base.format(g.ports["tiny"]), {"model": "tiny", "prompt": "x", "stream": True, "max_tokens": 100, "delay_ms": 100})
            time.sleep(0.3)
            started = time.monotonic()
            status, _, _ = post(base.format(g.ports["qwen"]), {"model": "qwen", "prompt": "y"})
            waited = time.monotonic() - started
            _, _, data = stream.result()
        assert status == 200 and 0.8 < waited < 4
        assert data.count(b"data: {") < 40, "the long stream was aborted when its member fell asleep"
        assert_invariants(g)


def test_a_member_that_crashes_restarts_within_the_plan(tmp_path: Path) -> None:
    p = swap_plan()
    with running_group(p, tmp_path) as g:
        base = "http://127.0.0.1:{}/v1/completions"
        assert post(base.format(g.ports["qwen"]), {"model": "qwen", "prompt": "x"})[0] == 200
        os.killpg(g.member_pid("tiny"), signal.SIGKILL)  # asleep when it dies
        os.killpg(g.member_pid("qwen"), signal.SIGKILL)  # awake when it dies
        states = g.wait_states({"tiny": "asleep", "qwen": "asleep"}, timeout=40)
        assert states["qwen3"] == "asleep"
        for name in MEMBERS:
            status, _, body = post(base.format(g.ports[name]), {"model": name, "prompt": "x"})
            assert status == 200 and f"backend={name}".encode() in body
        assert_invariants(g)


def test_a_member_used_while_the_others_still_start_does_not_stop_the_group_becoming_ready(tmp_path: Path) -> None:
    """tiny is asked for while qwen and qwen3 are still to start: it wakes, answers, and is put to sleep again for
    qwen3's first start (a place it needs to become ready), even with nobody waiting for qwen3."""
    fakes = {"qwen": Fake(startup_ms=1500), "qwen3": Fake(startup_ms=500)}
    with running_group(swap_plan(), tmp_path, fakes=fakes, ready=False) as g:
        g.wait_states({"tiny": "asleep"}, timeout=20)
        status, _, body = post(f"http://127.0.0.1:{g.ports['tiny']}/v1/completions", {"model": "tiny", "prompt": "x"})
        assert status == 200 and b"backend=tiny" in body
        deadline = time.monotonic() + 30
        while not g.status()["ready"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert g.status()["ready"], g.states()
        assert g.get("/health")[0] == 200
        assert_invariants(g)


def test_a_crashed_member_nobody_asks_for_waits_for_a_free_place(tmp_path: Path) -> None:
    """tiny dies asleep while qwen is awake: its restart puts nobody to sleep; the first request for it does."""
    with running_group(swap_plan(), tmp_path) as g:
        base = "http://127.0.0.1:{}/v1/completions"
        assert post(base.format(g.ports["qwen"]), {"model": "qwen", "prompt": "x"})[0] == 200
        os.killpg(g.member_pid("tiny"), signal.SIGKILL)
        g.wait_states({"tiny": "down"}, timeout=10)
        time.sleep(3)  # past the restart backoff
        assert g.states() == {"tiny": "down", "qwen": "awake", "qwen3": "asleep"}
        status, _, body = post(base.format(g.ports["tiny"]), {"model": "tiny", "prompt": "x"})
        assert status == 200 and b"backend=tiny" in body
        assert g.states()["qwen"] == "asleep"
        assert_invariants(g)


def test_a_restarted_swapper_finds_who_is_awake_and_puts_the_excess_to_sleep(tmp_path: Path) -> None:
    """The swapper dies with one member awake; behind its back a second wakes (the GPU has room for two here).
    Its supervisor starts it again: it adopts the running members and puts one to sleep, so one is awake."""
    p = swap_plan()
    with running_group(p, tmp_path, gpu_mib=1400, supervised=True) as g:
        assert post(f"http://127.0.0.1:{g.ports['tiny']}/v1/completions", {"model": "tiny", "prompt": "x"})[0] == 200
        old = g.swapper_pid()
        member_pids = {m: g.member_pid(m) for m in MEMBERS}
        os.kill(old, signal.SIGKILL)
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{g.engine_ports['qwen']}/wake_up", method="POST"), timeout=5).read()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if g.swapper_pid() != old and g.status()["ready"]:
                    break
            except (OSError, AssertionError):
                pass
            time.sleep(0.1)
        states = g.wait_states(settled=True)
        assert sum(s == "awake" for s in states.values()) == 1, states
        assert {m: g.member_pid(m) for m in MEMBERS} == member_pids, "the members kept running"
        ledger = g.ledger_now()
        assert sum(1 for proc in ledger["procs"].values() if proc["awake"]) == 1
        for name in MEMBERS:
            assert post(f"http://127.0.0.1:{g.ports[name]}/v1/completions", {"model": name, "prompt": "x"})[0] == 200
        assert g.ledger_now()["violations"] == []


def test_an_idle_member_falls_asleep_on_its_own(tmp_path: Path) -> None:
    raw = json.loads(json.dumps(RAW))
    raw["models"][2]["swap"]["idleSeconds"] = 1
    with running_group(plan(parse(raw)), tmp_path) as g:
        assert post(f"http://127.0.0.1:{g.ports['qwen']}/v1/completions", {"model": "qwen", "prompt": "x"})[0] == 200
        assert g.states()["qwen"] == "awake"
        assert g.wait_states({"qwen": "asleep"}, timeout=10)["qwen"] == "asleep"
        assert b'reason="idle"' in g.get("/metrics")[1]


def test_a_client_that_leaves_the_queue_wakes_nobody(tmp_path: Path) -> None:
    """A request for qwen waits while tiny streams (tiny drains for it); its client leaves: the wait ends, tiny stays
    awake for its own stream, qwen never wakes."""
    p = swap_plan()
    with running_group(p, tmp_path) as g:
        tiny = f"http://127.0.0.1:{g.ports['tiny']}/v1/completions"
        assert post(tiny, {"model": "tiny", "prompt": "wake"})[0] == 200
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            stream = pool.submit(post, tiny, {"model": "tiny", "prompt": "x", "stream": True, "max_tokens": 20, "delay_ms": 100})
            time.sleep(0.2)
            body = json.dumps({"model": "qwen", "prompt": "x"}).encode()
            with socket.create_connection(("127.0.0.1", g.ports["qwen"])) as s:
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                time.sleep(0.3)
                assert g.states()["tiny"] == "draining"
            g.wait_states({"tiny": "awake"}, timeout=5)
            assert g.status()["members"]["qwen"]["waiting"] == 0
            _, _, data = stream.result()
        assert data.count(b"data: {") == 20
        assert g.states()["qwen"] == "asleep"
        assert_invariants(g)


@st.composite
def traffic(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(3, 10))
    return [
        {
            "model": draw(st.sampled_from(["tiny", "tiny-chat", "qwen", "qwen3"])),
            "stream": draw(st.booleans()),
            "max_tokens": draw(st.integers(1, 6)),
            "delay_ms": draw(st.sampled_from([0, 20, 60])),
            "after_ms": draw(st.integers(0, 400)),
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def busy_group(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two awake at once, small drains and queue: interleavings put every transition next to every other."""
    require_nginx_njs()
    p = swap_plan(awake=2, drainSeconds=1, queueSize=6, maxWaitSeconds=15)
    fakes = {"tiny": Fake(wake_ms=30, sleep_ms=20), "qwen": Fake(wake_ms=80), "qwen3": Fake(wake_ms=50, sleep_ms=40)}
    with running_group(p, tmp_path_factory.mktemp("busy"), fakes=fakes, gpu_mib=1300, gateway=True) as g:
        yield g


@settings(max_examples=int(os.environ.get("SWAP_EXAMPLES", "25")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=traffic())
def test_any_interleaving_of_requests_across_members_keeps_the_plan(busy_group: Group, requests: list[dict[str, Any]]) -> None:
    """Whatever arrives in whatever order: each answer is its model's or a JSON 429/503, never more than two members
    awake, never more memory than the GPU has, nothing served asleep, and the group settles afterwards."""
    g = busy_group
    assert g.gateway is not None
    url = g.gateway.url + "/v1/completions"
    backend = {"tiny": "tiny", "tiny-chat": "tiny", "qwen": "qwen", "qwen3": "qwen3"}
    lock = threading.Lock()
    outcomes: list[tuple[str, int, bytes]] = []

    def send(r: dict[str, Any]) -> None:
        time.sleep(r["after_ms"] / 1000)
        status, _, body = post(url, {k: r[k] for k in ("model", "stream", "max_tokens", "delay_ms")} | {"prompt": "x"}, timeout=40)
        with lock:
            outcomes.append((r["model"], status, body))

    threads = [threading.Thread(target=send, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == len(requests)
    for model, status, body in outcomes:
        if status == 200:
            assert f"backend={backend[model]} ".encode() in body
        else:
            assert status in (429, 503), (status, body)
            assert json.loads(body)["error"]["code"]
    g.wait_states(settled=True)
    ledger = g.ledger_now()
    assert ledger["violations"] == [] and ledger["peak_awake"] <= 2 and ledger["peak_mib"] <= 1300


def test_messages_api_requests_get_the_swappers_errors_in_anthropics_shape(group: Group) -> None:
    """A Messages API client (the anthropic SDK, Claude Code) reads errors as Anthropic shapes them, as the gateway's own."""
    assert group.gateway is not None
    assert all(anthropic.ERROR_TYPES[status] == kind for status, kind in swapper.ANTHROPIC_TYPES.items())
    post(group.gateway.url + "/v1/completions", {"model": "tiny", "prompt": "wake up"})
    group.control("qwen", fail_wake=1)
    body = {"model": "qwen", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
    status, headers, answer = post(group.gateway.url + "/v1/messages", body, headers={"anthropic-version": "2023-06-01"})
    assert status == 503 and int(headers["Retry-After"]) >= 1
    error = json.loads(answer)
    assert error["type"] == "error" and error["error"]["type"] == "overloaded_error" and "failed to wake" in error["error"]["message"], error
    assert group.wait_states(settled=True)["qwen"] == "asleep"
    status, _, answer = post(group.gateway.url + "/v1/completions", {"model": "qwen", "prompt": "again"})
    assert status == 200
    assert_invariants(group)
