"""What runs, independent of where: the components describe Workloads, a platform runs them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pulumi

from stacks.plan import StackPlan


@dataclass
class Workload:
    name: str
    """DNS name on the stack's network (docker alias / Kubernetes Service)."""
    image: pulumi.Input[str]
    entrypoint: list[str] | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, pulumi.Output[str]] = field(default_factory=dict)
    """Environment variables whose values are Pulumi secrets."""
    port: int | None = None
    """Port the process listens on inside the container."""
    publish: int | None = None
    """Host port (docker) or Service port (kubernetes); None keeps it internal."""
    health_path: str | None = None
    health_port: int | None = None
    startup_seconds: int = 60
    """Budget for the first healthy answer (model download and load for vLLM)."""
    gpus: list[int] | None = None
    """Docker device indices; ``[]`` with ``all_gpus`` for every GPU."""
    all_gpus: bool = False
    gpu_count: int = 0
    """Kubernetes: nvidia.com/gpu per pod."""
    volumes: dict[str, str] = field(default_factory=dict)
    """Logical volume name -> mount path."""
    files: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    """Path in the container -> content (plain)."""
    secret_files: dict[str, pulumi.Output[str]] = field(default_factory=dict)
    """Path in the container -> content (secret)."""
    shm_size_gib: float | None = None
    ipc_host: bool = False
    cap_add: list[str] = field(default_factory=list)
    wait_healthy: bool = False
    """Docker: Pulumi waits for the healthcheck before dependents start."""
    replicas: int = 1
    labels: dict[str, str] = field(default_factory=dict)


class Platform(Protocol):
    def run(self, name: str, workload: Workload, parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource]) -> pulumi.CustomResource:
        """Declare the resources that run ``workload``; return the one dependents should wait on."""
        ...


@dataclass
class ServiceArgs:
    """What every stack service's args start with."""

    plan: StackPlan
    """The stack plan its settings come from."""
    platform: Platform
    """Where it runs."""
    image: pulumi.Input[str]
    """Pinned image reference."""
