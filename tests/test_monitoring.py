"""Monitoring files with the real tools: promtool checks and unit-tests the rules, every metric is a published one,
dashboards are well-formed Grafana JSON, the counters file is the exporter's own format and names."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.cli import main as cli_main
from stacks.config import load_stack, parse
from stacks.config.loading import read_stack_file, stack_file
from stacks.plan import StackPlan, plan
from stacks.render import gateway, prometheus
from stacks.render.monitoring import alerts, dashboards, grafana
from stacks.render.monitoring.metrics import DCGM_KNOWN_FIELDS, dcgm_counters, published
from tests.conftest import STACKS, docker_raw, kube_raw, require_program
from tests.promql import metric_names


def with_gateway_metrics(p: StackPlan) -> StackPlan:
    """The plan as the planner makes it (the gateway publishes metrics on its internal port), with the per-request
    counters (``gateway.requestMetrics``) on."""
    assert p.gateway.service.metrics_path, "the gateway publishes metrics"
    return dataclasses.replace(p, gateway=dataclasses.replace(p.gateway, request_metrics=True))


def without_gateway_metrics(p: StackPlan) -> StackPlan:
    """A plan whose gateway publishes no metrics: no Service metrics path, no scrape target."""
    svc = dataclasses.replace(p.gateway.service, metrics_path=None)
    targets = [t for t in p.scrape_targets if t.job != "gateway"]
    return dataclasses.replace(p, gateway=dataclasses.replace(p.gateway, service=svc), scrape_targets=targets)


def render(tmp_path: Path, stack: str) -> Path:
    assert cli_main(["render", stack, "--out", str(tmp_path)]) == 0
    return tmp_path / "monitoring"


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_program("promtool"), *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd)


# --- the rendered files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_promtool_accepts_every_committed_stack(tmp_path: Path, stack: str) -> None:
    out = render(tmp_path, stack)
    rules = promtool("check", "rules", out / "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alerts.alerts(plan(load_stack(stack))))} rules found" in rules.stdout
    if (out / "prometheus.yml").exists():
        config = promtool("check", "config", out / "prometheus.yml")
        assert config.returncode == 0, config.stdout + config.stderr
        assert "1 rule files found" in config.stdout, "prometheus.yml loads the rules beside it"


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a rule with a bad expression is refused."""
    out = render(tmp_path, "dev")
    text = (out / "alerts.yml").read_text().replace("> 0.9", "> > 0.9", 1)
    (out / "alerts.yml").write_text(text)
    assert promtool("check", "rules", out / "alerts.yml").returncode != 0


def test_render_writes_all_monitoring_files(tmp_path: Path) -> None:
    dev = sorted(str(p.relative_to(tmp_path)) for p in render(tmp_path / "dev", "dev").rglob("*") if p.is_file())
    dev = [d.removeprefix("dev/") for d in dev]
    assert dev == [
        "monitoring/alerts.yml",
        "monitoring/dcgm-counters.csv",
        "monitoring/grafana/dashboards.yml",
        "monitoring/grafana/dashboards/vllm-gpus.json",
        "monitoring/grafana/dashboards/vllm-models.json",
        "monitoring/grafana/datasources.yml",
        "monitoring/prometheus.yml",
    ]
    cluster = render(tmp_path / "cluster", "cluster")
    assert sorted(p.name for p in cluster.rglob("*") if p.is_file()) == ["alerts.yml", "dcgm-counters.csv", "vllm-gpus.json", "vllm-models.json"]


def scrape_configs(p: StackPlan) -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = yaml.safe_load(prometheus.render(p))["scrape_configs"]
    return configs


def test_gateway_rules_and_panels_only_once_it_publishes_metrics() -> None:
    for stack in STACKS:
        p = without_gateway_metrics(with_gateway_metrics(plan(load_stack(stack))))
        assert "GatewayErrorRateHigh" not in {a.name for a in alerts.alerts(p)}
        assert "GatewayErrorRateHigh" in {a.name for a in alerts.alerts(with_gateway_metrics(plan(load_stack(stack))))}
        titles = [panel["title"] for panel in dashboards.models(with_gateway_metrics(plan(load_stack(stack))))["panels"]]
        assert "Gateway requests by status" in titles
        assert "Gateway requests by status" not in [panel["title"] for panel in dashboards.models(p)["panels"]]


def test_without_request_metrics_only_the_in_flight_gauge_is_used() -> None:
    """gateway.requestMetrics off: no counters, so no rule or panel may wait on them (an alert that can never fire)."""
    for stack in STACKS:
        raw = read_stack_file(stack_file(stack))
        for on in (False, True):
            raw["gateway"] = {**raw.get("gateway", {}), "requestMetrics": on}
            p = plan(parse(raw))
            assert ("GatewayErrorRateHigh" in {a.name for a in alerts.alerts(p)}) is on
            queries = json.dumps(dashboards.models(p))
            assert "vllm_stack_gateway_requests_in_flight" in queries
            assert ("vllm_stack_gateway_requests_total" in queries) is on and ("upstream_latency" in queries) is on
            conf = gateway.nginx_conf(p)
            assert ("js_shared_dict_zone" in conf) is on and ("$gw_account" in conf) is on


def test_dcgm_series_name_the_models_on_their_gpu() -> None:
    jobs = {j["job_name"]: j for j in scrape_configs(plan(load_stack("multigpu")))}
    relabel = {r["regex"]: r["replacement"] for r in jobs["dcgm"]["metric_relabel_configs"]}
    assert relabel == {"0": "llama-3-1-8b", "1": "llama-3-1-8b", "2": "qwen2-5-7b", "3": "mistral-7b"}


# --- alert rules fire on synthetic series and stay quiet on healthy ones --------------------------------------------


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


def hist(name: str, labels: dict[str, str], per_minute: dict[str, int]) -> list[dict[str, str]]:
    """A histogram whose buckets grow by ``per_minute`` (cumulative counts per ``le``) for 30 minutes."""
    return [series(f"{name}_bucket", {**labels, "le": le}, f"0+{n}x30") for le, n in per_minute.items()]


def rendered_annotations(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them: only {{ $labels.<name> }} is templated (checked below)."""
    return {k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), v) for k, v in rule["annotations"].items()}


def cases(p: StackPlan) -> list[tuple[str, list[dict[str, str]], list[dict[str, str]], dict[str, str]]]:
    """(alert, firing input, healthy input, labels the firing alert carries) for every rule of ``p``."""
    kube = p.kubernetes is not None
    ns = {"namespace": p.kubernetes.namespace} if p.kubernetes else {}
    t = p.monitoring.alerts
    assert t is not None
    m = p.models[0]
    vllm = {"job": "vllm", "instance": m.address, "model_name": m.name, "engine": "0", **ns}
    dcgm = {"job": "dcgm", "instance": "dcgm:9400", "gpu": "0", "Hostname": "gpu-host", "modelName": "NVIDIA L40S", **ns}
    gpu0 = t.gpu_memory_by_gpu.get(0, t.gpu_memory_usage)
    mib = 40000

    def fb(share: float, gpu: str = "0") -> list[dict[str, str]]:
        labels = {**dcgm, "gpu": gpu}
        used = int(mib * share)
        return [
            series("DCGM_FI_DEV_FB_USED", labels, f"{used}x30"),
            series("DCGM_FI_DEV_FB_FREE", labels, f"{mib - used - 500}x30"),
            series("DCGM_FI_DEV_FB_RESERVED", labels, "500x30"),
        ]

    out = [
        (
            "VllmKvCacheNearlyFull",
            [series("vllm:kv_cache_usage_perc", vllm, f"{(1 + t.kv_cache_usage) / 2}x30")],
            [series("vllm:kv_cache_usage_perc", vllm, f"{t.kv_cache_usage - 0.2}x30")],
            {"model_name": m.name, "instance": m.address},
        ),
        (
            "VllmRequestsWaiting",
            [series("vllm:num_requests_waiting", vllm, f"{t.waiting_requests + 5}x30")],
            [series("vllm:num_requests_waiting", vllm, f"{t.waiting_requests}x30")],
            {"model_name": m.name, "instance": m.address},
        ),
        (
            "VllmTimeToFirstTokenHigh",
            hist("vllm:time_to_first_token_seconds", vllm, {"0.5": 0, str(t.ttft_p95_seconds): 0, "100": 10, "+Inf": 10}),
            hist("vllm:time_to_first_token_seconds", vllm, {"0.5": 10, str(t.ttft_p95_seconds): 10, "100": 10, "+Inf": 10}),
            {"model_name": m.name},
        ),
        (
            "ScrapeTargetDown",
            [series("up", vllm, "0x30")],
            [series("up", vllm, "1x30")],
            {k: v for k, v in vllm.items() if k != "model_name"} | {"model_name": m.name},
        ),
    ]
    if p.dcgm:
        # a GPU the plan fills beyond the threshold stays quiet up to its plan, and alerts beyond it
        healthy_share = (t.gpu_memory_usage + gpu0) / 2 if gpu0 > t.gpu_memory_usage else t.gpu_memory_usage - 0.05
        out += [
            ("GpuMemoryNearlyFull", fb((1 + gpu0) / 2 + 0.002), fb(healthy_share), {"gpu": "0", "Hostname": "gpu-host"}),
            (
                "GpuXidError",
                [series("DCGM_EXP_XID_ERRORS_COUNT", {**dcgm, "xid": "79"}, "1x30")],
                [series("DCGM_EXP_XID_ERRORS_COUNT", {**dcgm, "xid": "79"}, "0x30")],
                {"gpu": "0", "Hostname": "gpu-host", "xid": "79"},
            ),
        ]
        if t.gpu_memory_by_gpu:
            # GPUs outside the plan (or not planned beyond it) alert at the configured share
            out.append(("GpuMemoryNearlyFull", fb(t.gpu_memory_usage + 0.01, "7"), fb(t.gpu_memory_usage - 0.05, "7"), {"gpu": "7", "Hostname": "gpu-host"}))
    if kube:
        ksm = {"job": "kube-state-metrics", "namespace": ns["namespace"], "pod": f"{m.service}-abc", "container": m.service}
        out.append(
            (
                "VllmServerRestarted",
                [series("kube_pod_container_status_restarts_total", ksm, "0x10 1x20")],
                [series("kube_pod_container_status_restarts_total", ksm, "3x30")],
                {"namespace": ns["namespace"], "pod": ksm["pod"], "container": m.service},
            )
        )
    else:
        proc = {"job": "vllm", "instance": m.address, "model": m.name}
        out.append(
            (
                "VllmServerRestarted",
                [series("process_start_time_seconds", proc, "1000x10 1700x20")],
                [series("process_start_time_seconds", proc, "1000x30")],
                proc,
            )
        )
    if p.gateway.service.metrics_path and p.gateway.request_metrics:
        gw = {"job": "gateway", "instance": p.gateway.service.address, "model": m.name, "key": "team-a", **ns}
        ok, bad = {**gw, "status_class": "2xx"}, {**gw, "status_class": "5xx"}
        total = "vllm_stack_gateway_requests_total"
        out.append(
            (
                "GatewayErrorRateHigh",
                [series(total, ok, "0+10x30"), series(total, bad, "0+10x30")],
                [series(total, ok, "0+100x30"), series(total, bad, "0+1x30")],
                {"model": m.name},
            )
        )
    return out


PLANS: dict[str, tuple[str, bool]] = {
    "dev (docker), gateway metrics": ("dev", True),
    "multigpu (docker)": ("multigpu", False),
    "cluster (kubernetes, operator), gateway metrics": ("cluster", True),
}
"""Stack and whether its gateway publishes its request metrics (multigpu: as the stack file has it, without)."""


@pytest.mark.parametrize("which", PLANS)
def test_each_alert_fires_on_bad_series_and_stays_quiet_on_healthy_ones(tmp_path: Path, which: str) -> None:
    stack, gateway_metrics = PLANS[which]
    p = with_gateway_metrics(plan(load_stack(stack))) if gateway_metrics else plan(load_stack(stack))
    (tmp_path / "alerts.yml").write_text(alerts.render(p))
    rules = {r["alert"]: r for g in alerts.groups(p) for r in g["rules"]}
    tested = cases(p)
    assert {c[0] for c in tested} == set(rules), "every rule has a case"
    tests = []
    for name, firing, healthy, labels in tested:
        rule = rules[name]
        fired = {"alertname": name, **rule["labels"], **labels}
        exp = {"exp_labels": {k: v for k, v in fired.items() if k != "alertname"}, "exp_annotations": rendered_annotations(rule, fired)}
        # with `for:` the alert is pending before it fires, so it is checked at 2x its duration and after 30 minutes
        at = f"{max(2 * int(str(rule.get('for', '1m')).removesuffix('m')), 12)}m"
        tests.append({"interval": "1m", "input_series": firing, "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": [exp]}]})
        quiet = [{"eval_time": t, "alertname": name, "exp_alerts": []} for t in ("5m", at, "29m")]
        tests.append({"interval": "1m", "input_series": healthy, "alert_rule_test": quiet})
    if p.kubernetes:
        # another namespace's series never alert this stack
        other = [dict(s, series=s["series"].replace(f'namespace="{p.kubernetes.namespace}"', 'namespace="other"')) for _, f, _, _ in tested for s in f]
        tests.append({"interval": "1m", "input_series": other, "alert_rule_test": [{"eval_time": "20m", "alertname": n, "exp_alerts": []} for n in rules]})
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump({"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}))
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_unit_test_can_fail(tmp_path: Path) -> None:
    """An alert expected but not fired fails `promtool test rules` (so the test above can fail)."""
    p = plan(load_stack("dev"))
    (tmp_path / "alerts.yml").write_text(alerts.render(p))
    test = {
        "interval": "1m",
        "input_series": [series("vllm:kv_cache_usage_perc", {"job": "vllm", "model_name": "x", "instance": "i"}, "0.5x30")],
        "alert_rule_test": [{"eval_time": "20m", "alertname": "VllmKvCacheNearlyFull", "exp_alerts": [{"exp_labels": {"severity": "warning"}}]}],
    }
    (tmp_path / "t.yml").write_text(yaml.safe_dump({"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": [test]}))
    assert promtool("test", "rules", "t.yml", cwd=tmp_path).returncode != 0


def test_annotations_template_only_labels() -> None:
    for stack in STACKS:
        for a in alerts.alerts(with_gateway_metrics(plan(load_stack(stack)))):
            for text in (a.summary, a.description, a.runbook):
                assert re.sub(r"\{\{ \$labels\.\w+ \}\}", "", text).count("{{") == 0, (a.name, text)


def test_thresholds_come_from_config() -> None:
    raw = docker_raw(monitoring={"alerts": {"kvCacheUsage": 0.8, "waitingRequests": 3, "ttftP95Seconds": 0.5, "forMinutes": 2}})
    rules = {a.name: a for a in alerts.alerts(plan(parse(raw)))}
    assert rules["VllmKvCacheNearlyFull"].expr.endswith("> 0.8") and rules["VllmKvCacheNearlyFull"].for_minutes == 2
    assert rules["VllmRequestsWaiting"].expr.endswith("> 3") and rules["VllmTimeToFirstTokenHigh"].expr.endswith("> 0.5")
    assert alerts.alerts(plan(parse(docker_raw(monitoring={"alerts": {"enabled": False}})))) == []


def test_gpu_memory_threshold_follows_the_plan() -> None:
    """dev fills GPU 0 to about 98%: a fixed 95% would always fire, so that GPU alerts beyond its plan only."""
    t = plan(load_stack("dev")).monitoring.alerts
    assert t is not None and t.gpu_memory_usage == 0.95 and 0.95 < t.gpu_memory_by_gpu[0] < 0.995
    light = plan(parse(docker_raw(models=[{"name": "tiny", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "gpuMemoryUtilization": 0.3}])))
    assert light.monitoring.alerts is not None and light.monitoring.alerts.gpu_memory_by_gpu == {}


# --- every metric is one the pinned programs publish ----------------------------------------------------------------


def every_expression(p: StackPlan) -> list[str]:
    exprs = [a.expr for a in alerts.alerts(p)]
    for board in dashboards.dashboards(p).values():
        exprs += [t["expr"] for panel in board["panels"] for t in panel["targets"]]
        exprs += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_metric_names_are_extracted() -> None:
    expr = 'sum by (le, x) (rate(a_total{k="v{1}", j=~"$x"}[$__rate_interval])) / on (x) group_left b:c > 1e9 or label_values(d, e)'
    assert metric_names(expr) == {"a_total", "b:c", "d", "e"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(m_bucket[5m]))) > 2.0") == {"m_bucket"}


@pytest.mark.parametrize("stack", STACKS)
def test_every_metric_in_rules_and_dashboards_is_published(stack: str) -> None:
    known = published()
    for expr in every_expression(with_gateway_metrics(plan(load_stack(stack)))):
        names = metric_names(expr.replace("label_values(", "label_values_("))
        # label_values(metric, label): the second argument is a label
        if expr.startswith("label_values("):
            names = {expr.removeprefix("label_values(").split("{")[0].split(",")[0].strip()}
        assert names, expr
        unknown = names - set(known)
        assert not unknown, f"{unknown} in {expr!r} is published by none of the pinned programs"


def test_removed_vllm_metrics_are_not_published() -> None:
    """vLLM 0.12 removed gpu_cache_usage_perc and 0.15 time_per_output_token_seconds: the list is the new release's."""
    known = published()
    assert "vllm:kv_cache_usage_perc" in known and "vllm:gpu_cache_usage_perc" not in known
    assert "vllm:time_per_output_token_seconds_bucket" not in known and "vllm:inter_token_latency_seconds_bucket" in known


# --- dashboards ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_dashboards_are_valid_grafana_json(stack: str) -> None:
    p = plan(load_stack(stack))
    boards = dashboards.dashboards(p)
    # the GPU dashboard comes with the DCGM exporter, which a stack without NVIDIA GPUs does not run
    assert set(boards) == {"vllm-models.json", "vllm-gpus.json"} if p.dcgm else {"vllm-models.json"}
    for board in boards.values():
        assert json.loads(json.dumps(board)) == board
        assert board["schemaVersion"] == dashboards.SCHEMA_VERSION and board["uid"] and board["title"]
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
        cells: set[tuple[int, int]] = set()
        rows: dict[int, int] = {}
        for panel in board["panels"]:
            assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
            g = panel["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24
            area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & area, f"{panel['title']} overlaps another panel"
            cells |= area
            rows[g["y"]] = rows.get(g["y"], 0) + g["w"]
            for ds in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
                if p.kubernetes:
                    assert ds == {"type": "prometheus", "uid": "${datasource}"}
                else:
                    assert ds == {"type": "prometheus", "uid": dashboards.DATASOURCE_UID}
        assert all(width == 24 for width in list(rows.values())[:-1]), "every row but the last is full: no gaps"
        names = [v["name"] for v in board["templating"]["list"]]
        assert ("datasource" in names) == bool(p.kubernetes)
        used = {v for panel in board["panels"] for t in panel["targets"] for v in re.findall(r"\$(\w+)", t["expr"])}
        assert used - {"__rate_interval"} <= set(names), "every variable a query uses is defined"


def test_docker_datasource_is_the_one_the_dashboards_use() -> None:
    p = plan(load_stack("dev"))
    [source] = yaml.safe_load(grafana.datasources(p))["datasources"]
    assert source["uid"] == dashboards.DATASOURCE_UID and source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    [provider] = yaml.safe_load(grafana.dashboard_provider(grafana.DASHBOARDS_DIR))["providers"]
    assert provider["options"]["path"] == grafana.DASHBOARDS_DIR and provider["allowUiUpdates"] is False


def test_model_dashboard_has_the_panels_operators_need() -> None:
    titles = [panel["title"] for panel in dashboards.models(with_gateway_metrics(plan(load_stack("dev"))))["panels"]]
    for want in ("Running requests", "Waiting requests", "Tokens per second", "Time to first token", "End-to-end request latency"):
        assert want in titles
    for want in ("Inter-token latency", "KV-cache use", "Prefix-cache hit rate", "Preemptions per second", "Gateway requests by status"):
        assert want in titles
    gpu_titles = [panel["title"] for panel in dashboards.gpus(plan(load_stack("dev")))["panels"]]
    for want in ("Models on each GPU", "Memory in use", "GPU utilisation", "Power", "Temperature", "XID errors"):
        assert want in gpu_titles


# --- the DCGM counters file ------------------------------------------------------------------------------------------


def test_counters_file_is_the_exporters_format_with_its_field_names() -> None:
    rows = dcgm_counters()
    fields = [f for f, _, _ in rows]
    assert len(fields) == len(set(fields))
    assert set(fields) <= DCGM_KNOWN_FIELDS
    assert all(kind in {"gauge", "counter", "label"} and help_text for _, kind, help_text in rows)
    for want in (
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_XID_ERRORS",
        "DCGM_EXP_XID_ERRORS_COUNT",
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    ):
        assert want in fields
    assert any(f.startswith("DCGM_FI_PROF_") for f in fields)


def test_kubernetes_without_the_operator_keeps_annotations_and_has_no_operator_objects() -> None:
    from stacks.render import kubernetes as k8s
    from stacks.render.monitoring import cluster

    p = plan(parse(kube_raw()))
    assert cluster.objects(p) == [] and not p.monitoring.operator
    deployment = next(o for o in k8s.stack_objects(p) if o["kind"] == "Deployment" and o["metadata"]["name"] == "vllm-qwen3")
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


@pytest.mark.parametrize("stack", ["mac", "dev"])
def test_the_model_variable_covers_models_served_elsewhere(stack: str) -> None:
    """The variable's values come from vLLM's series; the gateway's panels filter by it, so its "All" must also match
    the models no vLLM serves (endpoints, Ollama): a regex of vLLM's names would hide them, every one on a Mac."""
    raw = read_stack_file(stack_file(stack))
    raw["gateway"] = {**raw.get("gateway", {}), "requestMetrics": True}
    raw["endpoints"] = [{"name": "lab", "url": "http://10.0.0.7:8000/v1", "models": [{"name": "remote-model"}]}] if stack == "dev" else raw["endpoints"]
    p = plan(parse(raw))
    board = dashboards.models(p)
    [variable] = [v for v in board["templating"]["list"] if v["name"] == "model"]
    for r in p.routes:
        assert re.fullmatch(variable["allValue"], r.model), r.model
    assert any('model=~"$model"' in t["expr"] for panel in board["panels"] for t in panel["targets"] if "vllm_stack_gateway" in t["expr"])


def test_the_mac_stacks_grafana_shows_its_models() -> None:
    """No vLLM runs there: the gateway's per-model panels are what its dashboard has (docs/guides/mac.md says so)."""
    titles = [panel["title"] for panel in dashboards.models(plan(load_stack("mac")))["panels"]]
    assert "Gateway requests by status" in titles
