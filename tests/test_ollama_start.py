"""The Ollama container's start script, run by a real sh with a stand-in ``ollama`` program (the fake vLLM in its Ollama
mode as the server; ``show`` and ``pull`` against a folder): models pulled once, the health check waiting for them, a
failed pull ending the container, and a clean stop. The real Ollama image was not run here (no network, no GPU)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stacks.render import workloads
from tests.conftest import ROOT
from tests.gateway_harness import free_port

FAKE = """#!/bin/sh
# a stand-in for /bin/ollama: serve runs the fake server; list asks it; show and pull use {store}
case "$1" in
  serve) exec {python} -m tests.fake_vllm --ollama --port {port} --name ollama --models m ;;
  list) exec {python} -c "import urllib.request as u; u.urlopen('http://127.0.0.1:{port}/api/tags', timeout=2)" ;;
  show) test -f "{store}/$(echo "$2" | tr '/:' '__')" ;;
  pull) case "$2" in broken*) exit 1 ;; esac; echo "$2" >> "{store}/pulls.log"; touch "{store}/$(echo "$2" | tr '/:' '__')" ;;
esac
"""


def _setup(tmp: Path) -> tuple[Path, Path, Path]:
    store = tmp / "store"
    store.mkdir()
    fake = tmp / "ollama"
    fake.write_text(FAKE.format(python=sys.executable, port=free_port(), store=store))
    fake.chmod(0o755)
    return fake, store, tmp / "pulled"


def _script(text: str, fake: Path, marker: Path) -> str:
    return text.replace("/bin/ollama", str(fake)).replace(workloads.OLLAMA_PULLED, str(marker))


def _start(fake: Path, marker: Path, models: list[str]) -> subprocess.Popen[bytes]:
    script = _script(workloads.OLLAMA_START, fake, marker)
    return subprocess.Popen(["sh", "-c", script, "ollama-start", *models], cwd=ROOT, start_new_session=True, env=os.environ | {"PYTHONPATH": str(ROOT)})


def _healthy(fake: Path, marker: Path) -> bool:
    plan_health = ["/bin/sh", "-c", f"test -f {workloads.OLLAMA_PULLED} && /bin/ollama list >/dev/null"]
    command = [_script(part, fake, marker) for part in plan_health]
    return subprocess.run(command, timeout=10).returncode == 0


def _wait(predicate: object, timeout: float = 20) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """TERM to the script alone, as ``docker stop`` sends it to PID 1: it stops the server it started; returns its status."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        code = proc.wait(10)
        assert _wait(lambda: _group_gone(proc.pid), 5), "the server went with the script"
        return code
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_models_are_pulled_once_then_healthy_and_the_container_stops_cleanly(tmp_path: Path) -> None:
    fake, store, marker = _setup(tmp_path)
    proc = _start(fake, marker, ["llama3.2:3b", "nomic-embed-text"])
    try:
        assert _wait(lambda: _healthy(fake, marker)), "healthy once every model is pulled"
        assert (store / "pulls.log").read_text().split() == ["llama3.2:3b", "nomic-embed-text"]
    finally:
        assert _stop(proc) == 0, "TERM stops the server and the script cleanly"
    # a restart finds the models in the volume and pulls nothing (it works offline)
    marker.unlink()
    again = _start(fake, marker, ["llama3.2:3b", "nomic-embed-text"])
    try:
        assert _wait(lambda: _healthy(fake, marker))
        assert (store / "pulls.log").read_text().split() == ["llama3.2:3b", "nomic-embed-text"]
    finally:
        _stop(again)


def test_a_failed_pull_ends_the_container_unhealthy(tmp_path: Path) -> None:
    fake, _, marker = _setup(tmp_path)
    proc = _start(fake, marker, ["broken:1b"])
    try:
        assert proc.wait(30) == 1, "the container exits, and its restart policy tries again"
        assert not marker.exists() and not _healthy(fake, marker)
    finally:
        # Docker ends the server with the container; here the process group goes
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(5)
