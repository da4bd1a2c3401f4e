"""``python -m stacks``: plan, render and schema; the committed schema and Pulumi.yaml stay in sync with the model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stacks.cli import main
from stacks.config import SCALAR_KEYS, SECRET_KEYS, StackConfig, json_schema, load_stack
from stacks.keys import ApiKey, parse_api_keys
from stacks.plan import plan
from tests.conftest import ROOT, STACKS


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stacks", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("stack", STACKS)
def test_plan_prints_a_table_per_gpu(stack: str) -> None:
    r = _run("plan", stack)
    assert r.returncode == 0, r.stderr
    if stack == "mac":
        # no GPU: no vLLM table, the endpoint models instead
        assert "no vLLM" in r.stdout and "served elsewhere" in r.stdout and "model-runner.docker.internal" in r.stdout
        assert "fraction" not in r.stdout
        return
    assert "fraction" in r.stdout and "KV" in r.stdout and "maxNum" in r.stdout and "full seqs" in r.stdout
    if stack == "multigpu":
        assert r.stdout.count("GPU ") >= 4


def test_plan_bad_config_exits_1_with_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "config": {
                    "vllm-stack:timezone": "Nowhere/Town",
                    "vllm-stack:hfToken": "hf_plaintext",
                    "vllm-stack:gpus": [{"index": 0, "memoryGiB": 24}],
                    "vllm-stack:models": [{"name": "Bad_Name", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpuMemoryUtilization": 2}],
                }
            }
        )
    )
    r = _run("plan", str(bad))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    for key in ("vllm-stack:timezone", "vllm-stack:hfToken", "vllm-stack:models[0].gpuMemoryUtilization"):
        assert key in r.stderr, r.stderr
    assert "hf_plaintext" not in r.stderr + r.stdout


def test_plan_missing_stack_is_a_clear_error() -> None:
    r = _run("plan", "no-such-stack")
    assert r.returncode == 1 and "no stack file" in r.stderr and "Traceback" not in r.stderr


def test_render_writes_plan_and_component_files(tmp_path: Path) -> None:
    assert main(["render", "dev", "--out", str(tmp_path)]) == 0
    files = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert {"plan.json", "gateway/nginx.conf", "gateway/router.js", "vllm/Dockerfile", "monitoring/prometheus.yml"} <= files
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [m["name"] for m in plan["models"]] == ["tinyllama", "qwen2-5-3b", "yi-6b"]
    assert "Asia/Seoul" in (tmp_path / "vllm/Dockerfile").read_text()
    assert not any(f.startswith("kubernetes/") for f in files), "docker stacks render no manifests"


def test_committed_schema_is_in_sync() -> None:
    committed = json.loads((ROOT / "schema/stack-config.schema.json").read_text())
    assert committed == json_schema(), "run: python -m stacks schema > schema/stack-config.schema.json"


def test_pulumi_yaml_declares_every_scalar_key_like_the_model() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "vllm-stack"
    # pulumi runs the program in the venv `make venv` creates
    venv = re.search(r"^VENV\s*\?=\s*(\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert venv and project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": venv.group(1)}}
    declared = project["config"]
    assert set(declared) == set(SCALAR_KEYS)
    fields = {f.alias or name: f for name, f in StackConfig.model_fields.items()}
    for key, spec in declared.items():
        field = fields[key]
        assert spec["default"] == field.default, key
        assert spec["description"] == field.description, key
        assert spec["type"] == {bool: "boolean", str: "string"}.get(type(field.default), "string")


@pytest.mark.parametrize("stack", STACKS)
def test_stack_files_hold_no_plaintext_secret(stack: str) -> None:
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    for key in SECRET_KEYS:
        value = doc["config"].get(f"vllm-stack:{key}")
        assert value is None or set(value) == {"secure"}


def test_keys_conf_for_self_made_secrets(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from stacks.render.gateway import keys_conf

    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    assert main(["keys-conf", "cluster"]) == 1
    assert "VLLM_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("VLLM_API_KEY", "vk-internal")
    monkeypatch.setenv("API_KEYS", "sk-a, team-b:sk-b")
    assert main(["keys-conf", "cluster"]) == 0
    out = capsys.readouterr().out
    assert out == keys_conf(plan(load_stack("cluster")), [ApiKey("key-1", "sk-a"), ApiKey("team-b", "sk-b")], "vk-internal")
    assert '"Bearer sk-a" "key-1";' in out and '"team-b" "Bearer sk-b";' in out
    for bad in ("sk;bad", "bad name:sk-x", "a:sk-dup,b:SK-DUP", ":sk-noname"):
        monkeypatch.setenv("API_KEYS", bad)
        assert main(["keys-conf", "cluster"]) == 1
        err = capsys.readouterr().err
        assert "apiKeys" in err and "sk" not in err.replace("apiKeys", ""), err


def test_keys_conf_with_a_stacks_endpoint_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stack = tmp_path / "Pulumi.ep.yaml"
    endpoint = {"name": "hosted", "url": "https://api.example.test/v1", "apiKeySecret": "hostedKey", "keyHeader": "x-api-key", "models": [{"name": "m"}]}
    config = {"vllm-stack:endpoints": [endpoint], "vllm-stack:hostedKey": {"secure": "v1:x"}}
    stack.write_text(yaml.safe_dump({"config": config}))
    monkeypatch.setenv("VLLM_API_KEY", "vk-internal")
    monkeypatch.delenv("API_KEYS", raising=False)
    monkeypatch.delenv("VLLM_STACK_HOSTED_KEY", raising=False)
    assert main(["keys-conf", str(stack)]) == 1
    assert "set VLLM_STACK_HOSTED_KEY" in capsys.readouterr().err
    monkeypatch.setenv("VLLM_STACK_HOSTED_KEY", "sk-ant-0123")
    assert main(["keys-conf", str(stack)]) == 0
    assert 'map $server_port $gw_endpoint_key_hosted {\n    default "sk-ant-0123";' in capsys.readouterr().out


def test_api_keys_format_keeps_old_values_and_names_keys() -> None:
    assert parse_api_keys("sk-a,sk-b\nteam:sk-c:with:colons") == [ApiKey("key-1", "sk-a"), ApiKey("key-2", "sk-b"), ApiKey("team", "sk-c:with:colons")]
    assert parse_api_keys(" , \n") == []
    assert "sk-secret" not in repr(parse_api_keys("x:sk-secret"))
    with pytest.raises(ValueError, match="used twice"):
        parse_api_keys("a:sk-1,A:sk-2")
