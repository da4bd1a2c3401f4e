"""Alert rules with runbook text, from the plan: one rule file for Prometheus, the same groups in a PrometheusRule.

Selectors follow the target: docker's own Prometheus scrapes only this stack (jobs ``vllm``, ``dcgm``, ``gateway``);
on a cluster every series of the stack carries its namespace (ServiceMonitor targets, annotation-scraped pods and
kube-state-metrics alike).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from stacks.plan import StackPlan
from stacks.plan import topology as net
from stacks.plan.types import AlertThresholds

GROUP = "vllm-stack"
RESTART_WINDOW = "15m"
"""A restart stays visible this long (docker: the start-time change; kubernetes: the restart counter's increase)."""
RATE_WINDOW = "5m"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_minutes: int
    severity: str
    summary: str
    description: str
    runbook: str
    labels: dict[str, str] = field(default_factory=dict)

    def rule(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.for_minutes:
            rule["for"] = f"{self.for_minutes}m"
        rule["labels"] = {"severity": self.severity, **self.labels}
        # annotations template only {{ $labels.<name> }}: the unit tests render them exactly as Prometheus does
        rule["annotations"] = {"summary": self.summary, "description": self.description, "runbook": self.runbook}
        return rule


class Selectors:
    """PromQL label matchers for the stack's series on its target."""

    def __init__(self, plan: StackPlan) -> None:
        self.namespace = plan.kubernetes.namespace if plan.kubernetes else None

    def job(self, job: str) -> str:
        return f'namespace="{self.namespace}"' if self.namespace else f'job="{job}"'

    def targets(self, plan: StackPlan) -> str:
        if self.namespace:
            return f'namespace="{self.namespace}"'
        return 'job=~"' + "|".join(sorted({t.job for t in plan.scrape_targets})) + '"'


def quote(value: str) -> str:
    return f'"{value}"'


def _gpu_memory_expr(s: Selectors, t: AlertThresholds) -> str:
    sel = s.job(net.JOB_DCGM)

    def share(extra: str = "") -> str:
        m = f"{sel}{extra}"
        return f"DCGM_FI_DEV_FB_USED{{{m}}} / (DCGM_FI_DEV_FB_USED{{{m}}} + DCGM_FI_DEV_FB_FREE{{{m}}} + DCGM_FI_DEV_FB_RESERVED{{{m}}})"

    if not t.gpu_memory_by_gpu:
        return f"max by (Hostname, gpu) ({share()}) > {t.gpu_memory_usage}"
    # GPUs the plan fills beyond the threshold alert only beyond their plan
    parts = [f"max by (Hostname, gpu) ({share(',gpu=' + quote(str(g)))}) > {v}" for g, v in sorted(t.gpu_memory_by_gpu.items())]
    others = quote("|".join(str(g) for g in sorted(t.gpu_memory_by_gpu)))
    parts.append(f"max by (Hostname, gpu) ({share(',gpu!~' + others)}) > {t.gpu_memory_usage}")
    return " or ".join(f"({p})" for p in parts)


def _restart(plan: StackPlan, s: Selectors) -> Alert:
    if plan.kubernetes:
        # a swap group's members run in its server's container
        containers = "|".join([m.service for m in plan.servers] + [g.service.name for g in plan.swap_groups])
        restarts = f'kube_pod_container_status_restarts_total{{{s.job(net.JOB_VLLM)},container=~"{containers}"}}'
        expr = f"sum by (namespace, pod, container) (increase({restarts}[{RESTART_WINDOW}])) > 0"
        signal = "kube-state-metrics counted a restart of the container"
        who = "{{ $labels.container }}"
        look = "kubectl -n {{ $labels.namespace }} describe pod {{ $labels.pod }} (Last State, Reason: OOMKilled or Error) and kubectl logs --previous"
    else:
        expr = f"changes(process_start_time_seconds{{{s.job(net.JOB_VLLM)}}}[{RESTART_WINDOW}]) > 0"
        signal = "The server's process start time changed: the container was restarted (restart policy) or replaced"
        who = "{{ $labels.model }}"
        look = "docker logs of the model's container (the end of the previous run: CUDA out of memory, NCCL errors)"
    return Alert(
        "VllmServerRestarted",
        expr,
        0,
        "warning",
        f"vLLM server {who} restarted",
        f"{signal} in the last {RESTART_WINDOW}.",
        f"A restart reloads the model (minutes) and drops the requests it was serving. Look at {look}. "
        "Repeated restarts with out-of-memory errors mean the GPU plan does not fit: run `python -m stacks plan` and lower "
        "gpuMemoryUtilization, maxModelLen or maxNumSeqs; another process on the GPU belongs in gpus[].reservedGiB.",
    )


def alerts(plan: StackPlan) -> list[Alert]:
    t = plan.monitoring.alerts
    if t is None:
        return []
    s = Selectors(plan)
    vllm = s.job(net.JOB_VLLM)
    f = t.for_minutes
    out = [
        Alert(
            "VllmKvCacheNearlyFull",
            f"max by (model_name, instance) (vllm:kv_cache_usage_perc{{{vllm}}}) > {t.kv_cache_usage}",
            f,
            "warning",
            f"KV cache of {{{{ $labels.model_name }}}} is over {t.kv_cache_usage:.0%} full",
            f"vllm:kv_cache_usage_perc above {t.kv_cache_usage} for {f} minutes on {{{{ $labels.instance }}}}.",
            "A full KV cache makes vLLM preempt running requests (see the preemptions panel) and queue new ones. "
            "Give the model more KV cache (gpuMemoryUtilization, kvCacheDtype: fp8, a smaller maxModelLen), lower maxNumSeqs, "
            "or add replicas (kubernetes) / move a model sharing its GPU elsewhere (docker).",
        ),
        Alert(
            "VllmRequestsWaiting",
            f"sum by (model_name, instance) (vllm:num_requests_waiting{{{vllm}}}) > {t.waiting_requests}",
            f,
            "warning",
            f"Over {t.waiting_requests} requests wait for {{{{ $labels.model_name }}}}",
            f"More than {t.waiting_requests} requests have waited in the queue of {{{{ $labels.instance }}}} for {f} minutes.",
            "The server is at maxNumSeqs or out of KV cache. Check the KV-cache and running-requests panels: raise maxNumSeqs when "
            "KV cache is free, otherwise add capacity (replicas or autoscaling on kubernetes, a GPU of its own on docker) or cap "
            "clients with gateway.maxConcurrentPerModel.",
        ),
        Alert(
            "VllmTimeToFirstTokenHigh",
            f"histogram_quantile(0.95, sum by (model_name, le) (rate(vllm:time_to_first_token_seconds_bucket{{{vllm}}}[{RATE_WINDOW}])))"
            f" > {t.ttft_p95_seconds}",
            f,
            "warning",
            f"Time to first token (p95) of {{{{ $labels.model_name }}}} is over {t.ttft_p95_seconds} s",
            f"The 95th percentile of time to first token stayed above {t.ttft_p95_seconds} s for {f} minutes.",
            "Slow first tokens come from queueing (VllmRequestsWaiting), long prompts (prefill) or preemptions. Compare the queue-time "
            "and prefill panels; enable prefix caching for repeated prompts, lower maxNumBatchedTokens if decode stalls, or add capacity.",
        ),
    ]
    gpu = [
        Alert(
            "GpuMemoryNearlyFull",
            _gpu_memory_expr(s, t),
            f,
            "warning",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is nearly out of memory",
            "Memory in use beyond the alert's share: "
            f"{t.gpu_memory_usage} by default"
            + (", the plan's share + 0.01 on GPUs " + ", ".join(f"{g} ({v})" for g, v in sorted(t.gpu_memory_by_gpu.items())) if t.gpu_memory_by_gpu else "")
            + ".",
            "vLLM holds its planned budget from the start, so memory beyond the plan is another process or a leak. Find it with "
            "nvidia-smi on the host; a desktop session or other job belongs in gpus[].reservedGiB so the plan leaves room for it. "
            "Near 100% the next allocation fails with CUDA out of memory.",
        ),
        Alert(
            "GpuXidError",
            f"max by (Hostname, gpu, xid) (DCGM_EXP_XID_ERRORS_COUNT{{{s.job(net.JOB_DCGM)}}}) > 0",
            0,
            "critical",
            "XID {{ $labels.xid }} on GPU {{ $labels.gpu }} ({{ $labels.Hostname }})",
            "The driver reported an XID error in the DCGM exporter's window (5 minutes).",
            "Look the code up in NVIDIA's XID catalogue. 13/31/43 are usually application faults (the model server restarts); "
            "48/63/64/74/79/92/94/95 are hardware or driver faults: drain the GPU (move its models), check dmesg, "
            "and reset or replace it; 79 (fallen off the bus) needs a reboot.",
        ),
    ]
    # the GPU rules watch the stack's own exporter (monitoring.dcgm); none without it
    out += gpu if plan.dcgm else []
    out += [
        Alert(
            "ScrapeTargetDown",
            f"up{{{s.targets(plan)}}} == 0",
            f,
            "critical",
            "{{ $labels.job }} target {{ $labels.instance }} is down",
            f"Prometheus could not scrape {{{{ $labels.instance }}}} for {f} minutes.",
            "A vLLM target is down while its server loads a model or after it crashed (see VllmServerRestarted); "
            "the DCGM exporter needs the NVIDIA runtime and SYS_ADMIN. Check the container or pod status and logs.",
        ),
        _restart(plan, s),
    ]
    out += swap_alerts(plan, s, t)
    if plan.gateway.service.metrics_path and plan.gateway.request_metrics:
        gw = s.job(net.JOB_GATEWAY)
        out.append(
            Alert(
                "GatewayErrorRateHigh",
                f'sum by (model) (rate(vllm_stack_gateway_requests_total{{{gw},status_class="5xx"}}[{RATE_WINDOW}])) '
                f"/ sum by (model) (rate(vllm_stack_gateway_requests_total{{{gw}}}[{RATE_WINDOW}])) > {t.gateway_5xx_ratio}",
                f,
                "critical",
                f"Over {t.gateway_5xx_ratio:.0%} of the requests for {{{{ $labels.model }}}} fail with 5xx",
                f"The gateway answered more than {t.gateway_5xx_ratio:.0%} of this model's requests with 5xx for {f} minutes.",
                "502 means the model server is down or restarting, 503 that gateway.maxConcurrentPerModel is reached, 504 that "
                "gateway.readTimeoutSeconds passed. The gateway's JSON access log names the upstream and timings of each request.",
            )
        )
    return out


def swap_alerts(plan: StackPlan, s: Selectors, t: AlertThresholds) -> list[Alert]:
    """Swap groups: thrashing, a wake that fails, and (never expected) more members awake than the plan allows."""
    if not plan.swap_groups:
        return []
    sel = s.job(net.JOB_SWAP)
    window = "10m"
    return [
        Alert(
            "SwapGroupThrashing",
            f"sum by (group) (rate(vllm_stack_swap_busy_seconds_total{{{sel}}}[{window}])) > {t.swap_time_share}",
            t.for_minutes,
            "warning",
            "Swap group {{ $labels.group }} spends its time swapping models",
            f"Over {t.swap_time_share:.0%} of the last {window} went into waking members and putting them to sleep.",
            "Requests alternate between the group's members faster than it can serve them, so each waits for a swap. "
            "The dashboard's swap panels show which members: give a busy one a place of its own outside the group (or its own "
            "GPU), raise swapGroups.<group>.awake if the plan has room for more awake at once, use sleep level 1 (faster wakes "
            "than level 2), or send clients to fewer models. Swapping pays off when each member is used in bursts.",
        ),
        Alert(
            "SwapWakeFailed",
            f'sum by (group, model) (increase(vllm_stack_swap_wakes_total{{{sel},result="failed"}}[{RESTART_WINDOW}])) > 0',
            0,
            "warning",
            "Model {{ $labels.model }} of swap group {{ $labels.group }} failed to wake",
            f"A wake failed in the last {RESTART_WINDOW}: its waiting requests got 503 and the member was put back to sleep (or restarted).",
            "Read the group's container or pod logs around the failure (`swapper: <model> failed to wake`). CUDA out of memory "
            "means something besides the plan holds the GPU (another process: gpus[].reservedGiB) or a member keeps more asleep "
            "than planned; a timeout means the wake (level 2: the reload from the model cache) takes longer than "
            "swapGroups.<group>.wakeTimeoutSeconds.",
        ),
        Alert(
            "SwapGroupOverPlan",
            f"max by (group) (vllm_stack_swap_awake_members{{{sel}}}) > max by (group) (vllm_stack_swap_awake_limit{{{sel}}})",
            2,
            "critical",
            "Swap group {{ $labels.group }} has more members awake than planned",
            "More members hold their awake memory than swapGroups.<group>.awake allows; the swapper puts the excess to sleep when it starts.",
            "Never expected: the swapper grants a member its awake memory only when a place is free. A swapper that just restarted "
            "fixes it within seconds; if it lasts, restart the group's server and report the swapper's log.",
        ),
    ]


def groups(plan: StackPlan) -> list[dict[str, Any]]:
    rules = [a.rule() for a in alerts(plan)]
    return [{"name": GROUP, "rules": rules}] if rules else []


def render(plan: StackPlan) -> str:
    head = "# Rendered by vllm-stack: alert rules with runbook text (annotations.runbook).\n"
    return head + yaml.safe_dump({"groups": groups(plan)}, sort_keys=False, width=1000)
