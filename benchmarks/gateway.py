"""Gateway overhead on this box: direct to a fake vLLM, through a plain nginx reverse proxy (the floor:
no njs, no keys), and through the rendered gateway (as configured by default, and with ``gateway.tokenUsage``, and where the njs
keeps counters ``gateway.requestMetrics``, turned the other way), all measured in one interleaved run.

Prints streaming time-to-first-token (p50/p99) and gaps between chunks, SSE events per token,
non-streaming requests/s with p50/p99 at 16 and 64 connections, and nginx CPU time per request
(``/proc/PID/schedstat``, nanoseconds; user and system from ``/proc/PID/stat``) of the floor and of each
gateway. Rounds alternate the targets so drift on the box (other load, CPU frequency) hits all of them alike;
the CPU ratio to the floor is also given as the median of each round's ratio, which drift between rounds
does not move. Set GATEWAY_NGINX / GATEWAY_NJS_MODULE / GATEWAY_JS_ENGINE to measure another nginx build
(the floor then runs on it too).
With ``--endpoints``, two more targets: the default gateway of a stack that also serves a model from an external endpoint
(requests still for the vLLM model: what having endpoints costs the rest), and that endpoint model itself (a fake
endpoint on 127.0.0.1, through the gateway's internal server for it: both nginx hops counted).
Everything runs on 127.0.0.1, bounded in count and time; what it starts it stops by pid.

    python benchmarks/gateway.py [--rounds 16] [--streams 400] [--requests 32000] [--endpoints]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stacks.config.schema import GatewayConfig
from tests.conftest import docker_raw
from tests.gateway_harness import NGINX, SHARED_DICT, child_pids, cpu_seconds, free_port, running_gateway, start_backend, start_nginx, stop
from tests.loadgen import percentile, request_bytes, run_load

KEY = "sk-bench"

FLOOR_CONF = """# plain nginx reverse proxy: the floor the gateway's overhead is measured against
worker_processes 1;
pid {dir}/floor.pid;
error_log {dir}/floor-error.log warn;
events {{ worker_connections 8192; }}
http {{
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000;
    access_log {dir}/floor-access.log combined buffer=64k flush=1s;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    upstream backend {{
        server 127.0.0.1:{backend} max_fails=0;
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        client_max_body_size 16m;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


@contextlib.contextmanager
def floor_proxy(directory: Path, backend: int) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    conf = directory / "floor.conf"
    conf.write_text(FLOOR_CONF.format(dir=directory, backend=backend, port=port))
    proc = start_nginx(conf, port)
    try:
        yield port, proc
    finally:
        stop(proc)


def _read_stream(s: socket.socket, t0: float) -> tuple[list[float], int]:
    buf = b""
    stamps: list[float] = []
    seen = 0
    while not buf.endswith(b"\r\n0\r\n\r\n"):
        data = s.recv(65536)
        if not data:
            raise ConnectionError("stream closed early")
        buf += data
        n = buf.count(b"data: ")
        now = time.perf_counter() - t0
        stamps += [now] * (n - seen)
        seen = n
    return stamps, buf.count(b"data: ") - buf.count(b"data: [DONE]")


def streaming(port: int, key: str | None, n: int, tokens: int, delay_ms: int, model: str = "alpha") -> tuple[list[float], list[float], list[int]]:
    """n streams over one keep-alive connection, asking for usage (so the gateway's filter reads them): time to first
    SSE event, gaps between events, token events per stream."""
    ttft: list[float] = []
    gaps: list[float] = []
    events: list[int] = []
    end = time.monotonic() + 120
    body = {"model": model, "prompt": "x", "stream": True, "max_tokens": tokens, "delay_ms": delay_ms, "stream_options": {"include_usage": True}}
    req = request_bytes(port, "/v1/completions", body, key)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            if time.monotonic() > end:
                break
            t0 = time.perf_counter()
            s.sendall(req)
            stamps, ev = _read_stream(s, t0)
            ttft.append(stamps[0])
            gaps += [b - a for a, b in itertools.pairwise(stamps[:-2])]  # the last two events are the usage and [DONE]
            events.append(ev - 1)
    return ttft, gaps, events


@dataclass
class Round:
    requests: int
    seconds: float
    latencies: list[float]
    cpu: float
    """nginx CPU seconds (schedstat)."""
    user: float
    system: float
    """nginx user and system seconds (clock ticks: meaningful summed over rounds)."""


@dataclass
class Target:
    name: str
    port: int
    key: str | None
    pids: list[int] = field(default_factory=list)
    """nginx processes whose CPU is counted (none for direct)."""
    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    tokens: int = 0
    load: dict[int, list[Round]] = field(default_factory=dict)
    """connections -> one Round per round."""
    model: str = "alpha"
    """The model its requests ask for."""


TICK = os.sysconf("SC_CLK_TCK")


def user_system(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds of ``pids`` (``/proc/PID/stat``, clock ticks)."""
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
    return user / TICK, system / TICK


@contextlib.contextmanager
def pinned(nginx: list[int], others: list[int]) -> Iterator[None]:
    """nginx on one core, the load generator and the backend on the others: nginx then never waits
    for a core, so its CPU per request does not swing with how many events one wake-up batches.
    Latency is measured unpinned (a wake-up across cores costs what it costs in production)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        for pid in nginx:
            os.sched_setaffinity(pid, cpus[:1])
        for pid in others:
            os.sched_setaffinity(pid, cpus[1:])
    try:
        yield
    finally:
        for pid in [*nginx, *others]:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, cpus)


def ms(x: float) -> str:
    return f"{x * 1000:7.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--streams", type=int, default=400, help="streams per target, over all rounds")
    ap.add_argument("--requests", type=int, default=32000, help="non-streaming requests per target and connection count, over all rounds")
    ap.add_argument("--endpoints", action="store_true", help="also measure a stack with an external endpoint, and its model")
    args = ap.parse_args()
    if not shutil.which(NGINX):
        sys.exit("nginx not installed (make test installs it)")
    defaults = GatewayConfig()
    usage, counters = defaults.token_usage, defaults.request_metrics
    # the default gateway, then each setting that changes the work per request turned the other way; requestMetrics
    # only where this nginx can keep counters (njs 0.8+: GATEWAY_NJS_MODULE)
    variants = {"gateway": {}, "gateway+usage" if not usage else "gateway-usage": {"tokenUsage": not usage}}
    if SHARED_DICT:
        variants["gateway+counters" if not counters else "gateway-counters"] = {"requestMetrics": not counters}

    def raw(gateway: dict[str, bool]) -> dict[str, object]:
        model = {"name": "alpha", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 1024}
        return docker_raw(models=[model], gateway=gateway)

    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        gateways = {name: stack.enter_context(running_gateway(raw(g), Path(d) / name, api_keys=[KEY])) for name, g in variants.items()}
        extra: list[Target] = []
        if args.endpoints:
            port = free_port()
            endpoint = start_backend("endpoint", ["endpoint-model"], port)
            stack.callback(stop, endpoint)
            with_endpoint = raw({}) | {
                "endpoints": [{"name": "ep", "url": f"http://127.0.0.1:{port}/v1", "models": [{"name": "remote", "model": "endpoint-model"}]}]
            }
            ep = stack.enter_context(running_gateway(with_endpoint, Path(d) / "with-endpoint", api_keys=[KEY]))
            extra = [Target("gateway+endpoints", ep.port, KEY, ep.nginx_pids()), Target("endpoint-model", ep.port, KEY, ep.nginx_pids(), model="remote")]
        backend = gateways["gateway"].backend_ports["alpha"]
        floor_port, floor = stack.enter_context(floor_proxy(Path(d) / "floor", backend))
        targets = [
            Target("direct", backend, None),
            Target("floor", floor_port, None, child_pids(floor.pid)),
            *(Target(name, g.port, KEY, g.nginx_pids()) for name, g in gateways.items()),
            *extra,
        ]
        print(f"gateway: gateway.tokenUsage {str(usage).lower()}, requestMetrics {str(counters).lower()} (the defaults; counters need njs 0.8+)")
        for name, g in variants.items():
            if g:
                print(f"{name}: " + ", ".join(f"{k} {str(v).lower()}" for k, v in g.items()))
        report(targets, args, [os.getpid(), *(p.pid for g in gateways.values() for p in g.backends.values())])


def load_round(order: list[Target], requests: int) -> None:
    for conns in (16, 64):
        for t in order:
            payload = [request_bytes(t.port, "/v1/completions", {"model": t.model, "prompt": "hi"}, t.key)]
            cpu0, (user0, sys0) = cpu_seconds(t.pids), user_system(t.pids)
            res = run_load(t.port, payload, requests, conns)
            cpu, (user, system) = cpu_seconds(t.pids) - cpu0, user_system(t.pids)
            assert res.non_2xx == 0, (t.name, res.statuses)
            t.load.setdefault(conns, []).append(Round(res.total, res.elapsed, res.latencies, cpu, user - user0, system - sys0))


def report(targets: list[Target], args: argparse.Namespace, others: list[int]) -> None:
    print(f"vllm-stack gateway benchmark (fake vLLM backend, nginx 1 worker, 127.0.0.1, {args.rounds} interleaved rounds)")
    for t in targets:  # warm up keep-alive connections and the njs VM
        run_load(t.port, [request_bytes(t.port, "/v1/completions", {"model": t.model, "prompt": "x"}, t.key)], 500, 8)
    per_round = max(1, args.streams // args.rounds)
    requests = max(1, args.requests // args.rounds)
    for r in range(args.rounds):
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        for t in order:
            ttft, _, events = streaming(t.port, t.key, per_round, 8, 0, t.model)
            _, gaps, slow_events = streaming(t.port, t.key, 6, 20, 10, t.model)
            t.ttft += ttft
            t.gaps += gaps
            t.events += events + slow_events
            t.tokens += 8 * len(events) + 20 * len(slow_events)
        with pinned([p for t in targets for p in t.pids], others):
            load_round(order, requests)

    direct = targets[0]
    print(f"\nstreaming, {len(direct.ttft)} requests x 8 tokens per target   p50 ms   p99 ms   added p50   SSE events/token")
    for t in targets:
        added = percentile(t.ttft, 50) - percentile(direct.ttft, 50)
        p50, p99 = percentile(t.ttft, 50), percentile(t.ttft, 99)
        print(f"  TTFT {t.name:16s}                      {ms(p50)}  {ms(p99)}   {ms(added)}   {sum(t.events) / t.tokens:.3f}")
    for t in targets:
        print(f"  gap between chunks (10 ms tokens) {t.name:16s}  {ms(percentile(t.gaps, 50))}  {ms(percentile(t.gaps, 99))}")

    print(f"\nnon-streaming /v1/completions, {requests * args.rounds} requests per row      req/s    p50 ms   p99 ms   nginx CPU us/req   user  system")
    summary: dict[str, float] = {}
    floor = targets[1]
    for conns in (16, 64):
        for t in targets:
            rounds = t.load[conns]
            n = sum(x.requests for x in rounds)
            lat = [v for x in rounds for v in x.latencies]
            cpu = ""
            if t.pids:
                us = sum(x.cpu for x in rounds) / n * 1e6
                user, system = (sum(getattr(x, f) for x in rounds) / n * 1e6 for f in ("user", "system"))
                summary[f"cpu_us_per_request_{t.name}_{conns}"] = round(us, 1)
                cpu = f"{us:8.1f}        {user:6.1f}  {system:6.1f}"
            print(f"  {conns:2d} conns {t.name:16s} {n / sum(x.seconds for x in rounds):9.0f}  {ms(percentile(lat, 50))}  {ms(percentile(lat, 99))}   {cpu}")
        for t in targets[2:]:
            # drift moves a round's floor and gateway alike: the median of per-round ratios is the steady figure
            per_round = [g.cpu / g.requests / (f.cpu / f.requests) for g, f in zip(t.load[conns], floor.load[conns], strict=True)]
            total = summary[f"cpu_us_per_request_{t.name}_{conns}"] / summary[f"cpu_us_per_request_floor_{conns}"]
            summary[f"cpu_ratio_{t.name}_{conns}"] = round(statistics.median(per_round), 2)
            rounds_text = ", ".join(f"{r:.2f}" for r in per_round)
            print(f"  {conns:2d} conns {t.name} CPU / floor CPU: {total:.2f}x overall, {statistics.median(per_round):.2f}x median of rounds ({rounds_text})")
    for t in targets[1:]:
        summary[f"ttft_added_p50_ms_{t.name}"] = round((percentile(t.ttft, 50) - percentile(direct.ttft, 50)) * 1000, 3)
        summary[f"sse_events_per_token_{t.name}"] = round(sum(t.events) / t.tokens, 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
