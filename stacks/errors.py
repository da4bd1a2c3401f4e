"""The one exception a user mistake produces: a list of (key path, how to fix it)."""

from __future__ import annotations

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
