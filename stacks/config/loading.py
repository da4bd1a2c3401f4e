"""From a stack file or Pulumi's config to a checked ``StackConfig``, or one ``ConfigError`` listing every problem.

Reading (YAML, namespaces, Pulumi's string scalars, secrets), validation (schema, then cross-field
rules) and the translation of pydantic's errors into key paths with fixes all happen here, once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from stacks.config.rules import cross_field_problems
from stacks.config.schema import BOOLEAN_KEYS, SCALAR_KEYS, STRUCTURED_KEYS, StackConfig
from stacks.errors import ConfigError, Problem

NAMESPACE = "vllm-stack"
SECRET_KEYS = ("hfToken", "apiKeys", "vllmApiKey")
"""Config keys that must be set with ``pulumi config set --secret``; their values never enter ``StackConfig``."""
ROOT = Path(__file__).resolve().parents[2]


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def _pydantic_problems(err: ValidationError) -> list[Problem]:
    problems = []
    for e in err.errors():
        # Drop union-branch names pydantic adds (e.g. "literal['auto']", "float").
        loc = tuple(p for p in e["loc"] if isinstance(p, int) or (_KEY.match(p) and p not in {"float", "int", "str", "bool"}))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling against schema/stack-config.schema.json"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "string_pattern_mismatch":
            msg = f"{e['input']!r} does not match {e['ctx']['pattern']}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        problems.append(Problem(_path(loc), msg))
    # One problem per key: union branches (0.5 or "auto") report the same location once each.
    merged: dict[str, list[str]] = {}
    for p in problems:
        msgs = merged.setdefault(p.key, [])
        if p.message not in msgs:
            msgs.append(p.message)
    return [Problem(key, "; or ".join(msgs)) for key, msgs in merged.items()]


def _secret_problems(raw: dict[str, Any]) -> list[Problem]:
    """Takes the secret keys out of ``raw``; a value that is not ``{secure: ...}`` is plain text in the stack file."""
    problems = []
    for key in SECRET_KEYS:
        if key in raw:
            value = raw.pop(key)
            if not (isinstance(value, dict) and set(value) == {"secure"}):
                problems.append(Problem(key, f"is in plain text; run `pulumi config set --secret {NAMESPACE}:{key} <value>`"))
    return problems


def parse(raw: dict[str, Any]) -> StackConfig:
    """Validate an un-namespaced mapping (``{"models": [...], ...}``) fully, or raise ConfigError."""
    problems = _secret_problems(raw)
    try:
        config = StackConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(problems + _pydantic_problems(err)) from None
    problems += cross_field_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def from_pulumi(get: Callable[[str], str | None], get_object: Callable[[str], Any], is_secret: Callable[[str], bool]) -> StackConfig:
    """Validate what Pulumi's config holds (the callables are ``pulumi.Config``'s, so this module imports no Pulumi).

    Pulumi hands scalar keys over as strings: the boolean ones become booleans here.
    """
    raw: dict[str, Any] = {}
    for key in SCALAR_KEYS:
        value = get(key)
        if value is not None:
            raw[key] = {"true": True, "false": False}.get(value.lower(), value) if key in BOOLEAN_KEYS else value
    for key in STRUCTURED_KEYS:
        obj = get_object(key)
        if obj is not None:
            raw[key] = obj
    for key in SECRET_KEYS:
        value = get(key)
        if value is not None:
            # the value itself never goes further than this line
            raw[key] = {"secure": "set"} if is_secret(f"{NAMESPACE}:{key}") else value
    return parse(raw)


def strip_namespace(config_block: dict[str, Any]) -> dict[str, Any]:
    """``{"vllm-stack:models": ...}`` -> ``{"models": ...}``; other namespaces (``docker:host``) are left out."""
    raw: dict[str, Any] = {}
    problems = []
    for key, value in (config_block or {}).items():
        ns, sep, name = str(key).partition(":")
        if not sep:
            problems.append(Problem(str(key), f"keys need the namespace: write {NAMESPACE}:{key}"))
        elif ns == NAMESPACE:
            raw[name] = value
    if problems:
        raise ConfigError(problems)
    return raw


def stack_file(stack: str, root: Path = ROOT) -> Path:
    """A stack name (``dev`` -> ``Pulumi.dev.yaml`` at the repo root) or a path to a stack file."""
    p = Path(stack)
    if p.suffix in {".yaml", ".yml"} or p.exists():
        return p
    return root / f"Pulumi.{stack}.yaml"


def read_stack_file(path: Path) -> dict[str, Any]:
    """The un-namespaced config mapping of a stack file."""
    if not path.is_file():
        raise ConfigError([Problem("", f"no stack file at {path}; create it or name an existing stack")])
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError([Problem("", f"{path} is not valid YAML: {err}")]) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}), dict):
        raise ConfigError([Problem("", f"{path} must hold a mapping with a `config:` mapping")])
    return strip_namespace(doc.get("config") or {})


def provider_setting(path: Path, key: str) -> str | None:
    """A provider's key in a stack file (``docker:host``): the stack's config leaves other namespaces out."""
    try:
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    value = config.get(key) if isinstance(config, dict) else None
    return str(value) if isinstance(value, str | int) else None


def load_stack(stack: str) -> StackConfig:
    """Read and validate a stack by name or path."""
    return parse(read_stack_file(stack_file(stack)))


def json_schema() -> dict[str, Any]:
    schema = StackConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vllm-stack config (keys under the vllm-stack: namespace)"
    return schema
