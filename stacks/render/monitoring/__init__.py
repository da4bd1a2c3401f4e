"""Monitoring renderers: curated DCGM counters, alert rules, Grafana dashboards and provisioning, Kubernetes monitoring objects."""

from __future__ import annotations

from stacks.plan import StackPlan
from stacks.render.monitoring import alerts, dashboards, grafana
from stacks.render.monitoring.metrics import COUNTERS_FILE


def render(plan: StackPlan) -> dict[str, str]:
    """Files under ``monitoring/``: the counters file, the rule file, dashboards (and docker's Grafana provisioning)."""
    out: dict[str, str] = {}
    if plan.dcgm:
        out["dcgm-counters.csv"] = COUNTERS_FILE.read_text()
    if plan.monitoring.alerts:
        out["alerts.yml"] = alerts.render(plan)
    if plan.monitoring.dashboards:
        out |= {f"grafana/dashboards/{k}": v for k, v in dashboards.render(plan).items()}
    if plan.monitoring.grafana:
        out["grafana/datasources.yml"] = grafana.datasources(plan)
        out["grafana/dashboards.yml"] = grafana.dashboard_provider(grafana.DASHBOARDS_DIR)
    return out
