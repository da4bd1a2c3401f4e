"""The overhead model against what vLLM reported on a real H100 (vLLM 0.26.0), and vLLM's KV layout rules."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from stacks.catalog import lookup
from stacks.plan.memory import (
    GIB,
    NON_TORCH_GIB,
    activation_gib,
    capture_sizes,
    cudagraph_gib,
    kv_layout,
    weights_gib,
)
from stacks.plan.releases import cudagraphs_in_budget, uses_v2_model_runner
from tests.conftest import ROOT

README_ROWS = json.loads((ROOT / "tests" / "data" / "h100_overheads.json").read_text())["rows"]
PROFILE = json.loads((ROOT / "benchmarks" / "results" / "h100-vllm-0.26.0-profile.json").read_text())
CALIBRATE = json.loads((ROOT / "benchmarks" / "results" / "h100-vllm-0.26.0-calibrate.json").read_text())
H100_TOKENS = 8192  # vLLM's batch default for an H100 (EngineArgs.get_batch_defaults)


@pytest.mark.parametrize("row", README_ROWS, ids=lambda r: r["model"])
def test_in_budget_overhead_within_15_percent_of_the_h100_measurements(row: dict) -> None:
    arch = lookup(row["model"])
    assert arch
    planned = (
        activation_gib(arch, H100_TOKENS, row["max_num_seqs"], 1, sampler=True)
        + NON_TORCH_GIB
        + cudagraph_gib(arch, row["max_num_seqs"], H100_TOKENS, 1, enforce_eager=False)
    )
    measured = statistics.mean(row["overhead"])
    assert abs(planned - measured) / measured <= 0.15, f"planned {planned:.3f} GiB vs measured {measured:.3f}"
    assert weights_gib(arch, 2, None, 1, 1) == pytest.approx(row["weights"], abs=0.05)


def test_profiled_activation_never_much_above_the_model() -> None:
    """Every profile measured on the H100: the model may over-estimate (safe) but never under by more than 5%."""
    rows = [r for r in PROFILE["cases"] if "peak_activation_gib" in r]
    assert len(rows) >= 4
    for r in rows:
        arch = lookup(r["model"])
        assert arch
        planned = activation_gib(arch, r["max_num_batched_tokens"], r["max_num_seqs"], 1, sampler="--runner" not in r["extra"])
        assert planned >= r["peak_activation_gib"] * 0.95, (r["model"], planned, r["peak_activation_gib"])
        assert r["non_torch_gib"] == NON_TORCH_GIB


def test_fraction_only_kv_predictions_within_2_percent_median() -> None:
    """With only a fraction, vLLM's KV cache is ceil(fraction x total) - (weights + activation + non-torch): the model's
    prediction against the 'Available KV cache memory' vLLM logged (the graphs of these dense 0.26 models are outside)."""
    errors = []
    for r in PROFILE["cases"]:
        if "available_kv_gib" not in r:
            continue
        arch = lookup(r["model"])
        assert arch
        total = r["cuda_total_gib"]
        requested = math.ceil(total * GIB * r["gmu"]) / GIB
        base = weights_gib(arch, 2, None, 1, 1) + activation_gib(arch, r["max_num_batched_tokens"], r["max_num_seqs"], 1, sampler=True) + NON_TORCH_GIB
        errors.append(abs((requested - base) - r["available_kv_gib"]) / r["available_kv_gib"])
    assert len(errors) >= 4
    assert statistics.median(errors) <= 0.02, errors


def test_cudagraph_memory_matches_the_calibration_run() -> None:
    server = CALIBRATE["servers"][0]
    arch = lookup("TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    assert arch and server["model"] == "tinyllama"
    assert len(capture_sizes(512, 8192)) == 51  # vLLM's log: "Capturing CUDA graphs (PIECEWISE): 51/51"
    assert cudagraph_gib(arch, 512, 8192, 1, enforce_eager=False) == pytest.approx(server["vllm"]["graphs_gib"], abs=0.01)
    assert cudagraph_gib(arch, 512, 8192, 1, enforce_eager=True) == 0.0
    # its exact KV cache came out to the token
    assert server["vllm"]["kv_tokens"] == server["planned"]["memory"]["kv_tokens"]


def test_cudagraphs_in_or_outside_the_budget_by_release_and_runner() -> None:
    dense = uses_v2_model_runner((0, 26, 0), moe=False, pooling=False)
    moe = uses_v2_model_runner((0, 26, 0), moe=True, pooling=False)
    assert dense and not moe
    assert not cudagraphs_in_budget((0, 19, 1), v2_runner=False)
    assert cudagraphs_in_budget((0, 20, 0), v2_runner=False)
    assert not cudagraphs_in_budget((0, 26, 0), v2_runner=True)
    assert cudagraphs_in_budget((0, 26, 0), v2_runner=False)
    assert cudagraphs_in_budget((0, 29, 0), v2_runner=True)


def test_gemma3_kv_layout_follows_vllms_groups() -> None:
    """Gemma 3 1B: 4 full + 22 sliding layers -> groups of 4 layers: 1 full group and 6 sliding (2 padding layers)."""
    arch = lookup("google/gemma-3-1b-it")
    assert arch and (arch.sliding_layers, arch.sliding_window) == (22, 512)
    layout = kv_layout(arch, tp=1, pp=1, kv_bytes=2, in_flight_tokens=2 * 8192)
    assert layout and layout.group_size == 4 and layout.windows == (None,) + (512,) * 6
    assert layout.page_bytes == 16 * 2 * 1 * 256 * 2
    # short sequences: the in-flight tokens cover them, sliding layers save nothing
    assert layout.blocks_per_sequence(4096) == 256 + 6 * (256 + 1)
    # a 32k sequence: full layers hold all of it, sliding ones the window plus two batches in flight
    assert layout.blocks_per_sequence(32768) == 2048 + 6 * (math.ceil((511 + 16384) / 16) + 1)
    # against counting every layer as full: 17% less for Gemma 3 27B at its full context
    big = lookup("google/gemma-3-27b-it")
    assert big
    hybrid = kv_layout(big, tp=1, pp=1, kv_bytes=2, in_flight_tokens=2 * 8192)
    assert hybrid
    full = big.layers * 2 * big.kv_heads * big.head_dim * 2 * 131072
    assert hybrid.sequence_bytes(131072) < 0.35 * full


def test_encoder_models_hold_no_kv_and_moe_counts_every_expert() -> None:
    bge = lookup("BAAI/bge-m3")
    assert bge and bge.encoder_only and bge.task == "embed"
    assert kv_layout(bge, tp=1, pp=1, kv_bytes=2, in_flight_tokens=8192) is None
    moe = lookup("Qwen/Qwen3-30B-A3B")
    assert moe and (moe.experts, moe.experts_per_token, moe.expert_intermediate_size) == (128, 8, 768)
    # every expert is resident: 30.5B parameters in bf16
    assert weights_gib(moe, 2, None, 1, 1) == pytest.approx(30.5321e9 * 2 / GIB, abs=0.1)
    # the activation follows the routed experts, not all of them
    assert activation_gib(moe, 8192, 64, 1, sampler=True) < 2.0


def test_quantized_weights_keep_embeddings_at_model_dtype() -> None:
    q = lookup("Qwen/Qwen3-32B-FP8")
    assert q and q.quantization == "fp8"
    embeddings = q.vocab_size * q.hidden_size * 2  # untied: embedding and LM head
    expected = (embeddings * 2 + (q.parameters_b * 1e9 - embeddings) * 1.0) / GIB
    assert weights_gib(q, 2, "fp8", 1, 1) == pytest.approx(expected + q.context_length * q.head_dim * 4 / GIB, rel=1e-6)
    oss = lookup("openai/gpt-oss-20b")
    assert oss and oss.quantization == "mxfp4" and (oss.sliding_layers, oss.sliding_window) == (12, 128)
    assert 11 < weights_gib(oss, 2, "mxfp4", 1, 1) < 16  # MXFP4 experts, bf16 rest


def test_catalog_has_30_current_models_with_the_overhead_models_fields() -> None:
    from stacks.catalog import entry, ids

    assert len(ids()) >= 30
    for repo in ids():
        a = lookup(repo)
        e = entry(repo)
        assert a and e and e["source"], repo
        assert a.vocab_size > 0 and a.intermediate_size > 0 and a.layers > 0 and a.head_dim > 0, repo
        assert a.kv_heads <= a.attention_heads, repo
