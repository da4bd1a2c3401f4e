"""The one exception a user mistake produces (a list of key path and how to fix it), and the one line an internal error gets."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the stack config."""

    key: str
    """Key path in the stack file, e.g. ``models[1].gpuMemoryUtilization``."""
    message: str
    """What is wrong and how to fix it."""

    def __str__(self) -> str:
        return f"vllm-stack:{self.key}: {self.message}" if self.key else self.message


class ConfigError(ValueError):
    """Raised for bad stack config, before any resource is declared.

    Carries every problem found, not only the first.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in the stack config:"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.problems]


def shown(value: object, limit: int = 120) -> str:
    """A path or value for a message: a very long one is cut, with its length said."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


DEBUG_ENV = "VLLM_STACK_DEBUG"
"""Set to 1 to get the traceback of an internal error instead of its one line."""


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def internal_error(err: BaseException) -> str:
    """One line for an error that is vllm-stack's fault, not the user's: what happened and how to report it."""
    what = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    return (
        f"internal error in vllm-stack ({type(err).__name__}{': ' + what if what else ''}); this is a bug, not a mistake in your stack: "
        f"please report it with the command you ran and your stack file (secrets are never in it); {DEBUG_ENV}=1 shows the traceback"
    )
