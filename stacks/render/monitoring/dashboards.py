"""Grafana dashboards as JSON, from the plan: one for the models (vLLM), one for the GPUs (DCGM).

Docker dashboards use the data source provisioned beside them (``DATASOURCE_UID``); Kubernetes dashboards, loaded
by the cluster Grafana's sidecar, pick a Prometheus data source through a ``datasource`` variable.
"""

from __future__ import annotations

import json
from typing import Any

from stacks.plan import StackPlan
from stacks.plan import topology as net
from stacks.render.monitoring.alerts import Selectors
from stacks.render.prometheus import GPU_MODELS_LABEL

Obj = dict[str, Any]

SCHEMA_VERSION = 42
"""Dashboard JSON schema of Grafana 13.2 (``schemaVersion`` of ``defaultDashboard`` in @grafana/schema 13.2.0, whose
types tests/test_monitoring_types.py checks the dashboards and their panel options against)."""
DATASOURCE_UID = "vllm-stack-prometheus"
"""The data source docker's Grafana is provisioned with (``grafana.datasources``)."""
MODELS_UID = "vllm-stack-models"
GPUS_UID = "vllm-stack-gpus"
RATE = "$__rate_interval"
GRID_WIDTH = 24
"""Grafana's dashboard grid is 24 columns wide."""
PERCENTILES = (0.5, 0.95, 0.99)


class Board:
    """Builds one dashboard: panels on a two-column grid with ids from 1."""

    def __init__(self, plan: StackPlan, uid: str, title: str) -> None:
        self.kube = plan.kubernetes is not None
        self.ds: Obj = {"type": "prometheus", "uid": "${datasource}" if self.kube else DATASOURCE_UID}
        self.uid, self.title = uid, title
        self.panels: list[Obj] = []
        self.variables: list[Obj] = []
        self.x = self.y = self.row_height = 0
        if self.kube:
            self.variables.append({"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "hide": 0})

    def variable(self, name: str, label: str, query: str, all_value: str | None = None) -> None:
        """``all_value``: what "All" stands for (Grafana's default: a regex of the values the query found)."""
        self.variables.append(
            {
                **({"allValue": all_value} if all_value else {}),
                "name": name,
                "label": label,
                "type": "query",
                "datasource": self.ds,
                # the classic string form, which every Grafana migrates to its current variable editor
                "query": query,
                "refresh": 2,
                "multi": True,
                "includeAll": True,
                "sort": 1,
            }
        )

    def _place(self, width: int, height: int) -> Obj:
        """Left to right, then the next row below the tallest panel of this one."""
        if self.x + width > GRID_WIDTH:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        pos = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.x += width
        self.row_height = max(self.row_height, height)
        return pos

    def _target(self, ref: str, expr: str, legend: str, table: bool = False) -> Obj:
        t: Obj = {"refId": ref, "datasource": self.ds, "expr": expr, "legendFormat": legend}
        if table:
            t |= {"instant": True, "range": False, "format": "table"}
        return t

    def timeseries(self, title: str, unit: str, queries: list[tuple[str, str]], description: str = "") -> None:
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": "timeseries",
                "title": title,
                "description": description,
                "datasource": self.ds,
                "gridPos": self._place(12, 8),
                "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
                "options": {
                    "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"},
                },
                "targets": [self._target(chr(ord("A") + i), expr, legend) for i, (expr, legend) in enumerate(queries)],
            }
        )

    def table(self, title: str, expr: str, description: str) -> None:
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": "table",
                "title": title,
                "description": description,
                "datasource": self.ds,
                "gridPos": self._place(24, 6),
                "fieldConfig": {"defaults": {}, "overrides": []},
                "options": {"frameIndex": 0, "showHeader": True},
                "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
                "targets": [self._target("A", expr, "", table=True)],
            }
        )

    def json(self) -> Obj:
        return {
            "uid": self.uid,
            "title": self.title,
            "tags": ["vllm-stack"],
            "timezone": "browser",
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "editable": False,
            "graphTooltip": 1,
            "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "annotations": {"list": []},
            "links": [],
            "templating": {"list": self.variables},
            "panels": self.panels,
        }


def _percentiles(metric: str, sel: str) -> list[tuple[str, str]]:
    return [
        (f"histogram_quantile({q}, sum by (model_name, le) (rate({metric}_bucket{{{sel}}}[{RATE}])))", f"{{{{model_name}}}} p{int(q * 100)}")
        for q in PERCENTILES
    ]


def models(plan: StackPlan) -> Obj:
    s = Selectors(plan)
    base = s.job(net.JOB_VLLM)
    b = Board(plan, MODELS_UID, "vLLM models")
    # "All" is every model, not the ones vLLM's series list: the gateway's panels also count models served elsewhere
    b.variable("model", "Model", f"label_values(vllm:num_requests_running{{{base}}}, model_name)", all_value=".*")
    sel = f'{base},model_name=~"$model"'
    b.timeseries("Running requests", "short", [(f"sum by (model_name) (vllm:num_requests_running{{{sel}}})", "{{model_name}}")])
    b.timeseries("Waiting requests", "short", [(f"sum by (model_name) (vllm:num_requests_waiting{{{sel}}})", "{{model_name}}")])
    b.timeseries(
        "Tokens per second",
        "short",
        [
            (f"sum by (model_name) (rate(vllm:generation_tokens_total{{{sel}}}[{RATE}]))", "{{model_name}} generated"),
            (f"sum by (model_name) (rate(vllm:prompt_tokens_total{{{sel}}}[{RATE}]))", "{{model_name}} prompt"),
        ],
    )
    b.timeseries("Time to first token", "s", _percentiles("vllm:time_to_first_token_seconds", sel))
    b.timeseries("End-to-end request latency", "s", _percentiles("vllm:e2e_request_latency_seconds", sel))
    b.timeseries("Inter-token latency", "s", _percentiles("vllm:inter_token_latency_seconds", sel))
    b.timeseries("KV-cache use", "percentunit", [(f"max by (model_name) (vllm:kv_cache_usage_perc{{{sel}}})", "{{model_name}}")])
    b.timeseries(
        "Prefix-cache hit rate",
        "percentunit",
        [
            (
                f"sum by (model_name) (rate(vllm:prefix_cache_hits_total{{{sel}}}[{RATE}]))"
                f" / sum by (model_name) (rate(vllm:prefix_cache_queries_total{{{sel}}}[{RATE}]))",
                "{{model_name}}",
            )
        ],
        "Share of prompt tokens served from the prefix cache (models without prefix caching show none).",
    )
    b.timeseries(
        "Preemptions per second",
        "short",
        [(f"sum by (model_name) (rate(vllm:num_preemptions_total{{{sel}}}[{RATE}]))", "{{model_name}}")],
        "Requests pushed out of the KV cache to make room; they are recomputed later.",
    )
    b.timeseries("Queue time (p95)", "s", [_percentiles("vllm:request_queue_time_seconds", sel)[1]])
    if plan.swap_groups:
        _swap_panels(b, s)
    if plan.gateway.service.metrics_path:
        gw = f'{s.job(net.JOB_GATEWAY)},model=~"$model"'
        in_flight = (f"sum(vllm_stack_gateway_requests_in_flight{{{s.job(net.JOB_GATEWAY)}}})", "in flight")
        if plan.gateway.request_metrics:
            b.timeseries(
                "Gateway requests by status",
                "reqps",
                [(f"sum by (model, status_class) (rate(vllm_stack_gateway_requests_total{{{gw}}}[{RATE}]))", "{{model}} {{status_class}}")],
            )
            latency = f"histogram_quantile(0.95, sum by (model, le) (rate(vllm_stack_gateway_upstream_latency_seconds_bucket{{{gw}}}[{RATE}])))"
            b.timeseries("Gateway upstream latency (p95) and requests in flight", "s", [(latency, "{{model}} p95"), in_flight])
        else:
            b.timeseries("Gateway requests in flight", "short", [in_flight])
    return b.json()


def _swap_panels(b: Board, s: Selectors) -> None:
    """Swap groups (the swapper's metrics): who is awake, swaps, wake time, the time requests wait, time spent swapping."""
    sel = f'{s.job(net.JOB_SWAP)},model=~"$model"'
    group = s.job(net.JOB_SWAP)
    b.timeseries(
        "Swap groups: members awake",
        "short",
        [
            (f'sum by (group, model) (vllm_stack_swap_member_state{{{sel},state=~"awake|waking|draining"}})', "{{group}} {{model}}"),
            (f"max by (group) (vllm_stack_swap_awake_limit{{{group}}})", "{{group}} planned"),
        ],
        "Members holding their awake memory; the plan allows the planned line at once.",
    )
    b.timeseries(
        "Swap groups: wakes per minute",
        "short",
        [(f"sum by (model, result) (rate(vllm_stack_swap_wakes_total{{{sel}}}[{RATE}])) * 60", "{{model}} {{result}}")],
    )
    b.timeseries(
        "Swap groups: wake time and queue wait (p95)",
        "s",
        [
            (f"histogram_quantile(0.95, sum by (model, le) (rate(vllm_stack_swap_wake_seconds_bucket{{{sel}}}[{RATE}])))", "{{model}} wake"),
            (f"histogram_quantile(0.95, sum by (model, le) (rate(vllm_stack_swap_queue_wait_seconds_bucket{{{sel}}}[{RATE}])))", "{{model}} queue wait"),
        ],
        "How long a member takes to wake, and how long its requests wait for it (zero when it is awake).",
    )
    b.timeseries(
        "Swap groups: time spent swapping and requests turned away",
        "percentunit",
        [
            (f"sum by (group) (rate(vllm_stack_swap_busy_seconds_total{{{group}}}[{RATE}]))", "{{group}} swapping"),
            (f"sum by (model, reason) (rate(vllm_stack_swap_rejected_total{{{sel}}}[{RATE}]))", "{{model}} rejected ({{reason}}) per s"),
        ],
        "Share of the time spent waking and putting members to sleep (SwapGroupThrashing fires above its threshold), and requests answered 429/503.",
    )


def gpus(plan: StackPlan) -> Obj:
    s = Selectors(plan)
    base = s.job(net.JOB_DCGM)
    b = Board(plan, GPUS_UID, "GPUs")
    b.variable("host", "Host", f"label_values(DCGM_FI_DEV_GPU_TEMP{{{base}}}, Hostname)")
    b.variable("gpu", "GPU", f'label_values(DCGM_FI_DEV_GPU_TEMP{{{base},Hostname=~"$host"}}, gpu)')
    sel = f'{base},Hostname=~"$host",gpu=~"$gpu"'
    legend = "{{Hostname}} GPU {{gpu}}"
    if plan.kubernetes:
        # the exporter maps GPUs to the pods using them; its pod label arrives as exported_pod beside the target's own
        b.table(
            "Model pods on each GPU",
            f'max by (Hostname, gpu, modelName, exported_pod) (DCGM_FI_DEV_FB_USED{{{sel},exported_pod=~"vllm-.+"}})',
            "vLLM pods holding each GPU, as the DCGM exporter maps them through the kubelet.",
        )
    else:
        b.table(
            "Models on each GPU",
            f"max by (Hostname, gpu, modelName, {GPU_MODELS_LABEL}) (DCGM_FI_DEV_FB_USED{{{sel}}})",
            "The models the GPU plan puts on each GPU (python -m stacks plan).",
        )
    used = f"DCGM_FI_DEV_FB_USED{{{sel}}}"
    b.timeseries(
        "Memory in use",
        "percentunit",
        [(f"{used} / ({used} + DCGM_FI_DEV_FB_FREE{{{sel}}} + DCGM_FI_DEV_FB_RESERVED{{{sel}}})", legend)],
        "vLLM holds its planned budget from the start: a flat line near the plan is normal.",
    )
    b.timeseries("Memory used (MiB)", "mbytes", [(used, legend)])
    b.timeseries("GPU utilisation", "percent", [(f"DCGM_FI_DEV_GPU_UTIL{{{sel}}}", legend)])
    b.timeseries("Memory-copy utilisation", "percent", [(f"DCGM_FI_DEV_MEM_COPY_UTIL{{{sel}}}", legend)])
    b.timeseries(
        "Tensor pipe and DRAM activity",
        "percentunit",
        [(f"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{sel}}}", f"{legend} tensor"), (f"DCGM_FI_PROF_DRAM_ACTIVE{{{sel}}}", f"{legend} DRAM")],
        "Profiling counters: datacenter GPUs only; empty elsewhere.",
    )
    b.timeseries("Power", "watt", [(f"DCGM_FI_DEV_POWER_USAGE{{{sel}}}", legend)])
    b.timeseries(
        "Temperature",
        "celsius",
        [(f"DCGM_FI_DEV_GPU_TEMP{{{sel}}}", f"{legend} core"), (f"DCGM_FI_DEV_MEMORY_TEMP{{{sel}}}", f"{legend} memory")],
    )
    b.timeseries("SM clock (MHz)", "none", [(f"DCGM_FI_DEV_SM_CLOCK{{{sel}}}", legend)])
    b.timeseries(
        "Throttled time",
        "percentunit",
        [
            (f"rate(DCGM_FI_DEV_POWER_VIOLATION{{{sel}}}[{RATE}]) / 1e9", f"{legend} power"),
            (f"rate(DCGM_FI_DEV_THERMAL_VIOLATION{{{sel}}}[{RATE}]) / 1e9", f"{legend} thermal"),
        ],
    )
    b.timeseries(
        "XID errors",
        "short",
        [
            (f"max by (Hostname, gpu, xid) (DCGM_EXP_XID_ERRORS_COUNT{{{sel}}})", f"{legend} XID {{{{xid}}}} (count in window)"),
            (f"DCGM_FI_DEV_XID_ERRORS{{{sel}}}", f"{legend} last XID"),
        ],
        "Any XID fires the GpuXidError alert; its runbook says what the codes mean.",
    )
    return b.json()


def dashboards(plan: StackPlan) -> dict[str, Obj]:
    """File name -> dashboard; the GPU dashboard only where the DCGM exporter runs."""
    out = {"vllm-models.json": models(plan)}
    if plan.dcgm:
        out["vllm-gpus.json"] = gpus(plan)
    return out


def render(plan: StackPlan) -> dict[str, str]:
    return {name: json.dumps(board, indent=1, sort_keys=True) + "\n" for name, board in dashboards(plan).items()}
