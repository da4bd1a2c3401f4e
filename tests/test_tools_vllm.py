"""benchmarks/tools_vllm.py without a GPU: the servers it would start, the model folders it writes, and its checks run
against the stand-in vLLM (started with the plan's flags) behind the rendered gateway on a real nginx."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.calibrate import planned
from benchmarks.tools_vllm import CHAT, KEY, PARSER_TOKENS, STACK, command, model_folder, run_checks
from tests.gateway_harness import free_port, render_into, require_nginx_njs, start_backend, start_nginx, stop, tool_flags

H100 = ([("NVIDIA H100 80GB HBM3", int(79.18 * 2**30))], "0.26.0")


def test_servers_start_as_the_plan_launches_them_with_a_tokenizer(tmp_path: Path) -> None:
    p = planned(STACK, *H100)
    qwen, tiny = p.models
    cmd = command(qwen, tmp_path / "qwen", 8123)
    assert cmd[3:5] == ["serve", str(tmp_path / "qwen")] and cmd[-2:] == ["--load-format", "dummy"]
    assert "--skip-tokenizer-init" not in cmd and cmd[cmd.index("--port") + 1] == "8123" and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert tool_flags(cmd) == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    assert tool_flags(command(tiny, tmp_path / "tiny", 8124)) == []
    folder = model_folder(qwen, tmp_path)
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    config = json.loads((folder / "config.json").read_text())
    assert len(vocab) == config["vocab_size"] and all(vocab[t] == i for t, i in PARSER_TOKENS["hermes"].items())


def test_checks_pass_against_the_stand_in_behind_the_gateway(tmp_path: Path) -> None:
    """The stand-in answers as vLLM 0.26 does, so every check the GPU run makes must hold here too."""
    require_nginx_njs()
    p = planned(STACK, *H100)
    ports = {m.name: free_port() for m in p.models}
    backends = [start_backend(m.name, m.served_names, ports[m.name], *tool_flags(m.args)) for m in p.models]
    nginx = None
    try:
        gw_port = free_port()
        conf = render_into(tmp_path, p, gw_port, {m.service: f"127.0.0.1:{ports[m.name]}" for m in p.models}, [f"open-webui:{KEY}"], None)
        nginx = start_nginx(conf, gw_port)
        chat = json.loads(CHAT.read_text())
        checks, seen = run_checks(p, {n: f"http://127.0.0.1:{port}" for n, port in ports.items()}, f"http://127.0.0.1:{gw_port}", chat)
    finally:
        if nginx is not None:
            stop(nginx)
        for b in backends:
            stop(b)
    assert len(checks) == 12 and all(checks.values()), {k: v for k, v in checks.items() if not v}
    assert seen["tiny gateway: browser chat"]["status"] == 400
