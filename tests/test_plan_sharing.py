"""Sharing a GPU: the fair auto, the start order it emits, every refusal with the key and a fix that works."""

from __future__ import annotations

import re
from typing import Any

import pytest

from stacks.config import parse
from stacks.errors import ConfigError
from stacks.plan import StackPlan, plan
from stacks.plan.memory import GIB, SAFETY_FRACTION
from stacks.plan.releases import REMOVED_FLAGS, removed_flag
from tests.conftest import docker_raw


def _plan(gib: float, *models: dict[str, Any], base: str = "vllm/vllm-openai:v0.26.0", **extra: Any) -> StackPlan:
    ms = [{"gpus": [0], **m} for m in models]
    return plan(parse(docker_raw(gpus=[{"index": 0, "name": "RTX 4090", "memoryGiB": gib}], models=ms, image={"base": base}, **extra)))


def _error(gib: float, *models: dict[str, Any], **extra: Any) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        _plan(gib, *models, **extra)
    return exc.value


QWEN_32K = {"name": "qwen", "model": "Qwen/Qwen3-8B", "maxModelLen": 32768, "maxNumSeqs": 8, "kvCacheDtype": "fp8"}
EMBED = {"name": "embed", "model": "Qwen/Qwen3-Embedding-0.6B", "maxModelLen": 8192, "maxNumSeqs": 1}


def test_fair_auto_fits_a_32k_model_and_a_small_embedding_model_on_24gb() -> None:
    p = _plan(23.5, QWEN_32K, EMBED)
    qwen, embed = p.models
    assert embed.task == "embed" and "--runner" in embed.args and embed.args[embed.args.index("--convert") + 1] == "embed"
    assert qwen.memory.max_full_sequences >= 1 and embed.memory.max_full_sequences >= 1
    # the small model asked for fewer sequences: it gets all it asked for, the big one what is left
    assert embed.memory.max_full_sequences >= embed.max_num_seqs


def test_start_order_and_physical_fit_hold_on_a_shared_gpu() -> None:
    p = _plan(
        79.17,
        {"name": "a", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "maxModelLen": 2048, "maxNumSeqs": 512},
        {"name": "b", "model": "Qwen/Qwen2.5-3B-Instruct", "maxModelLen": 32768, "maxNumSeqs": 64},
        {"name": "c", "model": "01-ai/Yi-6B-Chat", "maxModelLen": 4096, "maxNumSeqs": 256},
    )
    assert [m.start_after for m in p.models] == [[], ["a"], ["b"]]
    used = 0.0
    for m in p.models:
        # vLLM's start check: at its turn, what is free covers fraction x total
        assert m.memory.free_at_start_gib >= m.memory.fraction * 79.17
        assert m.memory.free_at_start_gib == pytest.approx(79.17 - used - 0.5, abs=1e-3)
        used += m.memory.footprint_gib
        # exact KV: the launch args carry the planned bytes, whole blocks
        assert int(m.args[m.args.index("--kv-cache-memory-bytes") + 1]) == m.memory.kv_cache_bytes
    assert used <= 79.17 * (1 - SAFETY_FRACTION) + 1e-6
    assert p.gpus[0].headroom_gib >= 0


def test_fraction_only_sizing_before_the_kv_bytes_flag() -> None:
    p = _plan(23.5, QWEN_32K, base="vllm/vllm-openai:v0.10.1")
    m = p.models[0]
    assert not m.memory.exact_kv and "--kv-cache-memory-bytes" not in m.args
    # vLLM fills the budget: KV is the fraction less the overhead
    budget = m.memory.fraction * 23.5
    assert m.memory.kv_gib == pytest.approx(budget - m.memory.weights_gib - m.memory.activation_gib - m.memory.non_torch_gib, abs=0.01)


def test_weights_that_do_not_fit_say_so() -> None:
    err = _error(8, {"name": "y", "model": "01-ai/Yi-6B-Chat", "maxModelLen": 4096})
    assert err.keys == ["models[0].gpus"]
    assert "weights and runtime overhead alone do not fit" in err.problems[0].message
    assert "set models[0].quantization: fp8" in err.problems[0].message
    assert "tensorParallel" not in err.problems[0].message, "one GPU: nothing to spread over"
    assert _plan(8, {"name": "y", "model": "01-ai/Yi-6B-Chat", "maxModelLen": 4096, "quantization": "fp8"}).models[0].memory.max_full_sequences >= 1


def test_one_sequence_that_does_not_fit_names_the_longest_that_does() -> None:
    big = {"name": "qwen", "model": "Qwen/Qwen3-8B", "maxModelLen": 40960, "maxNumSeqs": 4}
    err = _error(21.0, big)
    assert err.keys == ["models[0].maxModelLen"]
    longest = int(re.search(r"lower models\[0\]\.maxModelLen from 40960 to (\d+)", err.problems[0].message).group(1))  # type: ignore[union-attr]
    assert 1024 < longest < 40960 and "kvCacheDtype: fp8" in err.problems[0].message
    fitted = _plan(21.0, {**big, "maxModelLen": longest})
    assert fitted.models[0].memory.max_full_sequences >= 1
    with pytest.raises(ConfigError):
        _plan(21.0, {**big, "maxModelLen": longest + 16})
    assert _plan(21.0, {**big, "kvCacheDtype": "fp8"}).models[0].memory.max_full_sequences >= 1


def test_a_fraction_too_small_for_one_sequence_names_the_fraction_that_is_enough() -> None:
    m = {"name": "t", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "maxModelLen": 2048, "gpuMemoryUtilization": 0.05}
    err = _error(48.0, m)
    assert err.keys == ["models[0].gpuMemoryUtilization"]
    need = float(re.search(r"raise models\[0\]\.gpuMemoryUtilization from 0.050 to ([\d.]+)", err.problems[0].message).group(1))  # type: ignore[union-attr]
    assert _plan(48.0, {**m, "gpuMemoryUtilization": need}).models[0].memory.max_full_sequences >= 1
    with pytest.raises(ConfigError):
        _plan(48.0, {**m, "gpuMemoryUtilization": need - 0.001})


def test_an_overcommitted_gpu_names_the_last_fixed_model() -> None:
    a = {"name": "a", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "maxModelLen": 2048, "gpuMemoryUtilization": 0.6}
    b = {"name": "b", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "maxModelLen": 2048, "gpuMemoryUtilization": 0.5}
    err = _error(24.0, a, b)
    assert err.keys == ["models[1].gpuMemoryUtilization"] and "over-committed" in err.problems[0].message


@pytest.mark.parametrize(
    ("model", "tp", "pp", "key", "words"),
    [
        ("Qwen/Qwen3-8B", 3, 1, "models[0].tensorParallel", "does not divide"),  # 32 heads
        ("Qwen/Qwen2.5-7B-Instruct", 7, 1, "models[0].tensorParallel", "KV heads"),  # 28 heads, 4 KV heads
        ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", 1, 32, "models[0].pipelineParallel", "at most 22"),
    ],
)
def test_parallelism_vllm_refuses_is_refused_with_the_key(model: str, tp: int, pp: int, key: str, words: str) -> None:
    n = tp * pp
    raw = docker_raw(
        gpus=[{"index": i, "memoryGiB": 80} for i in range(n)],
        models=[{"name": "m", "model": model, "gpus": list(range(n)), "tensorParallel": tp, "pipelineParallel": pp, "maxModelLen": 1024}],
    )
    with pytest.raises(ConfigError) as exc:
        plan(parse(raw))
    matching = [p for p in exc.value.problems if p.key == key]
    assert matching and words in matching[0].message


def test_tensor_parallel_replicates_kv_heads_like_vllm() -> None:
    raw = docker_raw(
        gpus=[{"index": i, "memoryGiB": 80} for i in range(8)],
        models=[{"name": "m", "model": "Qwen/Qwen3-30B-A3B", "gpus": list(range(8)), "maxModelLen": 4096}],  # 4 KV heads, TP 8
    )
    m = plan(parse(raw)).models[0]
    assert m.tensor_parallel == 8 and m.memory.non_torch_gib == 2.0


def test_a_quantized_looking_model_without_a_method_is_refused() -> None:
    arch = {"parametersB": 7, "layers": 28, "attentionHeads": 28, "kvHeads": 4, "hiddenSize": 3584, "intermediateSize": 18944, "vocabSize": 152064}
    arch |= {"contextLength": 32768, "tiedEmbeddings": False}
    err = _error(24.0, {"name": "q", "model": "acme/Coder-7B-AWQ", "arch": arch, "maxModelLen": 4096})
    assert err.keys == ["models[0].quantization"] and "AWQ" in err.problems[0].message
    ok = _plan(24.0, {"name": "q", "model": "acme/Coder-7B-AWQ", "arch": arch, "maxModelLen": 4096, "quantization": "awq"})
    # 4-bit layers, with the untied embeddings and LM head (2 x 152,064 x 3,584) at bfloat16
    embeddings = 2 * 152064 * 3584
    assert ok.models[0].memory.weights_gib == pytest.approx((embeddings * 2 + (7e9 - embeddings) * (0.5 + 2.5 / 128)) / GIB, abs=0.05)
    # a catalog checkpoint's own quantization_config is taken without a key
    fp8 = _plan(48.0, {"name": "f", "model": "Qwen/Qwen3-32B-FP8", "maxModelLen": 4096})
    assert fp8.models[0].memory.weights_gib < 32.8e9 * 1.1 / GIB


def test_embedding_models_are_not_chat_models_and_feed_open_webui_rag() -> None:
    chat = {"name": "chat", "model": "Qwen/Qwen3-8B", "maxModelLen": 8192}
    p = _plan(48.0, chat, EMBED, webui={"embeddingModel": "embed"})
    assert p.webui and p.webui.chat_models == ["chat"] and p.webui.embedding_model == "embed"
    err = _error(48.0, chat, EMBED, webui={"embeddingModel": "chat"})
    assert err.keys == ["webui.embeddingModel"]


@pytest.mark.parametrize("flag", sorted(REMOVED_FLAGS))
def test_every_removed_flag_is_refused_from_its_release_on(flag: str) -> None:
    since, fix = REMOVED_FLAGS[flag]
    before = (since[0], since[1] - 1, 0) if since[1] else (since[0] - 1, 99, 0)
    assert removed_flag(flag, before) is None
    assert removed_flag(flag, since) == (since, fix)
    m = {"name": "t", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "maxModelLen": 2048, "extraArgs": [flag]}
    tag = "v" + ".".join(map(str, max(since, (0, 11, 2))))
    err = _error(24.0, m, base=f"vllm/vllm-openai:{tag}")
    assert err.keys == ["models[0].extraArgs[0]"] and fix in err.problems[0].message


def test_a_stack_pinned_to_an_old_release_keeps_that_releases_rules() -> None:
    m = {"name": "t", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "maxModelLen": 2048, "extraArgs": ["--swap-space=4"]}
    assert _plan(24.0, m, base="vllm/vllm-openai:v0.17.1").models[0].args[-1] == "--swap-space=4"
    assert _error(24.0, m, base="vllm/vllm-openai:v0.18.0").keys == ["models[0].extraArgs[0]"]
    # 0.33 accepts --disable-log-requests again
    log = {**m, "extraArgs": ["--disable-log-requests"]}
    assert _error(24.0, log, base="vllm/vllm-openai:v0.26.0").keys == ["models[0].extraArgs[0]"]
    assert _plan(24.0, log, base="vllm/vllm-openai:v0.33.0").models[0].args[-1] == "--disable-log-requests"
    # embedding models: --task before 0.13, --runner pooling after
    e = {"name": "e", "model": "Qwen/Qwen3-Embedding-0.6B", "maxModelLen": 2048}
    assert "--task" in _plan(24.0, e, base="vllm/vllm-openai:v0.12.0").models[0].args
    assert "--runner" in _plan(24.0, e, base="vllm/vllm-openai:v0.26.0").models[0].args
