"""The swapper: one swap group's members behind one process, taking turns being awake with vLLM's sleep mode.

Runs inside the group's server (the stack's own vLLM image: Python's standard library only, nothing installed).
It starts each member's vLLM on 127.0.0.1 (so vLLM's development routes, which answer without a key, never leave
the container or pod), one at a time, each put to sleep before the next starts. Then it listens on one port per
member, where the gateway sends that member's requests: a request for a sleeping member waits in a bounded queue
while the swapper puts another member to sleep (once that one's requests end, or after ``drain_seconds``) and wakes
this one. Answers, streams included, pass through unbuffered. Never more than ``awake`` members hold their awake
memory at once: a member starting, waking, awake, draining or falling asleep counts.

vLLM's routes (vLLM 0.26.0 vllm/entrypoints/serve/dev/sleep/api_router.py and dev/rpc/api_router.py, mounted with
VLLM_SERVER_DEV_MODE=1; the same in 0.34.0, which answers JSON where 0.26.0 answers an empty 200):
``POST /sleep?level=1|2&mode=abort``, ``POST /wake_up[?tags=weights|kv_cache]``, ``GET /is_sleeping`` ->
``{"is_sleeping": bool}``, ``POST /collective_rpc`` ``{"method": "reload_weights"}`` (level 2: the weights reloaded
from the model cache between waking the weights and the KV cache; the scheduler resumes only once both are awake).

Its own port answers ``/health`` (200 once every member has started once), ``/status`` (JSON), ``/metrics`` (its
own) and ``/metrics/all`` (its own and every member's, each member's series labelled ``model``).

When it restarts (``--supervise`` restarts it; members run in their own sessions and survive), it finds out who is
awake with ``/is_sleeping`` and puts members to sleep until at most ``awake`` are.

    python3 swapper.py --config swap.json [--supervise]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOLDING = ("starting", "waking", "awake", "draining", "sleeping")
"""States in which a member holds its awake memory on the GPU."""
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection", "proxy-authenticate", "proxy-authorization", "trailer"}
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024 * 1024
TICK_S = 0.2
"""The controller looks at deadlines (queue waits, drains, idle members, restarts) at least this often."""
DEV_CALL_S = 10.0
"""Timeout of a quick development-route call (``/is_sleeping``, ``/health``)."""
RESTART_BACKOFF_S = (2, 5, 15, 30, 60)
FAILED_AFTER = 5
"""Failed starts in a row after which a member is marked failed: its requests get 503 at once (it is still retried)."""
WAIT_BUCKETS = (0.005, 0.05, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
SWAP_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


# --------------------------------------------------------------------------------------------------- metrics


class Metrics:
    """Counters, gauges and histograms in Prometheus' text format (what this process needs of a client library)."""

    def __init__(self) -> None:
        self.help: dict[str, tuple[str, str]] = {}
        self.values: dict[str, dict[tuple[tuple[str, str], ...], float]] = collections.defaultdict(dict)
        self.hist: dict[str, dict[tuple[tuple[str, str], ...], list[float]]] = collections.defaultdict(dict)
        self.buckets: dict[str, tuple[float, ...]] = {}

    def declare(self, name: str, kind: str, text: str, buckets: tuple[float, ...] = ()) -> None:
        self.help[name] = (kind, text)
        if buckets:
            self.buckets[name] = buckets

    def inc(self, name: str, labels: dict[str, str], by: float = 1.0) -> None:
        key = tuple(sorted(labels.items()))
        self.values[name][key] = self.values[name].get(key, 0.0) + by

    def set(self, name: str, labels: dict[str, str], value: float) -> None:
        self.values[name][tuple(sorted(labels.items()))] = value

    def observe(self, name: str, labels: dict[str, str], value: float) -> None:
        key = tuple(sorted(labels.items()))
        bounds = self.buckets[name]
        h = self.hist[name].setdefault(key, [0.0] * (len(bounds) + 2))  # buckets..., +Inf count, sum
        for i, b in enumerate(bounds):
            if value <= b:
                h[i] += 1
        h[len(bounds)] += 1
        h[len(bounds) + 1] += value

    def text(self) -> str:
        out = []
        for name, (kind, text) in self.help.items():
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            if kind == "histogram":
                bounds = self.buckets[name]
                for key, h in sorted(self.hist[name].items()):
                    for i, b in enumerate(bounds):
                        out.append(f"{name}_bucket{_labels(key, le=f'{b:g}')} {h[i]:g}")
                    out.append(f"{name}_bucket{_labels(key, le='+Inf')} {h[len(bounds)]:g}")
                    out.append(f"{name}_sum{_labels(key)} {h[len(bounds) + 1]:.6f}")
                    out.append(f"{name}_count{_labels(key)} {h[len(bounds)]:g}")
            else:
                for key, v in sorted(self.values[name].items()):
                    out.append(f"{name}{_labels(key)} {v:g}")
        return "\n".join(out) + "\n"


def _labels(key: tuple[tuple[str, str], ...], **extra: str) -> str:
    pairs = [*key, *extra.items()]
    return "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}" if pairs else ""


def merge_exposition(texts: list[tuple[str, str]]) -> str:
    """Several servers' metrics as one: each family's HELP and TYPE once, every sample labelled ``model="<name>"``
    (``texts``: (model, exposition)), so that series of different members never collide."""
    families: dict[str, list[str]] = {}
    heads: dict[str, list[str]] = {}
    for model, text in texts:
        family = ""
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    heads.setdefault(family, [])
                    if not any(h.split(" ", 3)[1] == parts[1] for h in heads[family]):
                        heads[family].append(line)
                    families.setdefault(family, [])
                continue
            end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=len(line))
            name, rest = line[:end], line[end:]
            label = f'model="{model}"'
            braced = rest.startswith("{")
            rest = "{" + label + ("," if not rest.startswith("{}") else "") + rest[1:] if braced else "{" + label + "}" + rest
            families.setdefault(family or name, []).append(name + rest)
    out = []
    for family, samples in families.items():
        out += heads.get(family, []) + samples
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------- HTTP


class HttpError(Exception):
    pass


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def keep_alive(self) -> bool:
        conn = (self.header("connection") or "").lower()
        return "close" not in conn if self.version == "HTTP/1.1" else "keep-alive" in conn


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise HttpError("incomplete request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise HttpError("request head too large") from None
    return head


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError("malformed header")
        headers.append((name, value.strip()))
    return lines[0], headers


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
        if len(body) > MAX_BODY:
            raise HttpError("body too large")


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    head = await read_head(reader)
    if head is None:
        return None
    first, headers = parse_head(head)
    parts = first.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError("malformed request line")
    req = Request(parts[0], parts[1], parts[2], headers, b"")
    if "chunked" in (req.header("transfer-encoding") or "").lower():
        req.body = await read_chunked(reader)
    else:
        length = int(req.header("content-length") or 0)
        if length < 0 or length > MAX_BODY:
            raise HttpError("bad Content-Length")
        req.body = await reader.readexactly(length) if length else b""
    return req


def response_head(status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable"}


async def send_json(writer: asyncio.StreamWriter, status: int, obj: Any, extra: list[tuple[str, str]] | None = None, close: bool = False) -> None:
    data = (json.dumps(obj) + "\n").encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *(extra or [])]
    if close:
        headers.append(("Connection", "close"))
    writer.write(response_head(status, REASONS.get(status, "Error"), headers) + data)
    await writer.drain()


async def send_text(writer: asyncio.StreamWriter, status: int, text: str, content_type: str = "text/plain; version=0.0.4; charset=utf-8") -> None:
    data = text.encode()
    writer.write(response_head(status, REASONS.get(status, "Error"), [("Content-Type", content_type), ("Content-Length", str(len(data)))]) + data)
    await writer.drain()


MESSAGES_API = ("/v1/messages", "/v1/messages/", "/v1/messages/count_tokens", "/v1/messages/count_tokens/")
"""Anthropic's Messages API paths (vLLM serves them for every generate model): its clients read errors in its shape."""
ANTHROPIC_TYPES = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error", 502: "api_error", 503: "overloaded_error"}
"""Anthropic's error type by status, as the gateway answers its own errors (stacks/render/anthropic.py ERROR_TYPES; this
file imports nothing of the project, tests/test_swap.py keeps the two alike)."""


def error_body(message: str, etype: str, code: str, status: int = 0, path: str = "") -> dict[str, Any]:
    """OpenAI-style, as the gateway's own errors; on a Messages API ``path`` Anthropic's, as the gateway's there."""
    if path in MESSAGES_API:
        return {"type": "error", "error": {"type": ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


async def call(port: int, method: str, path: str, key: str | None, body: bytes | None = None, timeout: float = DEV_CALL_S) -> tuple[int, bytes]:
    """One request to a member's vLLM on 127.0.0.1 (Connection: close); (status, body)."""

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            headers = [("Host", f"127.0.0.1:{port}"), ("Connection", "close"), ("Content-Length", str(len(body or b"")))]
            if body is not None:
                headers.append(("Content-Type", "application/json"))
            if key:
                headers.append(("Authorization", f"Bearer {key}"))
            writer.write(("\r\n".join([f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers)]) + "\r\n\r\n").encode("latin-1") + (body or b""))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            first, resp_headers = parse_head(head)
            status = int(first.split(" ")[1])
            lookup = {k.lower(): v for k, v in resp_headers}
            if "chunked" in lookup.get("transfer-encoding", "").lower():
                data = await read_chunked(reader)
            elif "content-length" in lookup:
                data = await reader.readexactly(int(lookup["content-length"]))
            else:
                data = await reader.read()
            return status, data
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return await asyncio.wait_for(go(), timeout)


# --------------------------------------------------------------------------------------------------- members


@dataclass
class Waiter:
    future: asyncio.Future[str]
    since: float
    deadline: float


@dataclass
class Member:
    name: str
    port: int
    engine_port: int
    level: int
    idle_seconds: float | None
    command: list[str]
    env: dict[str, str]
    startup_seconds: float
    state: str = "down"
    in_flight: int = 0
    waiters: collections.deque[Waiter] = field(default_factory=collections.deque)
    last_used: float = 0.0
    drain_deadline: float = 0.0
    proc: asyncio.subprocess.Process | None = None
    pid: int | None = None
    """Process group of its vLLM (this swapper's child, or one adopted after a restart)."""
    failures: int = 0
    restart_at: float = 0.0
    started_once: bool = False
    last_wake_s: float = 0.0


def _answer_all(m: Member, outcome: str) -> None:
    """Every request waiting for ``m`` gets ``outcome`` (those whose client left are dropped)."""
    while m.waiters:
        w = m.waiters.popleft()
        if not w.future.done():
            w.future.set_result(outcome)


def _retry_after(m: Member) -> str:
    """Retry-After of a request ``m`` could not take now: its last wake's time, else 5 s."""
    return str(max(1, math.ceil(m.last_wake_s or 5)))


def _back_off(m: Member) -> None:
    """One more failure of ``m``: its next start waits longer (``RESTART_BACKOFF_S``)."""
    m.failures += 1
    m.restart_at = time.monotonic() + RESTART_BACKOFF_S[min(m.failures, len(RESTART_BACKOFF_S)) - 1]


class Swapper:
    def __init__(self, config: dict[str, Any], key: str | None) -> None:
        self.group: str = config["group"]
        self.awake_limit: int = int(config["awake"])
        self.queue_size: int = int(config["queue_size"])
        self.max_wait: float = float(config["max_wait_seconds"])
        self.drain_s: float = float(config["drain_seconds"])
        self.wake_timeout: float = float(config["wake_timeout_seconds"])
        self.listen: str = config.get("listen", "0.0.0.0")
        self.port: int = int(config["port"])
        self.state_dir = Path(config.get("state_dir", "/tmp/vllm-swap"))
        self.spawn: bool = bool(config.get("spawn", True))
        self.key = key
        self.members = [
            Member(
                name=m["name"],
                port=int(m["port"]),
                engine_port=int(m["engine_port"]),
                level=int(m["level"]),
                idle_seconds=m.get("idle_seconds"),
                command=list(m["command"]),
                env=dict(m.get("env", {})),
                startup_seconds=float(m.get("startup_seconds", 1800)),
            )
            for m in config["members"]
        ]
        self.changed = asyncio.Event()
        self.starting: Member | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.stopping = False
        self.finished = asyncio.Event()
        self.metrics = Metrics()
        m = self.metrics
        m.declare("vllm_stack_swap_wakes_total", "counter", "Wakes of a member, by result (ok, failed).")
        m.declare("vllm_stack_swap_sleeps_total", "counter", "Members put to sleep, by reason (swap, idle, excess, started).")
        m.declare("vllm_stack_swap_wake_seconds", "histogram", "Time a member took to wake (level 2: with its weights reloaded).", SWAP_BUCKETS)
        m.declare("vllm_stack_swap_sleep_seconds", "histogram", "Time a member took to fall asleep (its requests' drain not counted).", SWAP_BUCKETS)
        m.declare("vllm_stack_swap_queue_wait_seconds", "histogram", "Time a request waited for its member to wake.", WAIT_BUCKETS)
        m.declare("vllm_stack_swap_busy_seconds_total", "counter", "Time spent waking members and putting them to sleep.")
        m.declare("vllm_stack_swap_rejected_total", "counter", "Requests answered without reaching their member, by reason.")
        m.declare("vllm_stack_swap_restarts_total", "counter", "Member processes (re)started by the swapper.")
        m.declare("vllm_stack_swap_waiting", "gauge", "Requests waiting for their member to wake.")
        m.declare("vllm_stack_swap_in_flight", "gauge", "Requests a member is serving.")
        m.declare("vllm_stack_swap_member_state", "gauge", "1 for the member's current state.")
        m.declare("vllm_stack_swap_awake_members", "gauge", "Members holding their awake memory (starting, waking, awake, draining, falling asleep).")
        m.declare("vllm_stack_swap_awake_limit", "gauge", "Members the plan lets hold their awake memory at once.")

    # ----------------------------------------------------------------------------------------------- state

    def holding(self) -> list[Member]:
        return [m for m in self.members if m.state in HOLDING]

    def labels(self, m: Member) -> dict[str, str]:
        return {"group": self.group, "model": m.name}

    def set_state(self, m: Member, state: str) -> None:
        m.state = state
        if state == "awake":
            m.last_used = time.monotonic()
        if len(self.holding()) > self.awake_limit:
            # never expected: the controller only grants a slot when one is free
            print(f"swapper: {len(self.holding())} members hold awake memory, over {self.awake_limit}", file=sys.stderr, flush=True)
        self.changed.set()

    def spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @property
    def ready_file(self) -> Path:
        return self.state_dir / "ready"

    def ready(self) -> bool:
        """Every member has started once in this container's life (the supervisor clears the mark when it starts)."""
        if self.ready_file.exists():
            return True
        if all(m.started_once for m in self.members):
            with contextlib.suppress(OSError):
                self.state_dir.mkdir(parents=True, exist_ok=True)
                self.ready_file.touch()
            return True
        return False

    def status(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "awake_limit": self.awake_limit,
            "ready": self.ready(),
            "members": {
                m.name: {"state": m.state, "in_flight": m.in_flight, "waiting": len(m.waiters), "failures": m.failures, "pid": m.pid} for m in self.members
            },
        }

    # ----------------------------------------------------------------------------------------------- controller

    async def control(self) -> None:
        while not self.stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), TICK_S)
            self.changed.clear()
            self.decide()

    def decide(self) -> None:
        """Every decision in one synchronous step of the event loop: nothing changes between looking and acting."""
        now = time.monotonic()
        for m in self.members:
            while m.waiters and (m.waiters[0].deadline <= now or m.waiters[0].future.done()):
                w = m.waiters.popleft()
                if not w.future.done():
                    w.future.set_result("timeout")
            if m.state == "awake":
                # dispatch: counted in flight now, so it cannot be chosen to sleep before the request reaches it
                while m.waiters:
                    w = m.waiters.popleft()
                    if not w.future.done():
                        m.in_flight += 1
                        w.future.set_result("go")
            elif m.state == "failed":
                _answer_all(m, "down")
        for m in self.members:
            if m.state == "draining" and not any(self.needs_place(x, now) for x in self.members if x is not m):
                # whoever it made room for is gone (the client left, the wait timed out): it stays awake
                self.set_state(m, "awake")
            elif m.state == "draining" and (m.in_flight == 0 or now >= m.drain_deadline):
                self.set_state(m, "sleeping")
                self.spawn_task(self.sleep(m, "swap"))
            elif m.state == "awake" and m.idle_seconds and not m.waiters and m.in_flight == 0 and now - m.last_used >= m.idle_seconds:
                self.set_state(m, "sleeping")
                self.spawn_task(self.sleep(m, "idle"))
        # who needs a slot: waiting requests first (oldest first), then members to (re)start
        wanting = sorted((m for m in self.members if m.waiters and m.state == "asleep"), key=lambda m: m.waiters[0].since)
        wanting += [m for m in self.members if m.state in ("down", "failed") and now >= m.restart_at and m not in wanting]
        free = self.awake_limit - len(self.holding())
        for m in wanting:
            if m.state in ("down", "failed") and self.starting is not None:
                continue  # one start at a time: vLLM sizes itself from what is free when it starts
            if free <= 0 and not self.needs_place(m, now):
                continue  # a restart nobody waits for takes a free place, it puts nobody to sleep
            if free > 0:
                free -= 1
                if m.state == "asleep":
                    self.set_state(m, "waking")
                    self.spawn_task(self.wake(m))
                else:
                    self.starting = m
                    self.set_state(m, "starting")
                    self.spawn_task(self.start(m))
                continue
            victim = self.victim()
            if victim is not None:
                victim.drain_deadline = now + self.drain_s
                self.set_state(victim, "draining")
                if victim.in_flight == 0:
                    self.changed.set()
            break  # the oldest need goes first: nothing overtakes it while it waits for a slot
        self.publish()

    def needs_place(self, m: Member, now: float) -> bool:
        """``m`` may have another member put to sleep for it: requests wait for it, or it has never started (the group
        is ready only once every member has) and has not failed to start ``FAILED_AFTER`` times; a restart nobody waits
        for waits for a free place instead."""
        if m.state in HOLDING:
            return False
        if m.waiters:
            return True
        return m.state == "down" and not m.started_once and now >= m.restart_at

    def victim(self) -> Member | None:
        """An awake member nobody waits for, least recently used first; none while one is already on its way to sleep."""
        if any(m.state in ("draining", "sleeping") for m in self.members):
            return None
        idle = [m for m in self.members if m.state == "awake" and not m.waiters]
        return min(idle, key=lambda m: (m.in_flight > 0, m.last_used)) if idle else None

    def publish(self) -> None:
        for m in self.members:
            lab = self.labels(m)
            self.metrics.set("vllm_stack_swap_waiting", lab, len(m.waiters))
            self.metrics.set("vllm_stack_swap_in_flight", lab, m.in_flight)
            for s in ("down", "starting", "asleep", "waking", "awake", "draining", "sleeping", "failed"):
                self.metrics.set("vllm_stack_swap_member_state", {**lab, "state": s}, 1.0 if m.state == s else 0.0)
        self.metrics.set("vllm_stack_swap_awake_members", {"group": self.group}, len(self.holding()))
        self.metrics.set("vllm_stack_swap_awake_limit", {"group": self.group}, self.awake_limit)

    # ----------------------------------------------------------------------------------------------- transitions

    async def is_sleeping(self, m: Member) -> bool:
        status, body = await call(m.engine_port, "GET", "/is_sleeping", self.key)
        if status != 200:
            raise HttpError(f"/is_sleeping answered {status}")
        return bool(json.loads(body)["is_sleeping"])

    async def sleep(self, m: Member, reason: str) -> None:
        """Put ``m`` to sleep (``mode=abort``: what still runs after the drain ends now); a member that will not sleep is stopped."""
        started = time.monotonic()
        try:
            await self._sleep_call(m)
            self.metrics.inc("vllm_stack_swap_sleeps_total", {**self.labels(m), "reason": reason})
            self.metrics.observe("vllm_stack_swap_sleep_seconds", self.labels(m), time.monotonic() - started)
            self.metrics.inc("vllm_stack_swap_busy_seconds_total", {"group": self.group}, time.monotonic() - started)
            self.set_state(m, "asleep")
        except Exception as e:  # any failure leaves it holding memory: stop it, known state "down"
            print(f"swapper: {m.name} did not fall asleep ({e!r}); stopping it", file=sys.stderr, flush=True)
            await self.stop_member(m)
            self.set_state(m, "down")

    async def _sleep_call(self, m: Member) -> None:
        """``POST /sleep`` at ``m``'s level, checked with ``/is_sleeping``; HttpError when it is not asleep after it."""
        status, _ = await call(m.engine_port, "POST", f"/sleep?level={m.level}&mode=abort", self.key, timeout=self.wake_timeout)
        if status != 200 or not await self.is_sleeping(m):
            raise HttpError(f"/sleep answered {status}")

    async def wake(self, m: Member) -> None:
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._wake_calls(m), self.wake_timeout)
            if await self.is_sleeping(m):
                raise HttpError("still asleep after /wake_up")
            m.last_wake_s = time.monotonic() - started
            self.metrics.inc("vllm_stack_swap_wakes_total", {**self.labels(m), "result": "ok"})
            self.metrics.observe("vllm_stack_swap_wake_seconds", self.labels(m), m.last_wake_s)
            self.metrics.inc("vllm_stack_swap_busy_seconds_total", {"group": self.group}, m.last_wake_s)
            self.set_state(m, "awake")
        except Exception as e:  # a failed wake: its waiters get 503, the member goes back to sleep or is stopped
            print(f"swapper: {m.name} failed to wake ({e!r})", file=sys.stderr, flush=True)
            self.metrics.inc("vllm_stack_swap_wakes_total", {**self.labels(m), "result": "failed"})
            self.metrics.inc("vllm_stack_swap_busy_seconds_total", {"group": self.group}, time.monotonic() - started)
            _answer_all(m, "wake_failed")
            self.set_state(m, "sleeping")
            await self.sleep(m, "wake_failed")

    async def _wake_calls(self, m: Member) -> None:
        if m.level == 2:
            # weights first, reloaded while the scheduler stays paused (the KV cache still asleep), then the KV cache
            for method, path, body in (
                ("POST", "/wake_up?tags=weights", None),
                ("POST", "/collective_rpc", json.dumps({"method": "reload_weights"}).encode()),
                ("POST", "/wake_up?tags=kv_cache", None),
            ):
                status, text = await call(m.engine_port, method, path, self.key, body, timeout=self.wake_timeout)
                if status != 200:
                    raise HttpError(f"{path} answered {status}: {text[:200]!r}")
        else:
            status, text = await call(m.engine_port, "POST", "/wake_up", self.key, timeout=self.wake_timeout)
            if status != 200:
                raise HttpError(f"/wake_up answered {status}: {text[:200]!r}")

    def pidfile(self, m: Member) -> Path:
        return self.state_dir / f"{m.name}.pid"

    async def start(self, m: Member) -> None:
        """(Re)start ``m``'s vLLM, wait for it to answer, put it to sleep; it held a slot all along."""
        try:
            if m.pid is None or not _alive(m.pid):
                if not self.spawn:
                    raise HttpError("not running, and this swapper starts no processes")
                self.state_dir.mkdir(parents=True, exist_ok=True)
                m.proc = await asyncio.create_subprocess_exec(*m.command, env={**os.environ, **m.env}, start_new_session=True, stdin=subprocess.DEVNULL)
                m.pid = m.proc.pid
                self.pidfile(m).write_text(str(m.pid))
                self.metrics.inc("vllm_stack_swap_restarts_total", self.labels(m))
                self.spawn_task(self.watch(m, m.proc))
            deadline = time.monotonic() + m.startup_seconds
            while True:
                if m.pid is None or not _alive(m.pid):
                    raise HttpError("its process exited while starting")
                with contextlib.suppress(OSError, asyncio.TimeoutError, HttpError, ValueError):
                    status, _ = await call(m.engine_port, "GET", "/health", self.key, timeout=5)
                    if status == 200:
                        break
                if time.monotonic() > deadline:
                    raise HttpError(f"no healthy answer within {m.startup_seconds:.0f} s")
                await asyncio.sleep(1.0)
            if not await self.is_sleeping(m):
                await self._sleep_call(m)
                self.metrics.inc("vllm_stack_swap_sleeps_total", {**self.labels(m), "reason": "started"})
            m.failures = 0
            m.started_once = True
            self.set_state(m, "asleep")
        except Exception as e:  # a failed start is retried with backoff; the member's memory is freed first
            print(f"swapper: {m.name} failed to start ({e!r})", file=sys.stderr, flush=True)
            await self.stop_member(m)
            _back_off(m)
            self.set_state(m, "failed" if m.failures >= FAILED_AFTER else "down")
        finally:
            if self.starting is m:
                self.starting = None
            self.changed.set()

    async def watch(self, m: Member, proc: asyncio.subprocess.Process) -> None:
        """A member process that exits frees its memory: it is down, and restarts when a slot is free."""
        await proc.wait()
        if m.proc is proc:
            m.proc, m.pid = None, None
            with contextlib.suppress(OSError):
                self.pidfile(m).unlink()
            if m.state not in ("down", "failed", "starting") and not self.stopping:
                print(f"swapper: {m.name} exited with {proc.returncode} ({m.state}); restarting it", file=sys.stderr, flush=True)
                _back_off(m)
                self.set_state(m, "down")

    async def watch_adopted(self) -> None:
        """Members started by an earlier swapper are not this one's children: it looks for their process instead."""
        while not self.stopping:
            await asyncio.sleep(1.0)
            for m in self.members:
                if m.proc is None and m.pid is not None and not _alive(m.pid) and m.state not in ("down", "failed", "starting"):
                    m.pid = None
                    m.failures += 1
                    m.restart_at = time.monotonic() + RESTART_BACKOFF_S[0]
                    self.set_state(m, "down")

    async def stop_member(self, m: Member, grace: float = 30.0) -> None:
        pid = m.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        end = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < end:
            await asyncio.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if m.proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(m.proc.wait(), 10)
        m.proc, m.pid = None, None
        with contextlib.suppress(OSError):
            self.pidfile(m).unlink()

    async def adopt(self) -> None:
        """After a restart: who runs, who is awake; then at most ``awake`` members keep their awake memory."""
        for m in self.members:
            with contextlib.suppress(OSError, ValueError):
                m.pid = int(self.pidfile(m).read_text())
            if m.pid is not None and not _alive(m.pid):
                m.pid = None
            try:
                asleep = await self.is_sleeping(m)
            except (TimeoutError, OSError, HttpError, ValueError, KeyError):
                if m.pid is not None:
                    # running, not answering yet: an earlier swapper was starting it; it holds its memory until it sleeps
                    self.starting = m
                    m.state = "starting"
                    self.spawn_task(self.start(m))
                continue
            m.started_once = True
            m.state = "asleep" if asleep else "awake"
            m.last_used = time.monotonic()
        awake = [m for m in self.members if m.state == "awake"]
        excess = len(self.holding()) - self.awake_limit
        for m in awake[::-1][: max(excess, 0)]:
            print(f"swapper: {m.name} was awake beyond the {self.awake_limit} allowed; putting it to sleep", file=sys.stderr, flush=True)
            m.state = "sleeping"
            await self.sleep(m, "excess")
        self.changed.set()

    # ----------------------------------------------------------------------------------------------- requests

    async def serve_member(self, m: Member, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            try:
                while True:
                    req = await read_request(reader)
                    if req is None:
                        return
                    keep = await self.handle_member(m, req, reader, writer) and req.keep_alive
                    if not keep:
                        return
            except (HttpError, ValueError) as e:
                with contextlib.suppress(ConnectionError):
                    await send_json(writer, 400, error_body(f"Bad request: {e}.", "invalid_request_error", "bad_request"), close=True)
            finally:
                writer.close()

    async def handle_member(self, m: Member, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        path = req.target.split("?", 1)[0]
        if any(part in (".", "..") for part in urllib.parse.unquote(path).split("/")) or "\\" in path:
            # no dot segments: what reaches vLLM under /v1/ stays under /v1/
            await send_json(writer, 404, error_body("Not found.", "invalid_request_error", "not_found"))
            return True
        if path == "/metrics" and req.method == "GET":
            try:
                status, body = await call(m.engine_port, "GET", "/metrics", None)
                await send_text(writer, status, body.decode("utf-8", "replace"))
            except (TimeoutError, OSError, HttpError, ValueError):
                await send_json(writer, 503, error_body(f"{m.name} is {m.state}.", "server_error", "member_unavailable"))
            return True
        if path == "/health" and req.method == "GET":
            ok = m.state not in ("down", "failed", "starting")
            await send_json(writer, 200 if ok else 503, {"status": m.state})
            return True
        if not path.startswith("/v1/"):
            # the development routes (sleep, wake, RPC) and everything else of vLLM stay behind the swapper
            await send_json(writer, 404, error_body("Not found. The API lives under /v1/.", "invalid_request_error", "not_found"))
            return True
        if req.method != "POST":
            # reads (GET /v1/models) need no engine: a sleeping server answers them
            return await self.forward(m, req, writer)
        granted = await self.acquire(m, path, reader, writer)
        if granted is None:
            return False
        if not granted:
            return True
        try:
            return await self.forward(m, req, writer)
        finally:
            m.in_flight -= 1
            m.last_used = time.monotonic()
            self.changed.set()

    async def acquire(self, m: Member, path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool | None:
        """Count the request in ``m``'s flight, waking ``m`` first if it must: True when granted, False when answered
        with an error, None when the client left while it waited."""
        now = time.monotonic()
        lab = self.labels(m)
        if m.state == "awake" and not m.waiters:
            m.in_flight += 1
            m.last_used = now
            self.metrics.observe("vllm_stack_swap_queue_wait_seconds", lab, 0.0)
            return True
        if m.state == "failed":
            self.metrics.inc("vllm_stack_swap_rejected_total", {**lab, "reason": "down"})
            message = f"Model {m.name} failed to start; it is being retried."
            await send_json(writer, 503, error_body(message, "server_error", "model_unavailable", 503, path), [("Retry-After", "30")])
            return False
        if sum(len(x.waiters) for x in self.members) >= self.queue_size:
            self.metrics.inc("vllm_stack_swap_rejected_total", {**lab, "reason": "queue_full"})
            message = f"{self.queue_size} requests already wait for their models to wake; retry after the time in Retry-After."
            await send_json(writer, 429, error_body(message, "rate_limit_error", "swap_queue_full", 429, path), [("Retry-After", _retry_after(m))])
            return False
        waiter = Waiter(asyncio.get_running_loop().create_future(), now, now + self.max_wait)
        m.waiters.append(waiter)
        self.changed.set()
        gone = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait([waiter.future, gone], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
        finally:
            if not gone.done():
                gone.cancel()
        if not waiter.future.done():
            # the client left (or sent more than one request at once): no member wakes for it
            waiter.future.cancel()
            self.changed.set()
            return None
        outcome = waiter.future.result()
        self.metrics.observe("vllm_stack_swap_queue_wait_seconds", lab, time.monotonic() - now)
        if outcome == "go":
            if gone.done() and not gone.cancelled() and gone.result() == b"":
                m.in_flight -= 1
                self.changed.set()
                return None
            return True
        self.metrics.inc("vllm_stack_swap_rejected_total", {**lab, "reason": outcome})
        messages = {
            "timeout": (f"Model {m.name} did not wake within {self.max_wait:.0f} s; retry later.", "model_wake_timeout"),
            "wake_failed": (f"Model {m.name} failed to wake; it is back asleep and the next request tries again.", "model_wake_failed"),
            "down": (f"Model {m.name} is not running; it is being restarted.", "model_unavailable"),
        }
        message, code = messages.get(outcome, (f"Model {m.name} is unavailable.", "model_unavailable"))
        await send_json(writer, 503, error_body(message, "server_error", code, 503, path), [("Retry-After", _retry_after(m))])
        return False

    async def forward(self, m: Member, req: Request, writer: asyncio.StreamWriter) -> bool:
        """Pass the request to ``m``'s vLLM and its answer back as it comes (one connection per request, Connection:
        close upstream). True when the client's connection can take another request."""
        path = req.target.split("?", 1)[0]
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", m.engine_port)
        except OSError:
            await send_json(writer, 502, error_body(f"Model {m.name} is not reachable ({m.state}).", "server_error", "backend_unavailable", 502, path))
            return True
        try:
            headers = [(k, v) for k, v in req.headers if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
            headers += [("Content-Length", str(len(req.body))), ("Connection", "close")]
            up_writer.write((f"{req.method} {req.target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1") + req.body)
            await up_writer.drain()
            try:
                head = await up_reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                await send_json(writer, 502, error_body(f"Model {m.name} closed the connection.", "server_error", "backend_unavailable", 502, path))
                return True
            first, resp_headers = parse_head(head)
            status = int(first.split(" ")[1])
            lookup = {k.lower(): v for k, v in resp_headers}
            chunked = "chunked" in lookup.get("transfer-encoding", "").lower()
            length = int(lookup["content-length"]) if "content-length" in lookup and not chunked else None
            bodiless = req.method == "HEAD" or status in (204, 304) or 100 <= status < 200
            until_close = not chunked and length is None and not bodiless
            out_headers = [(k, v) for k, v in resp_headers if k.lower() not in HOP_BY_HOP or k.lower() == "transfer-encoding"]
            if until_close:
                out_headers.append(("Connection", "close"))
            writer.write(response_head(status, first.split(" ", 2)[2] if first.count(" ") >= 2 else "", out_headers))
            await writer.drain()
            if bodiless:
                return True
            if chunked:
                while True:
                    line = await up_reader.readuntil(b"\r\n")
                    size = int(line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        writer.write(line)
                        while True:
                            trailer = await up_reader.readuntil(b"\r\n")
                            writer.write(trailer)
                            if trailer == b"\r\n":
                                break
                        await writer.drain()
                        return True
                    writer.write(line + await up_reader.readexactly(size + 2))
                    await writer.drain()
            if length is not None:
                left = length
                while left:
                    data = await up_reader.read(min(left, 65536))
                    if not data:
                        raise ConnectionError("upstream closed early")
                    writer.write(data)
                    await writer.drain()
                    left -= len(data)
                return True
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            return False
        except (asyncio.IncompleteReadError, ValueError):
            # the member's answer broke off (aborted by a sleep after the drain, or its process died): the client's
            # connection cannot carry another request after a cut-off answer
            return False
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

    async def serve_admin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, HttpError, ValueError):
            try:
                while (req := await read_request(reader)) is not None:
                    path = req.target.split("?", 1)[0]
                    if path == "/health":
                        ready = self.ready()
                        await send_json(writer, 200 if ready else 503, {"status": "ok" if ready else "starting"})
                    elif path == "/status":
                        await send_json(writer, 200, self.status())
                    elif path == "/metrics":
                        self.publish()
                        await send_text(writer, 200, self.metrics.text())
                    elif path == "/metrics/all":
                        self.publish()
                        texts = []
                        for m in self.members:
                            with contextlib.suppress(OSError, asyncio.TimeoutError, HttpError, ValueError):
                                status, body = await call(m.engine_port, "GET", "/metrics", None)
                                if status == 200:
                                    texts.append((m.name, body.decode("utf-8", "replace")))
                        await send_text(writer, 200, self.metrics.text() + merge_exposition(texts))
                    else:
                        await send_json(writer, 404, error_body("Not found.", "invalid_request_error", "not_found"))
                    if not req.keep_alive:
                        return
            finally:
                writer.close()

    # ----------------------------------------------------------------------------------------------- life

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: self.spawn_task(self.shutdown()))
        self.servers.append(await asyncio.start_server(self.serve_admin, self.listen, self.port, limit=MAX_HEAD))
        for m in self.members:
            self.servers.append(await asyncio.start_server(functools.partial(self.serve_member, m), self.listen, m.port, limit=MAX_HEAD))
        await self.adopt()
        self.spawn_task(self.watch_adopted())
        print(f"swapper: group {self.group} listening on {self.port} and {', '.join(str(m.port) for m in self.members)}", flush=True)
        control = asyncio.ensure_future(self.control())
        await self.finished.wait()
        control.cancel()

    async def shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for s in self.servers:
            s.close()
        await asyncio.gather(*(self.stop_member(m) for m in self.members), return_exceptions=True)
        self.finished.set()


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie group leader still answers: look at its state
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return any(_in_group(p, pid) for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != pid)
    return True


def _in_group(proc: Path, pgid: int) -> bool:
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[2]) == pgid and fields[0] != "Z"
    return False


def supervise(argv: list[str], config: dict[str, Any]) -> int:
    """PID 1 of the group's container: runs the swapper and restarts it when it dies (the members keep running in
    their own sessions; the new swapper adopts them), reaps every orphan, and on SIGTERM stops the swapper, which
    stops the members."""
    stopping = False
    child = 0
    # a fresh container has no member running: pid files and the ready mark of an earlier run mean nothing now
    state_dir = Path(config.get("state_dir", "/tmp/vllm-swap"))
    for stale in state_dir.glob("*"):
        with contextlib.suppress(OSError):
            stale.unlink()
    _subreaper()

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while not stopping:
        child = os.posix_spawn(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], os.environ)
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                pid, status = child, 0
            if pid == child:
                break
        if not stopping:
            print(f"swapper: exited ({os.waitstatus_to_exitcode(status)}); starting it again", file=sys.stderr, flush=True)
            time.sleep(1.0)
    # whatever the swapper could not stop
    for pidfile in state_dir.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
    return 0


def _subreaper() -> None:
    """Orphans (members of a swapper that died) become this process's children wherever it runs, not only as PID 1."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER (linux/prctl.h)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--supervise", action="store_true", help="run as the container's PID 1: restart the swapper when it dies")
    a = ap.parse_args()
    config = json.loads(a.config.read_text())
    if a.supervise:
        return supervise(["--config", str(a.config)], config)
    swapper = Swapper(config, os.environ.get("VLLM_API_KEY") or None)
    asyncio.run(swapper.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
