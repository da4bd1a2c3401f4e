"""Metrics: NVIDIA's DCGM exporter, Prometheus scraping it and every vLLM server, Grafana, and a cluster's monitoring objects."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random

from components.platforms.base import Platform, ServiceArgs
from stacks.plan.topology import GRAFANA_ADMIN_PASSWORD
from stacks.render.kubernetes import Obj


class DcgmExporterArgs(ServiceArgs):
    """``workload`` is ``workloads.dcgm_exporter``."""


class DcgmExporter(pulumi.ComponentResource):
    workload: pulumi.CustomResource
    """The resource that runs it."""

    def __init__(self, name: str, args: DcgmExporterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:DcgmExporter", name, None, opts)
        self.workload = args.platform.run(name, args.workload, self, args.after)
        self.register_outputs({})


class PrometheusArgs(ServiceArgs):
    """``workload`` is ``workloads.prometheus`` (its targets are ``plan.scrape_targets``); ``after`` the servers."""


class Prometheus(pulumi.ComponentResource):
    workload: pulumi.CustomResource
    """The resource that runs it."""

    def __init__(self, name: str, args: PrometheusArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:Prometheus", name, None, opts)
        self.workload = args.platform.run(name, args.workload, self, args.after)
        self.register_outputs({})


class GrafanaArgs(ServiceArgs):
    """``workload`` is ``workloads.grafana`` (dashboards and data source provisioned); ``after`` Prometheus."""


class Grafana(pulumi.ComponentResource):
    admin_password: pulumi.Output[str]
    """Password of Grafana's ``admin`` user (a Pulumi secret)."""
    workload: pulumi.CustomResource
    """The resource that runs it."""

    def __init__(self, name: str, args: GrafanaArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:Grafana", name, None, opts)
        # its own resource, so the password stays the same when the container is replaced
        password = random.RandomPassword(f"{name}-admin-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=self))
        self.admin_password = pulumi.Output.secret(password.result)
        args.platform.secret(GRAFANA_ADMIN_PASSWORD.secret, {GRAFANA_ADMIN_PASSWORD.key: self.admin_password}, parent=self)
        self.workload = args.platform.run(name, args.workload, self, args.after)
        self.register_outputs({"admin_password": self.admin_password})


@dataclass
class ClusterMonitoringArgs:
    objects: list[Obj]
    """``stacks.render.monitoring.cluster.objects``: ServiceMonitors, a PrometheusRule, dashboard ConfigMaps."""
    platform: Platform
    """The kubernetes platform that declares them."""


class ClusterMonitoring(pulumi.ComponentResource):
    """What a cluster's own Prometheus (through its operator) and Grafana (through its sidecar) pick up."""

    resources: list[pulumi.CustomResource]
    """One per object."""

    def __init__(self, name: str, args: ClusterMonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:ClusterMonitoring", name, None, opts)
        self.resources = args.platform.objects(name, args.objects, self)
        self.register_outputs({})
