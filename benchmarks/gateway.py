"""Gateway overhead on this box: direct to a fake vLLM vs through the rendered nginx gateway.

Prints streaming time-to-first-token (p50/p99) and gaps between chunks, chunks per token,
non-streaming requests/s with p50/p99 at 16 and 64 connections, and nginx CPU time per request.
Everything runs on 127.0.0.1, bounded in count and time; what it starts it stops by pid.

    python benchmarks/gateway.py [--streams 400] [--requests 6000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

from tests.conftest import docker_raw
from tests.gateway_harness import Running, running_gateway
from tests.loadgen import percentile, request_bytes, run_load

KEY = "sk-bench"


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


def streaming(port: int, key: str | None, n: int, tokens: int, delay_ms: int) -> tuple[list[float], list[float], list[int]]:
    """n streams over one keep-alive connection: time to first SSE event, gaps between events, events per stream."""
    ttft, gaps, events = [], [], []
    end = time.monotonic() + 120
    req = request_bytes(port, "/v1/completions", {"model": "alpha", "prompt": "x", "stream": True, "max_tokens": tokens, "delay_ms": delay_ms}, key)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            if time.monotonic() > end:
                break
            t0 = time.perf_counter()
            s.sendall(req)
            stamps, ev = _read_stream(s, t0)
            ttft.append(stamps[0])
            gaps += [b - a for a, b in itertools.pairwise(stamps)]
            events.append(ev)
    return ttft, gaps, events


def ms(x: float) -> str:
    return f"{x * 1000:7.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=400)
    ap.add_argument("--requests", type=int, default=6000)
    args = ap.parse_args()
    if not shutil.which("nginx"):
        sys.exit("nginx not installed (make test installs it)")
    raw = docker_raw(models=[{"name": "alpha", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 1024}])
    with tempfile.TemporaryDirectory() as d, running_gateway(raw, Path(d), api_keys=[KEY]) as gw:
        direct = gw.backend_ports["alpha"]
        report(gw, direct, args)


def report(gw: Running, direct: int, args: argparse.Namespace) -> None:
    print("vllm-stack gateway benchmark (fake vLLM backend, nginx 1 worker, 127.0.0.1)")
    # warm up keepalive connections and the njs VM
    run_load(gw.port, [request_bytes(gw.port, "/v1/completions", {"model": "alpha", "prompt": "x"}, KEY)], 500, 8)

    d_ttft, _d_gaps, _ = streaming(direct, None, args.streams, 8, 0)
    g_ttft, _g_gaps, g_events = streaming(gw.port, KEY, args.streams, 8, 0)
    print(f"\nstreaming, {len(g_ttft)} requests x 8 tokens        p50 ms   p99 ms")
    print(f"  TTFT direct                           {ms(percentile(d_ttft, 50))}  {ms(percentile(d_ttft, 99))}")
    print(f"  TTFT via gateway                      {ms(percentile(g_ttft, 50))}  {ms(percentile(g_ttft, 99))}")
    print(
        f"  TTFT added by gateway                 {ms(percentile(g_ttft, 50) - percentile(d_ttft, 50))}  {ms(percentile(g_ttft, 99) - percentile(d_ttft, 99))}"
    )
    _, d_slow_gaps, _ = streaming(direct, None, 30, 20, 10)
    _, s_gaps, s_events = streaming(gw.port, KEY, 30, 20, 10)
    print(f"  gap between chunks (10 ms tokens) direct {ms(percentile(d_slow_gaps, 50))}  {ms(percentile(d_slow_gaps, 99))}")
    print(f"  gap between chunks (10 ms tokens) gw     {ms(percentile(s_gaps, 50))}  {ms(percentile(s_gaps, 99))}")
    print(f"  SSE events per token via gateway      {sum(g_events + s_events) / (8 * len(g_events) + 20 * len(s_events)):.3f}")

    print(f"\nnon-streaming /v1/completions, {args.requests} requests   req/s     p50 ms   p99 ms   nginx CPU us/req")
    for conns in (16, 64):
        d = run_load(direct, [request_bytes(direct, "/v1/completions", {"model": "alpha", "prompt": "hi"}, None)], args.requests, conns)
        cpu0 = gw.nginx_cpu_seconds()
        g = run_load(gw.port, [request_bytes(gw.port, "/v1/completions", {"model": "alpha", "prompt": "hi"}, KEY)], args.requests, conns)
        cpu = (gw.nginx_cpu_seconds() - cpu0) / max(1, g.total) * 1e6
        assert g.non_2xx == 0 and d.non_2xx == 0, (g.statuses, d.statuses)
        print(f"  {conns:2d} conns direct   {d.total / d.elapsed:9.0f}  {ms(percentile(d.latencies, 50))}  {ms(percentile(d.latencies, 99))}")
        print(f"  {conns:2d} conns gateway  {g.total / g.elapsed:9.0f}  {ms(percentile(g.latencies, 50))}  {ms(percentile(g.latencies, 99))}   {cpu:8.1f}")
    litellm = shutil.which("litellm")
    print("\nLiteLLM: " + ("installed but not wired here" if litellm else "not installed in a separate venv; skipped"))
    print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()
