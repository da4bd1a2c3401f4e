"""How large nginx's ``map`` hash must be for the maps the gateway renders, by nginx's own rule.

nginx builds one exact-match hash per ``map`` block at start, with the http-wide ``map_hash_bucket_size`` and
``map_hash_max_size``; a key that does not fit the bucket stops nginx (``could not build map_hash, you should increase
map_hash_bucket_size: 64``). The defaults fit keys of at most 46 bytes, so ``"Bearer <40-character key>"`` does not.
Both directives apply to every map and are refused once a map has been read (``is duplicate``): they are rendered
at the top of ``keys.conf``, which nginx.conf includes before its first map, from the keys of every map in both files.

The rule below is ngx_hash_init in src/core/ngx_hash.c with the key handling of src/core/ngx_hash.c ngx_hash_add_key
and src/http/modules/ngx_http_map_module.c (ngx_http_map_block, ngx_http_map), nginx release-1.30.0 (the pinned
image); the three are unchanged since release-1.22.1 (Debian 12's nginx, which the tests run).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

POINTER = 8
"""sizeof(void *) of the 64-bit builds the stack runs (amd64, arm64)."""
CACHE_LINE = 64
"""ngx_cacheline_size: NGX_CPU_CACHE_LINE of auto/cc/gcc for amd64 and arm64 (32 or 128 elsewhere). nginx rounds
``map_hash_bucket_size`` up to it; a larger bucket only ever fits more (every table size that fits stays fitting)."""
MAX_SIZE = 2048
"""``map_hash_max_size``: nginx's default (ngx_http_map_block). The bucket grows instead of the table: nginx allocates
only the entries a bucket holds, not its size, while above 10000 it stops searching for the smallest table
(ngx_hash_init: ``max_size > 10000 && max_size / nelts < 100``)."""
MAX_BUCKET = 65536 - CACHE_LINE
"""The largest bucket nginx accepts (``too large map_hash_bucket_size``)."""
WORD = 2**64
"""ngx_uint_t wraps at 64 bits."""


def element_size(key: bytes) -> int:
    """NGX_HASH_ELT_SIZE: the value pointer, then a u_short length and the name, padded to a pointer."""
    return POINTER + _align(len(key) + 2, POINTER)


def key_hash(key: bytes) -> int:
    """ngx_hash_key of the lowercased key (ngx_hash_add_key lowercases it in place first): ``key * 31 + c``."""
    k = 0
    for c in key.lower():
        k = (k * 31 + c) % WORD
    return k


def table_size(keys: Sequence[bytes], bucket_size: int, max_size: int = MAX_SIZE) -> int | None:
    """The table size ngx_hash_init picks for one map's exact keys, or None when no size up to ``max_size`` fits
    (nginx then warns ``could not build optimal map_hash`` and overfills buckets)."""
    if not keys:
        return 0
    room = bucket_size - POINTER  # every bucket ends with a NULL value pointer
    sizes = [element_size(k) for k in keys]
    hashes = [key_hash(k) for k in keys]
    start = max(1, len(keys) // (room // (2 * POINTER)))
    for size in range(start, max_size + 1):
        filled = [0] * size
        for h, s in zip(hashes, sizes, strict=True):
            filled[h % size] += s
            if filled[h % size] > room:
                break
        else:
            return size
    return None


def bucket_size(maps: Iterable[Sequence[bytes]]) -> int:
    """The smallest ``map_hash_bucket_size`` (a multiple of the cache line) that holds the largest key, doubled until
    every map finds its table within ``MAX_SIZE``: nginx then starts without a warning."""
    maps = [m for m in maps if m]
    largest = max((element_size(k) for m in maps for k in m), default=0)
    size = max(CACHE_LINE, _align(largest + POINTER, CACHE_LINE))
    while any(table_size(m, size) is None for m in maps):
        if size * 2 > MAX_BUCKET:
            raise ValueError("the gateway's maps hold more keys than one nginx map hash can; use fewer API keys")
        size *= 2
    return size


def directives(maps: Iterable[Sequence[bytes]]) -> list[str]:
    return [f"map_hash_bucket_size {bucket_size(maps)};", f"map_hash_max_size {MAX_SIZE};"]


_MAP_START = re.compile(r"^\s*map\s.*\{\s*$")
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+?)(?=[\s;]|$)')
_UNESCAPE = re.compile(r"\\([\"'\\trn])")
_ESCAPED = {"t": "\t", "r": "\r", "n": "\n"}
"""ngx_conf_read_token's escapes (src/core/ngx_conf_file.c); before any other character the backslash stays."""


def map_keys(conf: str) -> list[list[bytes]]:
    """The exact-match keys of every ``map`` block in ``conf`` (as the gateway renders them: one entry a line).

    As ngx_http_map does: ``default``, ``hostnames``, ``volatile``, ``include`` and regexes (``~``) are not hashed,
    and a leading backslash is dropped. Quoted strings are unescaped as nginx's parser does."""
    out: list[list[bytes]] = []
    current: list[bytes] | None = None
    for line in conf.splitlines():
        if current is None:
            if _MAP_START.match(line):
                current = []
            continue
        text = line.strip()
        if text == "}":
            out.append(current)
            current = None
            continue
        m = _TOKEN.match(text)
        if not m or text.startswith("#"):
            continue
        quoted, bare = m.groups()
        key = _UNESCAPE.sub(lambda e: _ESCAPED.get(e[1], e[1]), bare if quoted is None else quoted)
        if key in ("default", "hostnames", "volatile", "include"):
            continue
        if key.startswith("~"):
            continue
        current.append(key.removeprefix("\\").encode())
    return out


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a
