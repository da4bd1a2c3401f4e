"""Gateway memory on this box: nginx's resident memory idle, per small request and per large request in flight,
and the peak under more load than the gateway admits, against the pod limit the stack derives
(``stacks.render.gateway.memory_mib``). The fake vLLM holds every request (``sleep_ms``) so they stay in flight.

Resident memory is the sum of VmRSS over nginx's master and workers (shared zones counted in each: an upper bound).
Everything runs on 127.0.0.1, bounded in count and time; what it starts it stops by pid.

    python benchmarks/gateway_memory.py [--max-body-mib 16] [--small 400] [--large-extra 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stacks.render.gateway import memory_mib
from tests.conftest import docker_raw
from tests.gateway_harness import NGINX, Running, running_gateway
from tests.loadgen import request_bytes

KEY = "sk-bench"


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
    peak = [g.nginx_rss_mib()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], g.nginx_rss_mib())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()

    async def run() -> None:
        await asyncio.wait_for(asyncio.gather(*(_one(port, data, statuses) for _ in range(n))), seconds + 120)

    try:
        asyncio.run(run())
    finally:
        stop.set()
        sampler.join()
    return peak[0], statuses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-body-mib", type=int, default=16)
    ap.add_argument("--small", type=int, default=400, help="small requests held at once")
    ap.add_argument("--large-extra", type=int, default=8, help="large requests sent beyond the admitted ones")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    if not shutil.which(NGINX):
        sys.exit("nginx not installed (make test installs it)")
    gw_cfg = {"maxBodyMiB": args.max_body_mib, "maxConcurrentRequests": args.small + 64, "workerProcesses": args.workers}
    raw = docker_raw(models=[{"name": "alpha", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 1024}], gateway=gw_cfg)
    with tempfile.TemporaryDirectory() as d, running_gateway(raw, Path(d), api_keys=[KEY]) as g:
        cfg = g.plan.gateway
        hold_ms = 3000
        idle = g.nginx_rss_mib()
        small = request_bytes(g.port, "/v1/completions", {"model": "alpha", "prompt": "hi " * 100, "sleep_ms": hold_ms}, KEY)
        hold(g.port, small, 8, g, 5)  # warm up the worker's pools
        base = g.nginx_rss_mib()
        peak_small, st_small = hold(g.port, small, args.small, g, 10)
        per_small = (peak_small - base) / args.small
        mid = request_bytes(g.port, "/v1/completions", {"model": "alpha", "prompt": "m" * 999_000, "sleep_ms": hold_ms}, KEY)
        base_mid = g.nginx_rss_mib()
        n_mid = min(args.small, 100)
        peak_mid, st_mid = hold(g.port, mid, n_mid, g, 10)
        per_mid = (peak_mid - base_mid) / n_mid
        body_bytes = args.max_body_mib * 1024 * 1024 - 4096
        large_body = {"model": "alpha", "prompt": "x" * (body_bytes - 100), "sleep_ms": hold_ms}
        large = request_bytes(g.port, "/v1/completions", large_body, KEY)
        n_large = cfg.max_concurrent_large_requests + args.large_extra
        base_large = g.nginx_rss_mib()
        peak_large, st_large = hold(g.port, large, n_large, g, 20)
        admitted = st_large.count(200)
        per_large = (peak_large - base_large) / max(1, admitted)
        request, limit = memory_mib(cfg)
        print(f"vllm-stack gateway memory (nginx, {args.workers} worker(s), maxBodyMiB {args.max_body_mib}, 127.0.0.1)")
        print(f"  idle                                   {idle:8.1f} MiB")
        print(
            f"  {args.small} small requests in flight        peak {peak_small:8.1f} MiB   {per_small * 1024:7.1f} KiB each   statuses {sorted(set(st_small))}"
        )
        print(f"  {n_mid} just-under-1-MB requests in flight  peak {peak_mid:8.1f} MiB   {per_mid:7.2f} MiB each   statuses {sorted(set(st_mid))}")
        print(
            f"  {n_large} large ({body_bytes / 2**20:.1f} MiB) requests sent   peak {peak_large:8.1f} MiB   {per_large:7.1f} MiB each "
            f"({per_large / (body_bytes / 2**20):.2f}x the body) for {admitted} admitted, {st_large.count(429)} answered 429"
        )
        print(f"  derived pod memory for these settings: request {request} MiB, limit {limit} MiB (peak seen {max(peak_small, peak_mid, peak_large):.0f} MiB)")
        print(
            json.dumps(
                {
                    "idle_mib": round(idle, 1),
                    "small_kib_each": round(per_small * 1024, 1),
                    "under_1mb_mib_each": round(per_mid, 2),
                    "large_mib_each": round(per_large, 1),
                    "large_body_copies": round(per_large / (body_bytes / 2**20), 2),
                    "large_admitted": admitted,
                    "large_429": st_large.count(429),
                    "peak_mib": round(max(peak_small, peak_mid, peak_large), 1),
                    "limit_mib": limit,
                }
            )
        )


if __name__ == "__main__":
    main()
