"""VllmStack: composes the vLLM servers, gateway, Open WebUI and metrics from the plan, on the plan's platform."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_random as random

from components.gateway import Gateway, GatewayArgs
from components.monitoring import (
    ClusterMonitoring,
    ClusterMonitoringArgs,
    DcgmExporter,
    DcgmExporterArgs,
    Grafana,
    GrafanaArgs,
    Prometheus,
    PrometheusArgs,
)
from components.ollama import OllamaServer, OllamaServerArgs
from components.platforms import platform_for
from components.swap import SwapGroup, SwapGroupArgs
from components.vllm import VllmServer, VllmServerArgs
from components.webui import OpenWebUI, OpenWebUIArgs
from stacks.keys import WEBUI_KEY_NAME, ApiKey, parse_api_keys
from stacks.plan import StackPlan
from stacks.plan.topology import GATEWAY_KEYS, HF_TOKEN, VLLM_API_KEY
from stacks.render import endpoints
from stacks.render import gateway as gateway_files
from stacks.render.monitoring import cluster as cluster_monitoring
from stacks.render.workloads import stack_workloads


@dataclass
class StackSecrets:
    """Pulumi secrets from config; never plain values."""

    hf_token: pulumi.Output[str] | None
    """``vllm-stack:hfToken``."""
    api_keys: pulumi.Output[str] | None
    """``vllm-stack:apiKeys``: comma-separated client keys; an open gateway when None."""
    vllm_api_key: pulumi.Output[str] | None
    """``vllm-stack:vllmApiKey``; generated when None."""
    webui_oidc_client_secret: pulumi.Output[str] | None = None
    """``vllm-stack:webuiOidcClientSecret``: Open WebUI's OpenID Connect client secret (with ``webui.oidc``)."""
    endpoint_keys: dict[str, pulumi.Output[str]] = field(default_factory=dict)
    """The endpoints' keys by the config key that holds each (``endpoints[].apiKeySecret``)."""


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
            "gpus": m.gpus or (f"{m.nodes} pods x {m.gpus_per_node}" if m.nodes > 1 else f"{m.gpu_count} per pod"),
            "fraction": m.memory.fraction,
            "weightsGiB": m.memory.weights_gib,
            "kvGiB": m.memory.kv_gib,
            "maxSequences": m.memory.max_full_sequences,
            **({"swapGroup": m.swap.group} if m.swap else {}),
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
    grafana_url: pulumi.Output[str | None]
    """Grafana with the stack's dashboards (docker)."""
    grafana_admin_password: pulumi.Output[str | None]
    """Password of Grafana's ``admin`` user, a Pulumi secret (docker, with Grafana)."""
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
            client_keys = pulumi.Output.all(args.secrets.api_keys, webui_key).apply(lambda v: [*parse_api_keys(v[0]), ApiKey(WEBUI_KEY_NAME, v[1])])
        else:
            webui_key = pulumi.Output.secret("no-key-needed")
            client_keys = pulumi.Output.from_input([])
        names = sorted(args.secrets.endpoint_keys)
        endpoint_keys = pulumi.Output.all(*(args.secrets.endpoint_keys[n] for n in names)).apply(lambda v: dict(zip(names, v, strict=True)))
        keys_conf: pulumi.Output[str] = pulumi.Output.all(client_keys, vllm_key, endpoint_keys).apply(
            lambda v: gateway_files.keys_conf(p, v[0], v[1], endpoints.key_values(p, v[2]))
        )

        platform = platform_for(name, p, parent=self)
        ws = stack_workloads(p, platform.image)
        if args.secrets.hf_token is not None:
            platform.secret(HF_TOKEN.secret, {HF_TOKEN.key: args.secrets.hf_token}, parent=self)
        platform.secret(VLLM_API_KEY.secret, {VLLM_API_KEY.key: pulumi.Output.secret(vllm_key)}, parent=self)
        platform.secret(GATEWAY_KEYS.secret, {GATEWAY_KEYS.key: pulumi.Output.secret(keys_conf)}, parent=self)

        # in plan order: a swap group is declared at its first member, and every member's name stands for it
        servers: dict[str, pulumi.CustomResource] = {}
        standalone = iter(ws.servers)
        groups = {g.name: (g, w) for g, w in zip(p.swap_groups, ws.swap_groups, strict=True)}
        for m in p.models:
            if m.swap is None:
                after = [servers[a] for a in m.start_after]
                servers[m.name] = VllmServer(f"{name}-{m.name}", VllmServerArgs(workload=next(standalone), platform=platform, after=after), opts=child).workload
            elif m.swap.group in groups:
                g, w = groups.pop(m.swap.group)
                after = list({id(r): r for r in (servers[a] for a in g.start_after)}.values())
                group = SwapGroup(f"{name}-swap-{g.name}", SwapGroupArgs(workload=w, platform=platform, after=after), opts=child)
                servers |= dict.fromkeys(g.members, group.workload)
        workloads = list({id(r): r for r in servers.values()}.values())
        if ws.ollama:
            # after the vLLM servers, which the plan fits around what its models hold once loaded
            ollama = OllamaServer(f"{name}-ollama", OllamaServerArgs(workload=ws.ollama, platform=platform, after=workloads), opts=child)
            workloads.append(ollama.workload)
        gw = Gateway(f"{name}-gateway", GatewayArgs(workload=ws.gateway, platform=platform, after=workloads), opts=child)
        if ws.webui:
            webui_args = OpenWebUIArgs(
                workload=ws.webui,
                platform=platform,
                after=[gw.workload],
                gateway_key=webui_key,
                oidc_client_secret=args.secrets.webui_oidc_client_secret if p.webui and p.webui.oidc else None,
            )
            OpenWebUI(f"{name}-webui", webui_args, opts=child)
        if ws.dcgm:
            DcgmExporter(f"{name}-dcgm", DcgmExporterArgs(workload=ws.dcgm, platform=platform), opts=child)
        prometheus = None
        if ws.prometheus:
            prometheus = Prometheus(f"{name}-prometheus", PrometheusArgs(workload=ws.prometheus, platform=platform, after=workloads), opts=child)
        grafana_password: pulumi.Output[str | None] = pulumi.Output.from_input(None)
        if ws.grafana:
            after = [prometheus.workload] if prometheus else []
            grafana = Grafana(f"{name}-grafana", GrafanaArgs(workload=ws.grafana, platform=platform, after=after), opts=child)
            grafana_password = grafana.admin_password
        monitoring_objects = cluster_monitoring.objects(p)
        if monitoring_objects:
            ClusterMonitoring(f"{name}-monitoring", ClusterMonitoringArgs(objects=monitoring_objects, platform=platform), opts=child)

        self.gateway_url = pulumi.Output.from_input(p.urls.gateway)
        self.webui_url = pulumi.Output.from_input(p.urls.webui)
        self.metrics_url = pulumi.Output.from_input(p.urls.metrics)
        self.grafana_url = pulumi.Output.from_input(p.urls.grafana)
        self.grafana_admin_password = grafana_password
        self.served_models = pulumi.Output.from_input([r.served_name for r in p.routes])
        self.gpu_plan = pulumi.Output.from_input(gpu_summary(p))
        self.register_outputs(
            {
                "gateway_url": self.gateway_url,
                "webui_url": self.webui_url,
                "metrics_url": self.metrics_url,
                "grafana_url": self.grafana_url,
                "grafana_admin_password": self.grafana_admin_password,
                "served_models": self.served_models,
                "gpu_plan": self.gpu_plan,
            }
        )
