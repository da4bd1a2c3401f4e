"""The non-GPU half of benchmarks/anthropic_vllm.py: its vLLM command, its model folder, and every check it makes
through the rendered gateway, run here against the fake vLLM (``--fake``) with the anthropic SDK and a real nginx."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.anthropic_vllm import STACK, server_command, write_folder
from benchmarks.calibrate import planned
from tests.conftest import ROOT
from tests.gateway_harness import require_nginx_njs


def test_vllm_serves_the_folder_with_random_weights_and_its_tokenizer(tmp_path: Path) -> None:
    p = planned(STACK, [("NVIDIA H100 80GB HBM3", 85_017_362_432)], "0.26.0")
    m = p.models[0]
    folder = write_folder(m, tmp_path / m.name)
    cmd = server_command(m, folder, 18123)
    assert cmd[1:5] == ["-m", "vllm.entrypoints.cli.main", "serve", str(folder)]
    assert "--skip-tokenizer-init" not in cmd and cmd[cmd.index("--load-format") + 1] == "dummy"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "18123"
    assert cmd[cmd.index("--served-model-name") + 1 : cmd.index("--served-model-name") + 3] == ["tinyllama", "tiny"]
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == 32000
    assert "chat_template" in json.loads((folder / "tokenizer_config.json").read_text())


def test_every_check_passes_against_the_fake_vllm(tmp_path: Path) -> None:
    require_nginx_njs()
    out = tmp_path / "result.json"
    r = subprocess.run(
        [sys.executable, "benchmarks/anthropic_vllm.py", "--fake", "--streams", "3", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    result = json.loads(out.read_text())
    assert r.returncode == 0, (r.stdout, r.stderr, result.get("error"), result["figures"]["errors"] if "figures" in result else None)
    assert len(result["checks"]) == 7 and all(result["checks"].values())
    assert result["figures"]["stream_events"]["first"] == "message_start" and result["figures"]["stream_events"]["last"] == "message_stop"
    assert result["anthropic"]["version"] == "2.17.0" and result["wall_s"] < 120


def test_a_failed_step_is_recorded_and_the_result_still_written(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    r = subprocess.run(
        [sys.executable, "benchmarks/anthropic_vllm.py", "--fake", "--sdk", str(tmp_path / "no-sdk-here"), "--server-timeout", "0", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(out.read_text())
    assert r.returncode == 1 and "not healthy within 0 s" in result["error"] and result["checks"] == {}
