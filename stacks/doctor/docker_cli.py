"""The Docker daemon through the ``docker`` CLI (the same client and environment ``pulumi up``'s provider would use)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from stacks.doctor.probes import DockerInfo, ProbeError

TIMEOUT_SECONDS = 20


class DockerCli:
    def __init__(self, host: str | None = None) -> None:
        """``host``: the stack's ``docker:host``; else ``DOCKER_HOST`` (empty for the local socket)."""
        self.host = host or os.environ.get("DOCKER_HOST", "")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        if not shutil.which("docker"):
            raise ProbeError("the docker CLI is not installed", "install Docker Engine (Debian/Ubuntu: the docker.io or docker-ce package)")
        env = {**os.environ, **({"DOCKER_HOST": self.host} if self.host else {})}
        try:
            return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=TIMEOUT_SECONDS, env=env)
        except subprocess.TimeoutExpired:
            raise ProbeError(f"`docker {args[0]}` did not answer in {TIMEOUT_SECONDS} s", "check that dockerd is running and reachable") from None

    def info(self) -> DockerInfo:
        r = self._run("info", "--format", "{{json .}}")
        where = self.host or "the local socket"
        if r.returncode != 0:
            msg = (r.stderr.strip().splitlines() or ["no answer"])[-1]
            if "permission denied" in msg.lower():
                fix = "add your user to the docker group (`sudo usermod -aG docker $USER`, then log in again) or run as root"
            else:
                fix = "start the daemon (`sudo systemctl start docker`) or point DOCKER_HOST / docker:host at a running one"
            raise ProbeError(f"Docker daemon at {where} not reachable: {msg}", fix)
        try:
            d = json.loads(r.stdout)
        except json.JSONDecodeError:
            raise ProbeError(f"`docker info` printed no JSON: {r.stdout[:200]!r}", "update the docker CLI") from None
        if d.get("ServerErrors"):
            raise ProbeError(f"Docker daemon at {where}: {'; '.join(d['ServerErrors'])}", "start the daemon or fix DOCKER_HOST / docker:host")
        return DockerInfo(
            server_version=str(d.get("ServerVersion") or "?"),
            root_dir=str(d.get("DockerRootDir") or ""),
            runtimes=sorted(d.get("Runtimes") or {}),
            cdi_spec_dirs=list(d.get("CDISpecDirs") or []),
            host=self.host,
        )

    def port_holders(self, port: int) -> list[str]:
        r = self._run("ps", "--filter", f"publish={port}", "--format", "{{.Names}}")
        return r.stdout.split() if r.returncode == 0 else []
