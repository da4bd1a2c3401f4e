"""``doctor`` against fake NVML / Docker / kubectl / host layers: every check passes when the machine fits and fails
(or warns) with a fix when it does not."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import yaml

from stacks import cli
from stacks.config import load_stack, parse
from stacks.doctor import Check, ProbeError, Probes, doctor, inventory_json, inventory_yaml
from stacks.doctor.gpu_checks import floor2
from stacks.doctor.host_checks import quantity_gib, weights_gib
from stacks.doctor.probes import DockerInfo, GpuInfo, GpuInventory, KubeNode
from stacks.gated import is_gated
from stacks.plan import StackPlan, plan
from stacks.plan.releases import image_cuda, image_vllm_version, min_compute_capability
from tests.conftest import docker_raw, kube_raw

MIB = 2**20
GIB = 2**30


def gpu(index: int = 0, **kw: Any) -> GpuInfo:
    """An RTX 5090 as NVML reports it: 32,607 MiB total (31.84 GiB), nothing reserved, nothing used."""
    base: dict[str, Any] = {
        "index": index,
        "name": "NVIDIA GeForce RTX 5090",
        "kind": "consumer",
        "total_bytes": 32607 * MIB,
        "reserved_bytes": 0,
        "free_bytes": 32607 * MIB,
        "used_bytes": 0,
        "compute_capability": (12, 0),
    }
    base.update(kw)
    return GpuInfo(**base)


def inventory(*gpus: GpuInfo, driver: str = "580.95.05", cuda: tuple[int, int] | None = (13, 0)) -> GpuInventory:
    return GpuInventory(driver=driver, cuda=cuda, gpus=list(gpus) or [gpu(0), gpu(1)])


@dataclass
class FakeGpu:
    inv: GpuInventory | None = None
    error: ProbeError | None = None

    def inventory(self) -> GpuInventory:
        if self.error:
            raise self.error
        assert self.inv is not None
        return self.inv


@dataclass
class FakeDocker:
    info_value: DockerInfo | None = None
    error: ProbeError | None = None
    holders: dict[int, list[str]] = field(default_factory=dict)
    address: str = ""
    """The daemon's address when it does not answer (else its info's)."""

    @property
    def host(self) -> str:
        return self.info_value.host if self.info_value else self.address

    def info(self) -> DockerInfo:
        if self.error:
            raise self.error
        assert self.info_value is not None
        return self.info_value

    def port_holders(self, port: int) -> list[str]:
        return self.holders.get(port, [])


@dataclass
class FakeKube:
    present: bool = True
    context: str | None = "prod"
    node_list: list[KubeNode] = field(default_factory=list)
    error: ProbeError | None = None

    def installed(self) -> bool:
        return self.present

    def current_context(self, kubeconfig: str | None, context: str | None) -> str | None:
        return context or self.context

    def nodes(self, kubeconfig: str | None, context: str | None) -> list[KubeNode]:
        if self.error:
            raise self.error
        return self.node_list


@dataclass
class FakeHost:
    free: int = 500 * GIB
    busy: dict[int, str] = field(default_factory=dict)
    programs: set[str] = field(default_factory=set)
    specs: list[str] = field(default_factory=list)
    measured: list[str] = field(default_factory=list)
    memory: int | None = 256 * GIB
    bound: list[tuple[str, int]] = field(default_factory=list)
    """Every (address, port) asked about."""

    def disk_free(self, path: str) -> tuple[str, int]:
        self.measured.append(path)
        return path, self.free

    def port_in_use(self, address: str, port: int) -> str | None:
        self.bound.append((address, port))
        return self.busy.get(port)

    def which(self, program: str) -> str | None:
        return f"/usr/bin/{program}" if program in self.programs else None

    def cdi_nvidia_specs(self, dirs: list[str]) -> list[str]:
        return self.specs if dirs else []

    def memory_bytes(self) -> int | None:
        return self.memory


DOCKER_OK = DockerInfo(server_version="28.3.0", root_dir="/var/lib/docker", runtimes=["nvidia", "runc"], cdi_spec_dirs=["/etc/cdi"], host="")


def probes(gpu_probe: FakeGpu | None = None, docker: FakeDocker | None = None, kube: FakeKube | None = None, host: FakeHost | None = None) -> Probes:
    return Probes(
        gpu=gpu_probe or FakeGpu(inventory()),
        docker=docker or FakeDocker(DOCKER_OK),
        kube=kube or FakeKube(),
        host=host or FakeHost(),
    )


def docker_plan(**overrides: Any) -> StackPlan:
    return plan(parse(docker_raw(**overrides)))


def run(p: StackPlan, pr: Probes | None = None, token: bool = False) -> dict[str, Check]:
    return {c.name: c for c in doctor(p, pr or probes(), hf_token_set=token)}


def assert_fixable(c: Check, status: str) -> None:
    assert c.status == status, c
    assert c.fix, f"{c.name}: a {status} needs a fix"


# ---- the whole docker host fits ------------------------------------------------------------------------------------


def test_a_fitting_docker_host_passes_every_check() -> None:
    checks = doctor(docker_plan(), probes(), hf_token_set=False)
    assert {c.status for c in checks} == {"pass"}, [c for c in checks if c.status != "pass"]
    names = [c.name for c in checks]
    for name in ("daemon", "GPU access", "NVIDIA driver", "GPUs", "driver for the image", "GPU 0 memory", "GPU 1 generation", "GPU 1 free memory"):
        assert name in names
    assert "model cache" in names and "hfToken" in names
    assert [n for n in names if "port" in n] == [
        "gateway port 8000",
        "open-webui port 3000",
        "dcgm-exporter port 9400",
        "prometheus port 9090",
        "grafana port 3001",
    ]


# ---- GPUs ----------------------------------------------------------------------------------------------------------


def test_no_nvidia_driver_fails_with_its_fix_and_skips_what_depends_on_it() -> None:
    error = ProbeError("no NVIDIA driver on this machine (NVML: NVML Shared Library Not Found)", "install the NVIDIA driver")
    checks = run(docker_plan(), probes(gpu_probe=FakeGpu(error=error)))
    assert_fixable(checks["NVIDIA driver"], "fail")
    for name in ("GPUs", "driver for the image", "GPU memory", "GPU generation", "GPU free memory"):
        assert checks[name].status == "skip"


def test_gpu_count() -> None:
    assert run(docker_plan())["GPUs"].status == "pass"
    c = run(docker_plan(), probes(gpu_probe=FakeGpu(inventory(gpu(0)))))["GPUs"]
    assert_fixable(c, "fail")
    assert "no GPU 1" in c.detail and "--inventory" in c.fix


def test_gpu_memory_within_one_percent_of_what_cuda_reports() -> None:
    # 32,607 MiB less 0.30 GiB reserved = 31.54 GiB: 0.8% under the plan's 31.8
    near = gpu(0, reserved_bytes=int(0.30 * GIB))
    assert run(docker_plan(), probes(gpu_probe=FakeGpu(inventory(near, gpu(1)))))["GPU 0 memory"].status == "pass"
    # 0.5 GiB reserved: 31.34 GiB, 1.5% under: the plan over-states the GPU
    off = gpu(0, reserved_bytes=int(0.5 * GIB))
    c = run(docker_plan(), probes(gpu_probe=FakeGpu(inventory(off, gpu(1)))))["GPU 0 memory"]
    assert_fixable(c, "fail")
    assert "31.34 GiB as CUDA reports it" in c.detail and "512 MiB reserved" in c.detail
    assert "memoryGiB: 31.34" in c.fix
    # a plan that under-states the GPU by more than 1% is wrong too
    small = docker_plan(gpus=[{"index": 0, "name": "RTX 5090", "memoryGiB": 30.0}, {"index": 1, "name": "RTX 5090", "memoryGiB": 31.8}])
    assert run(small)["GPU 0 memory"].status == "fail"


def test_gpu_name_mismatch_warns() -> None:
    c = run(docker_plan(), probes(gpu_probe=FakeGpu(inventory(gpu(0, name="NVIDIA RTX 6000 Ada Generation", total_bytes=32607 * MIB), gpu(1)))))["GPU 0 memory"]
    assert_fixable(c, "warn")


def test_driver_new_enough_for_the_images_cuda() -> None:
    v26 = docker_plan(image={"base": "vllm/vllm-openai:v0.26.0"})
    c = run(v26)["driver for the image"]
    assert c.status == "pass" and "CUDA 13.0" in c.detail and "R580+" in c.detail


def test_consumer_gpu_with_a_driver_too_old_for_cuda_13_fails() -> None:
    v26 = docker_plan(image={"base": "vllm/vllm-openai:v0.26.0"})
    c = run(v26, probes(gpu_probe=FakeGpu(inventory(driver="570.133.07", cuda=(12, 8)))))["driver for the image"]
    assert_fixable(c, "fail")
    assert "R580+" in c.detail and "570.133.07" in c.detail
    assert "-cu129" in c.fix
    # the -cu129 variant of the same release runs on it
    cu129 = docker_plan(image={"base": "vllm/vllm-openai:v0.26.0-cu129"})
    assert run(cu129, probes(gpu_probe=FakeGpu(inventory(driver="570.133.07", cuda=(12, 8)))))["driver for the image"].status == "warn"


def test_data_center_gpu_with_an_old_driver_gets_forward_compatibility() -> None:
    h100 = gpu(0, name="NVIDIA H100 80GB HBM3", kind="datacenter")
    old = inventory(h100, gpu(1, name="NVIDIA H100 80GB HBM3", kind="datacenter"), driver="550.163.01", cuda=(12, 4))
    v26 = docker_plan(image={"base": "vllm/vllm-openai:v0.26.0"})
    c = run(v26, probes(gpu_probe=FakeGpu(old)))["driver for the image"]
    assert_fixable(c, "warn")
    assert "forward compatibility" in c.detail and "VLLM_ENABLE_CUDA_COMPATIBILITY" in c.fix
    models = [dict(m, env={"VLLM_ENABLE_CUDA_COMPATIBILITY": "1"}) for m in docker_raw()["models"]]
    switched = docker_plan(image={"base": "vllm/vllm-openai:v0.26.0"}, models=models)
    c = run(switched, probes(gpu_probe=FakeGpu(old)))["driver for the image"]
    assert c.status == "warn" and "every model sets VLLM_ENABLE_CUDA_COMPATIBILITY=1" in c.detail


def test_older_driver_cuda_within_the_major_warns_about_minor_version_compatibility() -> None:
    # vLLM 0.11.2 is CUDA 12.9; an R535 driver speaks CUDA 12.2
    v11 = docker_plan(image={"base": "vllm/vllm-openai:v0.11.2"})
    c = run(v11, probes(gpu_probe=FakeGpu(inventory(driver="535.230.02", cuda=(12, 2)))))["driver for the image"]
    assert_fixable(c, "warn")
    assert "minor-version compatibility" in c.detail


def test_gpu_generation() -> None:
    ada = inventory(gpu(0, compute_capability=(8, 9)), gpu(1, compute_capability=(8, 9)))
    assert run(docker_plan(), probes(gpu_probe=FakeGpu(ada)))["GPU 0 generation"].status == "pass"
    volta = inventory(gpu(0, compute_capability=(7, 0)), gpu(1))
    v26 = docker_plan(image={"base": "vllm/vllm-openai:v0.26.0"})
    c = run(v26, probes(gpu_probe=FakeGpu(volta)))["GPU 0 generation"]
    assert_fixable(c, "fail")
    assert "needs 7.5" in c.detail
    # vLLM 0.11.2 still supports 7.0, with the older-generation hint
    turing = inventory(gpu(0, compute_capability=(7, 5)), gpu(1))
    c = run(docker_plan(), probes(gpu_probe=FakeGpu(turing)))["GPU 0 generation"]
    assert_fixable(c, "warn")
    assert "enforceEager: true" in c.fix and "tiny" in c.fix


def test_bfloat16_on_an_older_generation_fails() -> None:
    models = docker_raw()["models"]
    models[0]["dtype"] = "bfloat16"
    turing = inventory(gpu(0, compute_capability=(7, 5)), gpu(1))
    c = run(docker_plan(models=models), probes(gpu_probe=FakeGpu(turing)))["GPU 0 generation"]
    assert_fixable(c, "fail")
    assert "dtype: float16" in c.fix


def test_free_memory_for_the_first_server_on_each_gpu() -> None:
    p = docker_plan()
    tiny = p.model("tiny")
    need = tiny.memory.fraction * floor2(32607 / 1024) + 0.5
    busy = gpu(0, free_bytes=int((need - 1) * GIB), used_bytes=int((31.84 - need + 1) * GIB))
    c = run(p, probes(gpu_probe=FakeGpu(inventory(busy, gpu(1)))))["GPU 0 free memory"]
    assert_fixable(c, "fail")
    assert "tiny starts first" in c.detail and "reservedGiB" in c.fix
    enough = gpu(0, free_bytes=int((need + 0.5) * GIB))
    assert run(p, probes(gpu_probe=FakeGpu(inventory(enough, gpu(1)))))["GPU 0 free memory"].status == "pass"


def test_free_memory_for_every_server_sharing_a_gpu_warns() -> None:
    models = docker_raw()["models"]
    for m in models:
        m["gpus"] = [0]
    p = docker_plan(models=models)
    first = p.model(p.gpus[0].models[0])
    just_first = gpu(0, free_bytes=int((first.memory.fraction * 31.84 + 1.0) * GIB), used_bytes=10 * GIB)
    c = run(p, probes(gpu_probe=FakeGpu(inventory(just_first, gpu(1)))))["GPU 0 free memory"]
    assert_fixable(c, "warn")
    assert "all 2 servers together" in c.detail


# ---- Docker ----------------------------------------------------------------------------------------------------------


def test_docker_daemon_unreachable_fails_and_its_dependents_say_why() -> None:
    down = FakeDocker(error=ProbeError("Docker daemon at the local socket not reachable: Cannot connect", "start the daemon"))
    host = FakeHost()
    checks = run(docker_plan(), probes(docker=down, host=host))
    assert_fixable(checks["daemon"], "fail")
    assert checks["GPU access"].status == "skip"
    assert "current directory" in checks["model cache"].detail


@pytest.mark.parametrize(
    ("info", "host", "status", "words"),
    [
        (DOCKER_OK, FakeHost(), "pass", "NVIDIA container runtime is registered"),
        (replace(DOCKER_OK, runtimes=["runc"]), FakeHost(programs={"nvidia-container-runtime-hook"}), "pass", "hands --gpus requests"),
        (replace(DOCKER_OK, runtimes=["runc"]), FakeHost(programs={"nvidia-cdi-hook"}, specs=["/etc/cdi/nvidia.yaml"]), "pass", "CDI is on"),
        (replace(DOCKER_OK, runtimes=["runc"]), FakeHost(specs=["/etc/cdi/nvidia.yaml"]), "fail", "nvidia-cdi-hook is not installed"),
        (replace(DOCKER_OK, runtimes=["runc"], cdi_spec_dirs=[]), FakeHost(), "fail", "CDI is off"),
        (replace(DOCKER_OK, runtimes=["runc"]), FakeHost(), "fail", "hold no nvidia.com/gpu devices"),
    ],
)
def test_docker_gpu_access(info: DockerInfo, host: FakeHost, status: str, words: str) -> None:
    c = run(docker_plan(), probes(docker=FakeDocker(info), host=host))["GPU access"]
    assert c.status == status and words in c.detail, c
    if status == "fail":
        assert "nvidia-ctk" in c.fix


def test_a_remote_docker_daemon_skips_this_machines_gpus_disk_and_ports() -> None:
    remote = replace(DOCKER_OK, host="ssh://gpu-box", runtimes=["runc"])
    checks = doctor(docker_plan(), probes(docker=FakeDocker(remote), gpu_probe=FakeGpu(error=ProbeError("none", "none"))), hf_token_set=False)
    by_area: dict[str, set[str]] = {}
    for c in checks:
        by_area.setdefault(c.area, set()).add(c.status)
    assert by_area["gpu"] == {"skip"} and by_area["disk"] == {"skip"} and by_area["ports"] == {"skip"}
    access = next(c for c in checks if c.name == "GPU access")
    assert_fixable(access, "warn")
    assert all("on that host" in c.fix for c in checks if c.status == "skip")


@pytest.mark.parametrize("address", ["ssh://gpu-box", "tcp://10.0.0.5:2376"])
def test_an_unreachable_remote_daemon_still_skips_this_machines_gpus_disk_and_ports(address: str) -> None:
    """The daemon's address says it is remote even when it does not answer: no NVIDIA driver or bindAddress advice for this machine."""
    down = FakeDocker(error=ProbeError(f"Docker daemon at {address} not reachable: connection refused", "check the host"), address=address)
    host = FakeHost(busy={8000: "0.0.0.0:8000 is in use"})
    checks = doctor(docker_plan(), probes(docker=down, host=host, gpu_probe=FakeGpu(error=ProbeError("no NVIDIA driver", "install it"))), hf_token_set=False)
    by_name = {c.name: c for c in checks}
    assert_fixable(by_name["daemon"], "fail")
    assert {c.status for c in checks if c.area in ("gpu", "disk", "ports")} == {"skip"}
    assert by_name["GPU access"].status == "skip"
    assert host.bound == [] and host.measured == [], "nothing of this machine was asked"
    assert not any("driver" in c.fix or "bindAddress" in c.fix for c in checks)


# ---- disk, ports, token --------------------------------------------------------------------------------------------


def test_disk_at_dockers_data_root_against_the_weights() -> None:
    p = docker_plan()
    need = sum(weights_gib(p).values())
    host = FakeHost(free=int((need + 1) * GIB))
    c = run(p, probes(host=host))["model cache"]
    assert c.status == "pass" and host.measured == ["/var/lib/docker"] and "Docker's data root" in c.detail
    c = run(p, probes(host=FakeHost(free=int((need - 1) * GIB))))["model cache"]
    assert_fixable(c, "fail")
    assert "data-root" in c.fix


def test_weights_count_every_rank_and_each_checkpoint_once() -> None:
    models = docker_raw()["models"]
    models.append({"name": "tiny-again", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [1], "maxModelLen": 1024})
    sizes = weights_gib(docker_plan(models=models))
    assert set(sizes) == {"TinyLlama/TinyLlama-1.1B-Chat-v1.0", "Qwen/Qwen2.5-3B-Instruct"}
    assert sizes["TinyLlama/TinyLlama-1.1B-Chat-v1.0"] == pytest.approx(1.1e9 * 2 / GIB, rel=0.01)


def test_ports() -> None:
    p = docker_plan()
    busy = FakeHost(busy={8000: "0.0.0.0:8000 is in use"})
    c = run(p, probes(host=busy))["gateway port 8000"]
    assert_fixable(c, "fail")
    assert "ss -ltnp" in c.fix
    # this stack's own gateway, from an earlier `pulumi up`
    own = run(p, probes(host=busy, docker=FakeDocker(DOCKER_OK, holders={8000: ["vllm-gateway"]})))["gateway port 8000"]
    assert own.status == "warn" and "this stack's own gateway" in own.detail
    away = FakeHost(busy={3000: "10.9.9.9 is not an address of this host"})
    c = run(p, probes(host=away))["open-webui port 3000"]
    assert_fixable(c, "fail")
    assert "bindAddress" in c.fix
    no_ui = docker_plan(webui={"enabled": False}, monitoring={"dcgm": False, "prometheus": False})
    assert [n for n in run(no_ui) if "port" in n] == ["gateway port 8000"]


@pytest.mark.parametrize("monitoring", [{}, {"bindAddress": "10.1.1.1"}, {"prometheus": False}, {"dcgm": False, "grafana": False}])
def test_the_doctor_checks_the_ports_the_program_publishes_where_it_binds_them(monitoring: dict[str, Any]) -> None:
    from stacks.doctor.host_checks import published
    from stacks.render.workloads import stack_workloads

    p = docker_plan(monitoring=monitoring, docker={"bindAddress": "192.168.1.20"})
    ws = stack_workloads(p, lambda key: key)
    assert p.docker is not None
    program = [
        (w.name, w.publish, w.bind_address or p.docker.bind_address) for w in (ws.gateway, ws.webui, ws.dcgm, ws.prometheus, ws.grafana) if w and w.publish
    ]
    assert [(x.service, x.port, x.address) for x in published(p)] == program


def test_each_port_is_checked_on_the_address_it_binds_to() -> None:
    """The metrics ports bind to monitoring.bindAddress (127.0.0.1 by default), the rest to docker.bindAddress; Grafana's is checked too."""
    host = FakeHost()
    run(docker_plan(docker={"bindAddress": "192.168.1.20"}, monitoring={"grafanaPort": 3300}), probes(host=host))
    assert host.bound == [("192.168.1.20", 8000), ("192.168.1.20", 3000), ("127.0.0.1", 9400), ("127.0.0.1", 9090), ("127.0.0.1", 3300)]
    away = FakeHost(busy={3300: "10.9.9.9 is not an address of this host"})
    c = run(docker_plan(monitoring={"bindAddress": "10.9.9.9", "grafanaPort": 3300}), probes(host=away))["grafana port 3300"]
    assert_fixable(c, "fail")
    assert "vllm-stack:monitoring.bindAddress" in c.fix


def test_hf_token_for_gated_models() -> None:
    assert run(docker_plan())["hfToken"].status == "pass"
    models = docker_raw()["models"]
    models[1] = {"name": "llama", "model": "meta-llama/Llama-3.2-3B-Instruct", "gpus": [1], "maxModelLen": 4096}
    gated = docker_plan(models=models)
    c = run(gated)["hfToken"]
    assert_fixable(c, "fail")
    assert "meta-llama/Llama-3.2-3B-Instruct" in c.detail and "pulumi config set --secret vllm-stack:hfToken" in c.fix
    assert run(gated, token=True)["hfToken"].status == "pass"


def test_gated_repositories() -> None:
    assert is_gated("meta-llama/Llama-3.1-8B-Instruct") and is_gated("google/gemma-3-12b-it") and is_gated(" Meta-Llama/x ")
    assert not is_gated("Qwen/Qwen3-8B") and not is_gated("google/flan-t5-base") and not is_gated("TinyLlama/TinyLlama-1.1B-Chat-v1.0")


# ---- Kubernetes ------------------------------------------------------------------------------------------------------

L40S = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-L40S", "nvidia.com/gpu.memory": "46068"}


def kube_plan(**kube: Any) -> StackPlan:
    raw = kube_raw()
    raw["kubernetes"].update(kube)
    return plan(parse(raw))


def kube_run(p: StackPlan, kube: FakeKube) -> dict[str, Check]:
    return run(p, probes(kube=kube, gpu_probe=FakeGpu(error=ProbeError("not asked", "not asked"))))


def test_a_fitting_cluster_passes() -> None:
    checks = kube_run(kube_plan(), FakeKube(node_list=[KubeNode("gpu-1", L40S, gpus=4), KubeNode("cpu-1", {}, gpus=0)]))
    assert checks["GPUs"].status == "skip", "the local machine's GPUs do not count on kubernetes"
    for name in ("cluster", "GPU nodes", "GPU type", "model cache", "hfToken"):
        assert checks[name].status == "pass", checks[name]
    assert "daemon" not in checks, "no image is built for this cluster"


def test_cluster_checks_skip_cleanly_without_kubectl_a_context_or_in_render_mode() -> None:
    assert {kube_run(kube_plan(), FakeKube(present=False))[n].status for n in ("cluster", "GPU nodes", "GPU type")} == {"skip"}
    assert kube_run(kube_plan(), FakeKube(context=None))["cluster"].status == "skip"
    assert kube_run(kube_plan(renderYamlTo="out/k8s"), FakeKube(error=ProbeError("x", "y")))["cluster"].status == "skip"


def test_unreachable_cluster_fails() -> None:
    c = kube_run(kube_plan(), FakeKube(error=ProbeError("cluster not reachable: dial tcp: i/o timeout", "check kubernetes.context")))["cluster"]
    assert_fixable(c, "fail")


def test_gpu_nodes() -> None:
    c = kube_run(kube_plan(), FakeKube(node_list=[KubeNode("cpu-1", {}, gpus=0)]))["GPU nodes"]
    assert_fixable(c, "fail")
    assert "GPU Operator" in c.fix
    unlabeled = {k: v for k, v in L40S.items() if k != "nvidia.com/gpu.present"}
    c = kube_run(kube_plan(), FakeKube(node_list=[KubeNode("gpu-1", unlabeled, gpus=4)]))["GPU nodes"]
    assert_fixable(c, "fail")
    assert "gpuNodeSelector" in c.detail
    raw = kube_raw()
    raw["models"][0]["tensorParallel"] = 2
    wide = plan(parse(raw))
    c = kube_run(wide, FakeKube(node_list=[KubeNode("gpu-1", L40S, gpus=1)]))["GPU nodes"]
    assert_fixable(c, "fail")
    assert "needs 2 on one node" in c.detail and "spread it with nodes" in c.fix
    # a swap group's pod (or a KEDA-scaled model) stays on one node: the fix does not offer nodes
    raw["models"][0]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 2}
    c = kube_run(plan(parse(raw)), FakeKube(node_list=[KubeNode("gpu-1", L40S, gpus=1)]))["GPU nodes"]
    assert_fixable(c, "fail")
    assert "nodes" not in c.fix.replace("add nodes", ""), c.fix


def test_gpu_type() -> None:
    h100 = dict(L40S, **{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})
    c = kube_run(kube_plan(), FakeKube(node_list=[KubeNode("gpu-1", h100, gpus=8)]))["GPU type"]
    assert_fixable(c, "fail")
    no_gfd = {"nvidia.com/gpu.present": "true"}
    assert_fixable(kube_run(kube_plan(), FakeKube(node_list=[KubeNode("gpu-1", no_gfd, gpus=8)]))["GPU type"], "warn")
    small = dict(L40S, **{"nvidia.com/gpu.memory": "40000"})
    c = kube_run(kube_plan(), FakeKube(node_list=[KubeNode("gpu-1", small, gpus=8)]))["GPU type"]
    assert_fixable(c, "fail")
    assert "memoryGiB" in c.fix


def test_model_cache_claim_against_the_weights() -> None:
    assert quantity_gib("200Gi") == 200 and quantity_gib("1Ti") == 1024 and quantity_gib("512Mi") == 0.5
    c = kube_run(kube_plan(modelCacheSize="10Gi"), FakeKube(present=False))["model cache"]
    assert_fixable(c, "fail")
    assert "modelCacheSize to at least 16Gi" in c.fix
    per_model = kube_plan(modelCacheSize="16Gi", modelCacheAccessMode="ReadWriteOnce")
    assert kube_run(per_model, FakeKube(present=False))["model cache"].status == "pass"


def test_a_cluster_stack_that_builds_its_image_needs_a_docker_daemon() -> None:
    raw = kube_raw(image={"base": "vllm/vllm-openai:v0.11.2", "aptPackages": ["curl"], "registry": "registry.example/ml/vllm"})
    down = FakeDocker(error=ProbeError("Docker daemon at the local socket not reachable", "start the daemon"))
    c = {c.name: c for c in doctor(plan(parse(raw)), probes(docker=down, kube=FakeKube(present=False)), hf_token_set=False)}["daemon"]
    assert_fixable(c, "fail")
    assert "builds and pushes" in c.detail


# ---- inventory ---------------------------------------------------------------------------------------------------------


def test_inventory_is_a_gpus_block_the_planner_accepts() -> None:
    h100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", "datacenter", 81559 * MIB, 477 * MIB, 80000 * MIB, 1082 * MIB, (9, 0))
    text = inventory_yaml(GpuInventory("580.95.05", (13, 0), [h100]), "gpu-box")
    doc = yaml.safe_load(text)
    gpus = doc["config"]["vllm-stack:gpus"]
    assert gpus == [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memoryGiB": 79.18}]
    assert "81,559 MiB total, 477 MiB reserved" in text
    assert "# reservedGiB: 1.1" in text, "1,082 MiB in use by others: the block suggests reserving it"
    raw = docker_raw(gpus=gpus, models=[{"name": "tiny", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 2048}])
    assert plan(parse(raw)).gpus[0].memory_gib == 79.18
    data = inventory_json(GpuInventory("580.95.05", (13, 0), [h100]))
    assert data["gpus"][0]["memoryGiB"] == 79.18 and data["gpus"][0]["nvmlTotalMiB"] == 81559 and data["cuda"] == "13.0"


def test_memory_is_rounded_down() -> None:
    assert floor2(79.1899) == 79.18 and floor2(31.999) == 31.99 and floor2(24.0) == 24.0


# ---- the image's CUDA and generations (stacks.plan.releases) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "cuda"),
    [
        ("vllm/vllm-openai:v0.10.2", (12, 8)),
        ("vllm/vllm-openai:v0.11.2", (12, 9)),
        ("vllm/vllm-openai:v0.19.1", (12, 9)),
        ("vllm/vllm-openai:v0.19.1-cu130", (13, 0)),
        ("vllm/vllm-openai:v0.20.0", (13, 0)),
        ("vllm/vllm-openai:v0.26.0", (13, 0)),
        ("vllm/vllm-openai:v0.26.0-cu129", (12, 9)),
        ("vllm/vllm-openai:v0.26.0-cu129-ubuntu2404", (12, 9)),
        ("vllm/vllm-openai:v0.33.0", (13, 0)),
        ("mirror.example:5000/vllm/vllm-openai:v0.30.0", (13, 0)),
        ("vllm/vllm-openai:v0.34.0", (13, 0)),
        ("vllm/vllm-openai:v0.26.0@sha256:" + "a" * 64, (13, 0)),
    ],
)
def test_image_cuda(base: str, cuda: tuple[int, int]) -> None:
    version = image_vllm_version(base)
    assert version and image_cuda(base, version) == cuda
    # a digest alone: the release the stack states (image.vllmVersion)
    assert image_cuda("vllm/vllm-openai@sha256:" + "a" * 64, (0, 19, 1)) == (12, 9)


def test_min_compute_capability() -> None:
    assert min_compute_capability((0, 19, 1)) == (7, 0) and min_compute_capability((0, 20, 0)) == (7, 5)


# ---- the CLI -------------------------------------------------------------------------------------------------------------


def test_cli_exit_code_follows_the_failures(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import ROOT

    stack = str(ROOT / "tests/stacks/h100.yaml")
    h100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", "datacenter", 81559 * MIB, 477 * MIB, 81000 * MIB, 0, (9, 0))
    monkeypatch.setattr(cli, "local_probes", lambda docker_host=None: probes(gpu_probe=FakeGpu(inventory(h100))))
    assert cli.main(["doctor", stack]) == 0
    out = capsys.readouterr().out
    assert "GPU 0 memory" in out and "checks: 15 pass, 0 warn, 0 fail, 0 skip" in out
    assert cli.main(["doctor", stack, "--json"]) == 0
    assert {c["status"] for c in json.loads(capsys.readouterr().out)} == {"pass"}

    monkeypatch.setattr(cli, "local_probes", lambda docker_host=None: probes(gpu_probe=FakeGpu(error=ProbeError("no NVIDIA driver", "install it"))))
    assert cli.main(["doctor", stack]) == 1
    out = capsys.readouterr().out
    assert "no NVIDIA driver" in out and "install it" in out


def test_cli_inventory(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    h100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", "datacenter", 81559 * MIB, 477 * MIB, 81000 * MIB, 0, (9, 0))
    monkeypatch.setattr(cli, "local_probes", lambda docker_host=None: probes(gpu_probe=FakeGpu(inventory(h100))))
    assert cli.main(["doctor", "--inventory"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["config"]["vllm-stack:gpus"][0]["memoryGiB"] == 79.18
    monkeypatch.setattr(cli, "local_probes", lambda docker_host=None: probes(gpu_probe=FakeGpu(error=ProbeError("no NVIDIA driver", "install it"))))
    assert cli.main(["doctor", "--inventory"]) == 1
    assert "fix: install it" in capsys.readouterr().err


def test_cli_passes_the_stacks_docker_host_and_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    raw = {f"vllm-stack:{k}": v for k, v in docker_raw().items()}
    raw["docker:host"] = "ssh://gpu-box"
    raw["vllm-stack:hfToken"] = {"secure": "v1:abc"}
    stack = tmp_path / "Pulumi.remote.yaml"
    stack.write_text(yaml.safe_dump({"config": raw}))
    seen: dict[str, Any] = {}

    def fake(docker_host: str | None = None) -> Probes:
        seen["host"] = docker_host
        return probes()

    real_doctor = cli.doctor

    def spy(p: StackPlan, pr: Probes, *, hf_token_set: bool) -> list[Check]:
        seen["token"] = hf_token_set
        return real_doctor(p, pr, hf_token_set=hf_token_set)

    monkeypatch.setattr(cli, "local_probes", fake)
    monkeypatch.setattr(cli, "doctor", spy)
    assert cli.main(["doctor", str(stack)]) == 0
    assert seen == {"host": "ssh://gpu-box", "token": True}


def test_cli_needs_a_stack_or_inventory(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["doctor"])
    assert e.value.code == 2 and "--inventory" in capsys.readouterr().err


def test_gpu_nodes_for_a_model_spanning_nodes() -> None:
    """A pod's GPUs sit on one node, and a model spanning nodes needs as many such nodes."""
    raw = kube_raw(models=[{"name": "big", "model": "Qwen/Qwen3-235B-A22B", "nodes": 2, "tensorParallel": 8, "maxModelLen": 8192}])
    raw["kubernetes"]["gpu"] = {"name": "NVIDIA L40S", "memoryGiB": 44.52, "perNode": 8}
    spanning = plan(parse(raw))
    c = kube_run(spanning, FakeKube(node_list=[KubeNode("gpu-1", L40S, gpus=8), KubeNode("gpu-2", L40S, gpus=4)]))["GPU nodes"]
    assert_fixable(c, "fail")
    assert "big spans 2 nodes of 8 GPUs but 1 have that many" in c.detail
    c = kube_run(spanning, FakeKube(node_list=[KubeNode("gpu-1", L40S, gpus=8), KubeNode("gpu-2", L40S, gpus=8)]))["GPU nodes"]
    assert c.status == "pass" and "needs 8, big 2 such nodes" in c.detail


def test_host_memory_for_swap_groups_against_this_host() -> None:
    """Members asleep at level 1 keep their weights in host memory: the plan's figure against MemTotal."""
    p = plan(load_stack("swap"))
    need = sum(g.host_memory_gib for g in p.swap_groups)
    assert run(p, probes(host=FakeHost(memory=int((need + 64) * GIB))))["host memory"].status == "pass"
    short = run(p, probes(host=FakeHost(memory=int((need - 1) * GIB))))["host memory"]
    assert short.status == "fail" and f"{need:.1f} GiB" in short.detail and "level 2" in short.fix
    assert run(p, probes(host=FakeHost(memory=int(need / 0.95 * GIB))))["host memory"].status == "warn"
    assert run(p, probes(host=FakeHost(memory=None)))["host memory"].status == "warn"
    # no swap group, no such check
    assert "host memory" not in run(docker_plan())


def test_a_swap_group_counts_as_its_reservation_on_a_free_gpu() -> None:
    """Members are awake in turns: a free RTX 4090 passes, though their awake footprints add up to far more than it has."""
    p = plan(load_stack("swap"))
    total = int(24564 * MIB)
    check = run(p, probes(FakeGpu(inventory(gpu(0, name="NVIDIA GeForce RTX 4090", total_bytes=total, free_bytes=total)))))["GPU 0 free memory"]
    assert sum(m.memory.footprint_gib for m in p.models) > 24
    assert check.status == "pass", check
    assert f"all 4 servers need {p.swap_groups[0].reserved_gib:.2f} GiB" in check.detail
