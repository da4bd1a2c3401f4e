"""Gateway memory on this box: nginx's resident memory idle, per small request and per large request in flight,
and the peak under more load than the gateway admits, against the pod limit the stack derives
(``stacks.render.gateway.memory_mib``). The fake vLLM holds every request (``sleep_ms``) so they stay in flight.
Small bodies are measured both ways they are routed: scanned by nginx, and (nested deeper than its scan) by
router.js. Then long streams, read by the usage filter (they ask for usage) and not (they do not): what each
holds while it lasts. The gateway runs with ``gateway.tokenUsage: true``, the costlier setting.

Resident memory is the sum of VmRSS over nginx's master and workers (shared zones counted in each: an upper bound).
Everything runs on 127.0.0.1, bounded in count and time; what it starts it stops by pid.

    python benchmarks/gateway_memory.py [--max-body-mib 16] [--small 400] [--large-extra 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stacks.config import parse
from stacks.plan import plan
from stacks.render.gateway import SCAN_DEPTH, memory_mib
from tests.conftest import docker_raw
from tests.gateway_harness import NGINX, Running, running_gateway
from tests.loadgen import request_bytes

KEY = "sk-bench"
HOLD_MS = 3000
SMALL_PROMPT = "hi " * 100


async def _one(port: int, data: bytes, statuses: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
        statuses.append(int(head.split()[1]))
    finally:
        writer.close()


def hold(port: int, data: bytes, n: int, g: Running, seconds: float) -> tuple[float, list[int]]:
    """Send n requests at once; sample RSS while they are in flight; (peak MiB, statuses)."""
    statuses: list[int] = []

    async def run() -> None:
        await asyncio.wait_for(asyncio.gather(*(_one(port, data, statuses) for _ in range(n))), seconds + 120)

    with g.peak_rss_mib() as rss:
        asyncio.run(run())
    return rss[1], statuses


def stream_growth(g: Running, tokens: int, n: int, ask_usage: bool) -> float:
    """Peak MiB over the start while n streams of ``tokens`` SSE events pass at once, read as fast as they come."""
    body = {"model": "alpha", "prompt": "x", "stream": True, "max_tokens": tokens}
    if ask_usage:
        body["stream_options"] = {"include_usage": True}
    data = request_bytes(g.port, "/v1/completions", body, KEY)

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", g.port)
        try:
            writer.write(data)
            await writer.drain()
            while not (await asyncio.wait_for(reader.read(65536), 60)).endswith(b"0\r\n\r\n"):
                pass
        finally:
            writer.close()

    async def run() -> None:
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 120)

    with g.peak_rss_mib() as rss:
        asyncio.run(run())
    return rss[1] - rss[0]


def held_body(prompt: object) -> dict[str, object]:
    """A request the fake vLLM holds for HOLD_MS before it answers, so that it stays in flight."""
    return {"model": "alpha", "prompt": prompt, "sleep_ms": HOLD_MS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-body-mib", type=int, default=16)
    ap.add_argument("--small", type=int, default=400, help="small requests held at once")
    ap.add_argument("--large-extra", type=int, default=8, help="large requests sent beyond the admitted ones")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--streams", type=int, default=4, help="long streams at once")
    ap.add_argument("--stream-tokens", type=int, default=20_000)
    args = ap.parse_args()
    if not shutil.which(NGINX):
        sys.exit("nginx not installed (make test installs it)")
    gw_cfg = {"maxBodyMiB": args.max_body_mib, "maxConcurrentRequests": args.small + 64, "workerProcesses": args.workers, "tokenUsage": True}
    raw = docker_raw(models=[{"name": "alpha", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 1024}], gateway=gw_cfg)
    stack_plan = plan(parse(raw))
    cfg = stack_plan.gateway
    with tempfile.TemporaryDirectory() as d:

        def fresh() -> contextlib.AbstractContextManager[Running]:
            """A new gateway for each measure: nginx's allocator keeps what a worker once held, and a later measure
            would reuse it and show nothing."""
            return running_gateway(raw, Path(tempfile.mkdtemp(dir=d)), api_keys=[KEY])

        def held(prompt: object, n: int, seconds: float) -> tuple[float, float, float, list[int]]:
            """On a fresh gateway: MiB idle, then after warming up its worker's pools, then at the peak with n requests
            of ``prompt`` in flight; and their statuses."""
            with fresh() as g:
                idle = g.nginx_rss_mib()
                hold(g.port, request_bytes(g.port, "/v1/completions", held_body(SMALL_PROMPT), KEY), 8, g, 5)
                base = g.nginx_rss_mib()
                peak, statuses = hold(g.port, request_bytes(g.port, "/v1/completions", held_body(prompt), KEY), n, g, seconds)
            return idle, base, peak, statuses

        idle, base, peak_small, st_small = held(SMALL_PROMPT, args.small, 10)
        per_small = (peak_small - base) / args.small
        n_mid = min(args.small, 100)
        # just under 1 MB: scanned by nginx; and nested deeper than its scan follows, so that router.js reads it
        deep: object = "m" * 999_000
        for _ in range(SCAN_DEPTH + 1):
            deep = [deep]
        _, base_mid, peak_mid, st_mid = held("m" * 999_000, n_mid, 10)
        per_mid = (peak_mid - base_mid) / n_mid
        _, base_mid_js, peak_mid_js, st_mid_js = held(deep, n_mid, 10)
        per_mid_js = (peak_mid_js - base_mid_js) / n_mid
        body_bytes = args.max_body_mib * 1024 * 1024 - 4096
        n_large = cfg.max_concurrent_large_requests + args.large_extra
        _, base_large, peak_large, st_large = held("x" * (body_bytes - 100), n_large, 20)
        admitted = st_large.count(200)
        per_large = (peak_large - base_large) / max(1, admitted)
        streams = {}
        for asked in (True, False):
            with fresh() as g:
                streams[asked] = stream_growth(g, args.stream_tokens, args.streams, asked)
        request, limit = memory_mib(stack_plan)
        print(f"vllm-stack gateway memory (nginx, {args.workers} worker(s), maxBodyMiB {args.max_body_mib}, 127.0.0.1)")
        print(f"  idle                                   {idle:8.1f} MiB")
        print(
            f"  {args.small} small requests in flight        peak {peak_small:8.1f} MiB   {per_small * 1024:7.1f} KiB each   statuses {sorted(set(st_small))}"
        )
        print(f"  {n_mid} just-under-1-MB requests in flight  peak {peak_mid:8.1f} MiB   {per_mid:7.2f} MiB each   statuses {sorted(set(st_mid))}")
        print(f"  {n_mid} of them nested for router.js        peak {peak_mid_js:8.1f} MiB   {per_mid_js:7.2f} MiB each   statuses {sorted(set(st_mid_js))}")
        print(
            f"  {n_large} large ({body_bytes / 2**20:.1f} MiB) requests sent   peak {peak_large:8.1f} MiB   {per_large:7.1f} MiB each "
            f"({per_large / (body_bytes / 2**20):.2f}x the body) for {admitted} admitted, {st_large.count(429)} answered 429"
        )
        for asked, grown in streams.items():
            ask = "asking" if asked else "not asking"
            print(f"  {args.streams} streams of {args.stream_tokens} tokens, {ask} for usage:  {grown:7.1f} MiB more while they last")
        peak = max(peak_small, peak_mid, peak_mid_js, peak_large)
        print(f"  derived pod memory for these settings: request {request} MiB, limit {limit} MiB (peak seen {peak:.0f} MiB)")
        print(
            json.dumps(
                {
                    "idle_mib": round(idle, 1),
                    "small_kib_each": round(per_small * 1024, 1),
                    "under_1mb_mib_each": round(per_mid, 2),
                    "under_1mb_router_js_mib_each": round(per_mid_js, 2),
                    "stream_growth_mib_asking_usage": round(streams[True], 1),
                    "stream_growth_mib_not_asking": round(streams[False], 1),
                    "large_mib_each": round(per_large, 1),
                    "large_body_copies": round(per_large / (body_bytes / 2**20), 2),
                    "large_admitted": admitted,
                    "large_429": st_large.count(429),
                    "peak_mib": round(peak, 1),
                    "limit_mib": limit,
                }
            )
        )


if __name__ == "__main__":
    main()
