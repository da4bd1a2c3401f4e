"""Pure renderers of the files the components ship. No Pulumi imports here."""

from __future__ import annotations

from stacks.plan import StackPlan


def render_all(plan: StackPlan) -> dict[str, str]:
    """Every rendered file, keyed ``<component>/<file>``; a kubernetes stack adds its manifests under ``kubernetes/``."""
    from components.files import dockerfile, gateway, prometheus
    from components.platforms import kube_manifests

    out = {f"vllm/{k}": v for k, v in dockerfile.render(plan.image).items()}
    out |= {f"gateway/{k}": v for k, v in gateway.render(plan).items()}
    if plan.config.runs_prometheus:
        out["monitoring/prometheus.yml"] = prometheus.render(plan)
    if plan.target == "kubernetes":
        out |= {f"kubernetes/{k}": v for k, v in kube_manifests.render(plan).items()}
    return out
