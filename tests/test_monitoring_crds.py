"""The prometheus-operator objects, checked strictly against the operator's API types (scripts/operator-types.sh):
TypeScript's excess-property checks reject unknown or misspelt fields, wrong types and missing required fields;
the package's JSON-schema validators check patterns and enums (durations, relabel actions)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stacks.config import load_stack
from stacks.plan import plan
from stacks.render.monitoring import cluster
from tests.conftest import ROOT, require_program, unavailable
from tests.test_monitoring import with_gateway_metrics

TYPES = ROOT / os.environ.get("OPERATOR_TYPES_DIR", ".cache/operator-types")
PACKAGE = "@kubernetes-models/prometheus-operator"
KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def operator_objects() -> list[dict[str, Any]]:
    objs = [o for o in cluster.objects(with_gateway_metrics(plan(load_stack("cluster")))) if o["kind"] in KINDS]
    assert {o["kind"] for o in objs} == KINDS
    return objs


def installed() -> Path:
    require_program("node")
    if not (TYPES / "node_modules" / PACKAGE / "package.json").exists():
        unavailable(f"{PACKAGE} (run: bash scripts/operator-types.sh)")
    return TYPES


def typecheck(objs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """tsc over one typed constant per object; its file lives in the install folder so the package resolves."""
    root = installed()
    lines = [f'import type {{ I{k} }} from "{PACKAGE}/monitoring.coreos.com/v1/{k}";' for k in sorted(KINDS)]
    lines += [f"export const o{i}: I{o['kind']} = {json.dumps(o)};" for i, o in enumerate(objs)]
    source = root / f"check-{os.getpid()}.ts"
    source.write_text("\n".join(lines) + "\n")
    try:
        args = ["--noEmit", "--strict", "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022", "--skipLibCheck"]
        return subprocess.run(["node", "node_modules/typescript/bin/tsc", *args, source.name], cwd=root, capture_output=True, text=True, timeout=120)
    finally:
        source.unlink()


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
    result = typecheck(operator_objects())
    assert result.returncode == 0, result.stdout + result.stderr


def test_typecheck_rejects_a_misspelt_field() -> None:
    objs = operator_objects()
    monitor = next(o for o in objs if o["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = monitor["spec"]["endpoints"][0].pop("interval")
    result = typecheck(objs)
    assert result.returncode != 0 and "intervall" in result.stdout


def test_operator_objects_pass_the_schema_validators() -> None:
    objs = operator_objects()
    result = validate(objs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"validated {len(objs)}, failed 0" in result.stdout


@pytest.mark.parametrize(
    ("kind", "path", "bad"),
    [("ServiceMonitor", ("spec", "endpoints", 0, "interval"), "15 seconds"), ("ServiceMonitor", ("spec", "endpoints", 0, "scheme"), "ftp")],
)
def test_schema_validators_reject_bad_values(kind: str, path: tuple[str | int, ...], bad: str) -> None:
    objs = operator_objects()
    target: Any = next(o for o in objs if o["kind"] == kind)
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = bad
    assert validate(objs).returncode != 0
