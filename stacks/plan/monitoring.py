"""The monitoring part of the plan: scrape settings, alert thresholds (per GPU where the plan fills one), Grafana, operator labels."""

from __future__ import annotations

from stacks.config.schema import StackConfig
from stacks.plan import topology as net
from stacks.plan.memory import CUDA_CONTEXT_GIB, SAFETY_FRACTION
from stacks.plan.types import AlertThresholds, GpuPlan, GrafanaPlan, ModelPlan, MonitoringPlan

GPU_ALERT_MARGIN = 0.01
"""A GPU filled by the plan alerts this far beyond its planned share (vLLM holds its whole budget from the start)."""
GPU_ALERT_MAX = 0.995


def _planned_share(gpu: GpuPlan) -> float:
    """Share of the GPU the plan expects in use: every server's budget, their CUDA contexts and the reservation (not the safety margin)."""
    return 1 - gpu.headroom_gib / gpu.memory_gib - SAFETY_FRACTION


def _gpu_thresholds(config: StackConfig, models: list[ModelPlan], gpus: list[GpuPlan]) -> tuple[float, dict[int, float]]:
    base = config.monitoring.alerts.gpu_memory_usage
    if config.target == "kubernetes":
        # a pod's GPUs are the scheduler's choice: one threshold covering the fullest pod
        assert config.kubernetes is not None
        gib = config.kubernetes.gpu.memory_gib
        fullest = max((m.memory.fraction + CUDA_CONTEXT_GIB / gib for m in models), default=0.0)  # none: endpoints only
        return max(base, min(GPU_ALERT_MAX, round(fullest + GPU_ALERT_MARGIN, 3))), {}
    by_gpu = {}
    for g in gpus:
        share = round(_planned_share(g) + GPU_ALERT_MARGIN, 3)
        if share > base:
            by_gpu[g.index] = min(GPU_ALERT_MAX, share)
    return base, by_gpu


def monitoring_plan(config: StackConfig, models: list[ModelPlan], gpus: list[GpuPlan]) -> MonitoringPlan:
    mon = config.monitoring
    docker = config.target == "docker"
    namespace = config.kubernetes.namespace if config.kubernetes else None
    alerts = None
    if mon.alerts.enabled:
        a = mon.alerts
        gpu_base, gpu_by_index = _gpu_thresholds(config, models, gpus)
        alerts = AlertThresholds(
            for_minutes=a.for_minutes,
            kv_cache_usage=a.kv_cache_usage,
            waiting_requests=a.waiting_requests,
            ttft_p95_seconds=a.ttft_p95_seconds,
            gpu_memory_usage=gpu_base,
            gpu_memory_by_gpu=gpu_by_index,
            gateway_5xx_ratio=a.gateway_5xx_ratio,
            swap_time_share=a.swap_time_share,
        )
    grafana = None
    if docker and config.grafana_dashboards:
        service = net.service(config.target, namespace, net.GRAFANA, net.GRAFANA_PORT, mon.grafana_port, health_path="/api/health")
        grafana = GrafanaPlan(service=service, image=mon.grafana_image)
    return MonitoringPlan(
        scrape_interval_seconds=mon.scrape_interval_seconds,
        bind_address=mon.bind_address if docker else None,
        alerts=alerts,
        grafana=grafana,
        dashboards=config.grafana_dashboards,
        operator_labels=dict(mon.operator_labels) if not docker and mon.prometheus_operator else None,
    )
