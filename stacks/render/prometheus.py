"""prometheus.yml scraping every vLLM server's /metrics, the DCGM exporter and the gateway, from the plan's targets."""

from __future__ import annotations

import yaml

from stacks.plan import StackPlan
from stacks.plan import topology as net

RULES_FILE = "alerts.yml"
"""Beside prometheus.yml; Prometheus resolves relative rule_files against the config file's folder."""
GPU_MODELS_LABEL = "vllm_models"
"""Docker: every DCGM series carries the models the plan puts on its GPU (the GPU dashboard's table)."""


def dcgm_relabel(plan: StackPlan) -> list[dict[str, object]]:
    """metric_relabel_configs naming each GPU's models (docker: the plan places them; a cluster's scheduler does)."""
    return [
        {"source_labels": ["gpu"], "regex": str(g.index), "target_label": GPU_MODELS_LABEL, "replacement": ",".join(g.models)} for g in plan.gpus if g.models
    ]


def config(plan: StackPlan) -> dict[str, object]:
    assert plan.prometheus, "rendered only for stacks that run Prometheus"
    interval = f"{plan.prometheus.scrape_interval_seconds}s"
    jobs: dict[tuple[str, str], list[dict[str, object]]] = {}
    for t in plan.scrape_targets:
        jobs.setdefault((t.job, t.metrics_path), []).append({"targets": [t.target], "labels": dict(t.labels)} if t.labels else {"targets": [t.target]})
    scrape_configs: list[dict[str, object]] = []
    for (job, path), groups in jobs.items():
        scrape: dict[str, object] = {"job_name": job, "metrics_path": path, "static_configs": groups}
        if job == net.JOB_DCGM and dcgm_relabel(plan):
            scrape["metric_relabel_configs"] = dcgm_relabel(plan)
        scrape_configs.append(scrape)
    out: dict[str, object] = {"global": {"scrape_interval": interval, "evaluation_interval": interval}}
    if plan.monitoring.alerts:
        out["rule_files"] = [RULES_FILE]
    out["scrape_configs"] = scrape_configs
    return out


def render(plan: StackPlan) -> str:
    head = "# Rendered by vllm-stack from the stack's model list.\n"
    return head + yaml.safe_dump(config(plan), sort_keys=False)
