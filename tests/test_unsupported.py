"""Say what is not supported: the README names the platforms, and a key people try for a feature the stack lacks gets
"not supported" with what to do instead, from a stack file and from Pulumi's config, never a plain "unknown key"."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pydantic import BaseModel

from stacks.cli import main as cli_main
from stacks.config import schema
from stacks.config.unsupported import UNSUPPORTED
from tests.conftest import ROOT, docker_raw
from tests.mock_engine import run_program

# where each section sits in a stack file
PLACES: dict[str, tuple[str | int, ...]] = {
    "StackConfig": (),
    "GatewayConfig": ("gateway",),
    "ModelConfig": ("models", 0),
    "GpuConfig": ("gpus", 0),
    "WebuiConfig": ("webui",),
}
CASES = [(section, key) for section, keys in UNSUPPORTED.items() for key in keys]
OTHER_ISSUES = re.compile(r"(?i)sleep|swap|endpoint|ollama|anthropic|external|multimodal|\bmm\b|node|pipeline")
"""Features other issues are adding: no "not supported" may claim them."""


def _with_key(section: str, key: str) -> dict[str, Any]:
    raw: dict[str, Any] = docker_raw()
    node: Any = raw
    for part in PLACES[section]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[key] = True
    return raw


def _where(section: str, key: str) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in PLACES[section]).lstrip(".")
    return f"{path}.{key}" if path else key


def test_no_listed_key_is_a_real_one_or_another_issues_feature() -> None:
    assert set(UNSUPPORTED) == set(PLACES)
    for section, keys in UNSUPPORTED.items():
        model: type[BaseModel] = getattr(schema, section)
        real = {(f.alias or n).lower() for n, f in model.model_fields.items()}
        for key, message in keys.items():
            assert key.lower() not in real, f"{section}.{key} is a key of the schema"
            assert not OTHER_ISSUES.search(key + " " + message), (key, message)
            assert message.startswith(("not supported", "not a key", "API keys are a secret")), message


@pytest.mark.parametrize(("section", "key"), CASES, ids=[f"{s}.{k}" for s, k in CASES])
def test_a_key_for_a_missing_feature_says_not_supported_from_a_stack_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, key: str) -> None:
    stack = tmp_path / "Pulumi.try.yaml"
    stack.write_text(yaml.safe_dump({"config": {f"vllm-stack:{k}": v for k, v in _with_key(section, key).items()}}))
    assert cli_main(["plan", str(stack)]) == 1
    err = capsys.readouterr().err
    assert f"vllm-stack:{_where(section, key)}: {UNSUPPORTED[section][key]}" in err and "unknown key" not in err
    # spelt the way people do
    snake = re.sub(r"([A-Z])", r"_\1", key).lower()
    stack.write_text(yaml.safe_dump({"config": {f"vllm-stack:{k}": v for k, v in _with_key(section, snake).items()}}))
    assert cli_main(["plan", str(stack)]) == 1
    assert UNSUPPORTED[section][key] in capsys.readouterr().err


@pytest.mark.parametrize(("section", "key"), [c for c in CASES if c[0] != "StackConfig"])
def test_a_key_for_a_missing_feature_says_not_supported_from_pulumi_config(section: str, key: str) -> None:
    config = {f"vllm-stack:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in _with_key(section, key).items()}
    with pytest.raises(pulumi.RunError) as err:
        run_program("try", secrets={}, config=config)
    assert UNSUPPORTED[section][key] in str(err.value)


def test_the_readme_says_what_it_runs_on_and_points_apple_silicon_users_on() -> None:
    readme = (ROOT / "README.md").read_text()
    part = readme[readme.index("## What it runs on") : readme.index("## Quickstart")]
    assert "NVIDIA GPUs on Linux" in part and "Apple Silicon" in part and "stacks/config/unsupported.py" in part
    # the Mac stack serves models there through Docker Model Runner: the section points at it, never "not targets"
    assert "docs/guides/mac.md" in part and "Pulumi.mac.yaml" in part and "not targets" not in part
    assert "behind the stack's gateway" in UNSUPPORTED["StackConfig"]["platform"]
