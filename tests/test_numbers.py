"""Every numeric setting, through every way a number comes in (a stack file for the CLI, Pulumi's JSON config for the
program): a number too long for Python to convert, NaN, infinities and huge decimals are refused by key, never a
traceback (a 5,000-digit integer used to crash the CLI: Python refuses to convert more than 4,300 digits)."""

from __future__ import annotations

import copy
import itertools
import json
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pulumi
import pytest
import yaml
from pydantic import BaseModel

from stacks.cli import main as cli_main
from stacks.config import StackConfig, config_json
from stacks.config.schema import yaml_key
from tests.conftest import docker_raw
from tests.mock_engine import LAST, run_program

HUGE_INT = "9" * 5000
HUGE_FLOAT = "9" * 5000 + ".5"


def _leaf_types(annotation: Any) -> set[Any]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _leaf_types(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return {t for a in get_args(annotation) for t in _leaf_types(a)}
    return {annotation}


def numeric_paths(model: type[BaseModel] = StackConfig, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every place in a stack file a number goes: int and float fields, inside lists (index 0) and mappings (key k)."""
    out: list[tuple[str | int, ...]] = []
    for name, field in model.model_fields.items():
        key = (*prefix, yaml_key(name))
        for t in _leaf_types(field.annotation):
            if t in (int, float):
                out.append(key)
                break
        for t in _leaf_types(field.annotation):
            args = get_args(t)
            if isinstance(t, type) and issubclass(t, BaseModel):
                out += numeric_paths(t, key)
            elif get_origin(t) is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
                out += numeric_paths(args[0], (*key, 0))
            elif get_origin(t) is list and args and _leaf_types(args[0]) & {int, float}:
                out.append((*key, 0))
            elif get_origin(t) is dict and len(args) == 2:
                inner = _leaf_types(args[1])
                for v in inner:
                    if isinstance(v, type) and issubclass(v, BaseModel):
                        out += numeric_paths(v, (*key, "k"))
    return sorted(set(out), key=str)


PATHS = numeric_paths()


def _with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    raw: dict[str, Any] = copy.deepcopy(docker_raw())
    node: Any = raw
    for part, nxt in itertools.pairwise(path):
        if isinstance(part, int):
            while len(node) <= part:
                node.append({})
            node = node[part]
            continue
        if part not in node or not isinstance(node[part], dict | list):
            node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    last = path[-1]
    if isinstance(last, int):
        # a list of numbers (ollama.gpus): its first item
        while len(node) <= last:
            node.append(None)
    node[last] = value
    return raw


def _key(path: tuple[str | int, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
    return out


def test_every_numeric_setting_is_found() -> None:
    keys = {_key(p) for p in PATHS}
    assert {
        "gateway.port",
        "gpus[0].memoryGiB",
        "models[0].maxNumSeqs",
        "models[0].arch.vocabSize",
        "gateway.keyLimits.k.concurrent",
        "models[0].gpus[0]",
    } <= keys
    assert len(keys) > 50


@pytest.mark.parametrize("text", [HUGE_INT, f"-{HUGE_INT}", HUGE_FLOAT, ".nan", ".inf", "-.inf"])
def test_a_stack_file_number_no_setting_takes_is_refused_by_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    stack = tmp_path / "Pulumi.numbers.yaml"
    for path in PATHS:
        doc = yaml.safe_dump({"config": {f"vllm-stack:{k}": v for k, v in _with(path, "PLACEHOLDER").items()}}, width=10**9)
        stack.write_text(doc.replace("PLACEHOLDER", text))
        for command in (["plan", str(stack)], ["render", str(stack), "--out", str(tmp_path / "out")], ["doctor", str(stack)]):
            assert cli_main(command) == 1, (command, _key(path))
            err = capsys.readouterr().err
            assert f"vllm-stack:{_key(path)}: must be " in err and "internal error" not in err, (command, _key(path), err)


@pytest.mark.parametrize("text", [HUGE_INT, HUGE_FLOAT, "NaN", "Infinity"])
def test_a_pulumi_config_number_no_setting_takes_is_refused_by_key(text: str) -> None:
    for path in PATHS:
        raw = _with(path, "PLACEHOLDER")
        config = {f"vllm-stack:{k}": v if isinstance(v, str) else json.dumps(v).replace('"PLACEHOLDER"', text) for k, v in raw.items()}
        with pytest.raises(pulumi.RunError) as err:
            run_program("numbers", secrets={}, config=config)
        assert f"vllm-stack:{_key(path)}: must be " in str(err.value) and "internal error" not in str(err.value), (_key(path), str(err.value))
        assert LAST[0].resources == []


def test_config_json_keeps_ordinary_numbers_and_text_that_is_no_json() -> None:
    assert config_json('{"port": 8000, "x": 0.5}') == {"port": 8000, "x": 0.5}
    assert config_json("0") == 0 and config_json("not json") == "not json"
    assert repr(config_json(HUGE_INT)) == "a 5,000-digit number (too long for any setting)"
