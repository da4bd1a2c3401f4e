"""A model outside the catalog, described by ``arch``: the refusal asks for every field that moves its memory figure,
and a model described that way plans exactly as the catalog plans it."""

from __future__ import annotations

from typing import Any

import pytest

from stacks.catalog import ASSUMED_QK_NORM, CONFIG_NAMES, Arch, entry, ids, lookup
from stacks.catalog.vision import VisionTower
from stacks.config import parse
from stacks.config.schema import ArchConfig, yaml_key
from stacks.errors import ConfigError
from stacks.plan import plan
from tests.conftest import docker_raw

# Qwen/Qwen2.5-14B-Instruct-AWQ's config.json, as a user copies it
AWQ_14B = {
    "parametersB": 14.77,
    "layers": 48,
    "attentionHeads": 40,
    "kvHeads": 8,
    "hiddenSize": 5120,
    "intermediateSize": 13824,
    "vocabSize": 152064,
    "contextLength": 32768,
    "tiedEmbeddings": False,
}


def _one_gpu(model: dict[str, Any], memory_gib: float = 23.52) -> dict[str, Any]:
    return docker_raw(gpus=[{"index": 0, "name": "RTX 3090", "memoryGiB": memory_gib}], models=[{"name": "m", "gpus": [0], **model}])


def test_the_keys_the_old_refusal_asked_for_are_not_enough_and_the_refusal_says_where_the_rest_are() -> None:
    """The five keys the refusal used to ask for planned this model 2 GiB too small (a 32,000 vocabulary, hidden = KV heads x head dim)."""
    few = {"parametersB": 14.77, "layers": 48, "kvHeads": 8, "headDim": 128, "contextLength": 32768}
    with pytest.raises(ConfigError) as err:
        plan(parse(_one_gpu({"model": "Qwen/Qwen2.5-14B-Instruct-AWQ", "quantization": "awq", "maxModelLen": 8192, "arch": few})))
    [problem] = err.value.problems
    assert problem.key == "models[0].arch"
    for key in ("attentionHeads", "hiddenSize", "intermediateSize", "vocabSize", "tiedEmbeddings"):
        assert f"{key}: {CONFIG_NAMES[key]}" in problem.message
    assert "parametersB: ..." not in problem.message, "only what is missing is asked for"


def test_an_unknown_quantized_model_plans_like_the_catalog_model_it_is() -> None:
    def planned(model: str, arch: dict[str, Any] | None) -> Any:
        return plan(parse(_one_gpu({"model": model, "quantization": "awq", "maxModelLen": 8192} | ({"arch": arch} if arch else {}))))

    known = planned("Qwen/Qwen2.5-14B-Instruct", None)
    unknown = planned("Qwen/Qwen2.5-14B-Instruct-AWQ", AWQ_14B | {"qkNorm": False})
    assert unknown.models[0].memory == known.models[0].memory and unknown.notes == known.notes
    assert unknown.models[0].memory.weights_gib > 9.2, "embeddings and LM head at bfloat16: 2 x 152,064 x 5,120"
    # left out, per-head query/key norms are taken (the larger activation), and the plan says so
    assumed = planned("Qwen/Qwen2.5-14B-Instruct-AWQ", AWQ_14B)
    assert assumed.models[0].memory.activation_gib > known.models[0].memory.activation_gib
    assert f"models[0] (m): {ASSUMED_QK_NORM}" in assumed.notes


def test_moe_and_quantized_models_need_their_extra_keys() -> None:
    moe = {**AWQ_14B, "experts": 64}
    with pytest.raises(ConfigError) as err:
        plan(parse(_one_gpu({"model": "acme/moe", "maxModelLen": 4096, "arch": moe})))
    assert "expertsPerToken: num_experts_per_tok" in str(err.value) and "expertIntermediateSize" in str(err.value)
    untied = {k: v for k, v in AWQ_14B.items() if k != "tiedEmbeddings"}
    assert plan(parse(_one_gpu({"model": "acme/dense", "maxModelLen": 4096, "arch": untied}, memory_gib=80))), "tied embeddings matter only when quantized"
    with pytest.raises(ConfigError, match="tiedEmbeddings"):
        plan(parse(_one_gpu({"model": "acme/dense", "quantization": "gptq", "maxModelLen": 4096, "arch": untied})))


def _as_arch_keys(a: Arch) -> dict[str, Any]:
    """Every ``arch`` key of a catalog model's facts, as a stack file would give them."""
    values = {yaml_key(f): getattr(a, f) for f in ArchConfig.model_fields if f != "vision"}
    keys = {k: v for k, v in values.items() if v is not None and (v != 0 or isinstance(v, bool))}
    if a.vision:
        keys["vision"] = _vision_keys(a.vision)
    return keys


def _vision_keys(v: VisionTower) -> dict[str, Any]:
    """``arch.vision`` describes an images-only tower (stacks.catalog.vision.from_arch); a tower that also takes video or
    spans frames (Qwen2.5-VL) has no such description."""
    [image] = [m for m in v.modalities if m.name == "image"]
    if len(v.modalities) > 1 or v.frames_per_patch != 1:
        pytest.skip("arch.vision describes images-only towers")
    return {
        "parametersB": v.parameters / 1e9,
        "layers": v.layers,
        "hiddenSize": v.hidden_size,
        "intermediateSize": v.intermediate_size,
        "heads": v.heads,
        "gatedMlp": v.gated_mlp,
        "patchSize": v.patch_size,
        "embedsPerImage": image.embeds_per_item,
        "positionsPerEmbed": image.positions_per_embed,
    }


@pytest.mark.parametrize("model", ids())
def test_every_catalog_model_described_through_arch_alone_plans_the_same(model: str) -> None:
    a = lookup(model)
    e = entry(model)
    assert a and e
    settings: dict[str, Any] = {"maxModelLen": min(4096, a.context_length), "task": a.task}
    if a.quantization:
        settings["quantization"] = a.quantization
    known = plan(parse(_one_gpu({"model": model, **settings}, memory_gib=1024)))
    # the tool-call parser comes from the family's id (stacks/catalog/tool_calls.py): a copy under another id names it
    parser = {"toolCallParser": known.models[0].tool_call_parser} if known.models[0].tool_call_parser else {}
    described = plan(parse(_one_gpu({"model": f"acme/{model.split('/')[1]}-copy", **settings, **parser, "arch": _as_arch_keys(a)}, memory_gib=1024)))
    assert described.models[0].memory == known.models[0].memory
    assert described.models[0].args[1:] == known.models[0].args[1:], "the same server flags but the model id"
