"""benchmarks/calibrate.py off the GPU: the plan it makes for several GPUs (the TP 2 stacks), what each server's process
gets, how it reads vLLM's per-rank log lines, and its process handling against a stand-in ``vllm`` package whose
``vllm serve`` logs in vLLM 0.26's formats and answers as the repo's fake vLLM (127.0.0.1 only)."""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import calibrate
from benchmarks.processes import stop_group
from tests.conftest import ROOT
from tests.gateway_harness import free_port

H100 = ("NVIDIA H100 80GB HBM3", 85_018_525_696)
TP2 = ROOT / "benchmarks" / "stacks" / "h100x2-tp2.yaml"
SHARED = ROOT / "benchmarks" / "stacks" / "h100x2-tp2-shared.yaml"


def test_device_facts_from_the_child() -> None:
    text = f"{H100[0]}\t{H100[1]}\n{H100[0]}\t{H100[1]}\n0.26.0\n"
    assert calibrate.parse_facts(text) == ([H100, H100], "0.26.0")


def test_tp2_stacks_plan_for_two_gpus() -> None:
    alone = calibrate.planned(TP2, [H100, H100], "0.26.0")
    [m] = alone.models
    assert m.gpus == [0, 1] and m.args[m.args.index("--tensor-parallel-size") + 1] == "2"
    assert m.memory.fraction > 0.9, "planned tight with auto"
    shared = calibrate.planned(SHARED, [H100, H100], "0.26.0")
    assert [(s.name, s.gpus, s.start_after) for s in shared.models] == [
        ("qwen3-32b", [0, 1], []),
        ("qwen3-8b", [0], ["qwen3-32b"]),
        ("llama-3-1-8b", [1], ["qwen3-32b"]),
    ]
    assert all(g.headroom_gib >= 0 for g in shared.gpus) and {s.fraction_source for s in shared.models} == {"auto"}
    # the h100 stack keeps its one GPU
    assert [m.gpus for m in calibrate.planned(ROOT / "benchmarks/stacks/h100-tight.yaml", [H100], "0.26.0").models] == [[0], [0], [0]]


def test_a_server_gets_its_gpus_and_nccl_multicast_off_when_it_spans_them() -> None:
    shared = calibrate.planned(SHARED, [H100, H100], "0.26.0")
    tp2, one, other = (calibrate.server_env(m) for m in shared.models)
    assert (tp2["CUDA_VISIBLE_DEVICES"], tp2["NCCL_NVLS_ENABLE"]) == ("0,1", "0")
    assert (one["CUDA_VISIBLE_DEVICES"], other["CUDA_VISIBLE_DEVICES"]) == ("0", "1") and "NCCL_NVLS_ENABLE" not in one
    assert all(env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and env["HF_HUB_OFFLINE"] == "1" for env in (tp2, one, other))
    cmd = calibrate.command(shared.models[0], Path("/tmp/m"), 18100)
    assert calibrate.KV_CACHE_FLAG in cmd
    profiled = calibrate.without_kv_bytes(cmd)
    assert calibrate.KV_CACHE_FLAG not in profiled and len(profiled) == len(cmd) - 2 and "--gpu-memory-utilization" in profiled


# vLLM 0.26's own formats: the worker prefix (utils/system_utils.py _add_prefix), "Model loading took %s GiB memory and
# %.6f seconds" (v1/worker/gpu_model_runner.py), MemoryProfilingResult.__repr__ (utils/mem_utils.py), "GPU KV cache size:
# %s tokens" (v1/core/kv_cache_utils.py)
LOG = """\
(EngineCore pid=40) INFO 12-07 05:30:00 [core.py:100] Initializing a V1 LLM engine (v0.26.0)
(Worker_TP0 pid=41) INFO 12-07 05:30:12 [gpu_model_runner.py:5348] Model loading took 30.52 GiB memory and 12.100000 seconds
(Worker_TP1 pid=42) INFO 12-07 05:30:12 [gpu_model_runner.py:5348] Model loading took 30.49 GiB memory and 12.200000 seconds
(Worker_TP0 pid=41) DEBUG 12-07 05:30:20 [gpu_worker.py:555] Memory profiling takes 3.21 seconds. Total non KV cache memory: 33.7GiB; \
torch peak memory increase: 1.12GiB; non-torch forward increase memory: 2.05GiB; weights memory: 30.52GiB.
(Worker_TP1 pid=42) DEBUG 12-07 05:30:20 [gpu_worker.py:555] Memory profiling takes 3.20 seconds. Total non KV cache memory: 33.6GiB; \
torch peak memory increase: 1.12GiB; non-torch forward increase memory: 1.98GiB; weights memory: 30.49GiB.
(EngineCore pid=40) INFO 12-07 05:30:30 [kv_cache_utils.py:2177] GPU KV cache size: 1,234,560 tokens
"""


def test_per_rank_figures_from_vllm_log_lines() -> None:
    assert calibrate.by_process(LOG, calibrate.PATTERNS["model_loading_gib"]) == {"Worker_TP0": 30.52, "Worker_TP1": 30.49}
    profile = calibrate.PROFILE_PATTERNS
    assert calibrate.by_process(LOG, profile["non_torch_gib"]) == {"Worker_TP0": 2.05, "Worker_TP1": 1.98}
    assert calibrate.by_process(LOG, profile["peak_activation_gib"]) == {"Worker_TP0": 1.12, "Worker_TP1": 1.12}
    assert calibrate.by_process(LOG, calibrate.PATTERNS["kv_tokens"]) == {"EngineCore": 1_234_560}
    # a one-GPU server's lines carry no worker prefix
    assert calibrate.by_process("INFO Model loading took 2.05 GiB memory and 1.0 seconds", calibrate.PATTERNS["model_loading_gib"]) == {"main": 2.05}


def test_every_gpu_of_a_server_is_checked() -> None:
    m = calibrate.planned(TP2, [H100, H100], "0.26.0").models[0]
    ok = {"kv_tokens": m.memory.kv_tokens}
    assert calibrate.check(m, ok, {0: m.memory.footprint_gib, 1: m.memory.footprint_gib + 1.0}, 1.58) == []
    found = calibrate.check(m, ok, {0: m.memory.footprint_gib, 1: m.memory.footprint_gib + 2.0}, 1.58)
    assert len(found) == 1 and "on GPU 1" in found[0]
    assert calibrate.check(m, {"kv_tokens": 1, "error": "exited with 1"}, {0: 0.0, 1: 0.0}, 1.58)[0] == "exited with 1"


FAKE_SERVE = textwrap.dedent(
    '''
    """A stand-in for `vllm serve` with random weights: logs what vLLM 0.26 logs per rank, then serves as tests.fake_vllm."""
    import os, sys
    args = sys.argv[2:]
    flag = lambda name, default: args[args.index(name) + 1] if name in args else default
    tp = int(flag("--tensor-parallel-size", "1"))
    ranks = [f"(Worker_TP{r} pid={os.getpid() + r}) " if tp > 1 else "" for r in range(tp)]
    for prefix in ranks:
        print(f"{prefix}INFO 12-07 05:30:12 [gpu_model_runner.py:5348] Model loading took 15.27 GiB memory and 3.100000 seconds")
    if "--kv-cache-memory-bytes" not in args:
        for prefix in ranks:
            print(f"{prefix}DEBUG 12-07 05:30:20 [gpu_worker.py:555] Memory profiling takes 1.00 seconds. Total non KV cache memory: 17.5GiB; "
                  "torch peak memory increase: 0.23GiB; non-torch forward increase memory: 2.01GiB; weights memory: 15.27GiB.")
    print(f"INFO 12-07 05:30:30 [kv_cache_utils.py:2177] GPU KV cache size: {os.environ['FAKE_KV_TOKENS']} tokens", flush=True)
    sys.argv = ["fake_vllm", "--port", flag("--port", "8000"), "--name", "fake", "--models", flag("--served-model-name", "m")]
    from tests.fake_vllm import main
    main()
    '''
)


@pytest.fixture
def fake_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    cli = site / "vllm" / "entrypoints" / "cli"
    cli.mkdir(parents=True)
    for pkg in (site / "vllm", site / "vllm" / "entrypoints", cli):
        (pkg / "__init__.py").write_text("")
    (cli / "main.py").write_text(FAKE_SERVE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT)]))
    return tmp_path


def test_start_profile_serve_and_stop_against_a_stand_in(fake_vllm: Path) -> None:
    m = calibrate.planned(TP2, [H100, H100], "0.26.0").models[0]
    m = replace(m, env={**m.env, "FAKE_KV_TOKENS": f"{m.memory.kv_tokens:,}"})
    port = free_port()
    seen = calibrate.profile(m, fake_vllm, port, fake_vllm / "profile.log", limit_s=60)
    assert "error" not in seen, seen
    assert seen["ranks"]["non_torch_gib"] == {"Worker_TP0": 2.01, "Worker_TP1": 2.01}
    assert seen["ranks"]["weights_gib"] == {"Worker_TP0": 15.27, "Worker_TP1": 15.27}
    proc, seen = calibrate.start(m, fake_vllm, port, fake_vllm / "serve.log", limit_s=60)
    try:
        assert "error" not in seen, seen
        assert seen["kv_tokens"] == m.memory.kv_tokens
        assert seen["ranks"]["model_loading_gib"] == {"Worker_TP0": 15.27, "Worker_TP1": 15.27}
        assert calibrate.serve_once(m, port) is None
        # started with the plan's KV bytes, vLLM does not profile; without them it did
        assert "non-torch forward" not in (fake_vllm / "serve.log").read_text() and "non-torch forward" in (fake_vllm / "profile.log").read_text()
    finally:
        stop_group(proc)
    assert proc.poll() is not None, "stopped by its process group"
    # a server that dies at start is recorded, not waited for
    broken = replace(m, env={})
    proc, seen = calibrate.start(broken, fake_vllm, free_port(), fake_vllm / "broken.log", limit_s=60)
    stop_group(proc)
    assert seen["error"].startswith("exited with") and any("FAKE_KV_TOKENS" in line for line in seen["tail"])
    assert json.dumps(seen)
