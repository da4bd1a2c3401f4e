"""VllmStack: composes image, servers, gateway, Open WebUI and metrics from the plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from components.files import gateway as gateway_files
from components.gateway import Gateway, GatewayArgs
from components.image import VllmImage, VllmImageArgs
from components.monitoring import DcgmExporter, DcgmExporterArgs, Prometheus, PrometheusArgs
from components.platforms.docker import DockerPlatform
from components.vllm import VllmServer, VllmServerArgs
from components.webui import OpenWebUI, OpenWebUIArgs
from stacks.plan import StackPlan

DATA_VOLUMES = ("model-cache", "vllm-cache", "webui-data", "prometheus-data")


@dataclass
class StackSecrets:
    """Pulumi secrets from config; never plain values."""

    hf_token: pulumi.Output[str] | None
    """``vllm-stack:hfToken``."""
    api_keys: pulumi.Output[str] | None
    """``vllm-stack:apiKeys``: comma-separated client keys; an open gateway when None."""
    vllm_api_key: pulumi.Output[str] | None
    """``vllm-stack:vllmApiKey``; generated when None."""


@dataclass
class VllmStackArgs:
    plan: StackPlan
    """Everything the stack deploys, already validated."""
    secrets: StackSecrets
    """Secret config values."""


def gpu_summary(plan: StackPlan) -> list[dict[str, Any]]:
    return [
        {
            "model": m.name,
            "gpus": m.gpus or f"{m.gpu_count} per pod",
            "fraction": m.memory.fraction,
            "weightsGiB": m.memory.weights_gib,
            "kvGiB": m.memory.kv_gib,
            "maxSequences": m.memory.max_full_sequences,
        }
        for m in plan.models
    ]


class VllmStack(pulumi.ComponentResource):
    gateway_url: pulumi.Output[str]
    """OpenAI base URL for every model."""
    webui_url: pulumi.Output[str | None]
    """Open WebUI, when enabled."""
    metrics_url: pulumi.Output[str | None]
    """Prometheus (docker) or DCGM exporter metrics."""
    served_models: pulumi.Output[list[str]]
    """Every model name and alias the gateway serves."""
    gpu_plan: pulumi.Output[list[dict[str, Any]]]
    """The GPU memory plan, per model."""

    def __init__(self, name: str, args: VllmStackArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:VllmStack", name, None, opts)
        p = args.plan
        cfg = p.config
        if p.target != "docker":
            # the kubernetes platform is not built yet; fail before declaring anything
            raise pulumi.RunError("vllm-stack: target kubernetes is not supported by this version yet; `python -m stacks plan` works for it")
        child = pulumi.ResourceOptions(parent=self)
        prefix = f"{pulumi.get_project()}-{pulumi.get_stack()}"
        retain = cfg.retain_data_on_destroy

        vllm_key = args.secrets.vllm_api_key or random.RandomPassword(f"{name}-vllm-api-key", length=40, special=False, opts=child).result
        if args.secrets.api_keys is not None:
            webui_key: pulumi.Output[str] = random.RandomPassword(f"{name}-webui-gateway-key", length=40, special=False, opts=child).result
            client_keys = pulumi.Output.all(args.secrets.api_keys, webui_key).apply(lambda v: [*gateway_files.parse_api_keys(v[0]), v[1]])
        else:
            webui_key = pulumi.Output.secret("no-key-needed")
            client_keys = pulumi.Output.from_input([])
        keys_conf: pulumi.Output[str] = pulumi.Output.all(client_keys, vllm_key).apply(lambda v: gateway_files.keys_conf(v[0], v[1]))
        keys_conf = pulumi.Output.secret(keys_conf)

        network = docker.Network(f"{name}-network", name=cfg.docker_settings.network, driver="bridge", opts=child)
        volumes = {
            v: docker.Volume(f"{name}-{v}", name=f"{prefix}-{v}", opts=pulumi.ResourceOptions(parent=self, retain_on_delete=retain)) for v in DATA_VOLUMES
        }
        platform = DockerPlatform(cfg.docker_settings, network, volumes, prefix)

        def remote(key: str, ref: str) -> pulumi.Output[str]:
            return docker.RemoteImage(f"{name}-{key}-image", name=ref, keep_locally=True, opts=child).image_id

        image = VllmImage(f"{name}-image", VllmImageArgs(image=p.image, repository=f"{prefix}/vllm"), opts=child)
        servers: dict[str, VllmServer] = {}
        for m in p.models:
            servers[m.name] = VllmServer(
                f"{name}-{m.name}",
                VllmServerArgs(
                    model=m,
                    image=image.image_ref,
                    platform=platform,
                    hf_token=args.secrets.hf_token,
                    vllm_api_key=vllm_key,
                    after=[servers[a].workload for a in m.start_after],
                ),
                opts=child,
            )
        workloads = [s.workload for s in servers.values()]
        gw = Gateway(
            f"{name}-gateway",
            GatewayArgs(
                plan=p,
                platform=platform,
                image=remote("gateway", cfg.gateway.image),
                keys_conf=keys_conf,
                servers=workloads,
                restart_on=[w.id for w in workloads],
            ),
            opts=child,
        )
        host = "localhost" if cfg.docker_settings.bind_address in ("0.0.0.0", "::") else cfg.docker_settings.bind_address
        self.gateway_url = pulumi.Output.from_input(f"http://{host}:{cfg.gateway.port}/v1")
        self.webui_url = pulumi.Output.from_input(None)
        if cfg.webui.enabled:
            OpenWebUI(
                f"{name}-webui",
                OpenWebUIArgs(plan=p, platform=platform, image=remote("webui", cfg.webui.image), gateway_key=webui_key, after=[gw.workload]),
                opts=child,
            )
            self.webui_url = pulumi.Output.from_input(f"http://{host}:{cfg.webui.port}")
        self.metrics_url = pulumi.Output.from_input(None)
        if cfg.monitoring.dcgm:
            DcgmExporter(f"{name}-dcgm", DcgmExporterArgs(plan=p, platform=platform, image=remote("dcgm", cfg.monitoring.dcgm_image)), opts=child)
            self.metrics_url = pulumi.Output.from_input(f"http://{host}:{cfg.monitoring.dcgm_port}/metrics")
        if cfg.monitoring.prometheus:
            Prometheus(
                f"{name}-prometheus",
                PrometheusArgs(plan=p, platform=platform, image=remote("prometheus", cfg.monitoring.prometheus_image), after=workloads),
                opts=child,
            )
            self.metrics_url = pulumi.Output.from_input(f"http://{host}:{cfg.monitoring.prometheus_port}")
        self.served_models = pulumi.Output.from_input([r.served_name for r in p.routes])
        self.gpu_plan = pulumi.Output.from_input(gpu_summary(p))
        self.register_outputs(
            {
                "gateway_url": self.gateway_url,
                "webui_url": self.webui_url,
                "metrics_url": self.metrics_url,
                "served_models": self.served_models,
                "gpu_plan": self.gpu_plan,
            }
        )
