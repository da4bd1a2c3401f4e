"""Pure renderers of the files the components ship. No Pulumi imports here."""

from __future__ import annotations

from stacks.plan import StackPlan


def render_all(plan: StackPlan) -> dict[str, str]:
    """Every rendered file, keyed ``<component>/<file>``."""
    from components.files import dockerfile, gateway, prometheus

    out = {f"vllm/{k}": v for k, v in dockerfile.render(plan.image).items()}
    out |= {f"gateway/{k}": v for k, v in gateway.render(plan).items()}
    if plan.config.monitoring.prometheus:
        out["monitoring/prometheus.yml"] = prometheus.render(plan)
    return out
