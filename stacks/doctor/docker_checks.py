"""The Docker daemon the stack deploys to: reachable, and able to hand GPUs to containers."""

from __future__ import annotations

from stacks.doctor.probes import DockerInfo, DockerProbe, HostProbe, ProbeError
from stacks.doctor.result import Check

NVIDIA_HOOK = "nvidia-container-runtime-hook"
"""dockerd serves ``--gpus`` through this hook when it is on its PATH (moby daemon/nvidia_linux.go)."""
CDI_HOOK = "nvidia-cdi-hook"
"""With CDI on and this hook installed, Docker 28.3+ serves ``--gpus`` through CDI devices instead (moby#50228)."""
TOOLKIT_FIX = (
    "install the NVIDIA Container Toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker` "
    "(or generate CDI specs: `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`)"
)


def daemon_check(probe: DockerProbe, why: str) -> tuple[Check, DockerInfo | None]:
    try:
        info = probe.info()
    except ProbeError as err:
        return Check("docker", "daemon", "fail", f"{err.message} ({why})", err.fix), None
    where = f"at {info.host}" if info.host else "on the local socket"
    return Check("docker", "daemon", "pass", f"Docker {info.server_version} {where}; data root {info.root_dir}"), info


def gpu_runtime_check(info: DockerInfo, host: HostProbe) -> Check:
    name = "GPU access"
    if "nvidia" in info.runtimes:
        return Check("docker", name, "pass", f"the NVIDIA container runtime is registered (runtimes: {', '.join(info.runtimes)})")
    if info.remote:
        return Check(
            "docker",
            name,
            "warn",
            f"no nvidia runtime registered at {info.host} (runtimes: {', '.join(info.runtimes)}); its hooks cannot be seen from here",
            f"check `docker run --rm --gpus all ubuntu nvidia-smi` on that host; if it fails: {TOOLKIT_FIX}",
        )
    if host.which(NVIDIA_HOOK):
        return Check("docker", name, "pass", f"{NVIDIA_HOOK} is installed: dockerd hands --gpus requests to it")
    specs = host.cdi_nvidia_specs(info.cdi_spec_dirs)
    if specs and host.which(CDI_HOOK):
        return Check("docker", name, "pass", f"CDI is on and {', '.join(specs)} describes nvidia.com/gpu devices (Docker 28.3+ serves --gpus through them)")
    if specs:
        return Check("docker", name, "fail", f"CDI specs for nvidia.com/gpu exist ({', '.join(specs)}) but {CDI_HOOK} is not installed", TOOLKIT_FIX)
    cdi = f"CDI spec dirs {', '.join(info.cdi_spec_dirs)} hold no nvidia.com/gpu devices" if info.cdi_spec_dirs else "CDI is off"
    return Check("docker", name, "fail", f"no nvidia runtime (runtimes: {', '.join(info.runtimes) or 'none'}), no {NVIDIA_HOOK}, {cdi}", TOOLKIT_FIX)
