"""Pure renderers: the plan -> what runs (``workloads``) and the files it needs (nginx.conf and router.js,
the vLLM Dockerfile, prometheus.yml, monitoring files, each swap group's swapper and config, Kubernetes manifests). No Pulumi and no provider SDK here."""

from __future__ import annotations

from stacks.plan import StackPlan
from stacks.render import dockerfile, gateway, kubernetes, monitoring, prometheus, swap
from stacks.render.monitoring import cluster


def render_all(plan: StackPlan) -> dict[str, str]:
    """Every rendered file, keyed ``<component>/<file>``; a kubernetes stack adds its manifests under ``kubernetes/``."""
    # no vLLM image for a stack whose models are all served elsewhere
    out = {f"vllm/{k}": v for k, v in dockerfile.render(plan.image).items()} if plan.models else {}
    out |= {f"gateway/{k}": v for k, v in gateway.render(plan).items()}
    out |= {f"swap/{g.name}/{k}": v for g in plan.swap_groups for k, v in swap.render(plan, g).items()}
    if plan.prometheus:
        out["monitoring/prometheus.yml"] = prometheus.render(plan)
    out |= {f"monitoring/{k}": v for k, v in monitoring.render(plan).items()}
    if plan.kubernetes:
        out |= {f"kubernetes/{k}": v for k, v in kubernetes.render(plan, cluster.objects(plan)).items()}
    return out
