"""Monitoring objects checked strictly against upstream types (installed by scripts/schema-types.sh):

- ServiceMonitors, the PodMonitor and the PrometheusRule against the prometheus-operator's API types: TypeScript's
  excess-property checks reject unknown or misspelt fields, wrong types and missing required fields; the package's
  JSON-schema validators check patterns and enums (durations, schemes);
- the Grafana dashboards against Grafana 13.2's dashboard types and each panel's options against its panel type's.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stacks.config import load_stack
from stacks.plan import plan
from stacks.render.monitoring import cluster, dashboards
from tests.conftest import ROOT, STACKS, require_program, unavailable
from tests.test_monitoring import with_gateway_metrics

TYPES = ROOT / os.environ.get("SCHEMA_TYPES_DIR", ".cache/schema-types")
OPERATOR = "@kubernetes-models/prometheus-operator"
GRAFANA = "@grafana/schema"
KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
PANEL_OPTIONS = {"timeseries": "TimeSeries", "table": "Table"}
"""Panel type -> the name of its options types in @grafana/schema (raw/composable/<type>/panelcfg)."""
LOOSE = "type Loose<T> = T extends string ? `${T}` : T extends (infer U)[] ? Loose<U>[] : T extends object ? { [K in keyof T]: Loose<T[K]> } : T;"
"""JSON carries an enum's value, not the member: string enums become their values, everything else stays as typed."""


def installed() -> Path:
    require_program("node")
    for package in (OPERATOR, GRAFANA, "typescript"):
        if not (TYPES / "node_modules" / package / "package.json").exists():
            unavailable(f"{package} (run: bash scripts/schema-types.sh)")
    return TYPES


def tsc(lines: list[str]) -> subprocess.CompletedProcess[str]:
    """Type-check a module in the install folder (so the packages resolve)."""
    root = installed()
    source = root / f"check-{os.getpid()}.ts"
    source.write_text("\n".join(lines) + "\n")
    try:
        args = ["--noEmit", "--strict", "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022", "--skipLibCheck"]
        return subprocess.run(["node", "node_modules/typescript/bin/tsc", *args, source.name], cwd=root, capture_output=True, text=True, timeout=120)
    finally:
        source.unlink()


# --- prometheus-operator objects --------------------------------------------------------------------------------------


def operator_objects() -> list[dict[str, Any]]:
    objs = [o for o in cluster.objects(with_gateway_metrics(plan(load_stack("cluster")))) if o["kind"] in KINDS]
    assert {o["kind"] for o in objs} == KINDS
    return objs


def typecheck_operator(objs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    lines = [f'import type {{ I{k} }} from "{OPERATOR}/monitoring.coreos.com/v1/{k}";' for k in sorted(KINDS)]
    lines += [f"export const o{i}: I{o['kind']} = {json.dumps(o)};" for i, o in enumerate(objs)]
    return tsc(lines)


VALIDATE = """
const objs = JSON.parse(await new Promise(r => { let s = ""; process.stdin.on("data", d => s += d); process.stdin.on("end", () => r(s)); }));
let failed = 0;
for (const o of objs) {
  const { [o.kind]: Model } = await import(`@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${o.kind}`);
  try { new Model(o).validate(); } catch (e) { failed++; console.log(`${o.kind} ${o.metadata.name}: ${e.message}`); }
}
console.log(`validated ${objs.length}, failed ${failed}`);
process.exit(failed ? 1 : 0);
"""


def validate(objs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    root = installed()
    return subprocess.run(["node", "--input-type=module", "-e", VALIDATE], cwd=root, input=json.dumps(objs), capture_output=True, text=True, timeout=60)


def test_operator_objects_have_only_known_fields_of_the_right_types() -> None:
    result = typecheck_operator(operator_objects())
    assert result.returncode == 0, result.stdout + result.stderr


def test_typecheck_rejects_a_misspelt_operator_field() -> None:
    objs = operator_objects()
    monitor = next(o for o in objs if o["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = monitor["spec"]["endpoints"][0].pop("interval")
    result = typecheck_operator(objs)
    assert result.returncode != 0 and "intervall" in result.stdout


def test_operator_objects_pass_the_schema_validators() -> None:
    objs = operator_objects()
    result = validate(objs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"validated {len(objs)}, failed 0" in result.stdout


@pytest.mark.parametrize(("field", "bad"), [("interval", "15 seconds"), ("scheme", "ftp")])
def test_schema_validators_reject_bad_values(field: str, bad: str) -> None:
    objs = operator_objects()
    next(o for o in objs if o["kind"] == "ServiceMonitor")["spec"]["endpoints"][0][field] = bad
    assert validate(objs).returncode != 0


# --- Grafana dashboards -----------------------------------------------------------------------------------------------


def typecheck_dashboards(boards: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    raw = f"{GRAFANA}/dist/esm/raw"
    lines = [f'import type {{ Dashboard }} from "{raw}/dashboard/x/Dashboard_types.gen";', LOOSE]
    lines += [f'import type {{ Options as {n}Options }} from "{raw}/composable/{t}/panelcfg/x/{n}PanelCfg_types.gen";' for t, n in PANEL_OPTIONS.items()]
    for i, board in enumerate(boards):
        lines.append(f"export const d{i}: Dashboard = {json.dumps(board)};")
        for panel in board["panels"]:
            # the dashboard types leave options open (Record<string, unknown>): each panel type has its own
            lines.append(f"export const d{i}p{panel['id']}: Loose<{PANEL_OPTIONS[panel['type']]}Options> = {json.dumps(panel['options'])};")
    return tsc(lines)


def test_dashboards_and_panel_options_match_grafanas_types() -> None:
    boards = [b for stack in STACKS for b in dashboards.dashboards(with_gateway_metrics(plan(load_stack(stack)))).values()]
    result = typecheck_dashboards(boards)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("where", ["dashboard", "panel", "options"])
def test_dashboard_typecheck_rejects_a_misspelt_field(where: str) -> None:
    board = dashboards.models(plan(load_stack("dev")))
    target = {"dashboard": board, "panel": board["panels"][0], "options": board["panels"][0]["options"]["legend"]}[where]
    target["gridpos" if where == "panel" else "refreshh" if where == "dashboard" else "placementt"] = 1
    result = typecheck_dashboards([board])
    assert result.returncode != 0 and "TS2353" in result.stdout, result.stdout
