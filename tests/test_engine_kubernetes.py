"""The cluster stack through the real Pulumi engine and the real kubernetes provider (`make engine`).

`pulumi up` in the provider's render mode (``kubernetes.renderYamlTo``) writes every object as YAML without a
cluster; those objects must be the ones ``python -m stacks render`` writes, object by object. The state the engine
keeps must hold no secret in plain text, and the policy pack runs under the real policy engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.engine_harness import Project, committed_config, engine_bin, steps_by_urn, urn_type

SECRETS = {
    "vllm-stack:apiKeys": "sk-engine-test-client-key-0123456789abcdef",
    "vllm-stack:hfToken": "hf_engineTestToken0123456789abcdefABCDEF",
}


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return engine_bin()


def _objects(folder: Path) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """Every YAML document under ``folder`` by (apiVersion, kind, namespace, name)."""
    found: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for path in sorted(folder.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            meta = doc["metadata"]
            key = (doc["apiVersion"], doc["kind"], meta.get("namespace", ""), meta["name"])
            assert key not in found, f"{key} written twice ({path})"
            found[key] = doc
    return found


@pytest.fixture(scope="module")
def rendered(bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, Path]]:
    """The cluster stack, `pulumi up` in render mode into a folder, with both secrets set."""
    tmp = tmp_path_factory.mktemp("engine-cluster")
    project = Project.create(tmp, bin_dir)
    config = committed_config("cluster")
    out = tmp / "rendered"
    config["vllm-stack:kubernetes"] = {**config["vllm-stack:kubernetes"], "renderYamlTo": str(out)}
    project.stack("cluster", config, SECRETS)
    project.run("up", "--stack", "cluster", "--yes", "--skip-preview", timeout=900)
    yield project, out


def _created_types(bin_dir: Path, tmp_path: Path, stack: str) -> set[str]:
    """The resource types a preview of the committed ``stack`` plans, every step a create."""
    project = Project.create(tmp_path, bin_dir)
    project.stack(stack, committed_config(stack), SECRETS)
    ops = steps_by_urn(project.preview_json(stack))
    assert ops and set(ops.values()) == {"create"}, ops
    return {urn_type(u) for u in ops}


def test_preview_of_the_committed_cluster_stack_plans_every_object(bin_dir: Path, tmp_path: Path) -> None:
    types = _created_types(bin_dir, tmp_path, "cluster")
    # the provider checked every kind the stack declares, the CRD-backed ones included
    for t in (
        "kubernetes:apps/v1:Deployment",
        "kubernetes:core/v1:Service",
        "kubernetes:core/v1:Secret",
        "kubernetes:networking.k8s.io/v1:Ingress",
        "kubernetes:monitoring.coreos.com/v1:ServiceMonitor",
        "kubernetes:keda.sh/v1alpha1:ScaledObject",
        "random:index/randomPassword:RandomPassword",
    ):
        assert t in types, (t, sorted(types))


def test_preview_of_the_committed_multinode_stack_plans_the_leader_worker_set(bin_dir: Path, tmp_path: Path) -> None:
    """A server spanning nodes: the kubernetes provider checks the LeaderWorkerSet (a CRD kind), its NetworkPolicy and
    PodDisruptionBudget as the program declares them."""
    types = _created_types(bin_dir, tmp_path, "multinode")
    for t in (
        "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet",
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        "kubernetes:policy/v1:PodDisruptionBudget",
    ):
        assert t in types, (t, sorted(types))


def test_render_mode_writes_the_objects_stacks_render_writes(rendered: tuple[Project, Path], tmp_path: Path) -> None:
    _, out = rendered
    engine = _objects(out)
    cli = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "stacks", "render", "cluster", "--out", str(cli)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ours = _objects(cli / "kubernetes")
    assert sorted(engine) == sorted(ours), {"engine only": sorted(set(engine) - set(ours)), "render only": sorted(set(ours) - set(engine))}
    for key, obj in ours.items():
        assert engine[key] == obj, key


SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")


def is_secret(value: Any) -> bool:
    """A value the state keeps encrypted (Pulumi's secret signature with a ciphertext)."""
    return isinstance(value, dict) and value.get(SECRET_SIG[0]) == SECRET_SIG[1] and "ciphertext" in value


def test_state_holds_no_plaintext_secret(rendered: tuple[Project, Path]) -> None:
    project, out = rendered
    exported = project.export("cluster")
    state = json.dumps(exported)
    resources = exported["deployment"]["resources"]
    # the generated ones: every RandomPassword's result is a secret, and its value appears nowhere in plain text
    generated = [r for r in resources if r["type"] == "random:index/randomPassword:RandomPassword"]
    assert len(generated) >= 3, [r["urn"] for r in generated]
    for r in generated:
        assert is_secret(r["outputs"]["result"]), r["urn"]
    # their values, decrypted by the engine itself, appear nowhere in plain text: not in the state, not in a file
    shown = json.loads(project.run("stack", "export", "--show-secrets", "--stack", "cluster").stdout)
    values = [r["outputs"]["result"]["plaintext"] for r in shown["deployment"]["resources"] if r["type"] == "random:index/randomPassword:RandomPassword"]
    assert len(values) == len(generated) and all(len(json.loads(v)) >= 32 for v in values), values
    for value in [*SECRETS.values(), *(json.loads(v) for v in values)]:
        assert value not in state
        for path in out.rglob("*"):
            assert not path.is_file() or value not in path.read_text(), path


def test_policy_pack_passes_the_cluster_stack_and_refuses_a_broken_copy(bin_dir: Path, tmp_path: Path) -> None:
    project = Project.create(tmp_path, bin_dir)
    project.stack("cluster", committed_config("cluster"), SECRETS)
    passed = project.run("preview", "--stack", "cluster", "--policy-pack", "policy", timeout=600)
    assert "Policies:" in passed.stdout and "vllm-stack@v0.1.0" in passed.stdout, passed.stdout[-3000:]

    broken = {**committed_config("cluster"), "vllm-stack:retainDataOnDestroy": False}
    project.stack("broken", broken, SECRETS)
    refused = project.run("preview", "--stack", "broken", "--policy-pack", "policy", timeout=600, check=False)
    assert refused.returncode != 0
    text = refused.stdout + refused.stderr
    assert "[mandatory]  data-kept-on-destroy" in text, text[-4000:]
    assert "pulumi destroy would delete this data (set vllm-stack:retainDataOnDestroy: true" in text, text[-4000:]
