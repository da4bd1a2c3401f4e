"""Client keys as long as users have them (OpenAI project keys are about 164 characters) in the real nginx + njs.

nginx keeps the keys' map in hash buckets of the CPU's cache line (64 bytes) unless told otherwise, which holds
``Bearer <key>`` only up to 39-character keys: a longer one stopped the gateway from starting (found by
tests/test_engine_docker.py, where the generated 40-character Open WebUI key is one of them, and by a real Open WebUI).
keys.conf sizes the map hash for the keys it holds (stacks/render/nginx_hash.py; tests/test_gateway_keys.py checks the
rule against nginx itself and the refusal of longer keys); here the openai client is served with keys of each length.
"""

from __future__ import annotations

import string

import openai
import pytest

from stacks.keys import MAX_KEY_LENGTH
from tests.conftest import docker_raw
from tests.gateway_harness import require_nginx_njs, running_gateway

TINY = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
ALPHABET = string.ascii_letters + string.digits + "-_"


def _key(length: int, seed: int) -> str:
    return "".join(ALPHABET[(i * 7 + seed) % len(ALPHABET)] for i in range(length))


@pytest.mark.parametrize("length", [40, 48, 164, MAX_KEY_LENGTH])
def test_gateway_starts_and_admits_a_long_key(length: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    require_nginx_njs()
    keys = [f"long:{_key(length, 1)}", f"other:{_key(length, 2)}"]
    raw = docker_raw(models=[{"name": "alpha", "model": TINY, "gpus": [0], "maxModelLen": 1024}])
    with running_gateway(raw, tmp_path_factory.mktemp("gw"), api_keys=keys) as gw:
        for entry in keys:
            key = entry.split(":", 1)[1]
            c = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)
            chat = c.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}])
            assert chat.choices[0].message.content and "backend=alpha" in chat.choices[0].message.content
        wrong = openai.OpenAI(base_url=gw.url + "/v1", api_key=_key(length, 3), max_retries=0, timeout=20)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}])
