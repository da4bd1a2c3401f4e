"""A Kubernetes cluster through ``kubectl`` (optional: without it the cluster checks are skipped)."""

from __future__ import annotations

import json
import shutil
import subprocess

from stacks.doctor.probes import KubeNode, ProbeError

TIMEOUT_SECONDS = 30
GPU_RESOURCE = "nvidia.com/gpu"


def _flags(kubeconfig: str | None, context: str | None) -> list[str]:
    return [*(["--kubeconfig", kubeconfig] if kubeconfig else []), *(["--context", context] if context else [])]


def _count(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


class Kubectl:
    def installed(self) -> bool:
        return shutil.which("kubectl") is not None

    def _run(self, args: list[str], timeout: int = TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProbeError(f"`kubectl {' '.join(args[:2])}` did not answer in {timeout} s", "check the cluster's address and your network (VPN)") from None

    def current_context(self, kubeconfig: str | None, context: str | None) -> str | None:
        if context:
            return context
        r = self._run([*_flags(kubeconfig, None), "config", "current-context"])
        if r.returncode != 0:
            return None
        return r.stdout.strip() or None

    def nodes(self, kubeconfig: str | None, context: str | None) -> list[KubeNode]:
        r = self._run([*_flags(kubeconfig, context), "get", "nodes", "-o", "json", f"--request-timeout={TIMEOUT_SECONDS}s"], TIMEOUT_SECONDS + 5)
        if r.returncode != 0:
            msg = (r.stderr.strip().splitlines() or ["no answer"])[-1]
            raise ProbeError(
                f"cluster not reachable: {msg}", "check kubernetes.kubeconfig / kubernetes.context, your credentials and the network (`kubectl get nodes`)"
            )
        items = json.loads(r.stdout).get("items", [])
        return [
            KubeNode(
                name=n["metadata"]["name"],
                labels=dict(n["metadata"].get("labels") or {}),
                gpus=_count((n.get("status", {}).get("allocatable") or {}).get(GPU_RESOURCE, 0)),
            )
            for n in items
        ]
