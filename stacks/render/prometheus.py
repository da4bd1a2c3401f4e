"""prometheus.yml scraping every vLLM server's /metrics and the DCGM exporter, from the plan's targets."""

from __future__ import annotations

import yaml

from stacks.plan import StackPlan


def config(plan: StackPlan) -> dict[str, object]:
    assert plan.prometheus, "rendered only for stacks that run Prometheus"
    interval = f"{plan.prometheus.scrape_interval_seconds}s"
    jobs: dict[tuple[str, str], list[dict[str, object]]] = {}
    for t in plan.scrape_targets:
        jobs.setdefault((t.job, t.metrics_path), []).append({"targets": [t.target], "labels": dict(t.labels)} if t.labels else {"targets": [t.target]})
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": job, "metrics_path": path, "static_configs": groups} for (job, path), groups in jobs.items()],
    }


def render(plan: StackPlan) -> str:
    head = "# Rendered by vllm-stack from the stack's model list.\n"
    return head + yaml.safe_dump(config(plan), sort_keys=False)
