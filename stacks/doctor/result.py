"""One check's outcome: what was looked at, what was found, and how to fix it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["pass", "warn", "fail", "skip"]


@dataclass(frozen=True)
class Check:
    area: str
    """gpu, docker, kubernetes, disk, host, ports or secrets."""
    name: str
    status: Status
    detail: str
    """What was found."""
    fix: str = ""
    """What to do; every failure and warning has one."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def skipped(area: str, names: list[str], why: str, fix: str = "") -> list[Check]:
    return [Check(area, n, "skip", why, fix) for n in names]
