"""The real Pulumi engine (`make engine`) on a copy of the project, with a local file backend and passphrase secrets.

Each ``Project`` is a temporary folder holding Pulumi.yaml and links to the program's code and the repository's
virtualenv, its own state backend (``file://``), its own PULUMI_HOME (no plugin is ever downloaded: the providers
are found on PATH), and stack files written by the test. Every ``pulumi`` call is bounded in time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, unavailable

BINARIES = (
    "pulumi",
    "pulumi-language-python",
    "pulumi-language-python-exec",
    "pulumi-resource-kubernetes",
    "pulumi-resource-random",
    "pulumi-resource-docker",
)
PASSPHRASE = "engine tests passphrase"
# what the program imports and reads at run time; the policy pack too (policy/ runs in the same virtualenv)
LINKED = ("__main__.py", "components", "stacks", "policy", ".venv")


def engine_bin() -> Path:
    """The folder `make engine` builds into; skips (fails under CI) while a binary is missing."""
    out = subprocess.run(["bash", "scripts/engine.sh", "--bin-dir"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        unavailable(f"the Pulumi engine ({out.stderr.strip()})")
    bin_dir = Path(out.stdout.strip())
    missing = [b for b in BINARIES if not (bin_dir / b).exists()]
    if missing:
        unavailable(f"the Pulumi engine in {bin_dir} (missing {', '.join(missing)}; run `make engine`)")
    return bin_dir


def committed_config(stack: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    config: dict[str, Any] = doc["config"]
    return config


@dataclass
class Project:
    dir: Path
    bin: Path
    env: dict[str, str]

    @classmethod
    def create(cls, tmp: Path, bin_dir: Path, extra_env: dict[str, str] | None = None) -> Project:
        project = tmp / "project"
        project.mkdir()
        shutil.copy(ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
        for name in LINKED:
            (project / name).symlink_to(ROOT / name)
        (tmp / "state").mkdir()
        (tmp / "home").mkdir()
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PULUMI_BACKEND_URL": f"file://{tmp / 'state'}",
            "PULUMI_HOME": str(tmp / "home"),
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
            "NO_COLOR": "1",
            **(extra_env or {}),
        }
        return cls(project, bin_dir, env)

    def run(self, *args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(["pulumi", *args, "--non-interactive"], cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            # the engine's own error lines first: a failed update's output is long
            errors = "\n".join(line for line in out.stdout.splitlines() if "error:" in line and "Traceback" not in line)[:6000]
            tail = f"--- stdout\n{out.stdout[-3000:]}\n--- stderr\n{out.stderr[-3000:]}"
            raise AssertionError(f"pulumi {' '.join(args)} exited {out.returncode}\n--- errors\n{errors}\n{tail}")
        return out

    def stack(self, name: str, config: dict[str, Any], secrets: dict[str, str] | None = None) -> None:
        """A new stack with ``config`` (the committed file's keys) and ``secrets`` set as Pulumi secrets."""
        self.write_config(name, config)
        self.run("stack", "init", name, "--secrets-provider", "passphrase")
        for key, value in (secrets or {}).items():
            # the value on stdin: a secret never sits in a command line
            out = subprocess.run(
                ["pulumi", "config", "set", "--secret", "--stack", name, key, "--non-interactive"],
                cwd=self.dir, env=self.env, input=value, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert out.returncode == 0, out.stderr

    def write_config(self, name: str, config: dict[str, Any]) -> None:
        path = self.dir / f"Pulumi.{name}.yaml"
        doc = yaml.safe_load(path.read_text()) if path.exists() else {}
        kept = {k: v for k, v in (doc or {}).get("config", {}).items() if isinstance(v, dict) and "secure" in v}
        doc = {**(doc or {}), "config": {**config, **kept}}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def config(self, name: str) -> dict[str, Any]:
        doc = yaml.safe_load((self.dir / f"Pulumi.{name}.yaml").read_text())
        config: dict[str, Any] = doc["config"]
        return config

    def preview_json(self, stack: str, *extra: str, timeout: int = 600) -> dict[str, Any]:
        out = self.run("preview", "--stack", stack, "--json", "--diff", *extra, timeout=timeout)
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc

    def export(self, stack: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.run("stack", "export", "--stack", stack).stdout)
        return doc


def steps_by_urn(preview: dict[str, Any]) -> dict[str, str]:
    """``pulumi preview --json``'s steps: resource URN -> op (same, create, update, replace, delete...)."""
    return {s["urn"]: s["op"] for s in preview.get("steps", [])}


def urn_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def urn_type(urn: str) -> str:
    return urn.split("::")[-2].rsplit("$", 1)[-1]
