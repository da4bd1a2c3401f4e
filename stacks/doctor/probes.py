"""What the doctor asks the machine, as plain data behind small interfaces: the checks read these, tests feed fakes.

The real probes (``nvml``, ``docker_cli``, ``kubectl``, ``host``) each talk to one thing; a probe that cannot answer
raises ``ProbeError`` with what went wrong and how to fix it, never a bare exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

GpuKind = Literal["consumer", "datacenter", "professional", "unknown"]


class ProbeError(Exception):
    """A probe could not answer: ``message`` says why, ``fix`` what to do."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


class KeyRefused(ProbeError):
    """An endpoint answered 401 or 403: it wants a key the doctor did not send, or refused the one it sent."""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    """NVML index: the order nvidia-smi lists and ``docker --gpus device=N`` uses."""
    name: str
    kind: GpuKind
    """From NVML's brand: only data-center (and some professional) GPUs can use CUDA forward compatibility."""
    total_bytes: int
    """NVML's total (nvidia-smi's ``memory.total``)."""
    reserved_bytes: int | None
    """Memory the driver keeps for itself (NVML memory info v2); None where the driver lacks v2."""
    free_bytes: int
    used_bytes: int
    compute_capability: tuple[int, int]

    @property
    def cuda_total_bytes(self) -> int:
        """The total CUDA reports (``cudaMemGetInfo``, what vLLM's fractions multiply): NVML's total less its reserved memory."""
        return self.total_bytes - (self.reserved_bytes or 0)


@dataclass(frozen=True)
class GpuInventory:
    driver: str
    """Driver version, e.g. ``580.95.05``."""
    cuda: tuple[int, int] | None
    """Newest CUDA the driver supports."""
    gpus: list[GpuInfo]


@dataclass(frozen=True)
class DockerInfo:
    server_version: str
    root_dir: str
    """Docker's data root: named volumes (the model cache) live under it."""
    runtimes: list[str]
    cdi_spec_dirs: list[str]
    """Where the daemon reads CDI specs; empty when CDI is off."""
    host: str
    """The daemon's address (``DOCKER_HOST`` or the stack's ``docker:host``); empty for the local socket."""

    @property
    def remote(self) -> bool:
        return is_remote(self.host)


def is_remote(docker_host: str) -> bool:
    """A daemon on another machine (``ssh://``, ``tcp://``): this machine's GPUs, disk and ports are not the stack's."""
    return docker_host.startswith(("tcp://", "ssh://", "http://", "https://"))


@dataclass(frozen=True)
class KubeNode:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    gpus: int = 0
    """Allocatable ``nvidia.com/gpu``."""


class GpuProbe(Protocol):
    def inventory(self) -> GpuInventory: ...


class DockerProbe(Protocol):
    @property
    def host(self) -> str:
        """The daemon's address it talks to (``DOCKER_HOST`` or the stack's ``docker:host``); empty for the local socket.
        Known whether or not the daemon answers."""
        ...

    def info(self) -> DockerInfo: ...

    def port_holders(self, port: int) -> list[str]:
        """Names of running containers publishing ``port``."""
        ...


class KubeProbe(Protocol):
    def installed(self) -> bool: ...

    def current_context(self, kubeconfig: str | None, context: str | None) -> str | None:
        """The context kubectl would use, or None when none is configured."""
        ...

    def nodes(self, kubeconfig: str | None, context: str | None) -> list[KubeNode]: ...


class HostProbe(Protocol):
    def disk_free(self, path: str) -> tuple[str, int]:
        """Free bytes at ``path``, or at its nearest existing parent: (the path measured, bytes)."""
        ...

    def port_in_use(self, address: str, port: int) -> str | None:
        """Why ``address:port`` cannot be bound (in use, address not on this host), or None when it is free."""
        ...

    def which(self, program: str) -> str | None: ...

    def cdi_nvidia_specs(self, dirs: list[str]) -> list[str]:
        """CDI spec files of kind ``nvidia.com/gpu`` in ``dirs``."""
        ...

    def memory_bytes(self) -> int | None:
        """This host's memory (MemTotal of /proc/meminfo), or None where it cannot be read."""
        ...


class EndpointProbe(Protocol):
    def models(self, url: str, headers: dict[str, str], ca_pem: str | None, server_name: str | None, timeout: float = 10.0) -> list[str]:
        """The ids ``GET <url>/models`` lists, sent with ``headers`` (https verified with ``ca_pem`` as ``server_name``)."""
        ...


@dataclass
class Probes:
    gpu: GpuProbe
    docker: DockerProbe
    kube: KubeProbe
    host: HostProbe
    endpoints: EndpointProbe | None = None
    """Endpoints the stack does not run (None: no such checks, as before the stack had any)."""
