"""Requests with base64 images through the real nginx gateway to fake vLLM backends: routed by the body's model whatever
the size (the openai SDK writes ``model`` after the messages, so behind megabytes of image data), passed through whole,
refused with the gateway's JSON 413 only beyond ``maxBodyMiB``.

vLLM takes images as base64 data URLs in ``image_url`` parts, with no body limit of its own and images up to
VLLM_MAX_IMAGE_PIXELS (178,956,970 pixels, vllm/envs.py 0.26.0): what bounds a request is the gateway's ``maxBodyMiB``
(16 by default). The image bytes here are random (as incompressible as a JPEG's); the gateway never decodes them.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import docker_raw
from tests.gateway_harness import Running, running_gateway

KEY = "sk-images-test-key"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    models = [
        {"name": "gemma", "model": "google/gemma-3-4b-it", "gpus": [0], "maxModelLen": 4096, "mediaPerPrompt": {"images": 4}},
        {"name": "tiny", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [1], "maxModelLen": 1024},
    ]
    with running_gateway(docker_raw(models=models), tmp_path_factory.mktemp("gw-images"), api_keys=[KEY]) as running:
        assert running.plan.gateway.max_body_mib == 16
        yield running


def image_part(size: int) -> dict[str, Any]:
    data = os.urandom(size)
    return {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(data).decode()}}


def chat_body(model: str, image_sizes: list[int], model_first: bool = False) -> bytes:
    """A chat request as the openai SDK sends it: ``messages`` first, ``model`` after them (or first, as some clients do)."""
    messages = [{"role": "user", "content": [*(image_part(s) for s in image_sizes), {"type": "text", "text": "What is in these images?"}]}]
    body: dict[str, Any] = {"model": model, "messages": messages} if model_first else {"messages": messages, "model": model}
    return json.dumps(body).encode()


def send(gw: Running, body: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(gw.url + path, content=body, headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, timeout=60)


@pytest.mark.parametrize(
    ("label", "sizes"),
    [
        ("one small image: a body nginx scans itself (under 100 kB)", [50_000]),
        ("one photo of 700 kB: router.js reads the body (under 1 MB)", [700_000]),
        ("four photos of 2.9 MB: a large body of 15.5 MiB, just under maxBodyMiB", [2_900_000] * 4),
    ],
)
@pytest.mark.parametrize("model_first", [False, True])
def test_image_requests_reach_the_model_they_name_whole(gw: Running, label: str, sizes: list[int], model_first: bool) -> None:
    for model in ("gemma", "tiny"):  # the vision model and, for routing, a text one beside it
        body = chat_body(model, sizes, model_first)
        assert len(body) < 16 * MiB, label
        r = send(gw, body)
        assert r.status_code == 200, (label, r.text[:300])
        assert r.headers["X-Backend"] == model
        # the fake vLLM echoes the bytes it received: the whole body went through, unchanged in length
        assert r.json()["choices"][0]["message"]["content"].endswith(f"bytes={len(body)}")


def test_the_openai_sdk_sends_images_through_the_gateway(gw: Running) -> None:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    content: list[Any] = [image_part(3_000_000), image_part(3_000_000), {"type": "text", "text": "Compare them."}]
    answer = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": content}], max_tokens=8)
    assert (answer.choices[0].message.content or "").startswith("backend=gemma model=gemma")
    streamed = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": content}], max_tokens=3, stream=True)
    words = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert words.startswith("backend=gemma model=gemma")


def test_path_routing_carries_large_image_bodies(gw: Running) -> None:
    body = chat_body("gemma", [4_000_000, 4_000_000])
    r = send(gw, body, "/gemma/v1/chat/completions")
    assert r.status_code == 200 and r.headers["X-Backend"] == "gemma" and r.json()["choices"][0]["message"]["content"].endswith(f"bytes={len(body)}")


def test_a_body_beyond_max_body_mib_gets_the_gateways_json_413(gw: Running) -> None:
    """Five 2.9 MB photos are 19.3 MiB base64-encoded: over the 16 MiB default, refused before any backend sees them."""
    body = chat_body("gemma", [2_900_000] * 5)
    assert len(body) > 16 * MiB
    r = send(gw, body)
    assert r.status_code == 413 and r.headers["Content-Type"].startswith("application/json")
    assert r.json()["error"]["code"] == "request_too_large"
    # the gateway stays in service for the next image request
    assert send(gw, chat_body("gemma", [50_000])).status_code == 200
