"""Planner arithmetic against hand-computed figures, auto splitting, start order, launch specs."""

from __future__ import annotations

from typing import Any

import pytest

from stacks.catalog import ids, lookup, resolve
from stacks.config import ArchConfig, load_stack, parse
from stacks.errors import ConfigError
from stacks.plan import GIB, ModelPlan, plan
from tests.conftest import docker_raw, kube_raw


def _one(model: str, memory: float = 24.0, **kw: Any) -> ModelPlan:
    raw = docker_raw(gpus=[{"index": 0, "memoryGiB": memory}], models=[{"name": "m", "model": model, "gpus": [0], **kw}])
    return plan(parse(raw)).models[0]


@pytest.mark.parametrize(
    ("model", "kv_bytes"),
    [
        ("Qwen/Qwen3-8B", 147_456),  # 2 x 36 layers x 8 kv heads x 128 x 2 bytes
        ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", 22_528),  # 2 x 22 x 4 x 64 x 2
        ("meta-llama/Llama-3.1-70B-Instruct", 327_680),  # 2 x 80 x 8 x 128 x 2
        ("01-ai/Yi-6B-Chat", 65_536),  # 2 x 32 x 4 x 128 x 2
        ("google/gemma-3-12b-it", 393_216),  # 2 x 48 x 8 x 256 x 2
    ],
)
def test_kv_bytes_per_token(model: str, kv_bytes: int) -> None:
    m = _one(model, memory=200, maxModelLen=1024)
    assert m.kv_bytes_per_token == kv_bytes


def test_fp8_kv_halves_bytes() -> None:
    assert _one("Qwen/Qwen3-8B", memory=80, maxModelLen=1024, kvCacheDtype="fp8").kv_bytes_per_token == 73_728


def test_tinyllama_half_of_24gib_by_hand() -> None:
    # a 24 GiB GPU gets vLLM's small batch default: 2048 batched tokens (min with 16 seqs x 2048 tokens)
    # weights 1.1e9 x 2 B + rotary cache 2048 x 64 x 4 B = 2.04940 GiB
    # activation 2048 tok x (6 x 5632 + 8 x 2048) B + 16 seqs x 32000 vocab x 6 B = 0.09856 GiB; non-torch 0.22 GiB
    # KV = 0.5 x 24 - 2.04940 - 0.09856 - 0.22 = 9.63204 GiB, in blocks of 16 tok x 2 x 4 kv heads x 64 x 2 B x 22 layers
    # = 360,448 B: 28,692 blocks = 459,072 tokens; one 2048-token sequence is 128 blocks: 224 of them
    m = _one("TinyLlama/TinyLlama-1.1B-Chat-v1.0", gpuMemoryUtilization=0.5, maxModelLen=2048)
    assert m.memory.weights_gib == pytest.approx(2.049, abs=1e-3)
    assert m.memory.activation_gib == pytest.approx(0.099, abs=1e-3)
    assert m.memory.kv_gib == pytest.approx(9.632, abs=1e-3)
    assert m.memory.kv_cache_bytes == 28_692 * 360_448
    assert m.memory.kv_tokens == 459_072
    assert m.memory.max_full_sequences == 224
    # the release has --kv-cache-memory-bytes: the plan passes exactly those bytes with the fraction as start gate
    assert m.args[m.args.index("--kv-cache-memory-bytes") + 1] == str(28_692 * 360_448)
    assert m.args[m.args.index("--gpu-memory-utilization") + 1] == "0.500"


def test_tensor_parallel_splits_weights_and_kv_heads() -> None:
    raw = docker_raw(
        gpus=[{"index": i, "memoryGiB": 80} for i in range(4)],
        models=[{"name": "big", "model": "meta-llama/Llama-3.1-70B-Instruct", "gpus": [0, 1, 2, 3], "maxModelLen": 8192}],
    )
    m = plan(parse(raw)).models[0]
    assert m.tensor_parallel == 4 and m.gpu_count == 4
    # 32.85 GiB of weights per GPU plus the rotary cache (131072 positions x 128 x 4 B)
    assert m.memory.weights_gib == pytest.approx(70.554e9 * 2 / 4 / GIB + 131072 * 128 * 4 / GIB, abs=1e-3)
    assert "--tensor-parallel-size" in m.args and m.args[m.args.index("--tensor-parallel-size") + 1] == "4"
    # per GPU: 2 x 80 x (8/4) x 128 x 2 = 81,920 B per token
    per_gpu_tokens = m.memory.kv_gib * GIB / 81_920
    assert abs(m.memory.kv_tokens - per_gpu_tokens) < 16 + 1


def test_s3_auto_beats_hand_split_on_rtx5090() -> None:
    """The published RTX 5090 setup: 0.15 / 0.25 / 0.45 found by trial and error."""
    dev = load_stack("dev")
    auto = plan(dev)
    hand_models = []
    for m, f in zip(dev.models, (0.15, 0.25, 0.45), strict=True):
        hand_models.append(m.model_copy(update={"gpu_memory_utilization": f}))
    hand = plan(dev.model_copy(update={"models": hand_models}))
    for a, h in zip(auto.models, hand.models, strict=True):
        assert a.fraction_source == "auto" and h.fraction_source == "config"
        assert a.memory.kv_tokens >= h.memory.kv_tokens, f"{a.name}: auto {a.memory.kv_tokens} < hand {h.memory.kv_tokens}"
        # the 32 GB card holds over 90% of each model's maxNumSeqs sequences: every model the same share of its demand
        assert a.memory.max_full_sequences >= int(0.9 * a.max_num_seqs)
    assert sum(m.memory.fraction for m in auto.models) <= 1 - 3 * 0.5 / 31.8
    assert auto.gpus[0].headroom_gib >= 0


def test_auto_splits_shared_gpu_and_notes_why() -> None:
    raw = docker_raw(
        gpus=[{"index": 0, "memoryGiB": 24}],
        models=[
            {"name": "a", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 2048, "maxNumSeqs": 8},
            {"name": "b", "model": "Qwen/Qwen2.5-3B-Instruct", "gpus": [0], "maxModelLen": 4096, "maxNumSeqs": 8, "gpuMemoryUtilization": 0.4},
        ],
    )
    p = plan(parse(raw))
    a, b = p.models
    assert b.memory.fraction == 0.4 and b.fraction_source == "config"
    assert a.memory.fraction > 0.4  # a takes what b leaves
    assert p.gpus[0].headroom_gib >= 0
    assert any("GPU 0" in n and "a" in n for n in p.notes)


def test_auto_reports_when_gpu_too_small() -> None:
    raw = docker_raw(gpus=[{"index": 0, "memoryGiB": 8}], models=[{"name": "y", "model": "01-ai/Yi-6B-Chat", "gpus": [0], "maxModelLen": 4096}])
    with pytest.raises(ConfigError) as exc:
        plan(parse(raw))
    # the weights alone do not fit: said so, not "lower maxModelLen"
    assert exc.value.keys == ["models[0].gpus"]
    assert "weights and runtime overhead alone do not fit" in exc.value.problems[0].message


def test_start_order_chains_models_sharing_a_gpu() -> None:
    p = plan(load_stack("dev"))
    assert [m.start_after for m in p.models] == [[], ["tinyllama"], ["qwen2-5-3b"]]
    multi = plan(load_stack("multigpu"))
    assert all(m.start_after == [] for m in multi.models)  # nothing shares a GPU: all start at once


def test_launch_args_have_no_secret_and_follow_config() -> None:
    m = plan(load_stack("dev")).model("tinyllama")
    assert m.entrypoint == ["vllm", "serve"]
    assert m.args[0] == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    i = m.args.index("--served-model-name")
    assert m.args[i + 1 : i + 3] == ["tinyllama", "tinyllama-chat"]
    assert m.args[m.args.index("--gpu-memory-utilization") + 1] == f"{m.memory.fraction:.3f}"
    assert "--dtype" in m.args and "--api-key" not in m.args
    assert m.env["TZ"] == "Asia/Seoul"


def test_routes_targets_and_webui_follow_the_model_list() -> None:
    p = plan(load_stack("dev"))
    assert {r.served_name for r in p.routes} == {"tinyllama", "tinyllama-chat", "qwen2-5-3b", "yi-6b"}
    assert [t.target for t in p.scrape_targets if t.job == "vllm"] == ["vllm-tinyllama:8000", "vllm-qwen2-5-3b:8000", "vllm-yi-6b:8000"]
    assert p.webui_api_base == "http://gateway:8080/v1"
    k = plan(parse(kube_raw()))
    assert k.webui_api_base == "http://gateway.vllm.svc:8000/v1"
    assert 0.94 <= k.models[0].memory.fraction <= 0.95  # auto never budgets one server more than 0.95


def test_catalog_has_the_required_models_with_published_figures() -> None:
    assert len(ids()) >= 12
    q = lookup("qwen/qwen3-8b")
    assert q and (q.layers, q.kv_heads, q.head_dim, q.context_length) == (36, 8, 128, 40960)
    for name in ["TinyLlama/TinyLlama-1.1B-Chat-v1.0", "Qwen/Qwen2.5-3B", "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen3-14B", "Qwen/Qwen3-32B",
                 "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B", "01-ai/Yi-6B", "mistralai/Mistral-7B-Instruct-v0.3",
                 "google/gemma-3-12b-it", "google/gemma-3-27b-it"]:  # fmt: skip
        assert lookup(name), name
    every = ["parametersB", "layers", "attentionHeads", "kvHeads", "hiddenSize", "intermediateSize", "vocabSize", "contextLength"]
    assert resolve("acme/new-model", None) == every
    assert resolve("acme/new-model-AWQ", None, quantized=True) == [*every, "tiedEmbeddings"]
    facts = {"parameters_b": 2, "layers": 10, "attention_heads": 8, "kv_heads": 2, "hidden_size": 512, "intermediate_size": 1024, "vocab_size": 32000}
    custom = resolve("acme/new-model", ArchConfig(**facts, context_length=4096))
    assert not isinstance(custom, list) and custom.head_dim == 64 and custom.qk_norm and custom.assumptions
    over = resolve("Qwen/Qwen3-8B", ArchConfig(context_length=131072))
    assert not isinstance(over, list) and over.context_length == 131072 and over.layers == 36


def test_cuda_129_build_and_non_root_defaults() -> None:
    """image.cuda: "12.9" runs the release's -cu129 tag (the doctor then asks only an R525+ driver); vLLM runs as its
    own user by default on kubernetes from 0.22, never by default on docker."""
    p = plan(parse(docker_raw(image={"base": "vllm/vllm-openai:v0.26.0", "cuda": "12.9"})))
    assert p.image.base == "vllm/vllm-openai:v0.26.0-cu129" and p.image.vllm_version == "0.26.0"
    assert not p.image.run_as_non_root
    assert plan(parse(kube_raw(image={"base": "vllm/vllm-openai:v0.26.0"}))).image.run_as_non_root
    assert not plan(parse(kube_raw(image={"base": "vllm/vllm-openai:v0.21.0"}))).image.run_as_non_root
    assert not plan(parse(kube_raw(image={"base": "vllm/vllm-openai:v0.26.0", "runAsNonRoot": False}))).image.run_as_non_root
