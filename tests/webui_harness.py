"""Open WebUI 0.12.4 from PyPI (scripts/open-webui.sh), started with the environment the stack renders for it
(``workloads.open_webui``), in front of the rendered gateway on a real nginx; and headless Debian chromium driven by
playwright-core (tests/webui_browser.mjs).

Where the run differs from the container, and why (nothing else does): the gateway's address in the stack's network
becomes this nginx on 127.0.0.1; the image's data volume (``DATA_DIR``) a temporary folder; the image's ``start.sh`` is
``open-webui serve`` on 127.0.0.1 (the PyPI package's start; it sets ``FROM_INIT_PY``, which the model-entry program gets
too, so both find the package's frontend). Every outbound HTTP(S) request goes to a proxy that refuses it and
records where it was going (``HTTP(S)_PROXY``; 127.0.0.1 is excluded), so a call to the internet shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from stacks.plan import StackPlan
from stacks.plan import topology as net
from stacks.render import workloads
from tests.conftest import require_program, unavailable
from tests.gateway_harness import free_port

VERSION = "0.12.4"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vllm-stack"
VENV = Path(os.environ.get("OPEN_WEBUI_VENV") or CACHE / f"open-webui-{VERSION}")
PLAYWRIGHT_DIR = Path(os.environ.get("PLAYWRIGHT_DIR") or CACHE / "playwright-core")
CHROMIUM = os.environ.get("CHROMIUM", "chromium")
STARTUP_SECONDS = 300
"""Migrations and imports take 30-90 s on a busy two-core machine."""


def require_webui() -> tuple[str, str]:
    """(chromium, node) once Open WebUI and playwright-core are installed (``bash scripts/open-webui.sh``), or skip (fail
    under CI)."""
    if not (VENV / ".installed").exists() or not (VENV / "bin" / "open-webui").exists():
        unavailable(f"Open WebUI {VERSION} (run: bash scripts/open-webui.sh)")
    if not (PLAYWRIGHT_DIR / ".installed").exists():
        unavailable("playwright-core (run: bash scripts/open-webui.sh)")
    return require_program(CHROMIUM), require_program("node")


class ProxyTrap:
    """A proxy on 127.0.0.1 that answers 403 to everything and keeps the request lines it got."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    line = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                    self.seen.append(line)
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


@dataclass
class RunningWebui:
    url: str
    env: dict[str, str]
    """Open WebUI's environment as it ran (with secrets: for the test's eyes only)."""
    log: Path
    trap: ProxyTrap
    seed_output: str
    proc: subprocess.Popen[bytes]
    timings: dict[str, float] = field(default_factory=dict)


def stack_env(plan: StackPlan, secrets: dict[str, str]) -> dict[str, str]:
    """Open WebUI's environment exactly as ``workloads.open_webui`` renders it, secrets filled in from ``secrets``
    (keyed by the secret's ``secret/key``)."""
    w = workloads.open_webui(plan, "image")
    env = dict(w.env)
    for name, ref in w.secret_env.items():
        env[name] = secrets[f"{ref.secret}/{ref.key}"]
    return env


@contextlib.contextmanager
def running_webui(plan: StackPlan, gateway_url: str, secrets: dict[str, str], directory: Path) -> Iterator[RunningWebui]:
    """Open WebUI on 127.0.0.1 as the stack starts it: the model-entry program, then the server; stopped on exit."""
    w = workloads.open_webui(plan, "image")
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / Path(workloads.WEBUI_MODELS_PROGRAM).name
    program.write_text(str(w.files[workloads.WEBUI_MODELS_PROGRAM]))
    assert w.args == ["bash", "-c", f"python3 {workloads.WEBUI_MODELS_PROGRAM} && exec {workloads.WEBUI_START}"], w.args
    in_stack = plan.webui_api_base.rstrip("/")
    env = {k: v.replace(in_stack, gateway_url + "/v1") for k, v in stack_env(plan, secrets).items()}
    assert plan.webui and plan.webui.service.port == net.WEBUI_PORT
    port = free_port()
    trap = ProxyTrap()
    proxy = f"http://127.0.0.1:{trap.port}"
    home = directory / "home"
    home.mkdir(exist_ok=True)
    run_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **env,
        "DATA_DIR": str(directory / "data"),
        "FROM_INIT_PY": "true",
        **{k: proxy for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")},
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    (directory / "data").mkdir(exist_ok=True)
    log = directory / "open-webui.log"
    start = time.monotonic()
    seed = subprocess.run([str(VENV / "bin" / "python"), str(program)], env=run_env, cwd=directory, capture_output=True, text=True, timeout=STARTUP_SECONDS)
    if seed.returncode != 0:
        trap.close()
        raise AssertionError(f"the model-entry program failed ({seed.returncode}):\n{seed.stderr[-4000:]}")
    seeded = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(VENV / "bin" / "open-webui"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=run_env,
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"Open WebUI exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"Open WebUI did not answer /health in {STARTUP_SECONDS} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        running = RunningWebui(url, env, log, trap, seed.stderr, proc)
        running.timings = {"model_entries_s": round(seeded - start, 1), "server_start_s": round(time.monotonic() - seeded, 1)}
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        trap.close()


def run_browser(script: Path, config: dict[str, Any], out_dir: Path, timeout: float = 600) -> dict[str, Any]:
    """Runs the playwright-core script with ``config`` (JSON on stdin); it writes screenshots into ``out_dir`` and its
    findings as JSON on stdout."""
    chromium, node = require_webui()
    profile = out_dir / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(out_dir),
        "NODE_PATH": str(PLAYWRIGHT_DIR / "node_modules"),
        "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1",
    }
    payload = json.dumps({**config, "chromium": chromium, "profile": str(profile), "shots": str(out_dir)})
    r = subprocess.run([node, str(script)], input=payload, env=env, capture_output=True, text=True, timeout=timeout, cwd=out_dir)
    if r.returncode != 0:
        raise AssertionError(f"browser run failed ({r.returncode}):\n{r.stderr[-6000:]}\n{r.stdout[-2000:]}")
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result
