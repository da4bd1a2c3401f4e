"""The docs say what the code does: the configuration reference is the schema's, the quickstart runs as
written, links and commands exist, and the names the guides tell users to type are the program's."""

from __future__ import annotations

import json
import re
import subprocess
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from stacks.cli import main
from stacks.config import StackConfig
from stacks.config.reference import render
from stacks.config.schema import yaml_key
from tests.conftest import ROOT
from tests.mock_engine import FAKE_SECRETS, run_program, stack_config

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
REFERENCE = ROOT / "docs" / "configuration.md"


def test_committed_configuration_reference_is_in_sync() -> None:
    assert REFERENCE.read_text() == render(), "run: make docs"


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The config sections inside an annotation (``X | None``, ``list[X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, types.UnionType, list):
        return [m for arg in get_args(annotation) for m in _models(arg)]
    return []


def _keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{yaml_key(name)}"
        out.append((key, field))
        for sub in _models(field.annotation):
            is_list = get_origin(field.annotation) is list or any(get_origin(a) is list for a in get_args(field.annotation))
            out += _keys(sub, f"{key}[]." if is_list else f"{key}.")
    return out


def test_reference_lists_every_key_with_its_description_and_default() -> None:
    """Walks the pydantic models themselves (not the JSON Schema the generator reads)."""
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([^`]+)` \|.*$", REFERENCE.read_text(), re.M)}
    keys = _keys(StackConfig)
    assert len(keys) > 80 and set(rows) == {k for k, _ in keys}
    for key, field in keys:
        row = rows[key]
        assert (field.description or "").replace("``", "`").replace("\n", " ").split("`")[0] in row, key
        if field.is_required():
            assert "*required*" in row, key
        elif field.default is not None and not isinstance(field.default, BaseModel | list | dict):
            assert f"`{json.dumps(field.default)}`" in row, key


def _quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    quick = readme[readme.index("## Quickstart") : readme.index("### Deploy")]
    return [line.split("#", 1)[0].strip() for line in quick.splitlines() if line.startswith("python -m stacks ")]


def test_quickstart_commands_run_as_written_in_the_activated_venv(tmp_path: Path) -> None:
    commands = _quickstart_commands()
    assert len(commands) >= 4
    for cmd in commands:
        cmd = cmd.replace("--out out/dev", f"--out {tmp_path}")
        r = subprocess.run(["bash", "-c", f". .venv/bin/activate && {cmd}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{cmd}: {r.stderr}"
    assert (tmp_path / "plan.json").exists()


def test_links_between_docs_resolve() -> None:
    for doc in DOCS:
        prose = re.sub(r"`[^`\n]*`", "", doc.read_text())  # code spans hold regexes, not links
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", prose):
            if not target.startswith(("http://", "https://")):
                assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)}: {target}"


def test_commands_the_docs_name_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    parser_help = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "stacks", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    for doc in DOCS:
        text = doc.read_text()
        for target in re.findall(r"`make ([a-z][\w-]*)", text):
            assert target in targets, f"{doc.relative_to(ROOT)}: make {target}"
        for sub in re.findall(r"python -m stacks ([a-z][\w-]*)", text):
            assert sub in parser_help, f"{doc.relative_to(ROOT)}: python -m stacks {sub}"
        for script in re.findall(r"scripts/[\w.]+\.(?:py|sh)", text):
            assert (ROOT / script).exists(), script


def test_names_the_backup_guide_uses_are_the_programs() -> None:
    guide = (ROOT / "docs/guides/backup-restore.md").read_text()
    dev = run_program("dev")
    volumes = {r.inputs["name"] for r in dev.of_type("docker:index/volume:Volume")}
    containers = {r.inputs["name"] for r in dev.of_type("docker:index/container:Container")}
    assert "vllm-stack-dev-webui-data" in volumes and "vllm-stack-dev-webui-data" in guide
    assert "vllm-stack-dev-open-webui" in containers and "vllm-stack-dev-open-webui" in guide
    cluster = run_program("cluster")
    claims = {r.inputs["metadata"]["name"] for r in cluster.of_type("kubernetes:core/v1:PersistentVolumeClaim")}
    deployments = {r.inputs["metadata"]["name"] for r in cluster.of_type("kubernetes:apps/v1:Deployment")}
    namespace = yaml.safe_load((ROOT / "Pulumi.cluster.yaml").read_text())["config"]["vllm-stack:kubernetes"]["namespace"]
    assert "open-webui-data" in claims and "open-webui" in deployments and f"NS={namespace}" in guide


def test_remote_docker_host_keys_are_left_to_the_provider(tmp_path: Path) -> None:
    """The remote-host guide's stack file: docker:host and docker:sshOpts beside the stack's own keys."""
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["docker:host"] = "ssh://deploy@gpu-box.lan"
    doc["config"]["docker:sshOpts"] = ["-o", "ServerAliveInterval=30"]
    path = tmp_path / "Pulumi.remote.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["plan", str(path)]) == 0
    cfg, secret_keys = stack_config("dev")
    cfg["docker:host"] = "ssh://deploy@gpu-box.lan"
    cfg["docker:sshOpts"] = json.dumps(["-o", "ServerAliveInterval=30"])
    m = run_program("dev", secrets={k: FAKE_SECRETS[k] for k in secret_keys}, config=cfg)
    assert m.of_type("docker:index/container:Container")


@pytest.mark.parametrize("guide", sorted(p.name for p in (ROOT / "docs/guides").glob("*.md")))
def test_every_guide_is_linked_from_the_readme(guide: str) -> None:
    assert f"docs/guides/{guide}" in (ROOT / "README.md").read_text()
