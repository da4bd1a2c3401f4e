"""Docker host platform: one user-defined network, named volumes, one container per workload."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_docker as docker

from components.platforms.base import Workload
from stacks.config import DockerConfig

HEALTH_INTERVAL_S = 10


def _env_entry(key: str, value: pulumi.Output[str]) -> pulumi.Output[str]:
    return value.apply(lambda v: f"{key}={v}")


class DockerPlatform:
    """Runs workloads as containers on ``network`` with the stack's named ``volumes``."""

    def __init__(self, settings: DockerConfig, network: docker.Network, volumes: dict[str, docker.Volume], prefix: str) -> None:
        self.settings = settings
        self.network = network
        self.volumes = volumes
        self.prefix = prefix

    def run(self, name: str, workload: Workload, parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource]) -> docker.Container:
        w = workload
        envs: list[pulumi.Input[str]] = [f"{k}={v}" for k, v in sorted(w.env.items())]
        envs += [_env_entry(k, value) for k, value in sorted(w.secret_env.items())]
        uploads = [docker.ContainerUploadArgs(file=path, content=content) for path, content in sorted(w.files.items())]
        uploads += [docker.ContainerUploadArgs(file=path, content=pulumi.Output.secret(content)) for path, content in sorted(w.secret_files.items())]
        healthcheck = None
        if w.wait_healthy and w.health_path and w.health_port:
            # python3 is in the vLLM image; curl and wget are not
            probe = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{w.health_port}{w.health_path}', timeout=5)"
            healthcheck = docker.ContainerHealthcheckArgs(
                tests=["CMD", "python3", "-c", probe],
                interval=f"{HEALTH_INTERVAL_S}s",
                timeout="5s",
                retries=3,
                start_period=f"{w.startup_seconds}s",
                start_interval="5s",
            )
        gpus = None
        if w.all_gpus:
            gpus = "all"
        elif w.gpus:
            gpus = "device=" + ",".join(str(g) for g in w.gpus)
        return docker.Container(
            name,
            name=f"{self.prefix}-{w.name}",
            image=w.image,
            entrypoints=w.entrypoint,
            command=w.args or None,
            envs=envs or None,
            gpus=gpus,
            ipc_mode="host" if w.ipc_host else None,
            shm_size=int(w.shm_size_gib * 1024) if w.shm_size_gib else None,
            capabilities=docker.ContainerCapabilitiesArgs(adds=w.cap_add) if w.cap_add else None,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=self.network.name, aliases=[w.name])],
            volumes=[docker.ContainerVolumeArgs(volume_name=self.volumes[v].name, container_path=path) for v, path in sorted(w.volumes.items())] or None,
            ports=[docker.ContainerPortArgs(internal=w.port, external=w.publish, ip=self.settings.bind_address)] if w.publish and w.port else None,
            uploads=uploads or None,
            healthcheck=healthcheck,
            restart=self.settings.restart,
            log_driver="json-file",
            log_opts={"max-size": self.settings.log_max_size, "max-file": str(self.settings.log_max_files)},
            labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(w.labels.items())] or None,
            wait=w.wait_healthy and healthcheck is not None,
            wait_timeout=w.startup_seconds + 3 * HEALTH_INTERVAL_S if w.wait_healthy else None,
            must_run=True,
            opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on)),
        )
