"""A benchmark's servers: waiting for one to answer, and stopping the process group it leads, never anything by name."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request


def wait_healthy(proc: subprocess.Popen[bytes], port: int, limit_s: float, poll_s: float = 2) -> str | None:
    """None once the server ``proc`` answers ``GET /health`` on 127.0.0.1:``port`` within ``limit_s``, else why not."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            return f"exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return None
        except OSError:
            time.sleep(poll_s)
    return f"not healthy within {limit_s:.0f} s"


def stop_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace_s: float = 60) -> None:
    """SIGTERM to the group ``proc`` leads (it was started with ``start_new_session=True``), SIGKILL after ``grace_s``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
