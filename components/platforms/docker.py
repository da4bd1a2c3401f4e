"""Docker host platform: one user-defined network, named volumes, one container per workload."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_docker as docker

from components.workloads import SecretRef, Workload
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
        self.secrets: dict[str, Mapping[str, pulumi.Output[str]]] = {}

    def secret(self, name: str, data: Mapping[str, pulumi.Output[str]], parent: pulumi.Resource) -> None:
        # docker has no secret store: values go straight into env and uploads, kept as Pulumi secrets
        self.secrets[name] = data

    def _value(self, ref: SecretRef) -> pulumi.Output[str] | None:
        value = self.secrets.get(ref.secret, {}).get(ref.key)
        if value is None and not ref.optional:
            raise KeyError(f"stack secret {ref.secret}/{ref.key} was never defined")
        return None if value is None else pulumi.Output.secret(value)

    def run(self, name: str, workload: Workload, parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource]) -> docker.Container:
        w = workload
        envs: list[pulumi.Input[str]] = [f"{k}={v}" for k, v in sorted(w.env.items())]
        for key, ref in sorted(w.secret_env.items()):
            value = self._value(ref)
            if value is not None:
                envs.append(_env_entry(key, value))
        uploads = [docker.ContainerUploadArgs(file=path, content=content) for path, content in sorted(w.files.items())]
        for path, ref in sorted(w.secret_files.items()):
            value = self._value(ref)
            if value is not None:
                uploads.append(docker.ContainerUploadArgs(file=path, content=value))
        healthcheck = None
        if w.wait_healthy and w.health_path and w.port:
            # python3 is in the vLLM image; curl and wget are not
            probe = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{w.port}{w.health_path}', timeout=5)"
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
