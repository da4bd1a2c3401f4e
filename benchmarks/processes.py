"""Stopping what a benchmark started: the process group of the process it started, never anything by name."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace_s: float = 60) -> None:
    """SIGTERM to the group ``proc`` leads (it was started with ``start_new_session=True``), SIGKILL after ``grace_s``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
