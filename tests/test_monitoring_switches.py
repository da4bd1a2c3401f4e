"""Every combination of the monitoring switches, on both targets, either is refused by the config (naming the key and
the fix) or goes through ``plan``, ``render`` and the Pulumi program (mock engine) with what the switches say running."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from stacks.cli import main as cli_main
from stacks.config import parse
from stacks.errors import ConfigError
from stacks.plan import plan
from tests.conftest import docker_raw, kube_raw
from tests.mock_engine import LAST, run_program

CONTAINER = "docker:index/container:Container"
SWITCHES = list(
    itertools.product(
        ("docker", "kubernetes"),
        (True, False),  # dcgm
        (None, True, False),  # prometheus
        (None, True, False),  # grafana
        (True, False),  # alerts.enabled
        (False, True),  # prometheusOperator
        (False, True),  # gateway.requestMetrics (the gateway's alert and panels)
    )
)


def _raw(target: str, dcgm: bool, prom: bool | None, graf: bool | None, alerts: bool, operator: bool, request_metrics: bool) -> dict[str, Any]:
    mon: dict[str, Any] = {"dcgm": dcgm, "alerts": {"enabled": alerts}}
    if prom is not None:
        mon["prometheus"] = prom
    if graf is not None:
        mon["grafana"] = graf
    if operator:
        mon["prometheusOperator"] = True
    make = docker_raw if target == "docker" else kube_raw
    return make(monitoring=mon, gateway={"requestMetrics": request_metrics})


def _program_config(raw: dict[str, Any]) -> dict[str, str]:
    return {f"vllm-stack:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: "-".join(str(v) for v in s))
def test_monitoring_switches_work_or_are_refused_with_the_fix(tmp_path: Path, switches: tuple[Any, ...]) -> None:
    target, dcgm, prom, graf, _alerts, operator, _metrics = switches
    raw = _raw(*switches)
    stack = tmp_path / "Pulumi.switches.yaml"
    stack.write_text(yaml.safe_dump({"config": {f"vllm-stack:{k}": v for k, v in raw.items()}}))
    try:
        p = plan(parse(raw))
    except ConfigError as err:
        # a refusal names a monitoring key and how to fix it; plan, render and the program refuse the same way
        assert err.problems and all(pr.key.startswith("monitoring.") and ("remove" in pr.message or "set" in pr.message) for pr in err.problems)
        assert cli_main(["plan", str(stack)]) == 1
        assert cli_main(["render", str(stack), "--out", str(tmp_path / "out")]) == 1
        with pytest.raises(pulumi.RunError) as exc:
            run_program("switches", secrets={}, config=_program_config(raw))
        assert all(f"vllm-stack:{pr.key}" in str(exc.value) for pr in err.problems) and "internal error" not in str(exc.value)
        assert LAST[0].resources == []
        return
    # what the user turned on explicitly runs; what they turned off does not
    if prom is not None:
        assert bool(p.prometheus) == prom
    if graf is not None:
        assert p.monitoring.dashboards == graf
    assert bool(p.dcgm) == dcgm
    if target == "docker":
        assert bool(p.monitoring.grafana) == p.monitoring.dashboards, "docker's dashboards live in its own Grafana"
        assert not p.monitoring.grafana or p.prometheus, "docker's Grafana needs the stack's Prometheus"

    assert cli_main(["plan", str(stack)]) == 0
    out = tmp_path / "out"
    assert cli_main(["render", str(stack), "--out", str(out)]) == 0
    files = {str(f.relative_to(out)) for f in out.rglob("*") if f.is_file()}
    assert ("monitoring/prometheus.yml" in files) == bool(p.prometheus)
    assert ("monitoring/grafana/datasources.yml" in files) == bool(p.monitoring.grafana)
    assert ("monitoring/dcgm-counters.csv" in files) == dcgm

    m = run_program("switches", secrets={}, config=_program_config(raw))
    types = [r.type for r in m.resources]
    assert ("vllm-stack:index:DcgmExporter" in types) == dcgm
    assert ("vllm-stack:index:Prometheus" in types) == bool(p.prometheus)
    assert ("vllm-stack:index:Grafana" in types) == bool(p.monitoring.grafana)
    if target == "docker":
        containers = {r.name for r in m.of_type(CONTAINER)}
        assert ("vllm-prometheus" in containers) == bool(p.prometheus)
        assert ("vllm-grafana" in containers) == bool(p.monitoring.grafana)
        if p.monitoring.grafana:
            assert "vllm-prometheus" in m.options[(CONTAINER, "vllm-grafana")]["depends_on"]
    else:
        monitors = [t for t in types if t.endswith(":ServiceMonitor")]
        assert bool(monitors) == operator
        dashboards = [r for r in m.resources if r.type == "kubernetes:core/v1:ConfigMap" and "grafana-dashboard" in r.name]
        assert bool(dashboards) == p.monitoring.dashboards


def test_docker_without_its_prometheus_runs_no_grafana_unless_asked_and_then_says_why() -> None:
    """A user with their own Prometheus sets ``prometheus: false``: the stack's Grafana, which would read nothing, stays off."""
    p = plan(parse(docker_raw(monitoring={"prometheus": False})))
    assert p.prometheus is None and p.monitoring.grafana is None and p.urls.grafana is None
    with pytest.raises(ConfigError) as err:
        parse(docker_raw(monitoring={"prometheus": False, "grafana": True}))
    assert err.value.keys == ["monitoring.grafana"]
    assert "monitoring.prometheus: false" in str(err.value) and "remove monitoring.grafana" in str(err.value)
