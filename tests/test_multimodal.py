"""Multimodal checkpoints as vLLM loads them: the catalog's towers against the published parameter totals, the encoder
budget and profile vLLM 0.26 computes, where each release counts the encoder, text-only use, launch arguments and the
refusals of the new key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stacks.catalog import lookup
from stacks.config import ArchConfig, parse
from stacks.config.schema import VisionArchConfig
from stacks.errors import ConfigError
from stacks.plan import GIB, ModelPlan, plan
from stacks.plan.multimodal import encoder_figures, limit_args
from stacks.plan.releases import encoder_profiled, uses_v2_model_runner
from stacks.render import open_webui_models
from tests.conftest import docker_raw

H100 = 79.18


def _one(model: str, memory: float = H100, image: str = "vllm/vllm-openai:v0.26.0", **kw: Any) -> ModelPlan:
    raw = docker_raw(image={"base": image}, gpus=[{"index": 0, "name": "H100", "memoryGiB": memory}], models=[{"name": "m", "model": model, "gpus": [0], **kw}])
    return plan(parse(raw)).models[0]


def _text_parameters(model: str) -> int:
    """The language model's parameters from its config's shapes (embedding, attention, MLP or experts, norms)."""
    a = lookup(model)
    assert a
    h, q, kv = a.hidden_size, a.attention_heads * a.head_dim, a.kv_heads * a.head_dim
    qwen = a.architecture.startswith("Qwen2_5")
    attention = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if qwen else 0)
    # Llama 4: routed experts, one shared expert and the router
    mlp = (a.experts + 1) * 3 * h * a.expert_intermediate_size + h * a.experts if a.experts else 3 * h * a.intermediate_size
    gemma = a.architecture.startswith("Gemma3")
    norms = (4 * h + 2 * a.head_dim) if gemma else 2 * h
    embeddings = a.vocab_size * h * (1 if a.tied_embeddings else 2)
    return embeddings + a.layers * (attention + mlp + norms) + h


@pytest.mark.parametrize(
    ("model", "total"),
    [
        ("google/gemma-3-4b-it", 4_300_079_472),
        ("google/gemma-3-12b-it", 12_187_325_040),
        ("google/gemma-3-27b-it", 27_432_406_640),
        ("Qwen/Qwen2.5-VL-7B-Instruct", 8_292_166_656),
        ("Qwen/Qwen2.5-VL-32B-Instruct", 33_452_718_336),
        ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", 24_011_361_280),
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", 108_641_793_536),
    ],
)
def test_text_shapes_plus_the_tower_add_up_to_the_published_total(model: str, total: int) -> None:
    """The safetensors total of each repository = its text config's shapes + the tower and projector the catalog counts:
    the tower's count is exact, so weights with and without it are too."""
    a = lookup(model)
    assert a and a.vision
    assert _text_parameters(model) + a.vision.parameters == total
    assert a.parameters_b * 1e9 == pytest.approx(total, abs=1)


def test_catalog_describes_each_multimodal_checkpoint_as_published() -> None:
    expected = {
        # model: (family, layers, embeddings per image, ViT positions per embedding, modalities)
        "google/gemma-3-4b-it": ("siglip", 27, 256, 16, ("image",)),
        "google/gemma-3-27b-it": ("siglip", 27, 256, 16, ("image",)),
        "Qwen/Qwen2.5-VL-7B-Instruct-AWQ": ("qwen2_5_vl", 32, 16384, 4, ("image", "video")),
        "mistralai/Mistral-Small-3.1-24B-Instruct-2503": ("pixtral", 24, 55 * 55, 4, ("image",)),
        "meta-llama/Llama-4-Scout-17B-16E-Instruct": ("llama4", 34, 17 * 144, 577 / 144, ("image",)),
    }
    for model, (family, layers, embeds, positions, modalities) in expected.items():
        a = lookup(model)
        assert a and a.vision, model
        image = a.vision.modality("image")
        assert image
        assert (a.vision.family, a.vision.layers, image.embeds_per_item, image.positions_per_embed) == (family, layers, embeds, positions), model
        assert tuple(m.name for m in a.vision.modalities) == modalities
    gemma = lookup("google/gemma-3-27b-it")
    assert gemma and gemma.architecture == "Gemma3ForConditionalGeneration"
    # the text model as vLLM builds it from text_config over Gemma3TextConfig's defaults
    assert (gemma.layers, gemma.kv_heads, gemma.head_dim, gemma.vocab_size, gemma.sliding_window, gemma.sliding_layers) == (62, 16, 128, 262208, 1024, 52)
    scout = lookup("meta-llama/Llama-4-Scout-17B-16E-Instruct")
    assert scout and (scout.experts, scout.experts_per_token, scout.sliding_window, scout.sliding_layers) == (16, 1, 8192, 36)
    awq = lookup("Qwen/Qwen2.5-VL-32B-Instruct-AWQ")
    assert awq and awq.quantization == "awq" and awq.vision


def test_gemma3_profile_as_vllm_0_26_counts_it() -> None:
    """H100 defaults (8192 batched tokens): budget max(8192, 256) = 8192 embeddings, 32 images of 896 px in one encoder
    pass (4096 ViT positions each); vLLM's log: 'Encoder cache will be initialized with a budget of 8192 tokens, and
    profiled with 32 image items of the maximum feature size'."""
    m = _one("google/gemma-3-27b-it", maxModelLen=8192, maxNumSeqs=16)
    e = m.encoder
    assert e and e.tower_loaded and e.limits == {"image": 999} and e.modalities == ["image"]
    assert (e.profiled_modality, e.embeds_per_item, e.items_per_batch, e.budget_tokens) == ("image", 256, 32, 8192)
    # the tower and projector, 423,060,336 bf16 parameters, are in the weights vLLM loads
    assert e.weights_gib == pytest.approx(423_060_336 * 2 / GIB, abs=1e-3)
    # V2 model runner (0.26, dense): not profiled, so the encoder's memory is outside the budget and in the footprint
    assert not m.memory.encoder_in_budget and m.memory.encoder_gib > 0.5
    assert m.memory.outside_budget_gib == pytest.approx(0.5 + m.memory.cudagraph_gib + m.memory.encoder_gib, abs=2e-3)
    # fewer sequences, fewer images per batch: max_num_seqs x images per prompt
    few = _one("google/gemma-3-27b-it", maxModelLen=8192, maxNumSeqs=2, mediaPerPrompt={"images": 3}).encoder
    assert few and few.items_per_batch == 6 and few.limits == {"image": 3}


def test_text_only_use_skips_the_tower_and_its_profile() -> None:
    full = _one("google/gemma-3-12b-it", maxModelLen=8192)
    text = _one("google/gemma-3-12b-it", maxModelLen=8192, mediaPerPrompt={"images": 0})
    assert full.encoder and text.encoder
    assert not text.encoder.tower_loaded and text.encoder.modalities == [] and text.memory.encoder_gib == 0
    assert full.memory.weights_gib - text.memory.weights_gib == pytest.approx(421_290_864 * 2 / GIB, abs=2e-3)
    assert text.args[-2:] == ["--limit-mm-per-prompt", '{"image":0}']
    assert "--limit-mm-per-prompt" not in full.args  # vLLM's default (999 images) unless the key is set
    assert text.memory.footprint_gib < full.memory.footprint_gib - 0.8


def test_release_and_runner_decide_whether_the_budget_holds_the_encoder() -> None:
    assert encoder_profiled((0, 19, 1), v2_runner=False)  # V1 runner: profile_run encodes the largest batch
    assert not encoder_profiled((0, 26, 0), v2_runner=True)  # V2's profile_run: text only (v1/worker/gpu/model_runner.py)
    assert encoder_profiled((0, 26, 0), v2_runner=False)
    assert encoder_profiled((0, 27, 0), v2_runner=True)  # EncoderRunner.profile_encoder_cache
    # Llama 4 Scout is MoE: the V1 runner in 0.26, so its encoder is inside the budget there
    scout = lookup("meta-llama/Llama-4-Scout-17B-16E-Instruct")
    assert scout and not uses_v2_model_runner((0, 26, 0), moe=True, pooling=False)
    old = _one("google/gemma-3-27b-it", image="vllm/vllm-openai:v0.19.1", maxModelLen=8192, gpuMemoryUtilization=0.9)
    new = _one("google/gemma-3-27b-it", image="vllm/vllm-openai:v0.26.0", maxModelLen=8192, gpuMemoryUtilization=0.9)
    assert old.memory.encoder_in_budget and not new.memory.encoder_in_budget
    # same fraction: what the profile reserves takes KV, the rest takes physical memory beside the budget
    reserved = old.memory.encoder_gib - old.memory.encoder_outside_gib
    assert 0 < reserved < old.memory.encoder_gib and new.memory.encoder_outside_gib == new.memory.encoder_gib == old.memory.encoder_gib
    assert new.memory.kv_gib - old.memory.kv_gib == pytest.approx(reserved, abs=0.01)


def test_serving_images_holds_the_encoder_peak_beside_the_text_peak() -> None:
    """On the H100 (vLLM 0.26.0, benchmarks/results/h100-vllm-0.26.0-multimodal*.json) 8 requests of 4 images at once
    added 5.15 GiB (V2 runner) and 5.06 GiB (V1, encoder profiled) to what Gemma 3 27B held once started: the plan counts
    the encoder's peak and the text model's activation together, within the 2% kept free of the measurement."""
    for image in ("vllm/vllm-openai:v0.26.0", "vllm/vllm-openai:v0.19.1"):
        m = _one("google/gemma-3-27b-it", image=image, maxModelLen=8192, maxNumSeqs=16, gpuMemoryUtilization=0.9)
        assert m.encoder and m.encoder.items_per_batch == 32
        serving = m.memory.activation_gib + m.memory.encoder_gib
        assert serving == pytest.approx(m.memory.activation_gib + m.encoder.peak_gib, abs=2e-3)
        assert 5.15 - 0.02 * 79.18 < serving < 5.15


def test_qwen2_5_vl_profiles_a_video_as_long_as_the_context_allows() -> None:
    """Qwen2VLProcessingInfo: an image at max_pixels 12845056 is 16384 embeddings; one video is the most frame pairs whose
    embeddings fit maxModelLen (at least one, at most 14 frames), and vLLM profiles the larger of the two."""
    a = lookup("Qwen/Qwen2.5-VL-7B-Instruct")
    assert a and a.vision
    assert [a.vision.video_embeds(n) for n in (8192, 32768, 65536, 128000)] == [16384, 32768, 65536, 114688]
    common = {"version": (0, 26, 0), "v2_runner": True, "batched_tokens": 8192, "max_num_seqs": 16, "tp": 1, "dtype_bytes": 2}
    both = encoder_figures(a, None, max_model_len=32768, text_activation_gib=1.0, extra_args=[], **common)  # type: ignore[arg-type]
    assert both and (both.modality, both.embeds_per_item, both.items_per_batch, both.budget_tokens) == ("video", 32768, 1, 32768)
    images = encoder_figures(a, {"videos": 0}, max_model_len=32768, text_activation_gib=1.0, extra_args=[], **common)  # type: ignore[arg-type]
    assert images and (images.modality, images.embeds_per_item, images.budget_tokens) == ("image", 16384, 16384)
    assert images.peak_gib < both.peak_gib
    assert limit_args(a.vision, {"images": 2, "videos": 0}) == ["--limit-mm-per-prompt", '{"image":2,"video":0}']
    # the encoder split over two GPUs, or whole on each with --mm-encoder-tp-mode data
    split = encoder_figures(a, None, max_model_len=32768, text_activation_gib=1.0, extra_args=[], **(common | {"tp": 2}))  # type: ignore[arg-type]
    data = encoder_figures(
        a,
        None,
        max_model_len=32768,
        text_activation_gib=1.0,
        extra_args=["--mm-encoder-tp-mode", "data"],
        **(common | {"tp": 2}),  # type: ignore[arg-type]
    )
    assert split and data and data.weights_gib == pytest.approx(2 * split.weights_gib)


def test_quantized_checkpoints_keep_the_tower_at_16_bit() -> None:
    awq = _one("Qwen/Qwen2.5-VL-7B-Instruct-AWQ", maxModelLen=8192)
    full = _one("Qwen/Qwen2.5-VL-7B-Instruct", maxModelLen=8192)
    assert awq.encoder and full.encoder
    assert awq.encoder.weights_gib == full.encoder.weights_gib == pytest.approx(676_550_144 * 2 / GIB, abs=1e-3)
    assert awq.memory.weights_gib < full.memory.weights_gib / 2


def test_media_per_prompt_is_refused_where_the_model_cannot_take_it() -> None:
    with pytest.raises(ConfigError) as err:
        _one("Qwen/Qwen3-8B", maxModelLen=4096, mediaPerPrompt={"images": 1})
    assert "models[0].mediaPerPrompt" in str(err.value) and "takes text only" in str(err.value)
    with pytest.raises(ConfigError) as err:
        _one("google/gemma-3-4b-it", maxModelLen=4096, mediaPerPrompt={"images": 1, "videos": 2})
    assert "models[0].mediaPerPrompt.videos" in str(err.value) and "takes images only" in str(err.value)
    _one("google/gemma-3-4b-it", maxModelLen=4096, mediaPerPrompt={"videos": 0})  # 0 for a kind it lacks is harmless
    with pytest.raises(ConfigError) as err:
        _one("google/gemma-3-4b-it", maxModelLen=4096, extraArgs=["--limit-mm-per-prompt", '{"image": 2}'])
    assert "set models[].mediaPerPrompt" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse(docker_raw(models=[{"name": "m", "model": "google/gemma-3-4b-it", "mediaPerPrompt": {"images": 1000}}]))
    assert "mediaPerPrompt.images" in str(err.value)


def test_arch_vision_describes_a_multimodal_model_the_catalog_lacks() -> None:
    vision = {"parametersB": 0.4, "layers": 27, "hiddenSize": 1152, "intermediateSize": 4304, "heads": 16, "embedsPerImage": 256, "positionsPerEmbed": 16}
    arch: dict[str, Any] = {"parametersB": 9.0, "layers": 42, "kvHeads": 8, "headDim": 256, "contextLength": 8192, "attentionHeads": 16, "hiddenSize": 3584}
    arch |= {"intermediateSize": 14336, "vocabSize": 256000, "vision": vision}
    m = _one("acme/vlm-9b", maxModelLen=4096, arch=arch, mediaPerPrompt={"images": 2})
    assert m.encoder and m.encoder.items_per_batch == 32 and m.encoder.weights_gib == pytest.approx(0.4e9 * 2 / GIB, abs=1e-3)
    assert m.args[-2:] == ["--limit-mm-per-prompt", '{"image":2}']
    assert ArchConfig(vision=VisionArchConfig.model_validate(vision)).vision


def _webui_env(models: list[dict[str, Any]]) -> dict[str, str]:
    from stacks.render.workloads import open_webui

    p = plan(parse(docker_raw(gpus=[{"index": 0, "name": "H100", "memoryGiB": H100}], models=models)))
    return open_webui(p, "open-webui:test").env


def test_open_webui_is_told_which_models_take_images() -> None:
    """Open WebUI 0.12.4 offers image upload unless a model's capabilities.vision is false: each chat model's own entry
    says it (open_webui_models.py), right for a stack of both kinds; nothing global says it a second time (a per-model
    value wins over DEFAULT_MODEL_METADATA, utils/models.py, so that could only ever be dead)."""
    gemma = {"name": "gemma", "model": "google/gemma-3-4b-it", "gpus": [0], "maxModelLen": 4096}
    qwen = {"name": "qwen", "model": "Qwen/Qwen3-8B", "gpus": [0], "maxModelLen": 4096}
    text_gemma = gemma | {"name": "gemma-text", "mediaPerPrompt": {"images": 0}}
    for models, vision in (([gemma], ["gemma"]), ([qwen, text_gemma], []), ([gemma, qwen], ["gemma"])):
        env = _webui_env(models)
        assert json.loads(env[open_webui_models.ENV])["vision"] == vision
        assert "DEFAULT_MODEL_METADATA" not in env
    p = plan(parse(docker_raw(gpus=[{"index": 0, "name": "H100", "memoryGiB": H100}], models=[gemma | {"servedModelNames": ["g"]}, qwen])))
    assert p.webui and p.webui.vision_models == ["gemma", "g"] and p.webui.chat_models == ["gemma", "g", "qwen"]


def test_the_runner_the_server_is_told_to_use_decides() -> None:
    """VLLM_USE_V2_MODEL_RUNNER=0 puts a dense 0.26 model on the V1 runner, which profiles the encoder (and estimates its
    CUDA graphs) inside the budget; vLLM reads the variable as an integer, so anything else is refused."""
    v1 = _one("google/gemma-3-27b-it", maxModelLen=8192, gpuMemoryUtilization=0.9, env={"VLLM_USE_V2_MODEL_RUNNER": "0"})
    v2 = _one("google/gemma-3-27b-it", maxModelLen=8192, gpuMemoryUtilization=0.9)
    assert v1.memory.encoder_in_budget and v1.memory.cudagraph_in_budget
    assert not v2.memory.encoder_in_budget and not v2.memory.cudagraph_in_budget
    assert v1.env["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    with pytest.raises(ConfigError) as err:
        _one("google/gemma-3-27b-it", maxModelLen=8192, env={"VLLM_USE_V2_MODEL_RUNNER": "no"})
    assert "models[0].env.VLLM_USE_V2_MODEL_RUNNER" in str(err.value) and "0 or 1" in str(err.value)


def test_frontend_gpu_memory_that_would_shrink_the_planned_kv_is_refused() -> None:
    """--mm-ipc-gpu-memory-gb is subtracted from the KV cache even when --kv-cache-memory-bytes sizes it
    (Worker._reserve_mm_ipc_gpu_memory, vLLM 0.26): the plan's exact KV would no longer hold."""
    with pytest.raises(ConfigError) as err:
        _one("Qwen/Qwen2.5-VL-7B-Instruct", maxModelLen=8192, extraArgs=["--mm-ipc-gpu-memory-gb", "2"])
    assert "models[0].extraArgs[0]" in str(err.value) and "leave it at vLLM's 0" in str(err.value)
    m = _one("Qwen/Qwen2.5-VL-7B-Instruct", maxModelLen=8192, extraArgs=["--mm-processor-cache-gb", "1", "--skip-mm-profiling"])
    assert m.encoder and m.encoder.processor_cache_gib == 2.0  # API server and engine core
