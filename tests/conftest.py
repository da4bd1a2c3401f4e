"""Shared helpers: stack configs to mutate, and the CI rule that a missing daemon fails rather than skips."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
STACKS = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str) -> None:
    """Skip locally, fail under CI: CI must have every real program the tests use."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is not available")
    pytest.skip(f"{what} not available")


def require_program(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if not path:
        unavailable(name)
    assert path
    return path


DOCKER_BASE: dict[str, Any] = {
    "target": "docker",
    "timezone": "Asia/Seoul",
    "gpus": [{"index": 0, "name": "RTX 5090", "memoryGiB": 31.8}, {"index": 1, "name": "RTX 5090", "memoryGiB": 31.8}],
    "models": [
        {"name": "tiny", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 2048},
        {"name": "qwen", "model": "Qwen/Qwen2.5-3B-Instruct", "gpus": [1], "maxModelLen": 4096},
    ],
}

KUBE_BASE: dict[str, Any] = {
    "target": "kubernetes",
    "kubernetes": {"gpu": {"name": "NVIDIA L40S", "memoryGiB": 44.4}},
    "models": [{"name": "qwen3", "model": "Qwen/Qwen3-8B", "maxModelLen": 8192}],
}


def docker_raw(**overrides: Any) -> dict[str, Any]:
    raw = copy.deepcopy(DOCKER_BASE)
    raw.update(overrides)
    return raw


def kube_raw(**overrides: Any) -> dict[str, Any]:
    raw = copy.deepcopy(KUBE_BASE)
    raw.update(overrides)
    return raw
