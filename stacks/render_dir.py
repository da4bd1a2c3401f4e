"""``render --out DIR`` owns what it writes there, and only that.

A manifest (``.vllm-stack-render.json``) lists every file the last render wrote with its content hash. The next
render writes the new set, then removes the files of the old set that are no longer rendered, and only those
still holding what render wrote: a file changed by hand since, or any file render never wrote, is left alone.
Unchanged files are not rewritten, so a GitOps diff shows only what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from stacks.errors import shown

MANIFEST = ".vllm-stack-render.json"
FORMAT = 1


class OutputError(Exception):
    """The output folder cannot be used (a file in the way, no permission); the message says which path."""


@dataclass
class Report:
    """What one render did, by path relative to the output folder."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """Stale files render wrote before but someone changed since: left in place."""
    notes: list[str] = field(default_factory=list)


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _safe(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and rel != MANIFEST


def _previous(out: Path, report: Report) -> dict[str, str]:
    """The files the last render wrote (path -> hash); empty when there was none or its manifest is unreadable."""
    path = out / MANIFEST
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        files = doc["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as err:
        report.notes.append(f"{path} is unreadable ({err}); no earlier file is removed this time")
        return {}
    return {rel: h for rel, h in files.items() if isinstance(rel, str) and isinstance(h, str) and _safe(rel)}


def _write(path: Path, content: bytes) -> None:
    """Whole or not at all: a crash mid-render leaves the old file, never half of the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _prune_empty_dirs(out: Path, rel: str) -> None:
    parent = (out / rel).parent
    while parent != out and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def write_tree(out: Path, files: dict[str, str], stack: str) -> Report:
    """Write ``files`` (relative POSIX paths) under ``out``; remove what the previous render wrote and this one does not."""
    report = Report()
    try:
        if out.exists() and not out.is_dir():
            raise OutputError(f"--out {out} is a file; give a folder (it is created when missing)")
        out.mkdir(parents=True, exist_ok=True)
        previous = _previous(out, report)
        if not (out / MANIFEST).exists():
            others = [p for p in out.rglob("*") if p.is_file() and p.relative_to(out).as_posix() not in files]
            if others:
                report.notes.append(f"{len(others)} file(s) in {out} were not written by this render and no earlier render listed them: left as they are")
        written: dict[str, str] = {}
        for rel, text in files.items():
            content = text.encode()
            written[rel] = digest(content)
            path = out / rel
            if path.is_file() and not path.is_symlink() and digest(path.read_bytes()) == written[rel]:
                report.unchanged.append(rel)
                continue
            _write(path, content)
            report.written.append(rel)
        for rel in sorted(set(previous) - set(files)):
            path = out / rel
            if not path.exists() and not path.is_symlink():
                continue
            if path.is_symlink() or not path.is_file() or digest(path.read_bytes()) != previous[rel]:
                report.kept.append(rel)
                continue
            path.unlink()
            _prune_empty_dirs(out, rel)
            report.removed.append(rel)
        # files kept by hand stay listed, so a later render still knows they were once its own
        owned = {**{rel: previous[rel] for rel in report.kept}, **written}
        manifest = {"format": FORMAT, "writer": "python -m stacks render", "stack": stack, "files": dict(sorted(owned.items()))}
        _write(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    except OSError as err:
        raise OutputError(f"cannot write {shown(err.filename or out)}: {err.strerror or err}") from None
    return report
