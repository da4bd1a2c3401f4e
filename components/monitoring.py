"""GPU metrics: NVIDIA's DCGM exporter and Prometheus scraping it and every vLLM server."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components.files import prometheus
from components.platforms.base import ServiceArgs, Workload

DCGM_PORT_IN_CONTAINER = 9400
PROMETHEUS_PORT_IN_CONTAINER = 9090


@dataclass
class DcgmExporterArgs(ServiceArgs):
    """DCGM settings: ``plan.config.monitoring``; ``image`` is the pinned dcgm-exporter."""


class DcgmExporter(pulumi.ComponentResource):
    workload: pulumi.CustomResource
    """The resource that runs it."""

    def __init__(self, name: str, args: DcgmExporterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:DcgmExporter", name, None, opts)
        mon = args.plan.config.monitoring
        w = Workload(
            name="dcgm-exporter",
            image=args.image,
            env={"DCGM_EXPORTER_LISTEN": f":{DCGM_PORT_IN_CONTAINER}"},
            port=DCGM_PORT_IN_CONTAINER,
            publish=mon.dcgm_port,
            health_path="/health",
            health_port=DCGM_PORT_IN_CONTAINER,
            all_gpus=True,
            # profiling metrics need SYS_ADMIN; nothing else, and never privileged
            cap_add=["SYS_ADMIN"],
            labels={"vllm-stack.component": "dcgm-exporter"},
        )
        self.workload = args.platform.run(name, w, self, [])
        self.register_outputs({})


@dataclass
class PrometheusArgs(ServiceArgs):
    """Scrape targets: ``plan.scrape_targets``; ``image`` is the pinned Prometheus."""

    after: list[pulumi.CustomResource] = field(default_factory=list)
    """Start after these."""


class Prometheus(pulumi.ComponentResource):
    workload: pulumi.CustomResource
    """The resource that runs it."""

    def __init__(self, name: str, args: PrometheusArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:Prometheus", name, None, opts)
        w = Workload(
            name="prometheus",
            image=args.image,
            args=["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--storage.tsdb.retention.time=15d"],
            port=PROMETHEUS_PORT_IN_CONTAINER,
            publish=args.plan.config.monitoring.prometheus_port,
            files={"/etc/prometheus/prometheus.yml": prometheus.render(args.plan)},
            volumes={"prometheus-data": "/prometheus"},
            labels={"vllm-stack.component": "prometheus"},
        )
        self.workload = args.platform.run(name, w, self, args.after)
        self.register_outputs({})
