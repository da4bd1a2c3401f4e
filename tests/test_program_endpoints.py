"""The real __main__.py under Pulumi's mock engine for stacks with models served elsewhere: the GPU-less Mac stack, an
endpoint with its own key and CA, and an Ollama the stack runs on a GPU it shares with vLLM."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from tests.mock_engine import FAKE_SECRETS, LAST, SIG_KEY, Mocks, plaintext_leaks, run_program, stack_config

CONTAINER = "docker:index/container:Container"
ENDPOINT_KEY = "sk-endpoint-secret-0123456789"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBtestCA\n-----END CERTIFICATE-----\n"
TINY = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"


def _containers(m: Mocks) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in m.of_type(CONTAINER)}


def _uploads(inputs: dict[str, Any]) -> dict[str, str]:
    uploads = inputs["uploads"]
    return {u["file"]: u["content"] for u in (uploads["value"] if isinstance(uploads, dict) else uploads)}


def _env(inputs: dict[str, Any]) -> list[str]:
    envs = inputs.get("envs") or []
    return list(envs["value"] if isinstance(envs, dict) else envs)


def test_mac_stack_runs_no_vllm_no_dcgm_and_serves_docker_model_runner() -> None:
    m = run_program("mac")
    assert m.of_type("docker:index/image:Image") == [], "no vLLM image is built"
    containers = _containers(m)
    assert set(containers) == {"vllm-gateway", "vllm-webui", "vllm-prometheus", "vllm-grafana"}
    assert not any(c.get("gpus") for c in containers.values()), "no container asks for a GPU"
    volumes = {r.inputs["name"] for r in m.of_type("docker:index/volume:Volume")}
    assert volumes == {"vllm-stack-mac-webui-data", "vllm-stack-mac-prometheus-data"}
    conf = _uploads(containers["vllm-gateway"])["/etc/nginx/nginx.conf"]
    assert "upstream ep-mac {" in conf and "server model-runner.docker.internal:80 max_fails=0;" in conf
    assert "rewrite ^/v1/(.*)$ /engines/v1/$1 break;" in conf and 'set $gw_ext_model "huggingface.co/mlx-community/SmolLM2-135M-Instruct";' in conf
    configs = next(e for e in _env(containers["vllm-webui"]) if e.startswith("OPENAI_API_CONFIGS="))
    assert json.loads(configs.split("=", 1)[1])["0"]["model_ids"] == ["smollm2", "smollm2-mlx"], "Open WebUI offers them"
    prom = _uploads(containers["vllm-prometheus"])["/etc/prometheus/prometheus.yml"]
    assert "gateway:9113" in prom and "dcgm" not in prom.split("rule_files")[0]


def _config(stack: str, **raw: Any) -> tuple[dict[str, str], dict[str, str]]:
    cfg, keys = stack_config(stack)
    secrets = {k: FAKE_SECRETS[k] for k in keys}
    for key, value in raw.items():
        cfg[f"vllm-stack:{key}"] = json.dumps(value)
    return cfg, secrets


def _with_endpoint_and_ollama() -> Mocks:
    cfg, secrets = _config(
        "dev",
        endpoints=[
            {
                "name": "hosted",
                "url": "https://api.example.test/v1",
                "apiKeySecret": "hostedKey",
                "tls": {"caPem": CA_PEM},
                "models": [{"name": "gpt", "model": "gpt-4.1-mini"}],
            }
        ],
        ollama={"gpus": [0], "models": [{"name": "llama", "model": "llama3.2:3b"}], "keepAlive": "-1", "numParallel": 2, "contextLength": 8192},
    )
    cfg["vllm-stack:hostedKey"] = ENDPOINT_KEY
    secrets["vllm-stack:hostedKey"] = ENDPOINT_KEY
    return run_program("dev", secrets=secrets, config=cfg)


def test_endpoint_key_reaches_keys_conf_only_as_a_secret_and_its_ca_is_uploaded() -> None:
    m = _with_endpoint_and_ollama()
    secrets = [v for s in FAKE_SECRETS.values() for v in s.split(",")] + [ENDPOINT_KEY]
    for r in m.resources:
        assert plaintext_leaks(r.inputs, secrets) == [], f"{r.type} {r.name} leaks a secret"
    gw = _containers(m)["vllm-gateway"]
    assert gw["uploads"][SIG_KEY], "the uploads carrying keys.conf are a secret"
    files = _uploads(gw)
    assert f'"Bearer {ENDPOINT_KEY}"' in files["/etc/nginx/secrets/keys.conf"]
    assert ENDPOINT_KEY not in files["/etc/nginx/nginx.conf"]
    assert files["/etc/nginx/ca/endpoint-hosted-ca.pem"] == CA_PEM
    assert 'proxy_ssl_trusted_certificate "/etc/nginx/ca/endpoint-hosted-ca.pem";' in files["/etc/nginx/nginx.conf"]


def test_ollama_runs_on_its_gpu_with_a_kept_volume_and_vllm_is_planned_around_it() -> None:
    m = _with_endpoint_and_ollama()
    c = _containers(m)
    ollama = c["vllm-ollama"]
    assert ollama["image"] == "sha256:vllm-ollama-image" and ollama["gpus"] == "device=0" and "ports" not in ollama
    assert ollama["entrypoints"][:2] == ["/bin/sh", "-c"] and ollama["command"] == ["llama3.2:3b"]
    env = _env(ollama)
    for setting in ("OLLAMA_KEEP_ALIVE=-1", "OLLAMA_NUM_PARALLEL=2", "OLLAMA_CONTEXT_LENGTH=8192", "OLLAMA_MAX_LOADED_MODELS=1", "OLLAMA_NO_CLOUD=1"):
        assert setting in env
    assert ollama["healthcheck"]["tests"][:2] == ["CMD", "/bin/sh"] and ollama["wait"] is True
    assert {"volumeName": "vllm-stack-dev-ollama-data", "containerPath": "/root/.ollama"} in ollama["volumes"]
    [volume] = [r for r in m.of_type("docker:index/volume:Volume") if r.inputs["name"] == "vllm-stack-dev-ollama-data"]
    assert m.options[(volume.type, volume.name)]["retain_on_delete"] is True
    # after the vLLM servers (planned around it), before the gateway, which resolves it at start
    assert {"vllm-tinyllama", "vllm-yi-6b"} <= set(m.options[(CONTAINER, "vllm-ollama")]["depends_on"])
    assert "vllm-ollama" in m.options[(CONTAINER, "vllm-gateway")]["depends_on"]
    assert "vllm-ollama-id" in _uploads(c["vllm-gateway"])["/etc/nginx/upstream-ids.txt"]
    plain = run_program("dev")
    fractions = {n: _fraction(c[n]) for n in ("vllm-tinyllama", "vllm-qwen2-5-3b", "vllm-yi-6b")}
    before = {n: _fraction(_containers(plain)[n]) for n in fractions}
    assert all(fractions[n] < before[n] for n in fractions), (fractions, before)


def _fraction(inputs: dict[str, Any]) -> float:
    args = inputs["command"]
    return float(args[args.index("--gpu-memory-utilization") + 1])


@pytest.mark.parametrize(
    ("secret_value", "words"),
    [
        (None, "vllm-stack:endpoints[0].apiKeySecret: names vllm-stack:hostedKey, which is not set"),
        (ENDPOINT_KEY, "vllm-stack:hostedKey: is in plain text"),
    ],
)
def test_an_endpoint_key_that_is_missing_or_plain_fails_before_any_resource(secret_value: str | None, words: str) -> None:
    cfg, secrets = _config(
        "mac", endpoints=[{"name": "hosted", "url": "https://api.example.test/v1", "apiKeySecret": "hostedKey", "models": [{"name": "gpt"}]}]
    )
    if secret_value is not None:
        cfg["vllm-stack:hostedKey"] = secret_value
    with pytest.raises(pulumi.RunError) as exc:
        run_program("mac", secrets=secrets, config=cfg)
    assert words in str(exc.value)
    assert LAST[0].resources == [], "nothing may be declared for a bad config"
