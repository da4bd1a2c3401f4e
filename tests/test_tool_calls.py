"""Tool calling: each chat model's vLLM server gets its family's tool-call parser, and the stand-in vLLM takes or refuses
tools exactly as vLLM 0.26 does (directly and through the rendered gateway on a real nginx)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stacks.catalog import entry, ids
from stacks.catalog.tool_calls import FAMILIES, VLLM_TOOL_PARSERS, catalog_parser
from stacks.config import parse
from stacks.errors import ConfigError
from stacks.plan import plan
from tests.conftest import ROOT, docker_raw
from tests.fake_vllm import AUTO_TOOLS_REFUSED
from tests.gateway_harness import Running, free_port, require_nginx_njs, running_gateway, start_backend, stop

# The request a browser chat of Open WebUI 0.12.4 sends (captured by tests/test_webui_e2e.py): its built-in tools, no
# tool_choice
BROWSER_CHAT = Path(__file__).parent / "data" / "open-webui-0.12.4-chat.json"
TOOLS = [{"type": "function", "function": {"name": "get_time", "description": "The time", "parameters": {"type": "object", "properties": {}}}}]
# vLLM 0.26.0's answer, byte for byte: ErrorResponse through FastAPI's JSONResponse
REFUSED = (
    b'{"error":{"message":"\\"auto\\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set",'
    b'"type":"BadRequestError","param":null,"code":400}}'
)

EXPECTED = {
    "Qwen/Qwen2.5-7B-Instruct": "hermes",
    "Qwen/Qwen2.5-7B-Instruct-AWQ": "hermes",
    "Qwen/Qwen3-8B": "hermes",
    "Qwen/Qwen3-30B-A3B-FP8": "hermes",
    "Qwen/Qwen3-Coder-30B-A3B-Instruct": "qwen3_xml",
    "Qwen/Qwen3-Embedding-0.6B": None,
    "Qwen/Qwen3-8B-Base": None,
    "meta-llama/Llama-3.1-8B-Instruct": "llama3_json",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "llama3_json",
    "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4": "llama3_json",
    "meta-llama/Llama-3.3-70B-Instruct": "llama3_json",
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": None,
    "mistralai/Mistral-7B-Instruct-v0.3": "mistral",
    "mistralai/Mistral-Small-24B-Instruct-2501": "mistral",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": None,
    "openai/gpt-oss-20b": "openai",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": None,
    "01-ai/Yi-6B-Chat": None,
    "google/gemma-3-4b-it": None,
    "microsoft/Phi-4-mini-instruct": None,
}


@pytest.mark.parametrize(("model", "parser"), EXPECTED.items())
def test_each_family_gets_its_parser(model: str, parser: str | None) -> None:
    assert catalog_parser(model) == parser


def test_every_parser_is_one_vllm_registers() -> None:
    assert {f.parser for f in FAMILIES} <= VLLM_TOOL_PARSERS
    assert all(f.source for f in FAMILIES)
    tasks = {m: (entry(m) or {}).get("task") for m in ids()}
    chat = [m for m, task in tasks.items() if task == "generate" and m in EXPECTED]
    assert {m: catalog_parser(m) for m in chat} == {m: EXPECTED[m] for m in chat}
    assert [m for m, task in tasks.items() if task == "embed" and catalog_parser(m)] == []


def _model(name: str, model: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": model, "gpus": [0], "maxModelLen": 1024, **extra}


def _plan(*models: dict[str, Any], **webui: Any) -> Any:
    return plan(parse(docker_raw(models=list(models), webui=webui)))


def test_launch_args_and_open_webui_follow_the_parser() -> None:
    p = _plan(
        _model("qwen", "Qwen/Qwen2.5-3B-Instruct", servedModelNames=["qwen-chat"]),
        _model("tiny", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"),
        _model("tiny-hermes", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", toolCallParser="hermes"),
        _model("qwen-off", "Qwen/Qwen2.5-3B-Instruct", toolCallParser="none"),
        _model("embed", "Qwen/Qwen3-Embedding-0.6B", gpus=[1]),
    )
    by_name = {m.name: m for m in p.models}
    assert by_name["qwen"].args[-3:] == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    assert by_name["tiny-hermes"].tool_call_parser == "hermes"
    for name in ("tiny", "qwen-off", "embed"):
        assert by_name[name].tool_call_parser is None
        assert "--enable-auto-tool-choice" not in by_name[name].args and "--tool-call-parser" not in by_name[name].args
    assert p.webui.function_calling == {"qwen": "native", "qwen-chat": "native", "tiny": "legacy", "tiny-hermes": "native", "qwen-off": "legacy"}


@pytest.mark.parametrize(
    ("models", "key", "message"),
    [
        ([_model("t", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", toolCallParser="hermez")], "models[0].toolCallParser", "'hermez' is not a tool-call parser"),
        ([_model("e", "Qwen/Qwen3-Embedding-0.6B", toolCallParser="hermes")], "models[0].toolCallParser", "embedding model"),
        ([_model("t", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", extraArgs=["--tool-call-parser", "hermes"])], "models[0].extraArgs[0]", "toolCallParser"),
        ([_model("t", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", extraArgs=["--enable-auto-tool-choice"])], "models[0].extraArgs[0]", "toolCallParser"),
    ],
)
def test_bad_parser_settings_are_refused_by_key(models: list[dict[str, Any]], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _plan(*models)
    assert any(pr.key == key and message in pr.message for pr in err.value.problems), err.value.render()


def test_a_plugin_parser_is_taken_with_its_plugin() -> None:
    m = _model("t", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", toolCallParser="my_parser", extraArgs=["--tool-parser-plugin=/models/my_parser.py"])
    p = _plan(m)
    assert p.models[0].args[-4:] == ["--enable-auto-tool-choice", "--tool-call-parser", "my_parser", "--tool-parser-plugin=/models/my_parser.py"]


# the stand-in vLLM


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, int]]:
    ports = {"plain": free_port(), "parser": free_port(), "flagless": free_port()}
    flags = {"plain": [], "parser": ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"], "flagless": ["--tool-call-parser", "hermes"]}
    procs = [start_backend(n, ["m"], ports[n], *flags[n]) for n in ports]
    try:
        yield ports
    finally:
        for proc in procs:
            stop(proc)


def _chat(port: int, **body: Any) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}, timeout=10)


def test_stand_in_refuses_tools_as_vllm_does(backends: dict[str, int]) -> None:
    for name in ("plain", "flagless"):  # a parser without auto tool choice is not used (ParserManager.get_tool_parser)
        for stream in (False, True):
            r = _chat(backends[name], tools=TOOLS, stream=stream)
            assert r.status_code == 400 and r.headers["content-type"] == "application/json"
            assert r.content == REFUSED
        r = _chat(backends[name], tools=TOOLS, tool_choice="required")
        assert r.status_code == 400 and r.json()["error"]["message"] == 'tool_choice="required" requires --tool-call-parser to be set'
        assert _chat(backends[name], tools=TOOLS, tool_choice="none").status_code == 200
        assert _chat(backends[name]).status_code == 200
    assert json.loads(REFUSED)["error"]["message"] == AUTO_TOOLS_REFUSED


def test_stand_in_with_a_parser_takes_tools(backends: dict[str, int]) -> None:
    r = _chat(backends["parser"], tools=TOOLS)
    assert r.status_code == 200 and "tools=1" in r.json()["choices"][0]["message"]["content"]
    assert _chat(backends["parser"], tools=TOOLS, tool_choice="required").status_code == 200


def test_auto_tool_choice_without_a_parser_does_not_start() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tests.fake_vllm", "--port", "9", "--name", "x", "--models", "m", "--enable-auto-tool-choice"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "--enable-auto-tool-choice requires --tool-call-parser" in r.stderr


# through the rendered gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    require_nginx_njs()
    raw = docker_raw(models=[_model("qwen", "Qwen/Qwen2.5-3B-Instruct"), _model("tiny", "TinyLlama/TinyLlama-1.1B-Chat-v1.0")])
    with running_gateway(raw, tmp_path_factory.mktemp("gw"), api_keys=["sk-k"]) as running:
        yield running


def test_browser_chat_through_the_gateway(gw: Running) -> None:
    """Open WebUI's own request: the model with a parser answers, the one without answers vLLM's 400 unchanged."""
    body = json.loads(BROWSER_CHAT.read_text())
    assert len(body["tools"]) == 36 and "tool_choice" not in body
    headers = {"Authorization": "Bearer sk-k"}
    with httpx.Client(base_url=gw.url, headers=headers, timeout=20) as c:
        ok = c.post("/v1/chat/completions", json={**body, "model": "qwen"})
        assert ok.status_code == 200 and ok.headers["x-backend"] == "qwen", ok.text[:300]
        assert "tools=36" in ok.text
        refused = c.post("/v1/chat/completions", json={**body, "model": "tiny"})
        assert refused.status_code == 400 and refused.content == REFUSED
        plain = c.post("/v1/chat/completions", json={k: v for k, v in body.items() if k != "tools"} | {"model": "tiny"})
        assert plain.status_code == 200
