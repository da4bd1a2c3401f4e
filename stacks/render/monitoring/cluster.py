"""Kubernetes monitoring objects: ServiceMonitors, a PodMonitor and a PrometheusRule for the prometheus-operator, dashboard ConfigMaps.

The operator's objects are ``monitoring.coreos.com/v1`` (served and stored since the operator's v0.x series; the
CRDs in prometheus-operator's example/prometheus-operator-crd/). Dashboards carry the Grafana chart sidecar's
default label ``grafana_dashboard`` (grafana-community/helm-charts charts/grafana/values.yaml, sidecar.dashboards.label;
its empty labelValue matches any value, kube-prometheus-stack looks for "1").
"""

from __future__ import annotations

from stacks.plan import StackPlan
from stacks.plan import topology as net
from stacks.render import kubernetes as k8s
from stacks.render.monitoring import alerts, dashboards

MONITORING_API = "monitoring.coreos.com/v1"
DASHBOARD_LABEL = {"grafana_dashboard": "1"}
RULE_NAME = "vllm-stack-alerts"


def _meta(plan: StackPlan, name: str, extra_labels: dict[str, str]) -> k8s.Obj:
    assert plan.kubernetes is not None, "monitoring objects are for kubernetes stacks"
    return {"name": name, "namespace": plan.kubernetes.namespace, "labels": {**k8s.common_labels("monitoring"), **extra_labels}}


def service_monitors(plan: StackPlan, labels: dict[str, str]) -> list[k8s.Obj]:
    """One per scrape target's Service; its endpoints' targets get the job the alert rules and dashboards select."""
    out = []
    interval = f"{plan.monitoring.scrape_interval_seconds}s"
    for t in plan.scrape_targets:
        endpoint = {
            "port": k8s.PORT_NAME,
            "path": t.metrics_path,
            "interval": interval,
            "relabelings": [{"action": "replace", "targetLabel": "job", "replacement": t.job}],
        }
        spec = {"selector": {"matchLabels": {"app.kubernetes.io/name": t.service, "app.kubernetes.io/part-of": k8s.PART_OF}}, "endpoints": [endpoint]}
        out.append({"apiVersion": MONITORING_API, "kind": "ServiceMonitor", "metadata": _meta(plan, t.service, labels), "spec": spec})
    return out


def gateway_pod_monitor(plan: StackPlan, labels: dict[str, str]) -> list[k8s.Obj]:
    """The gateway publishes metrics on a pod port its Service never carries: a PodMonitor scrapes every replica."""
    svc = plan.gateway.service
    if not svc.metrics_path:
        return []
    endpoint = {
        "port": k8s.METRICS_PORT_NAME,
        "path": svc.metrics_path,
        "interval": f"{plan.monitoring.scrape_interval_seconds}s",
        "relabelings": [{"action": "replace", "targetLabel": "job", "replacement": net.JOB_GATEWAY}],
    }
    spec = {"selector": {"matchLabels": {"app.kubernetes.io/name": svc.name, "app.kubernetes.io/part-of": k8s.PART_OF}}, "podMetricsEndpoints": [endpoint]}
    return [{"apiVersion": MONITORING_API, "kind": "PodMonitor", "metadata": _meta(plan, svc.name, labels), "spec": spec}]


def prometheus_rule(plan: StackPlan, labels: dict[str, str]) -> list[k8s.Obj]:
    groups = alerts.groups(plan)
    if not groups:
        return []
    return [{"apiVersion": MONITORING_API, "kind": "PrometheusRule", "metadata": _meta(plan, RULE_NAME, labels), "spec": {"groups": groups}}]


def dashboard_config_maps(plan: StackPlan) -> list[k8s.Obj]:
    out = []
    for file, text in dashboards.render(plan).items():
        name = f"grafana-dashboard-{file.removesuffix('.json')}"
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(plan, name, DASHBOARD_LABEL), "data": {file: text}})
    return out


def objects(plan: StackPlan) -> list[k8s.Obj]:
    """The monitoring objects of a kubernetes stack (none on docker)."""
    if plan.kubernetes is None:
        return []
    out: list[k8s.Obj] = []
    labels = plan.monitoring.operator_labels
    if labels is not None:
        out += service_monitors(plan, labels) + gateway_pod_monitor(plan, labels) + prometheus_rule(plan, labels)
    if plan.monitoring.dashboards:
        out += dashboard_config_maps(plan)
    return out
