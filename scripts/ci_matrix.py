"""GitHub Actions glue: the job matrix of committed stacks from .github/stacks.yml, and the guard that
refuses to deploy or destroy through an environment nobody has to approve.

    python scripts/ci_matrix.py [--deploy | --drift | --stack NAME] [--require-reviewers]

prints ``matrix=<json>`` and ``any=true|false`` for ``$GITHUB_OUTPUT``. Only PyYAML is needed, so the
matrix job runs before any project package is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / ".github" / "stacks.yml"


def committed_stacks(root: Path = ROOT) -> list[str]:
    return sorted(p.name.split(".")[1] for p in root.glob("Pulumi.*.yaml"))


def stack_target(stack: str, root: Path = ROOT) -> str:
    """``vllm-stack:target`` of a stack file (docker when unset, as in Pulumi.yaml)."""
    doc = yaml.safe_load((root / f"Pulumi.{stack}.yaml").read_text()) or {}
    return str((doc.get("config") or {}).get("vllm-stack:target", "docker"))


def manifest(path: Path = MANIFEST) -> dict[str, dict[str, Any]]:
    stacks: dict[str, dict[str, Any]] = yaml.safe_load(path.read_text())["stacks"]
    return stacks


def entries(select: str | None = None, stack: str | None = None, root: Path = ROOT) -> list[dict[str, Any]]:
    """One matrix entry per selected stack: ``{stack, target, runs-on}``."""
    listed = manifest(root / ".github" / "stacks.yml")
    if stack is not None:
        if stack not in listed:
            raise SystemExit(f"stack {stack!r} is not in .github/stacks.yml (known: {sorted(listed)})")
        chosen = [stack]
    else:
        chosen = [s for s, spec in listed.items() if select is None or spec.get(select, False)]
    return [{"stack": s, "target": stack_target(s, root), "runs-on": listed[s]["runs-on"]} for s in sorted(chosen)]


def has_required_reviewers(environment: dict[str, Any]) -> bool:
    """Whether a ``GET /repos/{repo}/environments/{name}`` answer has a required-reviewers rule with someone in it."""
    return any(rule.get("type") == "required_reviewers" and rule.get("reviewers") for rule in environment.get("protection_rules") or [])


def environment(name: str) -> dict[str, Any] | None:
    """The repository's environment ``name`` from the GitHub API, or None when it does not exist."""
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com")
    url = f"{api}/repos/{os.environ['GITHUB_REPOSITORY']}/environments/{urllib.parse.quote(name, safe='')}"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {os.environ['GITHUB_TOKEN']}", "Accept": "application/vnd.github+json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            found: dict[str, Any] = json.load(resp)
            return found
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def unguarded(stacks: list[str]) -> list[str]:
    """Stacks whose environment is missing or needs no reviewer (GitHub would create it unprotected)."""
    out = []
    for s in stacks:
        env = environment(s)
        if env is None or not has_required_reviewers(env):
            out.append(s)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--deploy", action="store_true", help="only the stacks deployed on push to main")
    group.add_argument("--drift", action="store_true", help="only the stacks the scheduled drift check covers")
    group.add_argument("--stack", help="one stack, deployed or not (destroy)")
    parser.add_argument("--require-reviewers", action="store_true", help="fail unless each stack's environment has required reviewers")
    args = parser.parse_args(argv)
    select = "deploy" if args.deploy else "drift" if args.drift else None
    chosen = entries(select, args.stack)
    if args.require_reviewers:
        missing = unguarded([e["stack"] for e in chosen])
        if missing:
            print(
                f"::error::environment(s) {', '.join(missing)} missing or without required reviewers; create them under "
                "Settings > Environments with at least one required reviewer (docs/ci.md)",
                file=sys.stderr,
            )
            return 1
    print(f"matrix={json.dumps({'include': chosen}, separators=(',', ':'))}")
    print(f"any={'true' if chosen else 'false'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
