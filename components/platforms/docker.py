"""Docker host platform: one user-defined network, named volumes, pulled and built images, one container per workload."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_docker as docker

from components.image import VllmImage, VllmImageArgs
from stacks.plan import SecretRef, StackPlan
from stacks.plan import topology as net
from stacks.plan.types import DockerPlan
from stacks.render.kubernetes import Obj
from stacks.render.workloads import Ref, Workload, image_refs

HEALTH_INTERVAL_S = 10


def go_duration(seconds: int) -> str:
    """A duration as Go prints it (time.Duration.String: ``1800`` -> ``30m0s``), which is how the docker provider reads
    a health check back from Docker; written another way (``1800s``) every preview shows a change that is none."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _env_entry(key: str, value: pulumi.Output[str]) -> pulumi.Output[str]:
    return value.apply(lambda v: f"{key}={v}")


class DockerPlatform:
    """Runs workloads as containers on the stack's network; owns the network, the data volumes and the images."""

    def __init__(self, name: str, plan: StackPlan, parent: pulumi.Resource) -> None:
        assert plan.docker is not None, "the docker platform runs docker stacks"
        self.name = name
        self.plan = plan
        self.settings: DockerPlan = plan.docker
        self.parent = parent
        self.prefix = f"{pulumi.get_project()}-{pulumi.get_stack()}"
        self.network = docker.Network(f"{name}-network", name=self.settings.network, driver="bridge", opts=pulumi.ResourceOptions(parent=parent))
        self.volumes: dict[str, docker.Volume] = {}
        self.containers: dict[str, docker.Container] = {}
        self.secrets: dict[str, Mapping[str, pulumi.Output[str]]] = {}

    def image(self, key: str) -> Ref:
        child = pulumi.ResourceOptions(parent=self.parent)
        if key == "vllm":
            # the docker target always builds: the time zone is baked into the image
            built = VllmImage(f"{self.name}-image", VllmImageArgs(image=self.plan.image, repository=f"{self.prefix}/vllm"), opts=child)
            return built.image_ref
        return docker.RemoteImage(f"{self.name}-{key}-image", name=image_refs(self.plan)[key], keep_locally=True, opts=child).image_id

    def _volume(self, volume: str) -> docker.Volume:
        if volume not in self.volumes:
            opts = pulumi.ResourceOptions(parent=self.parent, retain_on_delete=self.plan.retain_data)
            labels = [docker.VolumeLabelArgs(label=k, value=v) for k, v in net.retain_labels(self.plan.retain_data).items()]
            self.volumes[volume] = docker.Volume(f"{self.name}-{volume}", name=f"{self.prefix}-{volume}", labels=labels, opts=opts)
        return self.volumes[volume]

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
        files = dict(w.files)
        if w.upstreams:
            # a changed upload replaces the container: nginx starts again and re-resolves the replaced upstreams
            ids = [self.containers[s].id for s in w.upstreams.services]
            files[w.upstreams.marker] = pulumi.Output.all(*ids).apply(lambda v: "\n".join(map(str, v)) + "\n")
        uploads = [docker.ContainerUploadArgs(file=path, content=content) for path, content in sorted(files.items())]
        for path, ref in sorted(w.secret_files.items()):
            value = self._value(ref)
            if value is not None:
                uploads.append(docker.ContainerUploadArgs(file=path, content=value))
        healthcheck = None
        tests: list[str] | None = ["CMD", *w.health_command] if w.health_command else None
        if w.health_path and w.port and not tests:
            # python3 is in the vLLM image; curl and wget are not
            probe = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{w.port}{w.health_path}', timeout=5)"
            tests = ["CMD", "python3", "-c", probe]
        if w.wait_healthy and tests:
            healthcheck = docker.ContainerHealthcheckArgs(
                tests=tests,
                interval=go_duration(HEALTH_INTERVAL_S),
                timeout=go_duration(5),
                retries=3,
                start_period=go_duration(w.startup_seconds),
                # no start_interval: Docker refuses a container with one below Engine 25 (API 1.44; Debian 12's 20.10
                # answers "specify health-check start interval requires API version 1.44"), so the first probe that
                # passes comes up to one interval after the server is ready
            )
        gpus = None
        if w.all_gpus:
            gpus = "all"
        elif w.gpus:
            gpus = "device=" + ",".join(str(g) for g in w.gpus)
        container = docker.Container(
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
            # no process in any container may gain privileges (setuid binaries, file capabilities)
            security_opts=["no-new-privileges:true"],
            user=f"{w.user[0]}:{w.user[1]}" if w.user else None,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=self.network.name, aliases=[w.name, *sorted(w.extra_ports)])],
            volumes=[docker.ContainerVolumeArgs(volume_name=self._volume(v).name, container_path=path) for v, path in sorted(w.volumes.items())] or None,
            ports=[docker.ContainerPortArgs(internal=w.port, external=w.publish, ip=w.bind_address or self.settings.bind_address)]
            if w.publish and w.port
            else None,
            uploads=uploads or None,
            healthcheck=healthcheck,
            restart=self.settings.restart,
            log_driver="json-file",
            log_opts={"max-size": self.settings.log_max_size, "max-file": str(self.settings.log_max_files)},
            labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(w.labels.items())] or None,
            wait=w.wait_healthy and healthcheck is not None,
            wait_timeout=w.startup_seconds + 3 * HEALTH_INTERVAL_S if w.wait_healthy else None,
            must_run=True,
            # the container's name and published port are fixed, and two servers must never hold one GPU at once:
            # the old container goes before its replacement is created (Pulumi's default is the other way round)
            opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on), delete_before_replace=True),
        )
        for alias in (w.name, *w.extra_ports):
            self.containers[alias] = container
        return container

    def objects(self, name: str, objects: Sequence[Obj], parent: pulumi.Resource) -> list[pulumi.CustomResource]:
        if objects:
            raise ValueError(f"{name}: a docker host has no Kubernetes objects ({', '.join(o['kind'] for o in objects)})")
        return []
