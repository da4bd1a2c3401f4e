"""Client keys of every accepted length and number start the gateway on a real nginx, and pass byte for byte.

nginx's map hash is sized from the rendered keys (stacks/render/nginx_hash.py); these tests check that rule against
nginx itself, then run the gateway with the keys users really have: the 40-character key the stack generates for
Open WebUI, keys of the longest accepted length, hundreds of keys, long key names and long served names.
"""

from __future__ import annotations

import random
import re
import string
import subprocess
from pathlib import Path

import httpx
import pytest

from stacks.config import load_stack
from stacks.keys import MAX_KEY_LENGTH, parse_api_keys
from stacks.plan import plan
from stacks.render import endpoints, nginx_hash
from stacks.render.gateway import keys_conf, nginx_conf
from tests.conftest import STACKS, docker_raw
from tests.gateway_harness import NGINX, render_into, require_nginx_njs, running_gateway

ALPHANUMERIC = string.ascii_letters + string.digits
"""pulumi_random.RandomPassword(special=False): what the stack generates for Open WebUI's key and vLLM's."""
KEY_CHARS = "".join(c for c in string.printable if c.isprintable() and c not in "\"'\\$ \t;{},")


@pytest.fixture(scope="module", autouse=True)
def _nginx_with_njs() -> None:
    require_nginx_njs()


def _key(rng: random.Random, length: int, chars: str = KEY_CHARS) -> str:
    return "".join(rng.choice(chars) for _ in range(length))


def _mixed_keys(rng: random.Random, count: int) -> list[str]:
    """``name:key`` entries: one generated 40-character key, some of the longest, the rest of every length between
    (distinct ignoring case, as the config requires)."""
    keys = {"open-webui": _key(rng, 40, ALPHANUMERIC), **{f"max-{i}": _key(rng, MAX_KEY_LENGTH) for i in range(8)}}
    while len(keys) < count:
        key = _key(rng, rng.randint(1, MAX_KEY_LENGTH))
        if key.lower() not in {k.lower() for k in keys.values()}:
            keys[f"k{len(keys):04d}{'x' * (len(keys) % 50)}"] = key
    return [f"{name}:{key}" for name, key in keys.items()]


def _nginx_t(conf: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NGINX, "-t", "-p", str(directory), "-c", str(conf)], capture_output=True, text=True, timeout=60)


HASH_CONF = """worker_processes 1;
pid {dir}/hash.pid;
error_log {dir}/hash-error.log warn;
events {{ worker_connections 16; }}
http {{
    access_log off;
    map_hash_bucket_size {bucket};
    map_hash_max_size {max_size};
    map $http_authorization $x {{
{entries}
    }}
    server {{ listen 127.0.0.1:9; return 204; }}
}}
"""


def _hash_t(directory: Path, keys: list[str], bucket: int, max_size: int) -> str:
    conf = directory / "hash.conf"
    entries = "\n".join(f'        "{k}" {i};' for i, k in enumerate(keys))
    conf.write_text(HASH_CONF.format(dir=directory, bucket=bucket, max_size=max_size, entries=entries))
    r = _nginx_t(conf, directory)
    return r.stderr


@pytest.mark.parametrize("seed", range(4))
def test_the_hash_rule_is_nginx_own(tmp_path: Path, seed: int) -> None:
    """The table size the rule predicts is the smallest nginx builds without a warning, and the bucket the smallest it
    accepts: one size less, nginx warns; one cache line less, it refuses."""
    rng = random.Random(seed)
    keys = [f"Bearer {_key(rng, rng.randint(1, 120))}" for _ in range(rng.choice((40, 150, 400)))]
    keys = list({k.lower(): k for k in keys}.values())
    encoded = [k.encode() for k in keys]
    smallest = nginx_hash.bucket_size([encoded])
    bucket = smallest + nginx_hash.CACHE_LINE * rng.randint(0, 2)
    size = nginx_hash.table_size(encoded, bucket)
    assert size is not None and size > 1
    ok = _hash_t(tmp_path, keys, bucket, size)
    assert "test is successful" in ok and "warn" not in ok, ok
    warned = _hash_t(tmp_path, keys, bucket, size - 1)
    assert "could not build optimal map_hash" in warned, warned
    largest = max(nginx_hash.element_size(k) for k in encoded)
    below = nginx_hash._align(largest + nginx_hash.POINTER, nginx_hash.CACHE_LINE) - nginx_hash.CACHE_LINE
    if below:
        refused = _hash_t(tmp_path, keys, below, 10000)
        assert "you should increase map_hash_bucket_size" in refused, refused


def test_map_keys_are_read_as_nginx_reads_them() -> None:
    conf = "\n".join(
        [
            "map $a $b {",
            '    default "";',
            '    "Bearer x\\"y\\\\z" 1;',
            "    \\default 2;",
            '    "~^re" 3;',
            "    plain 4;",
            '    "" 5;',
            "}",
            "map $c $d { default 1; }",
        ]
    )
    assert nginx_hash.map_keys(conf) == [[b'Bearer x"y\\z', b"default", b"plain", b""]]


def test_rendered_maps_are_all_found(tmp_path: Path) -> None:
    """Every map of both files is counted: the served names, key names and verdicts nginx.conf maps, and the keys."""
    p = plan(load_stack("dev"))
    maps = nginx_hash.map_keys(nginx_conf(p)) + nginx_hash.map_keys(keys_conf(p, parse_api_keys("team:sk-1"), "vk"))
    flat = {k for m in maps for k in m}
    assert {r.served_name.lower().encode() for r in p.routes} <= {k.lower() for k in flat}
    assert {b"Bearer sk-1", b"team", b" invalid_json"} <= flat
    rendered = nginx_conf(p)
    first_map = re.search(r"^\s*map ", rendered, re.M)
    assert first_map and rendered.index("include ") < first_map.start(), "keys.conf sizes the map hash: it comes before every map"


def test_a_key_longer_than_the_limit_is_refused_without_echoing_it() -> None:
    long_key = "sk-" + "q" * MAX_KEY_LENGTH
    with pytest.raises(ValueError, match=f"apiKeys entry 2: the key has {MAX_KEY_LENGTH + 3} characters; at most {MAX_KEY_LENGTH}") as err:
        parse_api_keys(f"ok:sk-short,team:{long_key}")
    assert long_key not in str(err.value) and "qqqq" not in str(err.value)
    assert parse_api_keys("team:" + "k" * MAX_KEY_LENGTH)[0].key == "k" * MAX_KEY_LENGTH


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_starts_with_keys_of_the_longest_length(stack: str, tmp_path: Path) -> None:
    rng = random.Random(stack)
    p = plan(load_stack(stack))
    # endpoints' hosts (a Mac's model-runner.docker.internal) resolve only where they run: every upstream on 127.0.0.1
    upstreams = {m.service: "127.0.0.1:9" for m in p.models} | {endpoints.upstream_name(e): "127.0.0.1:9" for e in p.endpoints}
    conf = render_into(tmp_path, p, 18999, upstreams, _mixed_keys(rng, 20), _key(rng, MAX_KEY_LENGTH))
    r = _nginx_t(conf, tmp_path)
    assert r.returncode == 0 and "warn" not in r.stderr, r.stderr


def _raw_with_long_names() -> dict[str, object]:
    long_alias = "org-" + "n" * 120 + "/m.v1"  # 129 characters would be refused: 128 is the longest served name
    return docker_raw(
        models=[
            {"name": "tiny", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 2048, "servedModelNames": [long_alias[:128]]},
            {"name": "qwen", "model": "Qwen/Qwen2.5-3B-Instruct", "gpus": [1], "maxModelLen": 4096},
        ]
    )


def test_hundreds_of_keys_of_every_length_pass_byte_for_byte(tmp_path: Path) -> None:
    rng = random.Random(20)
    entries = _mixed_keys(rng, 400)
    entries.append(f"{'n' * 63}:{_key(rng, MAX_KEY_LENGTH)}")  # the longest key name too
    keys = parse_api_keys(",".join(entries))
    raw = _raw_with_long_names()
    with running_gateway(raw, tmp_path, api_keys=entries, vllm_key=_key(rng, MAX_KEY_LENGTH, ALPHANUMERIC)) as gw:
        err = (tmp_path / "error.log").read_text()
        assert "warn" not in err and "emerg" not in err, err
        long_alias = gw.plan.routes[1].served_name
        assert len(long_alias) == 128
        with httpx.Client(base_url=gw.url, timeout=10) as c:
            for k in keys:
                rid = f"key-{k.name}"[:200]
                r = c.get("/v1/models", headers={"Authorization": f"Bearer {k.key}", "X-Request-ID": rid})
                assert r.status_code == 200, (k.name, r.text)
            assert gw.log_line(rid)["key"] == keys[-1].name
            # one byte off, another case, cut short, one more byte: refused
            k = keys[0]
            assert len(k.key) == 40
            for bad in (k.key[:-1] + ("A" if k.key[-1] != "A" else "B"), k.key.swapcase(), k.key[:-1], k.key + "x"):
                assert c.get("/v1/models", headers={"Authorization": f"Bearer {bad}"}).status_code == 401
            # a chat with the generated key and the longest alias reaches its model's server, with vLLM's key
            r = c.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {k.key}"},
                json={"model": long_alias, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 200 and r.headers["x-backend"] == "tiny", r.text
            assert r.headers["x-seen-authorization"].startswith("Bearer ") and len(r.headers["x-seen-authorization"]) == 7 + MAX_KEY_LENGTH
