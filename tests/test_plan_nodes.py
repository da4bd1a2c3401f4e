"""Models spanning nodes, in the config and the plan: what is refused (with the key and the fix), how vLLM splits a model
over pipeline stages, what each stage's GPUs hold, and the split a refusal suggests (applied, it plans)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from stacks.catalog import resolve
from stacks.cli import main as cli_main
from stacks.config import parse
from stacks.errors import ConfigError
from stacks.plan import plan
from stacks.plan.memory import DTYPE_BYTES, GIB, stage_layers, stage_weights_gib
from stacks.plan.types import StackPlan
from tests.conftest import docker_raw, kube_raw

VLLM_SOURCE = Path("/work/ref/src/vllm-0.26.0/vllm")
"""The pinned vLLM's unpacked wheel, where this machine has it (not in CI)."""
L40S_NODE = {"name": "NVIDIA L40S", "memoryGiB": 44.52, "perNode": 8}
BIG = {"name": "big", "model": "Qwen/Qwen3-235B-A22B", "maxModelLen": 32768}
LLAMA_70B = {**BIG, "model": "meta-llama/Llama-3.1-70B-Instruct", "maxModelLen": 8192}


def kube(*models: dict[str, Any], gpu: dict[str, Any] | None = None, **kube_keys: Any) -> dict[str, Any]:
    raw = kube_raw(models=list(models))
    raw["kubernetes"] |= {"gpu": gpu or L40S_NODE, **kube_keys}
    return raw


def problems(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        plan(parse(raw))
    return {p.key: p.message for p in exc.value.problems}


# --- refusals -----------------------------------------------------------------------------------------------------------


def test_docker_refuses_a_model_spanning_nodes() -> None:
    raw = docker_raw()
    raw["models"][0]["nodes"] = 2
    found = problems(raw)
    assert list(found) == ["models[0].nodes"]
    assert "needs target kubernetes" in found["models[0].nodes"] and "tensorParallel / pipelineParallel" in found["models[0].nodes"]


def test_one_pipeline_stage_per_node() -> None:
    assert plan(parse(kube({**BIG, "nodes": 2, "tensorParallel": 8, "pipelineParallel": 2}))).models[0].pipeline_parallel == 2
    found = problems(kube({**BIG, "nodes": 2, "tensorParallel": 4, "pipelineParallel": 4}))
    assert "set pipelineParallel: 2 or remove it" in found["models[0].pipelineParallel"]
    assert "tensor parallel across nodes is not offered" in found["models[0].pipelineParallel"]


def test_what_a_group_cannot_do() -> None:
    spanning = {**BIG, "nodes": 2, "tensorParallel": 8}
    found = problems(kube({**spanning, "autoscaling": {"enabled": True}}, modelCacheAccessMode="ReadWriteOnce"))
    assert "set replicas" in found["models[0].autoscaling"]
    assert "use ReadWriteMany" in found["kubernetes.modelCacheAccessMode"]
    found = problems(kube({**spanning, "extraArgs": ["--distributed-executor-backend", "ray"]}))
    assert "the image has no Ray" in found["models[0].extraArgs[0]"]
    # on one node the flag is the user's to pass
    assert plan(parse(kube({**BIG, "model": "Qwen/Qwen3-8B", "extraArgs": ["--distributed-executor-backend", "mp"]})))


@pytest.mark.parametrize("flag", ["--nnodes=2", "--node-rank", "--master-addr", "--headless", "-n"])
def test_node_flags_are_the_stacks(flag: str) -> None:
    found = problems(kube({**BIG, "model": "Qwen/Qwen3-8B", "extraArgs": [flag]}))
    assert "is managed by the stack; set models[].nodes" in found["models[0].extraArgs[0]"]


def test_release_and_name_length() -> None:
    raw = kube({**BIG, "nodes": 2, "tensorParallel": 8})
    raw["image"] = {"base": "vllm/vllm-openai:v0.25.0"}
    assert "pin image.base vllm/vllm-openai:v0.26.0 or later" in problems(raw)["models[0].nodes"]
    fits = "m" * 38
    assert plan(parse(kube({**BIG, "name": fits, "nodes": 2, "tensorParallel": 8}))).models[0].group == f"vllm-{fits}-group"
    found = problems(kube({**BIG, "name": fits + "x", "nodes": 2, "tensorParallel": 8}))
    assert "1 characters too long; use a name of at most 38 characters" in found["models[0].name"]


def test_a_pod_fits_on_a_node() -> None:
    found = problems(kube({**BIG, "tensorParallel": 16}))
    assert "a pod would need 16 GPUs but a node has 8" in found["models[0].tensorParallel"] and "nodes: 2" in found["models[0].tensorParallel"]
    found = problems(kube({**BIG, "nodes": 2, "tensorParallel": 16}))
    assert "lower tensorParallel to 8" in found["models[0].tensorParallel"]


# --- the split a refusal names, applied, plans ----------------------------------------------------------------------------


def apply_fix(model: dict[str, Any], message: str) -> dict[str, Any]:
    """The stack file a user writes after reading the refusal."""
    fixed = dict(model)
    for key, value in re.findall(r"(nodes|tensorParallel): (\d+)", message.split("; ", 1)[1]):
        fixed[key] = int(value)
    return fixed


@pytest.mark.parametrize(
    ("model", "gpu", "key", "says"),
    [
        ({**BIG, "tensorParallel": 8}, L40S_NODE, "models[0].nodes", "the smallest node count that fits is nodes: 2 (2 nodes x 8 GPUs"),
        (BIG, L40S_NODE, "models[0].nodes", "nodes: 2 with tensorParallel: 8"),
        ({**BIG, "nodes": 2, "tensorParallel": 4}, {**L40S_NODE, "perNode": 4}, "models[0].nodes", "the smallest node count that fits is nodes: 3"),
        (
            {**BIG, "model": "meta-llama/Llama-3.1-70B-Instruct", "maxModelLen": 8192},
            L40S_NODE,
            "models[0].tensorParallel",
            "tensorParallel: 4 fits on one node",
        ),
        (
            {**BIG, "model": "meta-llama/Llama-3.1-70B-Instruct", "maxModelLen": 8192},
            # nodes of one GPU each; without perNode the GPU's shortfall names a wider pod (tests/test_gpu_refusals.py)
            {"name": "NVIDIA L40S", "memoryGiB": 44.52, "perNode": 1},
            "models[0].nodes",
            "nodes: 4 (",
        ),
    ],
    ids=["more-nodes", "tensor-then-nodes", "narrow-nodes", "tensor-parallel", "one-gpu-nodes"],
)
def test_a_model_too_big_names_the_smallest_split_that_fits(model: dict[str, Any], gpu: dict[str, Any], key: str, says: str) -> None:
    found = problems(kube(model, gpu=gpu))
    assert list(found) == [key]
    assert says in found[key] and "its heaviest GPU needs" in found[key]
    fixed = apply_fix(model, found[key])
    assert fixed != model
    m = plan(parse(kube(fixed, gpu=gpu))).models[0]
    assert m.memory.max_full_sequences >= 1
    # one GPU fewer per node, or one node fewer, would not do
    smaller = dict(fixed, nodes=fixed["nodes"] - 1) if fixed.get("nodes", 1) > 2 else None
    if smaller:
        with pytest.raises(ConfigError):
            plan(parse(kube(smaller, gpu=gpu)))


def test_a_model_that_fits_nowhere_says_so() -> None:
    arch = {
        "parametersB": 2000,
        "layers": 4,
        "attentionHeads": 8,
        "kvHeads": 8,
        "headDim": 512,
        "hiddenSize": 4096,
        "contextLength": 4096,
        "vocabSize": 32000,
        "intermediateSize": 14336,
    }
    found = problems(kube({"name": "huge", "model": "example/huge", "arch": arch}, gpu={**L40S_NODE, "perNode": 1}))
    assert "it does not fit on up to 4 nodes of 1 such GPUs; use a quantized checkpoint" in found["models[0].nodes"]


# --- how vLLM splits a model -------------------------------------------------------------------------------------------


def vllm_get_pp_indices() -> Any:
    """vLLM 0.26.0's own ``get_pp_indices``, taken from its source and run without torch (envs and logger stubbed)."""
    source = (VLLM_SOURCE / "distributed" / "utils.py").read_text()
    [fn] = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "get_pp_indices"]
    namespace: dict[str, Any] = {
        "envs": type("envs", (), {"VLLM_PP_LAYER_PARTITION": None}),
        "logger": type("logger", (), {"info": staticmethod(lambda *a, **k: None)}),
    }
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "get_pp_indices", "exec"), namespace)
    return namespace["get_pp_indices"]


def test_stages_split_layers_as_vllm_does() -> None:
    if not VLLM_SOURCE.exists():
        pytest.skip("the pinned vLLM's source is not unpacked here")
    get_pp_indices = vllm_get_pp_indices()
    for layers in (1, 2, 7, 22, 32, 61, 80, 94, 126):
        for pp in range(1, min(layers, 16) + 1):
            bounds = [get_pp_indices(layers, rank, pp) for rank in range(pp)]
            assert [end - start for start, end in bounds] == stage_layers(layers, pp), (layers, pp)


def test_embedding_on_the_first_stage_and_head_on_the_last() -> None:
    qwen = resolve("Qwen/Qwen3-235B-A22B", None)
    assert not isinstance(qwen, list) and not qwen.tied_embeddings
    one = stage_weights_gib(qwen, 2, None, 8, 1)
    two = stage_weights_gib(qwen, 2, None, 8, 2)
    rope = qwen.context_length * qwen.head_dim * 4 / GIB
    assert one[0] == pytest.approx(qwen.parameters_b * 1e9 * 2 / 8 / GIB + rope)
    # untied, an even split: the embedding and the LM head weigh the same
    assert two[0] == pytest.approx(two[1]) and sum(w - rope for w in two) == pytest.approx(one[0] - rope)
    three = stage_weights_gib(qwen, 2, None, 8, 3)  # 31, 32, 31 layers: the middle stage takes the remainder
    embed = qwen.vocab_size * qwen.hidden_size * 2 / 8 / GIB
    layer = (qwen.parameters_b * 1e9 * 2 / 8 / GIB - 2 * embed) / qwen.layers
    assert three == pytest.approx([31 * layer + embed + rope, 32 * layer + rope, 31 * layer + embed + rope])
    tied = resolve("meta-llama/Llama-3.2-1B-Instruct", None)
    assert not isinstance(tied, list) and tied.tied_embeddings
    split = stage_weights_gib(tied, DTYPE_BYTES["bfloat16"], None, 1, 2)
    whole = stage_weights_gib(tied, DTYPE_BYTES["bfloat16"], None, 1, 1)[0]
    # a tied model keeps the embedding on the last stage too (it is its LM head there)
    extra = tied.vocab_size * tied.hidden_size * 2 / GIB
    assert sum(split) - 2 * (tied.context_length * tied.head_dim * 4 / GIB) == pytest.approx(whole - tied.context_length * tied.head_dim * 4 / GIB + extra)


def multinode() -> StackPlan:
    return plan(parse(kube({**BIG, "nodes": 3, "tensorParallel": 8})))


def test_every_stage_of_a_group_in_the_plan() -> None:
    m = multinode().models[0]
    stages = m.memory.stages
    assert [(s.stage, s.node, s.first_layer, s.layers) for s in stages] == [(0, 0, 0, 31), (1, 1, 31, 32), (2, 2, 63, 31)]
    # the heaviest stage binds: its figures are the model's
    heaviest = max(stages, key=lambda s: s.footprint_gib)
    assert heaviest.weights_gib == m.memory.weights_gib and heaviest.footprint_gib == pytest.approx(m.memory.footprint_gib, abs=1e-3)
    # every stage has as many blocks, each of its own layers
    assert [s.kv_gib for s in stages] == pytest.approx([m.memory.kv_gib * s.layers / 32 for s in stages], abs=1e-3)
    assert stages[-1].activation_gib > stages[1].activation_gib, "the sampler's logits are the last stage's"
    assert all(s.footprint_gib <= m.memory.footprint_gib + 1e-9 for s in stages)
    assert (m.nodes, m.gpus_per_node, m.group) == (3, 8, "vllm-big-group")
    assert m.worker_args == [*m.args, "--headless"]


def test_one_host_pipeline_keeps_its_stages_on_one_node() -> None:
    raw = docker_raw(
        gpus=[{"index": i, "memoryGiB": 23.5} for i in range(2)],
        models=[{"name": "m", "model": "Qwen/Qwen3-8B", "gpus": [0, 1], "pipelineParallel": 2, "maxModelLen": 4096}],
    )
    m = plan(parse(raw)).models[0]
    assert [s.node for s in m.memory.stages] == [0, 0] and m.nodes == 1 and "--nnodes" not in m.args and m.worker_args == []


def test_plan_shows_nodes_x_gpus_and_each_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["plan", "multinode"]) == 0
    out = capsys.readouterr().out
    assert "qwen3-235b (2 nodes x 8 GPUs)" in out
    assert "qwen3-235b: per GPU of each pipeline stage" in out
    assert re.search(r"0\s+0 \(leader\)\s+0-46\s", out) and re.search(r"1\s+1\s+47-93\s", out)


# --- features that keep a model on one node: no refusal suggests nodes to them ----------------------------------------

ONE_NODE: dict[str, dict[str, Any]] = {
    "swap": {"swap": {"group": "chat"}},
    "autoscaling": {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2}},
}
"""A swap group runs in one pod on one node, and KEDA does not scale a group of nodes: both are refused with ``nodes``."""


def _one_node_stack(feature: str, model: dict[str, Any]) -> dict[str, Any]:
    models = [{**model, **ONE_NODE[feature]}]
    if feature == "swap":
        models.append({"name": "other", "model": "Qwen/Qwen3-8B", "maxModelLen": 8192, "maxNumSeqs": 2, **ONE_NODE[feature]})
    return kube(*models, modelCacheAccessMode="ReadWriteMany")


@pytest.mark.parametrize("feature", list(ONE_NODE))
def test_a_model_too_big_for_a_node_that_cannot_span_nodes_is_not_told_to(feature: str) -> None:
    found = problems(_one_node_stack(feature, {**BIG, "maxModelLen": 8192, "maxNumSeqs": 2}))
    assert not any(re.search(r"nodes: \d", message) for message in found.values()), found
    assert "does not fit on one node of 8 such GPUs" in found["models[0].tensorParallel"]
    # a pod wider than a node: narrower, never more nodes
    found = problems(_one_node_stack(feature, {**BIG, "model": "Qwen/Qwen3-8B", "maxModelLen": 8192, "tensorParallel": 16}))
    assert "a pod would need 16 GPUs but a node has 8" in found["models[0].tensorParallel"]
    assert not re.search(r"nodes: \d", found["models[0].tensorParallel"]), found


def test_a_wider_pod_suggested_to_a_group_counts_one_nodes_gpus() -> None:
    """A group's pod holds one pipeline stage: tensorParallel GPUs, not tensorParallel x pipelineParallel."""
    found = problems(kube({**BIG, "nodes": 2, "pipelineParallel": 2, "tensorParallel": 8, "gpuMemoryUtilization": 0.62}, gpu={**L40S_NODE, "perNode": None}))
    message = found["models[0].gpuMemoryUtilization"]
    assert "set models[0].tensorParallel: 16 (16 GPUs per pod, 2 pods)" in message, message
