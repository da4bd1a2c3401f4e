"""A GPU that cannot hold its models is refused once, naming what takes its memory (a fixed fraction first), with the
fixes that work: every fix a refusal offers is read back from its text, applied to the stack file and planned."""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stacks.catalog import lookup
from stacks.config import parse, read_stack_file
from stacks.errors import ConfigError, Problem
from stacks.plan import plan
from tests.conftest import ROOT, docker_raw, kube_raw

FIXES = "fixes that work (each alone; checked by planning the stack with it): "
M = r"models\[(\d+)\]"
# every fix the planner writes, and the keys it asks to set (from the fix's own words)
EDITS: list[tuple[str, Callable[[re.Match[str]], dict[int, dict[str, Any]]]]] = [
    (rf"^(?:lower|raise) {M}\.gpuMemoryUtilization from [\d.]+ to ([\d.]+)", lambda m: {int(m[1]): {"gpuMemoryUtilization": float(m[2])}}),
    (rf"^set ((?:{M}\.gpuMemoryUtilization(?: and )?)+) to auto$", lambda m: {int(i): {"gpuMemoryUtilization": "auto"} for i in re.findall(M, m[1])}),
    (rf"^move \S+ to GPU \d+ \({M}\.gpus: \[(\d+)\]\)$", lambda m: {int(m[1]): {"gpus": [int(m[2])]}}),
    (rf"^set {M}\.kvCacheDtype: fp8 ", lambda m: {int(m[1]): {"kvCacheDtype": "fp8"}}),
    (rf"^set kvCacheDtype: fp8 on ((?:{M}(?:, )?)+)$", lambda m: {int(i): {"kvCacheDtype": "fp8"} for i in re.findall(M, m[1])}),
    (rf"^lower {M}\.maxModelLen from \d+ to (\d+)$", lambda m: {int(m[1]): {"maxModelLen": int(m[2])}}),
    (
        rf"^spread \S+ over GPUs \[[\d, ]+\] \({M}\.gpus: \[([\d, ]+)\], tensorParallel: (\d+)\)$",
        lambda m: {int(m[1]): {"gpus": [int(g) for g in m[2].split(", ")], "tensorParallel": int(m[3])}},
    ),
    (rf"^set {M}\.tensorParallel: (\d+) ", lambda m: {int(m[1]): {"tensorParallel": int(m[2])}}),
    (rf"^set {M}\.quantization: fp8 ", lambda m: {int(m[1]): {"quantization": "fp8"}}),
    (rf"^serve a 4-bit AWQ or GPTQ checkpoint of \S+ where one is published \(its id in {M}\.model", lambda m: {int(m[1]): {"quantization": "awq"}}),
]


def fixes_of(problem: Problem) -> list[str]:
    assert FIXES in problem.message, problem.message
    return problem.message.split(FIXES, 1)[1].split("; ")


def apply(raw: dict[str, Any], fix: str) -> dict[str, Any]:
    """The stack file with the fix applied, as its text says."""
    edits = [edit(m) for pattern, edit in EDITS if (m := re.match(pattern, fix))]
    assert len(edits) == 1, f"a fix this test cannot read: {fix!r}"
    edited = copy.deepcopy(raw)
    for i, keys in edits[0].items():
        edited["models"][i].update(keys)
    return edited


def refusal(raw: dict[str, Any]) -> list[Problem]:
    with pytest.raises(ConfigError) as err:
        plan(parse(copy.deepcopy(raw)))
    return err.value.problems


def assert_every_fix_works(raw: dict[str, Any], problem: Problem) -> list[str]:
    fixes = fixes_of(problem)
    assert fixes
    for fix in fixes:
        planned = plan(parse(apply(raw, fix)))
        assert all(m.memory.max_full_sequences >= 1 for m in planned.models if m.memory.kv_cache_bytes), fix
    return fixes


def _dev(edit: Any) -> dict[str, Any]:
    raw = read_stack_file(ROOT / "Pulumi.dev.yaml")
    edit(raw)
    return raw


def test_a_fixed_fraction_that_takes_the_memory_is_named_and_the_fix_lowers_it() -> None:
    """One model with gpuMemoryUtilization 0.5 used to make another model's weights "not fit against 13.05 GiB left",
    with tensor parallelism suggested on a one-GPU host."""
    raw = _dev(lambda r: r["models"][0].update(gpuMemoryUtilization=0.5))
    [p] = refusal(raw)
    assert p.key == "models[0].gpuMemoryUtilization"
    assert "tinyllama's fixed gpuMemoryUtilization 0.500 takes 15.69 GiB" in p.message
    fixes = assert_every_fix_works(raw, p)
    assert fixes[0].startswith("lower models[0].gpuMemoryUtilization from 0.500 to ") and fixes[0].endswith("(or set it to auto)")
    assert "tensorParallel" not in p.message and "another GPU" not in p.message, "one GPU: nothing to spread over or move to"


def test_two_fixed_fractions_are_both_named_with_no_negative_room() -> None:
    raw = _dev(lambda r: (r["models"][0].update(gpuMemoryUtilization=0.5), r["models"][1].update(gpuMemoryUtilization=0.4)))
    [p] = refusal(raw)
    assert "tinyllama's fixed gpuMemoryUtilization 0.500" in p.message and "qwen2-5-3b's fixed gpuMemoryUtilization 0.400" in p.message
    assert "-" not in re.sub(r"[\w.]+-[\w.-]+", "", p.message), "no negative figure"
    assert "set models[0].gpuMemoryUtilization and models[1].gpuMemoryUtilization to auto" in assert_every_fix_works(raw, p)


def test_a_model_that_does_not_fit_is_one_problem_for_its_gpu_not_one_per_model() -> None:
    """Adding a 32k-context model to the dev stack used to give four problems ending "the longest maxModelLen that fits is 0"."""
    raw = _dev(lambda r: r["models"].append({"name": "llama3b", "model": "meta-llama/Llama-3.2-3B-Instruct", "gpus": [0], "maxModelLen": 32768}))
    [p] = refusal(raw)
    assert p.key == "models[3].gpus" and "GPU 0 (RTX 5090, 31.37 GiB) is 2.6" in p.message and "fits is 0" not in p.message
    for name in ("tinyllama", "qwen2-5-3b", "yi-6b", "llama3b"):
        assert f"{name} needs " in p.message
    fixes = assert_every_fix_works(raw, p)
    assert fixes[0].startswith("lower models[3].maxModelLen from 32768 to "), "the fix for the model that tipped it over comes first"


def test_a_full_gpu_offers_the_free_one() -> None:
    raw = docker_raw(
        gpus=[{"index": 0, "name": "RTX 4090", "memoryGiB": 23.52}, {"index": 1, "name": "RTX 4090", "memoryGiB": 23.52}],
        models=[
            {"name": "qwen7", "model": "Qwen/Qwen2.5-7B-Instruct", "gpus": [0], "maxModelLen": 8192},
            {"name": "mistral", "model": "mistralai/Mistral-7B-Instruct-v0.3", "gpus": [0], "maxModelLen": 8192},
            {"name": "tiny", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [1], "maxModelLen": 2048},
        ],
    )
    [p] = refusal(raw)
    fixes = assert_every_fix_works(raw, p)
    assert fixes[:2] == ["move mistral to GPU 1 (models[1].gpus: [1])", "move qwen7 to GPU 1 (models[0].gpus: [1])"]


def test_a_fraction_too_small_for_its_own_sequence_is_raised_and_an_overcommitted_gpu_lowered() -> None:
    small = docker_raw(models=[{"name": "t", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 2048, "gpuMemoryUtilization": 0.05}])
    [p] = refusal(small)
    assert assert_every_fix_works(small, p)[0].startswith("raise models[0].gpuMemoryUtilization from 0.050 to ")
    two = {"model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 2048}
    over = docker_raw(models=[{"name": "a", **two, "gpuMemoryUtilization": 0.6}, {"name": "b", **two, "gpuMemoryUtilization": 0.5}])
    [p] = refusal(over)
    assert p.key == "models[1].gpuMemoryUtilization" and "over-committed" in p.message
    assert assert_every_fix_works(over, p)[0].startswith("lower models[0].gpuMemoryUtilization from 0.600 to ")


def test_kubernetes_refusals_name_no_gpu_index_and_offer_tensor_parallel_sizes_vllm_takes() -> None:
    raw = kube_raw(models=[{"name": "llama70", "model": "meta-llama/Llama-3.1-70B-Instruct", "maxModelLen": 8192}])
    [p] = refusal(raw)
    assert p.key == "models[0].tensorParallel" and "each NVIDIA L40S GPU of its pod" in p.message
    assert not re.search(r"GPU \d", p.message) and "move" not in p.message and "another GPU" not in p.message
    assert assert_every_fix_works(raw, p)[0] == "set models[0].tensorParallel: 4 (4 GPUs per pod)"
    # Qwen2.5-14B: 40 heads, 8 KV heads; 5 divides the heads but vLLM refuses it (neither divides 8 nor a multiple)
    qwen = kube_raw(models=[{"name": "q", "model": "Qwen/Qwen2.5-14B-Instruct", "maxModelLen": 32768}], kubernetes={"gpu": {"name": "T4", "memoryGiB": 14.56}})
    [p] = refusal(qwen)
    assert "tensorParallel: 4" in assert_every_fix_works(qwen, p)[0]


CATALOG_SMALL = [
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "Qwen/Qwen2.5-3B-Instruct",
    "Qwen/Qwen3-8B",
    "01-ai/Yi-6B-Chat",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "google/gemma-3-4b-it",
    "meta-llama/Llama-3.2-3B-Instruct",
    "Qwen/Qwen3-Embedding-0.6B",
]


def _random_stack(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    gpus = [{"index": i, "name": "GPU", "memoryGiB": rng.choice([15.6, 23.52, 31.37])} for i in range(rng.choice([1, 2]))]
    models = []
    for i in range(rng.randint(1, 4)):
        m: dict[str, Any] = {"name": f"m{i}", "model": rng.choice(CATALOG_SMALL), "gpus": [rng.randrange(len(gpus))]}
        arch = lookup(m["model"])
        assert arch
        m["maxModelLen"] = min(rng.choice([2048, 8192, 32768]), arch.context_length)
        if rng.random() < 0.3:
            m["gpuMemoryUtilization"] = rng.choice([0.2, 0.4, 0.6])
        models.append(m)
    return docker_raw(gpus=gpus, models=models)


@pytest.mark.parametrize("seed", range(60))
def test_every_fix_of_every_gpu_refusal_works(seed: int) -> None:
    raw = _random_stack(seed)
    try:
        plan(parse(copy.deepcopy(raw)))
        return
    except ConfigError as err:
        problems = err.problems
    gpu_problems = [p for p in problems if FIXES in p.message]
    for p in gpu_problems:
        if len([q for q in problems if q.key.startswith("models[")]) == 1:
            assert_every_fix_works(raw, p)
        else:  # several GPUs refused: each fix clears its own problem
            for fix in fixes_of(p):
                try:
                    plan(parse(apply(raw, fix)))
                except ConfigError as after:
                    assert p.message not in {q.message for q in after.problems}


def test_refusals_never_suggest_what_they_did_not_check() -> None:
    """The old refusal texts suggested fixes unconditionally; none of them is left."""
    for text in (Path(ROOT / "stacks/plan/sharing.py").read_text(), Path(ROOT / "stacks/plan/planner.py").read_text()):
        assert "move a model to another GPU" not in text and "the longest maxModelLen that fits is" not in text
