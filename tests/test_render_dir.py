"""`render --out DIR` owns what it wrote there and nothing else: stale files go, a user's own files stay, names
do not move when models come and go, files inside ConfigMaps read as themselves, and it says which Secrets to create."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.cli import main
from stacks.config import load_stack
from stacks.plan import plan
from stacks.render import kubernetes as kube_manifests
from stacks.render_dir import MANIFEST, digest
from tests.conftest import ROOT

CLUSTER = yaml.safe_load((ROOT / "Pulumi.cluster.yaml").read_text())


def cluster_file(tmp_path: Path, models: list[str] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """The cluster stack, keeping only the named models (and Open WebUI's embedding model), as a file of its own."""
    doc = copy.deepcopy(CLUSTER)
    if models is not None:
        doc["config"]["vllm-stack:models"] = [m for m in doc["config"]["vllm-stack:models"] if m["name"] in [*models, "embed"]]
    path = tmp_path / f"Pulumi.c{len(list(tmp_path.glob('Pulumi.*')))}.yaml"
    path.write_text(yaml.safe_dump(doc | (extra or {})))
    return path


def render(capsys: pytest.CaptureFixture[str], stack: Path | str, out: Path) -> list[str]:
    assert main(["render", str(stack), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out.splitlines()


def tree(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def test_stale_files_go_and_a_users_own_files_stay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    render(capsys, cluster_file(tmp_path), out)
    first = tree(out)
    assert "kubernetes/30-deployment-vllm-qwen3-32b.yaml" in first and MANIFEST in first
    (out / "kustomization.yaml").write_text("resources: []\n")  # the user's own
    (out / "kubernetes" / "notes.md").write_text("mine\n")
    lines = render(capsys, cluster_file(tmp_path, ["qwen3-8b", "llama-3-1-8b"]), out)
    gone = {f"kubernetes/{f}-vllm-qwen3-32b.yaml" for f in ("30-deployment", "40-service", "90-servicemonitor")}
    assert tree(out) == (first - gone) | {"kustomization.yaml", "kubernetes/notes.md"}
    assert {f"removed   {out / rel}" for rel in gone} <= set(lines)
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["files"]) == first - gone - {MANIFEST}
    assert all(manifest["files"][rel] == digest((out / rel).read_bytes()) for rel in manifest["files"])


def test_a_stale_file_changed_by_hand_is_kept_and_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    render(capsys, cluster_file(tmp_path), out)
    edited = out / "kubernetes/40-service-vllm-qwen3-32b.yaml"
    edited.write_text(edited.read_text() + "# tuned by hand\n")
    lines = render(capsys, cluster_file(tmp_path, ["qwen3-8b"]), out)
    assert edited.exists() and not (out / "kubernetes/30-deployment-vllm-qwen3-32b.yaml").exists()
    assert any(line.startswith(f"kept      {edited}") and "delete it yourself" in line for line in lines)


def test_rendering_again_rewrites_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    first = render(capsys, "cluster", out)
    assert {line.split()[0] for line in first if line.startswith(("wrote", "unchanged", "removed", "kept"))} == {"wrote"}
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != MANIFEST}
    again = render(capsys, "cluster", out)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert sum(line.startswith("unchanged ") for line in again) == len(mtimes)


def test_file_names_stay_when_models_come_and_go(tmp_path: Path) -> None:
    names = {}
    for keep in (["qwen3-8b"], ["qwen3-8b", "llama-3-1-8b", "qwen3-32b"], ["llama-3-1-8b", "qwen3-32b"]):
        names[len(keep), keep[0]] = set(kube_manifests.render(plan(load_stack(str(cluster_file(tmp_path, keep))))))
    full = names[3, "qwen3-8b"]
    assert names[1, "qwen3-8b"] < full and names[2, "llama-3-1-8b"] < full, "removing a model only removes its own files"
    assert {n for n in full - names[1, "qwen3-8b"] if "qwen3-8b" in n} == set()


def test_apply_order_by_kind() -> None:
    """`kubectl apply -f DIR` takes files by name: the namespace first, claims and config before the workloads,
    Services and what points at a workload after it."""
    rendered = kube_manifests.render(plan(load_stack("cluster")))
    kinds = [yaml.safe_load(rendered[name])["kind"] for name in sorted(rendered)]
    order = ["Namespace", "PersistentVolumeClaim", "ConfigMap", "DaemonSet", "Deployment", "Service", "PodDisruptionBudget", "Ingress", "ScaledObject"]
    assert kinds[0] == "Namespace"
    assert [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k] == [k for k in order if k in kinds]


def test_config_files_are_block_strings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    render(capsys, "cluster", tmp_path)
    text = (tmp_path / "kubernetes/20-configmap-gateway-files.yaml").read_text()
    assert "  nginx.conf: |" in text and "  router.js: |" in text
    nginx = (tmp_path / "gateway/nginx.conf").read_text()
    assert "\n    " + nginx.splitlines()[1] + "\n" in text, "each nginx.conf line is its own YAML line"
    assert yaml.safe_load(text.split("\n", 1)[1])["data"]["nginx.conf"] == nginx


def test_render_lists_what_it_wrote_and_the_secrets_to_create(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = render(capsys, "cluster", tmp_path)
    written = {line.split(" ", 1)[1].strip() for line in lines if line.startswith("wrote ")}
    assert written == {str(tmp_path / rel) for rel in tree(tmp_path) - {MANIFEST}}
    start = next(i for i, line in enumerate(lines) if line.startswith("Secrets to create in namespace llm"))
    listed = {line.split()[0]: line.split("keys: ")[1] for line in lines[start + 1 :]}
    refs: dict[str, list[str]] = {}
    for ref in kube_manifests.secret_refs(plan(load_stack("cluster"))):
        refs.setdefault(ref.secret, []).append(ref.key + (" (optional)" if ref.optional else ""))
    assert listed == {name: ", ".join(keys) for name, keys in refs.items()}
    assert listed["hf-token"] == "token (optional)" and set(listed) == {"hf-token", "vllm-api-key", "gateway-keys", "open-webui"}


def test_docker_stacks_list_no_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert not any("Secrets" in line for line in render(capsys, "dev", tmp_path))


def test_a_manifest_that_lies_removes_nothing_outside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Entries reaching outside the folder (or the manifest itself) are never followed."""
    out = tmp_path / "out"
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({"format": 1, "files": {"../precious.txt": digest(b"keep"), str(outside): digest(b"keep")}}))
    render(capsys, "dev", out)
    assert outside.read_text() == "keep"
    (out / MANIFEST).write_text("{not json")
    lines = render(capsys, "dev", out)
    assert any(line.startswith("note: ") and "unreadable" in line for line in lines)
