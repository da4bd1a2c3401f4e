"""A bounded HTTP/1.1 keep-alive load generator (asyncio, 127.0.0.1 only) for tests and benchmarks."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def non_2xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 300)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    body = b""
    while True:  # chunked
        size = int((await reader.readline()).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, body
        body += chunk[:-2]


def request_bytes(port: int, path: str, body: dict[str, object], key: str | None) -> bytes:
    data = json.dumps(body).encode()
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{auth}Content-Length: {len(data)}\r\n\r\n").encode() + data


async def _worker(port: int, payloads: list[bytes], queue: asyncio.Queue[int], result: Result, deadline: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < deadline:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            writer.write(payloads[i % len(payloads)])
            status, _ = await _read_response(reader)
            result.latencies.append(time.perf_counter() - t0)
            result.statuses[status] = result.statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _run(port: int, payloads: list[bytes], total: int, connections: int, max_seconds: float) -> Result:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    result = Result()
    t0 = time.perf_counter()
    deadline = time.monotonic() + max_seconds
    await asyncio.gather(*(_worker(port, payloads, queue, result, deadline) for _ in range(connections)))
    result.elapsed = time.perf_counter() - t0
    return result


def run_load(port: int, payloads: list[bytes], total: int, connections: int, max_seconds: float = 120.0) -> Result:
    """Send ``total`` requests over ``connections`` keep-alive connections; stops at ``max_seconds`` whatever happens."""
    return asyncio.run(_run(port, payloads, total, connections, max_seconds))


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))] if s else float("nan")
