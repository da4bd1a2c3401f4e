"""Open WebUI as its users meet it: the pinned release from PyPI, started the way the stack starts it and with the
environment the stack renders, in front of the rendered gateway on a real nginx with stand-in vLLM servers, used in
headless Debian chromium (tests/webui_harness.py says what differs from the container, and why).

An admin signs up and creates a plain user; each signs in, sees exactly the chat models and sends a streamed chat that
reaches its model's server; the user attaches a document, embedded through the stack's embedding model. Screenshots, the
requests the servers got and a summary with timings stay in .cache/webui-e2e/ (git-ignored).
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import string
import subprocess
import time
from pathlib import Path
from typing import Any

from stacks.config import parse
from stacks.keys import WEBUI_KEY_NAME
from stacks.plan import plan
from stacks.plan import topology as net
from stacks.render import open_webui_models, workloads
from tests.conftest import ROOT, docker_raw
from tests.gateway_harness import require_nginx_njs, running_gateway
from tests.webui_harness import VENV, VERSION, require_webui, run_browser, running_webui

ARTEFACTS = ROOT / ".cache" / "webui-e2e"
BROWSER = Path(__file__).with_name("webui_browser.cjs")
BROWSER_CHAT = Path(__file__).parent / "data" / f"open-webui-{VERSION}-chat.json"
"""The request of a browser chat, as Open WebUI sent it in this test (the GPU check replays it: benchmarks/tools_vllm.py)."""
RAW = docker_raw(
    models=[
        {"name": "qwen", "model": "Qwen/Qwen2.5-3B-Instruct", "gpus": [0], "maxModelLen": 1024},
        {"name": "tiny", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 1024, "servedModelNames": ["tiny-chat"]},
        {"name": "embed", "model": "Qwen/Qwen3-Embedding-0.6B", "gpus": [1], "maxModelLen": 1024},
    ],
    webui={"embeddingModel": "embed"},
)
DOCUMENT = "The vllm-stack test document.\nThe secret ingredient of the house soup is purple basil grown on the roof.\n"


def _generated_key(rng: random.Random) -> str:
    """What the stack generates for Open WebUI (components/stack.py: RandomPassword, 40 characters, special=False)."""
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(40))


def _requests(record: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def _last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = users[-1]["content"] if users else ""
    return content if isinstance(content, str) else json.dumps(content)


def test_open_webui_in_a_browser(tmp_path: Path) -> None:
    require_nginx_njs()
    require_webui()
    started = time.monotonic()
    shutil.rmtree(ARTEFACTS, ignore_errors=True)
    ARTEFACTS.mkdir(parents=True)
    p = plan(parse(RAW))
    assert p.webui is not None
    rng = random.Random(20)
    webui_key = _generated_key(rng)
    record = tmp_path / "requests.jsonl"
    document = tmp_path / "soup-notes.txt"
    document.write_text(DOCUMENT)
    admin = {"name": "Ada Admin", "email": "admin@example.test", "password": "admin-" + _generated_key(rng)[:12]}
    user = {"name": "Uma User", "email": "uma@example.test", "password": "user-" + _generated_key(rng)[:12]}
    task = {
        "admin": admin,
        "user": user,
        "adminModel": "qwen",
        "adminText": "hello qwen, this is the admin in a browser",
        "userModel": "tiny-chat",
        "userText": "What is the secret ingredient of the house soup?",
        "document": str(document),
    }
    # the client keys as the stack builds them: the configured ones plus Open WebUI's generated one
    api_keys = ["team-a:sk-team-a-0123456789", f"{WEBUI_KEY_NAME}:{webui_key}"]
    vllm_key = _generated_key(rng)
    with running_gateway(RAW, tmp_path / "gw", api_keys=api_keys, vllm_key=vllm_key, record=record) as gw:
        secrets = {
            f"{net.WEBUI_GATEWAY_KEY.secret}/{net.WEBUI_GATEWAY_KEY.key}": webui_key,
            f"{net.WEBUI_SECRET_KEY.secret}/{net.WEBUI_SECRET_KEY.key}": _generated_key(rng),
        }
        with running_webui(p, gw.url, secrets, tmp_path / "webui") as ui:
            browser_started = time.monotonic()
            result = run_browser(BROWSER, {"url": ui.url, **task}, ARTEFACTS)
            browser_s = time.monotonic() - browser_started
            outbound = list(ui.trap.seen)
            log = ui.log.read_text()
            timings = ui.timings
            seeded = ui.seed_output
        access = [json.loads(line) for line in gw.access_log.read_text().splitlines() if line.strip()]
    requests = _requests(record)
    shutil.copy(record, ARTEFACTS / "requests.jsonl")
    (ARTEFACTS / "open-webui.log").write_text(log)
    summary = {
        "run_s": round(time.monotonic() - started, 1),
        "browser_s": round(browser_s, 1),
        **timings,
        "models": result["models"],
        "answers": result["answers"],
        "upload": result.get("upload"),
        "screenshots": result["steps"],
        "requests": len(requests),
        "outbound": outbound,
        "external_from_browser": result["external"],
    }
    (ARTEFACTS / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\nOpen WebUI end to end: {summary['run_s']} s ({timings}; browser {summary['browser_s']} s); artefacts in {ARTEFACTS}")

    # the model entries were written before the start, one per chat model
    for name, mode in p.webui.function_calling.items():
        assert f"Open WebUI model {name}: function_calling={mode}, vision=False, access=all" in seeded, seeded

    # every signed-in user sees exactly the chat models (the embedding model is no chat model)
    assert sorted(result["models"]["admin"]) == sorted(p.webui.chat_models) == ["qwen", "tiny", "tiny-chat"]
    assert sorted(result["models"]["user"]) == sorted(p.webui.chat_models)

    # the admin's streamed chat reached qwen with Open WebUI's tools (qwen's server parses tool calls)
    chats = [r for r in requests if r["path"] == "/v1/chat/completions" and r["body"].get("stream")]
    admin_chat = [r for r in chats if _last_user_text(r["body"]) == task["adminText"]]
    assert len(admin_chat) == 1 and admin_chat[0]["backend"] == "qwen", [(r["backend"], _last_user_text(r["body"])[:60]) for r in chats]
    sent = admin_chat[0]["body"]
    assert "tool_choice" not in sent and len(sent["tools"]) == 36
    assert sent["tools"] == json.loads(BROWSER_CHAT.read_text())["tools"], "Open WebUI's tools changed: update the test data"
    assert "backend=qwen model=qwen" in (result["answers"]["admin:qwen"] or "") and "tools=36" in result["answers"]["admin:qwen"]

    # the user's streamed chat reached tiny under its alias, without tools (no parser: Open WebUI's legacy mode), with
    # the document found through the embedding model in its prompt
    user_chat = [r for r in chats if r["body"].get("model") == "tiny-chat" and "purple basil" in json.dumps(r["body"])]
    assert len(user_chat) == 1 and user_chat[0]["backend"] == "tiny", [(r["backend"], r["body"].get("model")) for r in chats]
    assert "tools" not in user_chat[0]["body"]
    assert "backend=tiny model=tiny-chat" in (result["answers"]["user:tiny-chat"] or "")
    assert result["upload"]["status"] == "completed"
    embedded = [r for r in requests if r["path"] == "/v1/embeddings"]
    assert embedded and {r["backend"] for r in embedded} == {"embed"} and {r["body"]["model"] for r in embedded} == {"embed"}
    assert any("purple basil" in json.dumps(r["body"]["input"]) for r in embedded)
    # no chat went to a model without a parser with tools (vLLM would have answered 400)
    assert not [r for r in requests if r["backend"] == "tiny" and r["body"].get("tools")]

    # the servers got the gateway's own key; the gateway named Open WebUI's key in its log and refused nothing it sent
    assert {r["headers"]["Authorization"] for r in requests} == {f"Bearer {vllm_key}"}
    from_webui = [a for a in access if a["uri"].startswith("/v1/")]
    assert from_webui and {a["key"] for a in from_webui} == {WEBUI_KEY_NAME}
    assert all(a["status"] < 400 for a in from_webui), [(a["uri"], a["status"]) for a in from_webui if a["status"] >= 400]

    # nothing left the machine: no request through the proxy, none from the page, no version check
    assert outbound == [] and result["external"] == []
    assert result["versionUpdates"] == {"current": VERSION, "latest": VERSION}


def test_model_entries_follow_the_stack_and_keep_an_admins_edits(tmp_path: Path) -> None:
    """The program the stack runs before Open WebUI starts, on Open WebUI's own code and database (migrated by it):
    ``all`` grants every user each chat model, ``restricted`` takes that grant back and keeps the admin's own; a model
    that takes images is marked so (``meta.capabilities.vision``), the others not."""
    require_webui()
    program = tmp_path / "open_webui_models.py"
    w = workloads.open_webui(plan(parse(RAW)), "image")
    program.write_text(str(w.files[workloads.WEBUI_MODELS_PROGRAM]))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATA_DIR": str(tmp_path / "data"), "FROM_INIT_PY": "true", "WEBUI_SECRET_KEY": "k"}
    (tmp_path / "data").mkdir()

    def run(function_calling: dict[str, str], access: str, vision: list[str] | None = None) -> None:
        value = open_webui_models.webui_models_env(function_calling, access, vision)
        r = subprocess.run([str(VENV / "bin" / "python"), str(program)], env={**env, open_webui_models.ENV: value}, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]

    def rows() -> tuple[dict[str, tuple[str, str]], set[tuple[str, str, str]]]:
        with sqlite3.connect(tmp_path / "data" / "webui.db") as db:
            models = {i: (n, json.loads(p).get("function_calling")) for i, n, p in db.execute("select id, name, params from model")}
            grants = set(db.execute("select resource_id, principal_type, principal_id from access_grant where resource_type = 'model'"))
        return models, grants

    def vision() -> dict[str, bool]:
        with sqlite3.connect(tmp_path / "data" / "webui.db") as db:
            return {i: json.loads(m)["capabilities"]["vision"] for i, m in db.execute("select id, meta from model")}

    run({"qwen": "native", "tiny": "legacy"}, "all", ["qwen"])
    assert rows() == ({"qwen": ("qwen", "native"), "tiny": ("tiny", "legacy")}, {("qwen", "user", "*"), ("tiny", "user", "*")})
    assert vision() == {"qwen": True, "tiny": False}
    # an admin renames a model and grants it to a group in Open WebUI; the stack then restricts access
    with sqlite3.connect(tmp_path / "data" / "webui.db") as db:
        db.execute("update model set name = 'Qwen for the team' where id = 'qwen'")
        db.execute("insert into access_grant values ('g1', 'model', 'qwen', 'group', 'team', 'read', 0)")
    run({"qwen": "legacy", "tiny": "legacy"}, "restricted")
    assert rows() == ({"qwen": ("Qwen for the team", "legacy"), "tiny": ("tiny", "legacy")}, {("qwen", "group", "team")})
    assert vision() == {"qwen": False, "tiny": False}
