"""The doctor's real probes on this machine: sockets, disk, the Docker engine the tests run, NVML where there is a GPU,
and ``python -m stacks doctor`` end to end (no traceback, whatever the machine has)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from stacks.doctor import ProbeError
from stacks.doctor.docker_cli import DockerCli
from stacks.doctor.host import LocalHost
from stacks.doctor.kubectl import Kubectl
from stacks.doctor.nvml import NvmlProbe
from tests.conftest import ROOT, require_program, unavailable


def test_port_probe_sees_a_listener_and_a_free_port() -> None:
    host = LocalHost()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert host.port_in_use("127.0.0.1", port) == f"127.0.0.1:{port} is in use"
    assert host.port_in_use("127.0.0.1", port) is None, "closed again: free"


def test_port_probe_names_an_address_this_host_lacks() -> None:
    # 192.0.2.0/24 is TEST-NET-1: never assigned to a host; bind() fails locally and nothing is sent
    assert LocalHost().port_in_use("192.0.2.1", 8000) == "192.0.2.1 is not an address of this host"


def test_disk_probe_measures_the_nearest_existing_folder(tmp_path: Path) -> None:
    where, free = LocalHost().disk_free(str(tmp_path / "not" / "yet"))
    assert where == str(tmp_path) and free > 0


def test_cdi_probe_finds_nvidia_specs(tmp_path: Path) -> None:
    (tmp_path / "nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: []\n")
    (tmp_path / "other.yaml").write_text("cdiVersion: 0.5.0\nkind: vendor.example/fpga\n")
    assert LocalHost().cdi_nvidia_specs([str(tmp_path), str(tmp_path / "missing")]) == [str(tmp_path / "nvidia.yaml")]


def test_host_memory_is_memtotal() -> None:
    total = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    assert LocalHost().memory_bytes() == total * 1024 > 0


@pytest.fixture(scope="module")
def engine() -> None:
    require_program("docker")
    if subprocess.run(["docker", "version"], capture_output=True, timeout=30).returncode != 0:
        unavailable("a running Docker engine (make test starts one)")


def test_docker_probe_reads_the_running_engine(engine: None) -> None:
    info = DockerCli().info()
    assert Path(info.root_dir).is_absolute() and "runc" in info.runtimes and info.server_version
    assert DockerCli().port_holders(1) == []


def test_docker_probe_explains_an_unreachable_daemon(tmp_path: Path) -> None:
    require_program("docker")
    with pytest.raises(ProbeError) as e:
        DockerCli(host=f"unix://{tmp_path}/no.sock").info()
    assert "not reachable" in e.value.message and "docker" in e.value.fix


def test_nvml_probe_answers_or_explains() -> None:
    """On a GPU machine: the inventory; elsewhere: why not, with a fix (never an exception of another kind)."""
    try:
        inv = NvmlProbe().inventory()
    except ProbeError as e:
        assert e.message and e.fix
        return
    assert inv.driver and inv.gpus
    for g in inv.gpus:
        assert 0 < g.cuda_total_bytes <= g.total_bytes and g.compute_capability >= (3, 0)


def test_nvml_inventory_on_a_gpu() -> None:
    try:
        inv = NvmlProbe().inventory()
    except ProbeError as e:
        pytest.skip(f"no GPU here: {e.message}")
    r = subprocess.run([sys.executable, "-m", "stacks", "doctor", "--inventory"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("- index:") == len(inv.gpus)


FAKE_KUBECTL = """#!/bin/sh
# a stand-in kubectl: records its arguments, answers like the real one
echo "$@" >> "$(dirname "$0")/calls"
case "$*" in
  *"config current-context"*) [ -n "$CONTEXT" ] && echo "$CONTEXT" || { echo "error: current-context is not set" >&2; exit 1; } ;;
  *"get nodes"*) [ -n "$DOWN" ] && { echo "Unable to connect to the server: dial tcp 10.0.0.1:6443: i/o timeout" >&2; exit 1; }
    cat "$(dirname "$0")/nodes.json" ;;
esac
"""
NODES = {
    "items": [
        {"metadata": {"name": "gpu-1", "labels": {"nvidia.com/gpu.product": "NVIDIA-L40S"}}, "status": {"allocatable": {"nvidia.com/gpu": "4", "cpu": "64"}}},
        {"metadata": {"name": "cpu-1"}, "status": {"allocatable": {"cpu": "16"}}},
    ]
}


def test_kubectl_probe_reads_contexts_and_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(0o755)
    (tmp_path / "nodes.json").write_text(json.dumps(NODES))
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    k = Kubectl()
    assert k.installed()
    monkeypatch.setenv("CONTEXT", "")
    assert k.current_context(None, None) is None
    assert k.current_context(None, "prod") == "prod", "a configured context is taken as is"
    monkeypatch.setenv("CONTEXT", "lab")
    assert k.current_context("/etc/kube.conf", None) == "lab"
    nodes = k.nodes("/etc/kube.conf", "lab")
    assert [(n.name, n.gpus, n.labels.get("nvidia.com/gpu.product")) for n in nodes] == [("gpu-1", 4, "NVIDIA-L40S"), ("cpu-1", 0, None)]
    assert "--kubeconfig /etc/kube.conf --context lab get nodes -o json" in (tmp_path / "calls").read_text()
    monkeypatch.setenv("DOWN", "1")
    with pytest.raises(ProbeError) as e:
        k.nodes(None, "lab")
    assert "i/o timeout" in e.value.message and "kubectl get nodes" in e.value.fix


def test_doctor_command_end_to_end_on_this_machine() -> None:
    r = subprocess.run([sys.executable, "-m", "stacks", "doctor", "dev", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr
    checks = json.loads(r.stdout)
    assert r.returncode == (1 if any(c["status"] == "fail" for c in checks) else 0)
    assert all(c["fix"] for c in checks if c["status"] in ("fail", "warn")), "every failure and warning says how to fix it"
    driver = next(c for c in checks if c["name"] == "NVIDIA driver")
    assert driver["status"] in ("pass", "fail")
    text = subprocess.run([sys.executable, "-m", "stacks", "doctor", "dev"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert text.returncode == r.returncode and "Traceback" not in text.stderr and "checks:" in text.stdout


class FakeLibNvml:
    """libnvidia-ml.so.1's C functions as the real pynvml calls them (ctypes arguments in, a return code out),
    describing an H100 80GB: the probe runs through pynvml's own wrappers down to the C calls."""

    def __init__(self, *, init_error: int = 0) -> None:
        import pynvml

        self.nv = pynvml
        self.init_error = init_error
        self.devices = [pynvml.struct_c_nvmlDevice_t() for _ in range(2)]

    def _index(self, handle: object) -> int:
        import ctypes

        return next(i for i, d in enumerate(self.devices) if ctypes.addressof(d) == ctypes.addressof(handle.contents))  # type: ignore[attr-defined]

    def nvmlInitWithFlags(self, flags: object) -> int:
        return self.init_error

    def nvmlShutdown(self) -> int:
        return 0

    def nvmlSystemGetDriverVersion(self, buf: object, size: object) -> int:
        buf.value = b"580.95.05"  # type: ignore[attr-defined]
        return 0

    def nvmlSystemGetCudaDriverVersion(self, ref: object) -> int:
        ref._obj.value = 13000  # type: ignore[attr-defined]
        return 0

    def nvmlDeviceGetCount_v2(self, ref: object) -> int:
        ref._obj.value = len(self.devices)  # type: ignore[attr-defined]
        return 0

    def nvmlDeviceGetHandleByIndex_v2(self, index: object, ref: object) -> int:
        import ctypes

        ref._obj.contents = self.devices[index.value]  # type: ignore[attr-defined]
        assert ctypes.addressof(ref._obj.contents) == ctypes.addressof(self.devices[index.value])  # type: ignore[attr-defined]
        return 0

    def nvmlDeviceGetName(self, handle: object, buf: object, size: object) -> int:
        buf.value = b"NVIDIA H100 80GB HBM3"  # type: ignore[attr-defined]
        return 0

    def nvmlDeviceGetMemoryInfo_v2(self, handle: object, ref: object) -> int:
        m = ref._obj  # type: ignore[attr-defined]
        assert m.version == self.nv.nvmlMemory_v2
        m.total, m.reserved, m.used = 81559 * 2**20, 477 * 2**20, (1000 + 100 * self._index(handle)) * 2**20
        m.free = m.total - m.reserved - m.used
        return 0

    def nvmlDeviceGetMemoryInfo(self, handle: object, ref: object) -> int:
        m = ref._obj  # type: ignore[attr-defined]
        m.total, m.used = 81559 * 2**20, 1477 * 2**20
        m.free = m.total - m.used
        return 0

    def nvmlDeviceGetBrand(self, handle: object, ref: object) -> int:
        ref._obj.value = self.nv.NVML_BRAND_NVIDIA  # type: ignore[attr-defined]
        return 0

    def nvmlDeviceGetCudaComputeCapability(self, handle: object, major: object, minor: object) -> int:
        major._obj.value, minor._obj.value = 9, 0  # type: ignore[attr-defined]
        return 0


@pytest.fixture
def fake_libnvml(monkeypatch: pytest.MonkeyPatch) -> Callable[[object], None]:
    import pynvml

    def install(lib: object) -> None:
        monkeypatch.setattr(pynvml, "nvmlLib", lib)
        monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})

    return install


def test_nvml_probe_through_pynvml(fake_libnvml: Callable[[object], None]) -> None:
    fake_libnvml(FakeLibNvml())
    inv = NvmlProbe().inventory()
    assert inv.driver == "580.95.05" and inv.cuda == (13, 0)
    assert [g.index for g in inv.gpus] == [0, 1]
    g = inv.gpus[1]
    assert (g.name, g.kind, g.compute_capability) == ("NVIDIA H100 80GB HBM3", "datacenter", (9, 0))
    assert (g.total_bytes, g.reserved_bytes, g.used_bytes) == (81559 * 2**20, 477 * 2**20, 1100 * 2**20)
    assert round(g.cuda_total_bytes / 2**30, 2) == 79.18, "nvidia-smi's 81,559 MiB less 477 MiB reserved: what CUDA reports"


def test_nvml_probe_without_memory_info_v2(fake_libnvml: Callable[[object], None]) -> None:
    fake_libnvml(_WithoutV2(FakeLibNvml()))
    g = NvmlProbe().inventory().gpus[0]
    assert g.reserved_bytes is None and g.cuda_total_bytes == g.total_bytes == 81559 * 2**20


class _WithoutV2:
    """The same library from a driver that predates nvmlDeviceGetMemoryInfo_v2 (pynvml: NVMLError_FunctionNotFound)."""

    def __init__(self, lib: FakeLibNvml) -> None:
        self.lib = lib

    def __getattr__(self, name: str) -> object:
        if name == "nvmlDeviceGetMemoryInfo_v2":
            raise AttributeError(name)
        return getattr(self.lib, name)


def test_nvml_probe_explains_a_driver_that_is_not_loaded(fake_libnvml: Callable[[object], None]) -> None:
    import pynvml

    fake_libnvml(FakeLibNvml(init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    with pytest.raises(ProbeError) as e:
        NvmlProbe().inventory()
    assert "no NVIDIA driver" in e.value.message and "nvidia-smi" in e.value.fix


def test_doctor_against_an_unreachable_remote_daemon_checks_nothing_of_this_machine(tmp_path: Path) -> None:
    """The real docker CLI, told a `docker:host` where nothing listens (127.0.0.1 port 9, discard): the daemon fails with
    its fix; GPUs, disk and ports are skipped, since they are that host's, not this machine's."""
    require_program("docker")
    stack = tmp_path / "Pulumi.remote.yaml"
    stack.write_text((ROOT / "Pulumi.dev.yaml").read_text().replace("config:\n", "config:\n  docker:host: tcp://127.0.0.1:9\n", 1))
    r = subprocess.run([sys.executable, "-m", "stacks", "doctor", str(stack), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert checks["daemon"]["status"] == "fail" and "tcp://127.0.0.1:9" in checks["daemon"]["detail"]
    assert {c["status"] for c in checks.values() if c["area"] in ("gpu", "disk", "ports")} == {"skip"}
    assert "grafana port 3001" in checks and not any("NVIDIA driver" in c["fix"] or "bindAddress" in c["fix"] for c in checks.values())
