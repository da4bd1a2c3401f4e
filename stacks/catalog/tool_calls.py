"""vLLM's tool-call parser for each chat model family: what ``--tool-call-parser`` a model's server gets.

Open WebUI 0.12.4 sends its built-in tools with every browser chat and no ``tool_choice``; vLLM reads that as ``auto``
and answers 400 unless the server runs with ``--enable-auto-tool-choice --tool-call-parser <parser>``. A family is
listed only where the parser works with the model's own chat template (the stack passes no ``--chat-template``); the
rest get no parser, and Open WebUI is told not to send them tools (stacks/render/webui_models.py).

Parsers that need a template vLLM ships beside its source (``examples/tool_chat_template_*.jinja``: phi4_mini_json,
pythonic for Llama 3.2, deepseek_v3, granite-20b-fc, internlm, xlam ...) or a plugin (``--tool-parser-plugin``) are
set per model: ``toolCallParser`` with the template or plugin in ``extraArgs``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VLLM_TOOL_PARSERS = frozenset(
    {
        "apertus",
        "cohere_command3",
        "cohere_command4",
        "deepseek_v3",
        "deepseek_v31",
        "deepseek_v32",
        "deepseek_v4",
        "ernie45",
        "functiongemma",
        "gemma4",
        "gigachat3",
        "glm45",
        "glm47",
        "granite",
        "granite-20b-fc",
        "granite4",
        "hermes",
        "hunyuan_a13b",
        "hy_v3",
        "inkling",
        "internlm",
        "jamba",
        "kimi_k2",
        "lfm2",
        "llama3_json",
        "llama4_json",
        "llama4_pythonic",
        "longcat",
        "mimo",
        "minicpm5",
        "minimax_m2",
        "minimax_m3",
        "mistral",
        "olmo3",
        "openai",
        "phi4_mini_json",
        "poolside_v1",
        "pythonic",
        "qwen3_coder",
        "qwen3_xml",
        "seed_oss",
        "step3",
        "step3p5",
        "xlam",
    }
)
"""The parsers vLLM 0.26.0 registers (vllm/tool_parsers/__init__.py, ``_TOOL_PARSERS_TO_REGISTER``)."""
PLUGIN_FLAG = "--tool-parser-plugin"
"""With it in ``extraArgs`` a model may name a parser its plugin registers (vllm/entrypoints/openai/cli_args.py, 0.26.0)."""
NONE = "none"
"""``toolCallParser: none``: no tool calling for the model, whatever its family."""
FLAGS = ("--enable-auto-tool-choice", "--tool-call-parser")
"""FrontendArgs.enable_auto_tool_choice and tool_call_parser (vllm/entrypoints/openai/cli_args.py, 0.26.0); vLLM refuses
the first without the second (validate_parsed_serve_args)."""

VLLM_DOCS = "vLLM docs/features/tool_calling.md"


@dataclass(frozen=True)
class Family:
    name: str
    pattern: re.Pattern[str]
    """Matched against the model's HF id, ignoring case."""
    parser: str
    source: str


FAMILIES = (
    Family(
        "Qwen2.5 Instruct",
        re.compile(r"^qwen/qwen2\.5-.*instruct", re.I),
        "hermes",
        f"{VLLM_DOCS}, Qwen Models: the Qwen2.5 chat template has Hermes-style tool use",
    ),
    Family(
        "Qwen3-Coder",
        re.compile(r"^qwen/qwen3-coder-", re.I),
        "qwen3_xml",
        f"{VLLM_DOCS}, Qwen3-Coder Models",
    ),
    Family(
        "Qwen3",
        re.compile(r"^qwen/qwen3-(?!.*(embedding|reranker))(?!.*-base$)", re.I),
        "hermes",
        "QwenLM/Qwen3 docs/source/framework/function_call.md (vLLM): the Qwen3 chat template has Hermes-style tool use",
    ),
    Family(
        "Llama 3.1-3.3 Instruct",
        re.compile(r"llama-3\.[123]-.*instruct", re.I),
        "llama3_json",
        f"{VLLM_DOCS}, Llama Models: JSON tool calling of Llama 3.1-3.3, whose own chat template renders the tools",
    ),
    Family(
        "Mistral function-calling models",
        re.compile(r"^mistralai/(mistral-7b-instruct-v0\.3|mistral-small-)", re.I),
        "mistral",
        f"{VLLM_DOCS}, Mistral Models (Mistral-7B-Instruct-v0.3 confirmed; Mistral Small calls functions natively)",
    ),
    Family(
        "gpt-oss",
        re.compile(r"^openai/gpt-oss-", re.I),
        "openai",
        f"{VLLM_DOCS}, OpenAI OSS Models",
    ),
)
"""First match wins. Left out on purpose: TinyLlama, Yi, Gemma 3 (no tool format vLLM parses), Phi-4 (none) and
Phi-4-mini (needs vLLM's phi4_mini template), Mixtral-8x7B-Instruct-v0.1 (no tool tokens), the DeepSeek-R1 distills
(no parser documented for them)."""


def family(model: str) -> Family | None:
    return next((f for f in FAMILIES if f.pattern.search(model.strip())), None)


def catalog_parser(model: str) -> str | None:
    """The parser of ``model``'s family, or None when the stack knows none for it."""
    f = family(model)
    return f.parser if f else None
