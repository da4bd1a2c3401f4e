"""GPU metrics: NVIDIA's DCGM exporter, and Prometheus scraping it and every vLLM server."""

from __future__ import annotations

import pulumi

from components.platforms.base import ServiceArgs


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
