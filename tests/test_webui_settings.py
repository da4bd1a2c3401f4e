"""What the stack tells Open WebUI (the rendered workload): which models get tools, who may use them, nothing fetched
from the internet. tests/test_webui_e2e.py runs the same settings in a real Open WebUI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stacks.config import parse
from stacks.plan import plan
from stacks.render import open_webui_models, workloads
from tests.conftest import docker_raw

MODELS = [
    {"name": "qwen", "model": "Qwen/Qwen2.5-3B-Instruct", "gpus": [0], "maxModelLen": 1024},
    {"name": "tiny", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 1024},
    {"name": "embed", "model": "Qwen/Qwen3-Embedding-0.6B", "gpus": [1], "maxModelLen": 1024},
]


def _webui(**webui: Any) -> workloads.Workload:
    return workloads.open_webui(plan(parse(docker_raw(models=MODELS, webui=webui))), "image")


def test_model_entries_are_written_before_open_webui_starts() -> None:
    w = _webui()
    assert w.args == ["bash", "-c", f"python3 {workloads.WEBUI_MODELS_PROGRAM} && exec bash start.sh"]
    assert w.files[workloads.WEBUI_MODELS_PROGRAM] == Path(open_webui_models.__file__).read_text()
    spec = json.loads(w.env[open_webui_models.ENV])
    assert spec == {"access": "all", "models": {"qwen": "native", "tiny": "legacy"}, "vision": []}
    restricted = json.loads(_webui(modelAccess="restricted").env[open_webui_models.ENV])
    assert restricted["access"] == "restricted"


def test_nothing_is_fetched_from_outside() -> None:
    """OFFLINE_MODE (open_webui/env.py 0.12.4) turns off the version check and every model download; the explicit
    ENABLE_VERSION_UPDATE_CHECK says so for readers of the environment."""
    for w in (_webui(), _webui(embeddingModel="embed")):
        assert w.env["OFFLINE_MODE"] == "True" and w.env["ENABLE_VERSION_UPDATE_CHECK"] == "False"
    without = _webui().env
    assert not [k for k in without if k.startswith("RAG_")], "no embedding model: Open WebUI keeps its own, from its image"
    assert _webui(embeddingModel="embed").env["RAG_EMBEDDING_ENGINE"] == "openai"
