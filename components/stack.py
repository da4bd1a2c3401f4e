"""VllmStack: composes image, servers, gateway, Open WebUI and metrics from the plan, on either platform."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_random as random

from components.files import gateway as gateway_files
from components.gateway import Gateway, GatewayArgs
from components.image import VllmImage, VllmImageArgs
from components.monitoring import DcgmExporter, DcgmExporterArgs, Prometheus, PrometheusArgs
from components.platforms.base import Platform
from components.vllm import VllmServer, VllmServerArgs
from components.webui import OpenWebUI, OpenWebUIArgs
from components.workloads import GATEWAY_KEYS, HF_TOKEN, VLLM_API_KEY, Ref, StackWorkloads, image_refs, stack_workloads
from stacks.plan import StackPlan, service_address

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


@dataclass
class Urls:
    gateway: str
    webui: str | None
    metrics: str | None


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
        child = pulumi.ResourceOptions(parent=self)

        vllm_key = args.secrets.vllm_api_key or random.RandomPassword(f"{name}-vllm-api-key", length=40, special=False, opts=child).result
        if args.secrets.api_keys is not None:
            webui_key: pulumi.Output[str] = random.RandomPassword(f"{name}-webui-gateway-key", length=40, special=False, opts=child).result
            client_keys = pulumi.Output.all(args.secrets.api_keys, webui_key).apply(lambda v: [*gateway_files.parse_api_keys(v[0]), v[1]])
        else:
            webui_key = pulumi.Output.secret("no-key-needed")
            client_keys = pulumi.Output.from_input([])
        keys_conf: pulumi.Output[str] = pulumi.Output.all(client_keys, vllm_key).apply(lambda v: gateway_files.keys_conf(v[0], v[1]))

        if p.target == "docker":
            ws, platform, urls = self._docker(name, p)
        else:
            ws, platform, urls = self._kubernetes(name, p)
        if args.secrets.hf_token is not None:
            platform.secret(HF_TOKEN.secret, {HF_TOKEN.key: args.secrets.hf_token}, parent=self)
        platform.secret(VLLM_API_KEY.secret, {VLLM_API_KEY.key: pulumi.Output.secret(vllm_key)}, parent=self)
        platform.secret(GATEWAY_KEYS.secret, {GATEWAY_KEYS.key: pulumi.Output.secret(keys_conf)}, parent=self)

        servers: dict[str, VllmServer] = {}
        for m, w in zip(p.models, ws.servers, strict=True):
            after = [servers[a].workload for a in m.start_after]
            servers[m.name] = VllmServer(f"{name}-{m.name}", VllmServerArgs(workload=w, platform=platform, after=after), opts=child)
        workloads = [s.workload for s in servers.values()]
        # docker: nginx resolves upstream names once, so a replaced server container must restart it;
        # kubernetes Services keep their address
        restart_on: list[pulumi.Input[str]] = [w.id for w in workloads] if p.target == "docker" else []
        gw = Gateway(f"{name}-gateway", GatewayArgs(workload=ws.gateway, platform=platform, after=workloads, restart_on=restart_on), opts=child)
        if ws.webui:
            OpenWebUI(f"{name}-webui", OpenWebUIArgs(workload=ws.webui, platform=platform, after=[gw.workload], gateway_key=webui_key), opts=child)
        if ws.dcgm:
            DcgmExporter(f"{name}-dcgm", DcgmExporterArgs(workload=ws.dcgm, platform=platform), opts=child)
        if ws.prometheus:
            Prometheus(f"{name}-prometheus", PrometheusArgs(workload=ws.prometheus, platform=platform, after=workloads), opts=child)

        self.gateway_url = pulumi.Output.from_input(urls.gateway)
        self.webui_url = pulumi.Output.from_input(urls.webui)
        self.metrics_url = pulumi.Output.from_input(urls.metrics)
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

    def _docker(self, name: str, p: StackPlan) -> tuple[StackWorkloads, Platform, Urls]:
        import pulumi_docker as docker

        from components.platforms.docker import DockerPlatform

        cfg = p.config
        child = pulumi.ResourceOptions(parent=self)
        prefix = f"{pulumi.get_project()}-{pulumi.get_stack()}"
        network = docker.Network(f"{name}-network", name=cfg.docker_settings.network, driver="bridge", opts=child)
        volumes = {
            v: docker.Volume(f"{name}-{v}", name=f"{prefix}-{v}", opts=pulumi.ResourceOptions(parent=self, retain_on_delete=cfg.retain_data_on_destroy))
            for v in DATA_VOLUMES
        }
        platform = DockerPlatform(cfg.docker_settings, network, volumes, prefix)
        image = VllmImage(f"{name}-image", VllmImageArgs(image=p.image, repository=f"{prefix}/vllm"), opts=child)
        refs = image_refs(p)

        def image_for(key: str) -> Ref:
            if key == "vllm":
                return image.image_ref
            return docker.RemoteImage(f"{name}-{key}-image", name=refs[key], keep_locally=True, opts=child).image_id

        ws = stack_workloads(p, image_for)
        host = "localhost" if cfg.docker_settings.bind_address in ("0.0.0.0", "::") else cfg.docker_settings.bind_address
        metrics = None
        if cfg.monitoring.dcgm:
            metrics = f"http://{host}:{cfg.monitoring.dcgm_port}/metrics"
        if cfg.runs_prometheus:
            metrics = f"http://{host}:{cfg.monitoring.prometheus_port}"
        urls = Urls(
            gateway=f"http://{host}:{cfg.gateway.port}/v1",
            webui=f"http://{host}:{cfg.webui.port}" if cfg.webui.enabled else None,
            metrics=metrics,
        )
        return ws, platform, urls

    def _kubernetes(self, name: str, p: StackPlan) -> tuple[StackWorkloads, Platform, Urls]:
        # imported here: docker stacks never pay for pulumi_kubernetes
        from components.platforms.kubernetes import KubernetesPlatform

        cfg = p.config
        refs = image_refs(p)
        vllm: Ref = refs["vllm"]
        if p.image.customised and p.image.registry:
            built = VllmImage(f"{name}-image", VllmImageArgs(image=p.image, repository=p.image.registry, push=True), opts=pulumi.ResourceOptions(parent=self))
            vllm = built.image_ref
        ws = stack_workloads(p, lambda key: vllm if key == "vllm" else refs[key])
        platform = KubernetesPlatform(name, p, ws.all(), parent=self)
        if platform.render_only:
            wanted = ", ".join(f"{r.secret} (key {r.key}{', optional' if r.optional else ''})" for r in ws.secret_refs())
            pulumi.log.warn(f"kubernetes.renderYamlTo: Secrets are not rendered (their values would be plain text); create them yourself: {wanted}", self)
        ing = cfg.gateway.ingress
        # outside an Ingress the stack is reached at its Services' cluster addresses
        gateway = f"{'https' if ing.tls_secret else 'http'}://{ing.host}/v1" if ing.enabled and ing.host else p.webui_api_base
        urls = Urls(
            gateway=gateway,
            webui=f"http://{service_address(cfg, ws.webui.name, cfg.webui.port)}" if ws.webui else None,
            metrics=f"http://{service_address(cfg, ws.dcgm.name, cfg.monitoring.dcgm_port)}/metrics" if ws.dcgm else None,
        )
        return ws, platform, urls
