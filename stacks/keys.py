"""Client API keys: their names and the ``apiKeys`` secret's format, parsed here and nowhere else.

``apiKeys`` holds entries separated by commas or newlines, each ``name:key`` or a bare ``key``. Bare keys
(every value written before keys had names) are named ``key-1``, ``key-2``, ... in the order they appear.
The name, never the key, is what logs, metrics and per-key limits (``gateway.keyLimits``) use. A key may
itself contain ``:`` only when the entry names it (``name:key:with:colons``: the first ``:`` ends the name).
Messages about a bad entry name it by position and never echo the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
"""A key's name: letters, digits, ``.``, ``_``, ``-``; safe in nginx configs, JSON logs and Prometheus labels."""
KEY_FORBIDDEN = "\n\r\"'\\$ \t;{},"
"""Characters a key cannot hold: they would end the entry or break out of nginx's quoting."""
KEY_MAX_LENGTH = 256
"""Longest client key: nginx's map of keys needs hash buckets that hold the longest (``MAP_HASH_BUCKET`` in the
gateway's config); OpenAI-style project keys are about 164 characters."""
WEBUI_KEY_NAME = "open-webui"
"""The name of the gateway key the stack generates for Open WebUI."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    key: str

    def __repr__(self) -> str:  # never print the key
        return f"ApiKey(name={self.name!r}, key=<secret>)"


def check_key(key: str, where: str) -> None:
    if not key:
        raise ValueError(f"{where}: the key is empty; write name:key or a bare key")
    if len(key) > KEY_MAX_LENGTH:
        raise ValueError(f"{where}: the key has {len(key)} characters, at most {KEY_MAX_LENGTH} are accepted; use a shorter key")
    if any(c in key for c in KEY_FORBIDDEN) or not key.isprintable() or not key.isascii():
        raise ValueError(f"{where}: a key may not contain quotes, backslashes, '$', ';', ',', braces, whitespace or non-ASCII characters; choose another key")


def parse_api_keys(value: str) -> list[ApiKey]:
    """Parse the ``apiKeys`` secret; raises ValueError with a message that names the entry, not the key."""
    keys: list[ApiKey] = []
    unnamed = 0
    entries = [e.strip() for e in value.replace("\n", ",").split(",")]
    for i, entry in enumerate(e for e in entries if e):
        where = f"apiKeys entry {i + 1}"
        name, sep, key = entry.partition(":")
        if not sep:
            unnamed += 1
            name, key = f"key-{unnamed}", entry
        elif not KEY_NAME.match(name):
            raise ValueError(f"{where}: the name before ':' must be letters, digits, '.', '_' or '-' (at most 63), starting with a letter or digit")
        check_key(key, where)
        keys.append(ApiKey(name, key))
    return with_key(keys)


def with_key(keys: list[ApiKey], extra: ApiKey | None = None) -> list[ApiKey]:
    """``keys`` plus ``extra``, checked: names and keys unique, ignoring case (nginx's maps compare strings ignoring case)."""
    out = [*keys, *([extra] if extra else [])]
    names: dict[str, int] = {}
    secrets: dict[str, int] = {}
    for i, k in enumerate(out):
        check_key(k.key, f"key {k.name!r}")
        if k.name.lower() in names:
            raise ValueError(f"apiKeys: the name {k.name!r} is used twice (names are compared ignoring case); name each key once")
        if k.key.lower() in secrets:
            raise ValueError(f"apiKeys: the keys named {out[secrets[k.key.lower()]].name!r} and {k.name!r} are equal ignoring case; use distinct keys")
        names[k.name.lower()] = i
        secrets[k.key.lower()] = i
    return out
