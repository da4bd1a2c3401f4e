"""From a stack file or Pulumi's config to a checked ``StackConfig``, or one ``ConfigError`` listing every problem.

Reading (YAML, namespaces, Pulumi's string scalars, secrets), validation (schema, then cross-field
rules) and the translation of pydantic's errors into key paths with fixes all happen here, once.
"""

from __future__ import annotations

import difflib
import errno
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from stacks.config import strict_yaml
from stacks.config.rules import cross_field_problems
from stacks.config.schema import BOOLEAN_KEYS, FORMS, SCALAR_KEYS, STRUCTURED_KEYS, StackConfig
from stacks.config.strict_yaml import LongNumber, YamlProblem, number_or_long
from stacks.config.unsupported import unsupported
from stacks.errors import ConfigError, Problem, shown

NAMESPACE = "vllm-stack"
SECRET_KEYS = ("hfToken", "apiKeys", "vllmApiKey", "webuiOidcClientSecret")
"""Config keys that must be set with ``pulumi config set --secret``; their values never enter ``StackConfig``."""
STACK_KEYS = frozenset((*SCALAR_KEYS, *STRUCTURED_KEYS, *SECRET_KEYS))
"""The stack's own keys: an endpoint's ``apiKeySecret`` names a key of its own."""
ROOT = Path(__file__).resolve().parents[2]


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# Branch names pydantic puts in an error's location for a union (``0.5`` or ``"auto"``); they are no key of the file.
_UNION_TAG = re.compile(r"^(constrained-)?(float|int|str|bool)$|^literal\[|^function-")
_EXPECTS = {
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "finite_number": "a finite number",
}


def _got(value: Any) -> str:
    """What the stack file holds, for a message: short strings are shown, anything longer only by its type."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "nothing (null)"
    if isinstance(value, LongNumber):
        return repr(value)
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) <= 16 else "a string"
    if isinstance(value, list | dict):
        return "a list" if isinstance(value, list) else "a mapping"
    return f"a {type(value).__name__}"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config section an annotation holds (``list[ModelConfig] | None`` -> ModelConfig)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _section(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The config section at ``loc`` (None when ``loc`` leads nowhere)."""
    model: type[BaseModel] | None = StackConfig
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = next((f for name, f in model.model_fields.items() if (f.alias or name) == part), None)
        model = _model_in(field.annotation) if field else None
    return model


def _section_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the section at ``loc`` accepts (empty when ``loc`` leads nowhere)."""
    model = _section(loc)
    if model is None:
        return []
    keys = [f.alias or name for name, f in model.model_fields.items()]
    return keys + list(SECRET_KEYS) if model is StackConfig else keys


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    """A feature the stack lacks says so; else did you mean: the same key in another spelling (``max_model_len``,
    ``MaxModelLen``), else the closest one."""
    key = str(loc[-1])
    section = _section(loc[:-1])
    lacking = unsupported(section.__name__, key) if section else None
    if lacking:
        return lacking
    keys = _section_keys(loc[:-1])
    folded = {k.lower(): k for k in keys}
    near = folded.get(key.lower().replace("_", "").replace("-", "")) or next(iter(difflib.get_close_matches(key, keys, n=1, cutoff=0.6)), None)
    if near:
        return f"unknown key; did you mean {near}?"
    return f"unknown key; this section takes {', '.join(keys)}" if keys else "unknown key; see schema/stack-config.schema.json"


def _pydantic_problems(err: ValidationError) -> list[Problem]:
    problems = []
    for e in err.errors():
        kind = e["type"]
        last = len(e["loc"]) - 1
        # an unknown key is the user's word, whatever it looks like
        loc = tuple(p for i, p in enumerate(e["loc"]) if isinstance(p, int) or not _UNION_TAG.match(p) or (kind == "extra_forbidden" and i == last))
        msg = e["msg"]
        if kind == "extra_forbidden":
            msg = _unknown_key(loc)
        elif kind == "invalid_key":
            msg, loc = f"key {loc[-1]!r} must be a string", loc[:-1] or (str(loc[-1]),)
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "string_pattern_mismatch":
            pattern = e["ctx"]["pattern"]
            msg = f"{shown(e['input'], 80)!r} " + (f"is not {FORMS[pattern]}" if pattern in FORMS else f"does not match {pattern}")
        elif kind == "literal_error":
            msg = f"must be {e['ctx']['expected']}, not {_got(e['input'])}"
        elif kind in _EXPECTS:
            msg = f"must be {_EXPECTS[kind]}, not {_got(e['input'])}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if len(loc) >= 2 and loc[-1] == "[key]":
            # a mapping's key (``env: {"bad key": x}``) is wrong, not its value
            msg, loc = f"key {msg}", loc[:-2]
        problems.append(Problem(_path(loc), msg))
    # One problem per key: union branches (0.5 or "auto") report the same location once each.
    merged: dict[str, list[str]] = {}
    for p in problems:
        msgs = merged.setdefault(p.key, [])
        if p.message not in msgs:
            msgs.append(p.message)
    return [Problem(key, _either(msgs)) for key, msgs in merged.items()]


_MUST = re.compile(r"^must be (.+), not (.+)$")


def _either(msgs: list[str]) -> str:
    """``must be a number, not X`` + ``must be 'auto', not X`` -> ``must be a number or 'auto', not X``."""
    found = [m for m in map(_MUST.match, msgs) if m]
    if len(msgs) > 1 and len(found) == len(msgs) and len({m.group(2) for m in found}) == 1:
        return f"must be {' or '.join(m.group(1) for m in found)}, not {found[0].group(2)}"
    return "; or ".join(msgs)


def endpoint_secret_keys(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """(``endpoints[i].apiKeySecret``, the config key it names) for every endpoint that names one of its own."""
    endpoints = raw.get("endpoints")
    out = []
    for i, ep in enumerate(endpoints if isinstance(endpoints, list) else []):
        name = ep.get("apiKeySecret") if isinstance(ep, dict) else None
        if isinstance(name, str) and name not in STACK_KEYS:
            out.append((f"endpoints[{i}].apiKeySecret", name))
    return out


def _secret_problems(raw: dict[str, Any]) -> list[Problem]:
    """Takes the secret keys out of ``raw``; a value that is not ``{secure: ...}`` is plain text in the stack file."""
    problems = []
    named = endpoint_secret_keys(raw)
    for key in (*SECRET_KEYS, *dict.fromkeys(name for _, name in named)):
        if key in raw:
            value = raw.pop(key)
            if not (isinstance(value, dict) and set(value) == {"secure"}):
                problems.append(Problem(key, f"is in plain text; run `pulumi config set --secret {NAMESPACE}:{key} <value>`"))
        elif key not in SECRET_KEYS:
            where = next(w for w, name in named if name == key)
            problems.append(
                Problem(where, f"names {NAMESPACE}:{key}, which is not set; run `pulumi config set --secret {NAMESPACE}:{key} <the endpoint's key>`")
            )
    return problems


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""Control characters no setting can carry into a command line, an environment variable or a rendered file (a NUL ends
a C string); tabs and line breaks stay (a multi-line PromQL query is fine)."""


def _control_problems(value: Any, path: tuple[int | str, ...] = ()) -> list[Problem]:
    """Every key and string value that holds a control character, by key path."""
    out: list[Problem] = []
    if isinstance(value, str):
        if m := _CONTROL.search(value):
            out.append(Problem(_path(path), f"holds the control character U+{ord(m.group()):04X}; remove it"))
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and (m := _CONTROL.search(k)):
                out.append(Problem(_path(path), f"key {k!r} holds the control character U+{ord(m.group()):04X}; remove it"))
            else:
                out += _control_problems(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _control_problems(v, (*path, i))
    return out


def parse(raw: dict[str, Any]) -> StackConfig:
    """Validate an un-namespaced mapping (``{"models": [...], ...}``) fully, or raise ConfigError."""
    secrets_set = {key for key in SECRET_KEYS if key in raw}
    problems = _secret_problems(raw)
    control = _control_problems(raw)
    if control:
        raise ConfigError(problems + control)
    try:
        # strict: a boolean is no number (``maxNumSeqs: true``), a number no string; camelCase keys only
        config = StackConfig.model_validate(raw, strict=True, by_name=False)
    except ValidationError as err:
        raise ConfigError(problems + _pydantic_problems(err)) from None
    problems += cross_field_problems(config, STACK_KEYS)
    if config.webui.oidc and "webuiOidcClientSecret" not in secrets_set:
        problems.append(
            Problem("webui.oidc", f"needs the client secret: run `pulumi config set --secret {NAMESPACE}:webuiOidcClientSecret <secret>`, or remove webui.oidc")
        )
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
    for key in (*SECRET_KEYS, *(name for _, name in endpoint_secret_keys(raw))):
        value = get(key)
        if value is not None:
            # the value itself never goes further than this line
            raw[key] = {"secure": "set"} if is_secret(f"{NAMESPACE}:{key}") else value
    return parse(raw)


def config_json(text: str) -> Any:
    """A structured key as Pulumi holds it (JSON text): its value, with numbers too long for any setting kept as
    LongNumber (Python would refuse to convert them); text that is no JSON stays a string, which the schema refuses."""
    try:
        return json.loads(text, parse_int=lambda t: number_or_long(t, int), parse_float=lambda t: number_or_long(t, float))
    except ValueError:
        return text


def strip_namespace(config_block: dict[str, Any]) -> dict[str, Any]:
    """``{"vllm-stack:models": ...}`` -> ``{"models": ...}``; other namespaces (``docker:host``) are left out."""
    raw: dict[str, Any] = {}
    problems = []
    for key, value in (config_block or {}).items():
        ns, sep, name = str(key).partition(":")
        if not sep:
            problems.append(Problem(str(key), f"keys need the namespace: write {NAMESPACE}:{key}"))
        elif ns == NAMESPACE and not name:
            problems.append(Problem("", f"`{key}` names no key; write {NAMESPACE}:<key>, e.g. {NAMESPACE}:models"))
        elif ns == NAMESPACE:
            raw[name] = value
    if problems:
        raise ConfigError(problems)
    return raw


def stack_file(stack: str, root: Path = ROOT) -> Path:
    """A stack name (``dev`` -> ``Pulumi.dev.yaml`` in the current folder, else at the repo root) or a path to a stack file."""
    p = Path(stack)
    if p.suffix in {".yaml", ".yml"} or _stat(p, Path.exists) or _stat(p, Path.is_symlink):
        return p
    here = Path.cwd() / f"Pulumi.{stack}.yaml"
    return here if _stat(here, Path.exists) else root / f"Pulumi.{stack}.yaml"


def _stacks_near(path: Path, root: Path = ROOT) -> str:
    """The stacks a user could have meant: Pulumi.<name>.yaml in the file's folder, the current one and the repo root."""
    names = sorted({f.name[len("Pulumi.") : -len(".yaml")] for d in {path.parent, Path.cwd(), root} for f in _listing(d)})
    return f"the stacks here are {', '.join(names)}" if names else "there is no Pulumi.<name>.yaml here"


def _listing(folder: Path) -> list[Path]:
    try:
        return [f for f in folder.glob("Pulumi.*.yaml") if f.name.count(".") == 2 and f.is_file()]
    except OSError:
        return []


def _stat(path: Path, test: Callable[[Path], bool]) -> bool:
    """``test(path)``; a name the system refuses (too long, say) is a problem, not a traceback."""
    try:
        return test(path)
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError([Problem("", f"cannot use {shown(path)} as a stack file: {reason}")]) from None


_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def _not_a_stack_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a stack file (without opening it: a FIFO would block), or None when it is a file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if _stat(path, Path.is_symlink):
            return f"{shown(path)} is a symbolic link to {shown(os.readlink(path))}, which does not exist; fix the link or name the file itself"
        return f"no stack file at {shown(path)}; {_stacks_near(path)} (or name a stack file's path)"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{shown(path)} is a symbolic link that loops (it leads back to itself); name the stack file itself"
        return f"cannot use {shown(path)} as a stack file: {err.strerror or err}"
    if stat.S_ISDIR(mode):
        return f"{shown(path)} is a folder; name a stack file such as Pulumi.dev.yaml"
    if not stat.S_ISREG(mode):
        return f"{shown(path)} is {_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, not a stack file; name a YAML file such as Pulumi.dev.yaml"
    return None


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError([Problem("", f"{path}, line {line}: byte 0x{data[err.start]:02x} is not UTF-8; save the file as UTF-8")]) from None


def _yaml_problem(path: Path, p: YamlProblem) -> Problem:
    """A problem inside ``config: {vllm-stack:...}`` is named by its key; anything else by the file and line."""
    where = f"{path}, line {p.line}" if p.line else str(path)
    if len(p.path) >= 2 and p.path[0] == "config" and isinstance(p.path[1], str) and p.path[1].startswith(f"{NAMESPACE}:"):
        return Problem(_path((p.path[1].partition(":")[2], *p.path[2:])), f"{p.message} ({where})")
    return Problem("", f"{where}: {_path(p.path)}: {p.message}" if p.path else f"{where}: {p.message}")


def read_stack_file(path: Path) -> dict[str, Any]:
    """The un-namespaced config mapping of a stack file."""
    why = _not_a_stack_file(path)
    if why:
        raise ConfigError([Problem("", why)])
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError([Problem("", f"cannot read {path}: {err.strerror or err}; check that it is a readable file")]) from None
    try:
        doc = strict_yaml.load(_decode(path, data)) or {}
    except strict_yaml.YamlError as err:
        raise ConfigError([_yaml_problem(path, p) for p in err.problems]) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}), dict):
        raise ConfigError([Problem("", f"{path} must hold a mapping with a `config:` mapping")])
    return strip_namespace(doc.get("config") or {})


def provider_setting(path: Path, key: str) -> str | None:
    """A provider's key in a stack file (``docker:host``): the stack's config leaves other namespaces out."""
    try:
        config = (strict_yaml.load(path.read_bytes().decode("utf-8-sig")) or {}).get("config") or {}
    except (OSError, UnicodeDecodeError, strict_yaml.YamlError, AttributeError):
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
