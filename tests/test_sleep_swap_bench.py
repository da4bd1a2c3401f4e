"""benchmarks/sleep_swap.py without a GPU: its plan for the GPUs it may meet, the commands it starts, the weights it
writes, the vLLM log lines it reads, and the whole run against the tests' fake vLLM behind the real swapper and nginx."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import sleep_swap as bench
from stacks.catalog import config_json
from tests.fake_sleepy_vllm import read_ledger
from tests.gateway_harness import require_nginx_njs

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("gpu", "total"), [("NVIDIA H100 80GB HBM3", 79.18), ("NVIDIA H200", 139.8)])
def test_the_pair_never_fits_awake_together_but_each_does_beside_the_others_asleep(gpu: str, total: float) -> None:
    p = bench.bench_plan(gpu, total, "0.26.0")
    [g] = p.swap_groups
    medium, large = p.model(bench.MEDIUM), p.model(bench.LARGE)
    assert medium.memory.footprint_gib + large.memory.footprint_gib > total
    assert g.reserved_gib <= total * 0.98 and g.awake == 1
    for m in (medium, large):
        cmd = bench.server_command(m, Path("/tmp/m"), 18555, dummy=True)
        assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "18555"
        assert "--enable-sleep-mode" in cmd and cmd[cmd.index("--load-format") + 1] == "dummy" and m.env["VLLM_SERVER_DEV_MODE"] == "1"
        assert cmd[cmd.index("serve") + 1] == "/tmp/m" and m.model not in cmd
    assert "--load-format" not in bench.server_command(p.model(bench.SMALL), Path("/tmp/s"), 1, dummy=False)


def test_zero_weights_are_a_valid_sparse_safetensors_file_of_the_checkpoints_tensors(tmp_path: Path) -> None:
    config = config_json(bench.MODELS[bench.SMALL])
    assert config is not None
    tensors = bench.llama_tensors(config)
    size = bench.write_zero_safetensors(tmp_path / "model.safetensors", tensors, "bfloat16")
    raw = (tmp_path / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    assert header.pop("__metadata__") == {"format": "pt"} and len(raw) == size and (8 + n) % 8 == 0
    end = 0
    for name, shape in tensors:
        entry = header[name]
        assert entry["dtype"] == "BF16" and entry["shape"] == shape and entry["data_offsets"][0] == end
        end = entry["data_offsets"][1]
    assert 8 + n + end == size and not raw[8 + n : 8 + n + 4096].strip(b"\0")
    # Llama-3.2-1B: 1.2358B parameters, the embedding shared with the LM head (no lm_head.weight)
    assert "lm_head.weight" not in header and end / 2 == pytest.approx(1.2358e9, rel=0.01)
    assert (tmp_path / "model.safetensors").stat().st_blocks * 512 < 1024**2, "written sparse"


def test_the_vllm_log_lines_it_reads() -> None:
    """Lines as vLLM 0.26.0 formats them (gpu_worker.py sleep, executor/abstract.py, cumem.py, the memory profile)."""
    lines = {
        "sleep_freed_gib": "Sleep mode freed 14.71 GiB memory, 1.02 GiB memory is still in use.",
        "fall_asleep_s": "It took 2.345678 seconds to fall asleep.",
        "wake_up_s": "It took 1.234567 seconds to wake up tags ['weights', 'kv_cache'].",
        "cumem_backed_up_gib": (
            "CuMemAllocator: sleep freed 41.20 GiB memory in total, of which 15.27 GiB is backed up in CPU and the rest 25.93 GiB is discarded directly."
        ),
        "kv_tokens": "GPU KV cache size: 261,968 tokens",
        "model_loading_gib": "Model loading took 15.2683 GiB memory and 12.3 seconds",
    }
    for key, line in lines.items():
        assert bench.PATTERNS[key].search(line), key


def test_the_whole_run_against_fake_servers_writes_every_figure_and_stops_everything(tmp_path: Path) -> None:
    require_nginx_njs()
    out = tmp_path / "result.json"
    cmd = [sys.executable, "benchmarks/sleep_swap.py", "--fake", "--budget", "200", "--out", str(out), "--workdir", str(tmp_path / "work")]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [s["ok"] for s in result["steps"]] == [True] * 7
    swap = result["swap"]
    assert swap["through"].startswith("gateway") and swap["never_more_than_one_awake"] and not swap["failed_requests"]
    assert len([r for r in swap["requests"] if r["swap"] == "sleep other + wake"]) == bench.ALTERNATIONS
    summary = result["summary"]
    assert summary["swap"]["swap_first_token_p50_s"] > 0.1, "each swap waits for the fakes' sleep and wake"
    unswapped = [r["first_token_s"] for r in swap["requests"] if r["swap"] == "none (awake)"]
    assert len(unswapped) == 2 and max(unswapped) < summary["swap"]["swap_first_token_p50_s"] / 2
    for name in bench.MODELS:
        assert summary[name]["cold_start_s"] is not None and summary[name]["level1_wake_to_first_token_s_p50"] is not None
        assert summary[name]["planned_asleep_gib"] > 0.5
    assert result["servers"][bench.SMALL]["level2"]["wake_to_first_token_p50_s"] is not None
    # every fake stopped (the ledger drops processes that died), none served asleep
    ledger = read_ledger(tmp_path / "work" / "gpu.json")
    # the swapper kept one awake at a time; the 1B alone starts beside the pair's last awake one, as planned (its turn)
    assert ledger["procs"] == {} and ledger["violations"] == [] and ledger["peak_awake"] <= 2


def test_a_budget_too_short_skips_steps_and_still_writes_the_result(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    cmd = [sys.executable, "benchmarks/sleep_swap.py", "--fake", "--budget", "35", "--out", str(out), "--workdir", str(tmp_path / "work")]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    steps = json.loads(out.read_text())["steps"]
    assert steps[0]["ok"] and any("skipped" in s for s in steps)
