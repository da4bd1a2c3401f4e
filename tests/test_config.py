"""Every validation rule has a failing case whose message names the key."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stacks.config import load_stack, parse
from stacks.errors import ConfigError
from stacks.plan import plan
from tests.conftest import STACKS, docker_raw, kube_raw


def _problems(raw: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        plan(parse(copy.deepcopy(raw)))
    return exc.value


@pytest.mark.parametrize("stack", STACKS)
def test_committed_stacks_load_and_plan(stack: str) -> None:
    p = plan(load_stack(stack))
    assert p.routes and all(m.memory.max_full_sequences >= 1 for m in p.models)
    # every stack but the GPU-less one runs vLLM
    assert bool(p.models) == (stack != "mac") and bool(p.dcgm) == (stack != "mac")


def _model(i: int, **kw: Any) -> dict[str, Any]:
    raw = docker_raw()
    raw["models"][i].update(kw)
    return raw


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("bad target", docker_raw(target="swarm"), "target", "docker"),
    ("bad timezone", docker_raw(timezone="Mars/Olympus"), "timezone", "IANA"),
    ("unknown key", docker_raw(modles=[]), "modles", "unknown key"),
    ("no models", docker_raw(models=[]), "models", "serves no model"),
    ("unpinned base", docker_raw(image={"base": "vllm/vllm-openai:latest"}), "image.base", "pin"),
    ("untagged base", docker_raw(image={"base": "vllm/vllm-openai"}), "image.base", "no tag"),
    ("unpinned webui", docker_raw(webui={"image": "ghcr.io/open-webui/open-webui:main"}), "webui.image", "pin"),
    ("registry on docker", docker_raw(image={"registry": "reg.example/vllm"}), "image.registry", "kubernetes"),
    ("model name not DNS", _model(0, name="Tiny_Llama"), "models[0].name", "DNS-1123"),
    ("duplicate names", _model(1, name="tiny"), "models[1].name", "already served"),
    ("alias clash", _model(1, servedModelNames=["tiny"]), "models[1].servedModelNames[0]", "already served"),
    ("unknown gpu", _model(0, gpus=[7]), "models[0].gpus", "not in gpus"),
    ("gpu twice", _model(0, gpus=[0, 0]), "models[0].gpus", "twice"),
    ("tp mismatch", _model(0, gpus=[0, 1], tensorParallel=1), "models[0].tensorParallel", "must equal"),
    ("fraction > 1", _model(0, gpuMemoryUtilization=1.5), "models[0].gpuMemoryUtilization", "less than or equal"),
    ("fraction word", _model(0, gpuMemoryUtilization="half"), "models[0].gpuMemoryUtilization", ""),
    ("fraction too small", _model(0, gpuMemoryUtilization=0.05), "models[0].gpuMemoryUtilization", "raise models[0].gpuMemoryUtilization from 0.050 to"),
    ("len over context", _model(0, maxModelLen=8192), "models[0].maxModelLen", "context length"),
    ("unknown model", _model(0, model="acme/unknown-7b"), "models[0].arch", "parametersB"),
    ("removed flag", _model(0, extraArgs=["--use-v2-block-manager"]), "models[0].extraArgs[0]", "removed in vLLM"),
    ("managed flag", _model(0, extraArgs=["--max-model-len=4096"]), "models[0].extraArgs[0]", "models[].maxModelLen"),
    ("secret flag", _model(0, extraArgs=["--api-key", "x"]), "models[0].extraArgs[0]", "--secret"),
    ("replicas on docker", _model(0, replicas=2), "models[0].replicas", "one server per model"),
    ("kubernetes on docker", docker_raw(kubernetes={"gpu": {"name": "x", "memoryGiB": 10}}), "kubernetes", "target kubernetes"),
    ("no gpus on docker", docker_raw(gpus=[]), "gpus", "need the host's NVIDIA GPUs"),
    ("duplicate gpu index", docker_raw(gpus=[{"index": 0, "memoryGiB": 24}, {"index": 0, "memoryGiB": 24}]), "gpus[1].index", "twice"),
    ("port clash", docker_raw(webui={"port": 8000}), "webui.port", "already used by gateway.port"),
    ("port range", docker_raw(gateway={"port": 70000}), "gateway.port", "65535"),
    ("gateway replicas on docker", docker_raw(gateway={"replicas": 3}), "gateway.replicas", "kubernetes"),
    ("plain secret", docker_raw(hfToken="hf_plain"), "hfToken", "--secret"),
    ("missing gpus on 2-gpu host", _model(0, gpus=None), "models[0].gpus", "which GPUs"),
    (
        "overcommitted gpu",
        docker_raw(
            gpus=[{"index": 0, "memoryGiB": 24}],
            models=[
                {"name": "a", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "gpuMemoryUtilization": 0.6},
                {"name": "b", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "gpuMemoryUtilization": 0.5},
            ],
        ),
        "models[1].gpuMemoryUtilization",
        "over-committed",
    ),
    ("kubernetes section missing", kube_raw(kubernetes=None), "kubernetes", ""),
    ("cuda 12.9 on a 12.9 release", docker_raw(image={"base": "vllm/vllm-openai:v0.19.1", "cuda": "12.9"}), "image.cuda", "CUDA 12.9 already"),
    ("cuda 12.9 where none is published", docker_raw(image={"base": "vllm/vllm-openai:v0.33.0", "cuda": "12.9"}), "image.cuda", "no -cu129"),
    ("non-root on docker", docker_raw(image={"runAsNonRoot": True}), "image.runAsNonRoot", "owned by root"),
    ("non-root before the vllm user", kube_raw(image={"base": "vllm/vllm-openai:v0.21.0", "runAsNonRoot": True}), "image.runAsNonRoot", "0.22"),
    ("oidc without its secret", docker_raw(webui={"oidc": {"providerUrl": "https://sso.example/x", "clientId": "w"}}), "webui.oidc", "--secret"),
    ("docker keys on kubernetes", kube_raw(docker={"network": "x"}), "docker", "target docker"),
    ("gpus on kubernetes", kube_raw(gpus=[{"index": 0, "memoryGiB": 24}]), "gpus", "kubernetes.gpu"),
    ("device ids on kubernetes", kube_raw(models=[{"name": "q", "model": "Qwen/Qwen3-8B", "gpus": [0]}]), "models[0].gpus", "tensorParallel"),
    ("webui replicas", kube_raw(webui={"replicas": 2}), "webui.replicas", "redisUrl"),
    ("customised image without registry", kube_raw(image={"aptPackages": ["curl"]}), "image.registry", "set image.registry"),
    ("prometheus on kubernetes", kube_raw(monitoring={"prometheus": True}), "monitoring.prometheus", "cluster's Prometheus"),
    ("bad namespace", kube_raw(kubernetes={"gpu": {"name": "x", "memoryGiB": 40}, "namespace": "Bad_NS"}), "kubernetes.namespace", "does not match"),
    (
        "autoscaling bounds",
        kube_raw(models=[{"name": "q", "model": "Qwen/Qwen3-8B", "maxModelLen": 8192, "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}]),
        "models[0].autoscaling.minReplicas",
        "maxReplicas",
    ),
]


@pytest.mark.parametrize(("raw", "key", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_names_key(raw: dict[str, Any], key: str, words: str) -> None:
    err = _problems(raw)
    matching = [p for p in err.problems if p.key == key]
    assert matching, f"no problem for {key}: {err.render()}"
    assert words in matching[0].message, matching[0].message
    assert f"vllm-stack:{key}" in err.render()


def test_all_problems_reported_at_once() -> None:
    raw = docker_raw(timezone="Nowhere/City", gateway={"port": 0})
    raw["models"][0]["gpus"] = [9]
    raw["models"][1]["name"] = "BAD"
    err = _problems(raw)
    assert {"timezone", "gateway.port"} <= set(err.keys)
    err2 = _problems(docker_raw(webui={"port": 8000}, image={"base": "vllm/vllm-openai:latest"}))
    assert {"webui.port", "image.base"} <= set(err2.keys)


def test_unpinned_allowed_when_asked() -> None:
    p = plan(parse(docker_raw(image={"base": "vllm/vllm-openai:latest", "vllmVersion": "0.26.0"}, allowUnpinnedImages=True)))
    assert p.image.base.endswith(":latest") and p.image.vllm_version == "0.26.0"


def test_digest_pin_accepted_once_it_says_its_release() -> None:
    """A digest says nothing of the release, whose rules the plan follows: it used to plan silently as 0.11.2."""
    digest = "vllm/vllm-openai@sha256:" + "a" * 64
    with pytest.raises(ConfigError) as err:
        plan(parse(docker_raw(image={"base": digest})))
    assert err.value.keys == ["image.base"] and "set image.vllmVersion" in str(err.value)
    p = plan(parse(docker_raw(image={"base": digest, "vllmVersion": "0.26.0"})))
    assert (p.image.base, p.image.vllm_version, p.image.vllm_rules) == (digest, "0.26.0", "vLLM 0.26's rules (read from its source)")
    tagged = "vllm/vllm-openai:v0.26.0@sha256:" + "a" * 64
    assert plan(parse(docker_raw(image={"base": tagged}))).image.vllm_version == "0.26.0"


def test_secure_secret_accepted_and_dropped() -> None:
    config = parse(docker_raw(hfToken={"secure": "v1:abc"}, apiKeys={"secure": "v1:def"}))
    assert "hfToken" not in config.model_dump(by_alias=True)


def test_single_gpu_host_defaults_device() -> None:
    raw = docker_raw(gpus=[{"index": 3, "memoryGiB": 24}])
    for m in raw["models"]:
        m.pop("gpus")
    p = plan(parse(raw))
    assert [m.gpus for m in p.models] == [[3], [3]]


def test_monitoring_keys_follow_the_target() -> None:
    with pytest.raises(ConfigError) as exc:
        parse(docker_raw(monitoring={"prometheusOperator": True}))
    assert "vllm-stack:monitoring.prometheusOperator" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        parse(kube_raw(monitoring={"grafanaPort": 3005, "operatorLabels": {"release": "x"}}))
    assert "vllm-stack:monitoring.grafanaPort" in str(exc.value) and "vllm-stack:monitoring.operatorLabels" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        parse(docker_raw(monitoring={"grafanaPort": 3000}))
    assert "monitoring.grafanaPort: port 3000 is already used by webui.port" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        parse(docker_raw(monitoring={"alerts": {"kvCacheUsage": 1.5}}))
    assert "vllm-stack:monitoring.alerts.kvCacheUsage" in str(exc.value)
