"""The fake vLLM of ``tests/fake_vllm.py`` with vLLM's sleep mode, and a shared stand-in for the GPU's memory.

Routes as vLLM 0.26.0 mounts them with VLLM_SERVER_DEV_MODE=1 (vllm/entrypoints/serve/dev/sleep/api_router.py,
dev/rpc/api_router.py): ``POST /sleep?level=N&mode=abort`` (empty 200; running streams are cut off),
``POST /wake_up[?tags=weights|kv_cache]`` (empty 200; the scheduler resumes once both are awake),
``GET /is_sleeping`` -> ``{"is_sleeping": bool}``, ``POST /collective_rpc`` ``{"method": "reload_weights"}``.
Like vLLM they need no key; ``/v1`` does when ``--api-key`` is given.

The GPU: every fake of a test shares one ledger file (``--ledger``): a server holds ``--awake-mib`` awake and
``--asleep-mib`` asleep; starting or waking beyond ``--gpu-mib`` fails as CUDA would (the start exits 1, the wake
answers 500 and the server stays asleep). A process that dies gives its memory back, as the driver does. The
ledger keeps the peak use, the most servers awake at once, and every violation (a request served while asleep, or
at level 2 before the weights were reloaded).

Behaviour knobs: ``--startup-ms``, ``--wake-ms``, ``--sleep-ms``; ``POST /fake/control`` with ``{"fail_wake": n,
"fail_sleep": n, "hang_wake": true, "wake_ms": ..., "sleep_ms": ...}`` changes them while it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fake_vllm import Handler, Server


@contextlib.contextmanager
def ledger_locked(path: Path) -> Iterator[dict[str, Any]]:
    """The ledger, read and written under an exclusive lock; processes that died are dropped first."""
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text()) if path.exists() and path.stat().st_size else {}
            data.setdefault("procs", {})
            data.setdefault("peak_mib", 0)
            data.setdefault("peak_awake", 0)
            data.setdefault("violations", [])
            data.setdefault("events", [])
            for pid in list(data["procs"]):
                if not _alive(int(pid)):
                    del data["procs"][pid]
            yield data
            used = sum(p["mib"] for p in data["procs"].values())
            awake = sum(1 for p in data["procs"].values() if p["awake"])
            data["peak_mib"] = max(data["peak_mib"], used)
            data["peak_awake"] = max(data["peak_awake"], awake)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def read_ledger(path: Path) -> dict[str, Any]:
    with ledger_locked(path) as data:
        return dict(data)


class SleepyServer(Server):
    def __init__(self, port: int, name: str, models: list[str], a: argparse.Namespace) -> None:
        self.name = name
        self.ledger = Path(a.ledger)
        self.gpu_mib, self.awake_mib, self.asleep_mib = a.gpu_mib, a.awake_mib, a.asleep_mib
        self.knobs: dict[str, Any] = {"wake_ms": a.wake_ms, "sleep_ms": a.sleep_ms, "fail_wake": 0, "fail_sleep": 0, "hang_wake": False}
        self.lock = threading.Lock()
        self.asleep_tags: set[str] = set()
        self.level = 0
        self.reloaded = True
        self.epoch = 0
        """Bumped by every sleep: streams started before it are cut off (mode=abort)."""
        self.started = time.time()
        # the start needs the whole awake footprint free, as vLLM's start check does
        if not self.hold(awake=True, event="start"):
            raise SystemExit(f"{name}: CUDA out of memory at start")
        super().__init__(port, name, models, key=a.api_key or None)

    def hold(self, *, awake: bool, event: str) -> bool:
        """Hold the awake or asleep footprint in the ledger; False (nothing changed) when it does not fit."""
        mib = self.awake_mib if awake else self.asleep_mib
        with ledger_locked(self.ledger) as data:
            others = sum(p["mib"] for pid, p in data["procs"].items() if int(pid) != os.getpid())
            if others + mib > self.gpu_mib:
                data["events"].append([time.time(), self.name, f"{event}: out of memory"])
                return False
            data["procs"][str(os.getpid())] = {"mib": mib, "awake": awake, "name": self.name}
            data["events"].append([time.time(), self.name, event])
        return True

    def violation(self, what: str) -> None:
        with ledger_locked(self.ledger) as data:
            data["violations"].append([time.time(), self.name, what])

    def cut_off(self, epoch: int) -> bool:
        return self.epoch != epoch


class SleepyHandler(Handler):
    server: SleepyServer

    def _query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def _path(self) -> str:
        return urlsplit(self.path).path

    def _empty(self, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self._path() == "/is_sleeping":
            self._send(200, {"is_sleeping": bool(self.server.asleep_tags)})
        elif self._path() == "/metrics":
            s = self.server
            text = (
                "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
                "# TYPE process_start_time_seconds gauge\n"
                f"process_start_time_seconds {s.started}\n"
                "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
                "# TYPE vllm:num_requests_running gauge\n"
                f'vllm:num_requests_running{{engine="0",model_name="{s.models[0]}"}} 0.0\n'
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
        elif self._path().startswith("/v1/") and not self._key_ok():
            return
        else:
            super().do_GET()

    def _key_ok(self) -> bool:
        if self.server.key and self.headers.get("Authorization") != f"Bearer {self.server.key}":
            self._send(401, {"error": "Unauthorized"})
            return False
        return True

    def do_POST(self) -> None:
        s = self.server
        path = self._path()
        if path == "/sleep":
            self._sleep(int(self._query().get("level", ["1"])[0]))
        elif path == "/wake_up":
            self._wake(self._query().get("tags"))
        elif path == "/collective_rpc":
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if body.get("method") == "reload_weights":
                if "weights" in s.asleep_tags:
                    self._send(500, {"error": "reload_weights while the weights sleep"})
                    return
                time.sleep(s.knobs["wake_ms"] / 1000)
                s.reloaded = True
            self._send(200, {"results": [None]})
        elif path == "/fake/control":
            s.knobs |= json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            self._send(200, s.knobs)
        elif path.startswith("/v1/"):
            if not self._key_ok():
                return
            if s.asleep_tags:
                s.violation(f"{path} served while asleep ({sorted(s.asleep_tags)})")
            elif not s.reloaded:
                s.violation(f"{path} served at level 2 before reload_weights")
            super().do_POST()
        else:
            self._send(404, {"detail": "Not Found"})

    def _sleep(self, level: int) -> None:
        s = self.server
        time.sleep(s.knobs["sleep_ms"] / 1000)
        with s.lock:
            if s.knobs["fail_sleep"]:
                s.knobs["fail_sleep"] -= 1
                self._send(500, {"error": "sleep failed (injected)"})
                return
            if not s.asleep_tags:
                s.epoch += 1
                s.level = level
                s.asleep_tags = {"weights", "kv_cache"}
                s.reloaded = level != 2
                s.hold(awake=False, event=f"sleep level {level}")
        self._empty()

    def _wake(self, tags: list[str] | None) -> None:
        s = self.server
        time.sleep(s.knobs["wake_ms"] / 1000)
        with s.lock:
            if s.knobs["hang_wake"]:
                time.sleep(3600)
            if s.knobs["fail_wake"]:
                s.knobs["fail_wake"] -= 1
                self._send(500, {"error": "CUDA Error: out of memory (injected)"})
                return
            if not s.asleep_tags:
                self._empty()
                return
            if s.asleep_tags == {"weights", "kv_cache"} and not s.hold(awake=True, event=f"wake {tags or 'all'}"):
                # cumem maps the pools again: past the GPU's memory, CUDA refuses (vllm/device_allocator/cumem.py create_and_map)
                self._send(500, {"error": "CUDA Error: out of memory at cumem_allocator.cpp"})
                return
            s.asleep_tags -= set(tags) if tags else set(s.asleep_tags)
        self._empty()

    def stream_cut_off(self, epoch: int) -> bool:
        return self.server.cut_off(epoch)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--ledger", required=True)
    ap.add_argument("--gpu-mib", type=int, default=1000)
    ap.add_argument("--awake-mib", type=int, default=600)
    ap.add_argument("--asleep-mib", type=int, default=50)
    ap.add_argument("--startup-ms", type=int, default=0)
    ap.add_argument("--wake-ms", type=int, default=0)
    ap.add_argument("--sleep-ms", type=int, default=0)
    ap.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY", ""))
    a = ap.parse_args()
    time.sleep(a.startup_ms / 1000)
    server = SleepyServer(a.port, a.name, a.models.split(","), a)
    server.RequestHandlerClass = SleepyHandler
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
