"""The LeaderWorkerSet CRD's schema the rendered LeaderWorkerSets are validated against (tests/test_multinode.py).

The Go module sigs.k8s.io/lws ships the CRD the controller installs (config/crd/bases/); this script takes it from the
module as ``go mod download`` fetches it (through the module proxy ``go env GOPROXY`` names, or from the local module
cache with GOPROXY=off) and writes its openAPIV3Schema, descriptions dropped, to tests/data/ with the CRD file's sha256.

    python scripts/lws_crd.py            # (re)write tests/data/lws-crd-<version>.json
    python scripts/lws_crd.py --check    # exit 1 when the committed file differs from the module's CRD
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

MODULE = "sigs.k8s.io/lws"
VERSION = "v0.9.0"
"""The newest release on the module proxy when pinned (2026-06-17, tag v0.9.0, commit f056f611ae77)."""
CRD = "config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml"
ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "tests" / "data" / f"lws-crd-{VERSION}.json"


def module_dir(offline: bool = False) -> Path:
    """The module's extracted folder; ``offline`` reads the local module cache only (nothing is downloaded)."""
    env = {"GOFLAGS": "-mod=mod", **({"GOPROXY": "off"} if offline else {})}
    done = subprocess.run(["go", "mod", "download", "-json", f"{MODULE}@{VERSION}"], capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    info = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "Dir" not in info:
        raise RuntimeError(info.get("Error") or done.stderr.strip() or f"go mod download {MODULE}@{VERSION} failed")
    return Path(info["Dir"])


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


def derive(crd_text: str) -> dict[str, Any]:
    crd = yaml.safe_load(crd_text)
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return {
        "source": f"{MODULE}@{VERSION} {CRD}, spec.versions[v1].schema.openAPIV3Schema, descriptions dropped",
        "sha256": hashlib.sha256(crd_text.encode()).hexdigest(),
        "group": crd["spec"]["group"],
        "kind": crd["spec"]["names"]["kind"],
        "served": version["served"],
        "schema": _without_descriptions(version["schema"]["openAPIV3Schema"]),
    }


def text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    parser.add_argument("--offline", action="store_true", help="read the local Go module cache only")
    args = parser.parse_args(argv)
    doc = derive((module_dir(args.offline) / CRD).read_text())
    if args.check:
        same = SCHEMA_FILE.exists() and SCHEMA_FILE.read_text() == text(doc)
        print(f"{SCHEMA_FILE.relative_to(ROOT)}: {'matches' if same else 'differs from'} {MODULE}@{VERSION} {CRD}")
        return 0 if same else 1
    SCHEMA_FILE.write_text(text(doc))
    print(f"wrote {SCHEMA_FILE.relative_to(ROOT)} ({SCHEMA_FILE.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
