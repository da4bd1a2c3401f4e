"""Hypothesis: every generated config, and every mutated stack file fed to the command line, either plans or names a key
(or the file) - never a traceback."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stacks.catalog import ids
from stacks.cli import main as cli_main
from stacks.config import parse
from stacks.errors import ConfigError
from stacks.plan import plan
from tests.conftest import ROOT, STACKS

junk = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=True), st.text(max_size=12), st.lists(st.integers(-1, 9), max_size=3))
fraction = st.one_of(st.just("auto"), st.floats(0.01, 1.2), junk)
model_id = st.one_of(st.sampled_from(ids()), st.just("acme/unknown-1b"), st.text(max_size=10))

models = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["a", "b", "c", "tiny-1"]), st.text(max_size=8)), "model": model_id},
    optional={
        "gpus": st.one_of(st.lists(st.integers(0, 4), max_size=4), junk),
        "tensorParallel": st.one_of(st.integers(0, 5), junk),
        "pipelineParallel": st.integers(0, 3),
        "gpuMemoryUtilization": fraction,
        "maxModelLen": st.one_of(st.integers(1, 200_000), junk),
        "maxNumSeqs": st.integers(0, 600),
        "kvCacheDtype": st.sampled_from(["auto", "fp8", "int3"]),
        "dtype": st.sampled_from(["auto", "float16", "bfloat16", "fp4"]),
        "quantization": st.sampled_from(["awq", "fp8", "magic"]),
        "servedModelNames": st.lists(st.sampled_from(["x", "y", "a", "b c"]), max_size=2),
        "extraArgs": st.lists(st.sampled_from(["--enable-chunked-prefill", "--use-v2-block-manager", "--port=1", "--seed=1"]), max_size=2),
        "replicas": st.integers(0, 3),
        "arch": st.fixed_dictionaries(
            {},
            optional={
                "parametersB": st.floats(0.1, 100),
                "layers": st.integers(1, 100),
                "attentionHeads": st.sampled_from([8, 16, 32]),
                "kvHeads": st.integers(1, 16),
                "headDim": st.sampled_from([64, 128]),
                "hiddenSize": st.sampled_from([1024, 4096]),
                "intermediateSize": st.sampled_from([4096, 14336]),
                "vocabSize": st.sampled_from([32000, 152064]),
                "tiedEmbeddings": st.booleans(),
                "contextLength": st.integers(512, 65536),
            },
        ),
        "unknownKey": junk,
    },
)

gpu = st.fixed_dictionaries(
    {"index": st.integers(0, 4), "memoryGiB": st.one_of(st.floats(1, 200), junk)}, optional={"name": st.text(max_size=5), "reservedGiB": st.floats(0, 8)}
)

configs = st.fixed_dictionaries(
    {"models": st.lists(models, max_size=4)},
    optional={
        "target": st.sampled_from(["docker", "kubernetes", "k3s"]),
        "timezone": st.sampled_from(["UTC", "Asia/Seoul", "Mars/Base", ""]),
        "gpus": st.lists(gpu, max_size=4),
        "image": st.fixed_dictionaries(
            {}, optional={"base": st.sampled_from(["vllm/vllm-openai:v0.11.2", "vllm/vllm-openai:latest", "vllm/vllm-openai", "x:v0.6.0"])}
        ),
        "gateway": st.fixed_dictionaries({}, optional={"port": st.integers(0, 70000), "routing": st.sampled_from(["model", "path", "dns"])}),
        "webui": st.fixed_dictionaries({}, optional={"port": st.integers(0, 70000), "enabled": st.booleans(), "replicas": st.integers(1, 3)}),
        "kubernetes": st.fixed_dictionaries({"gpu": st.fixed_dictionaries({"name": st.just("L40S"), "memoryGiB": st.floats(8, 141)})}),
        "hfToken": st.one_of(st.just({"secure": "v1:x"}), st.text(max_size=5)),
    },
)


def _check(raw: dict[str, Any]) -> None:
    try:
        plan(parse(raw))
    except ConfigError as err:
        assert err.problems
        for p in err.problems:
            assert p.key, f"problem without a key: {p}"
            assert p.message


@settings(max_examples=700, deadline=None, suppress_health_check=list(HealthCheck))
@given(configs)
def test_random_configs_plan_or_name_a_key(raw: dict[str, Any]) -> None:
    _check(raw)


valid_ish = st.fixed_dictionaries(
    {
        "target": st.just("docker"),
        "gpus": st.just([{"index": i, "memoryGiB": 24.0} for i in range(4)]),
        "models": st.lists(
            st.fixed_dictionaries(
                {"model": st.sampled_from(ids()), "gpus": st.sampled_from([[0], [1], [2, 3], [0, 1]])},
                optional={
                    "maxModelLen": st.sampled_from([512, 2048, 4096, 32768]),
                    "maxNumSeqs": st.integers(1, 64),
                    "gpuMemoryUtilization": st.sampled_from(["auto", 0.3, 0.5, 0.9]),
                },
            ),
            min_size=1,
            max_size=5,
        ),
    }
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(valid_ish)
def test_near_valid_configs_plan_or_name_a_key(raw: dict[str, Any]) -> None:
    for i, m in enumerate(raw["models"]):
        m["name"] = f"m{i}"
    _check(raw)


# --- whole stack files, as bytes, through the real command line -------------------------------------------------

SEEDS = [(ROOT / f"Pulumi.{s}.yaml").read_bytes() for s in STACKS]
YAMLISH = [
    b"true",
    b"yes",
    b"-1",
    b"0",
    b"1e400",
    b".nan",
    b"~",
    b"[]",
    b"{}",
    b'""',
    b"Europe",
    b"*a",
    b"&a x",
    b"!!binary AA==",
    b"2024-01-01",
    b"0x1F",
    b"'",
    b'"\\x00"',
    b"[[[[[[[[",
    b"{a: 1, a: 2}",
    b"!!python/name:os.system",
    b"\xe9t\xe9",
    b"\t",
    b"A" * 300,
    b"- x",
    b": :",
    b"? [a]\n: b",
    b"<<: *a",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\x1b[31m",
    b"\xff\xfe",
    b"---",
    b"...",
    b"%YAML 1.2",
    b"a\\1",
    b'"a\\nRUN id"',
    "\u00e9\u4e2d".encode(),
]


@st.composite
def stack_bytes(draw: st.DrawFn) -> bytes:
    """A committed stack file, mutated a few times: bytes flipped, inserted, cut, lines doubled, values swapped for YAML oddities."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=200))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["byte", "insert", "cut", "line", "value", "value", "value"]))
        if op == "byte" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.one_of(st.binary(max_size=6), st.sampled_from(YAMLISH)))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 40))]
        else:
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            if op == "line":
                lines.insert(i, lines[i])
            elif b": " in lines[i]:
                key, _, _ = lines[i].partition(b": ")
                lines[i] = key + b": " + draw(st.sampled_from(YAMLISH))
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(argv))
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=int(os.environ.get("FUZZ_FILES", "150")), deadline=None, suppress_health_check=list(HealthCheck))
@given(stack_bytes())
def test_random_stack_files_plan_or_name_a_key_or_the_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Pulumi.fuzz.yaml"
        path.write_bytes(data)
        # render plans, then renders every file: both must take whatever the file holds
        code, out, err = run_cli("render", str(path), "--out", str(Path(tmp) / "out"))
    assert code in (0, 1), err
    assert "Traceback" not in err + out
    if code == 0:
        assert "plan.json" in out
    else:
        head, *lines = err.splitlines()
        assert head.endswith("in the stack config:"), err
        for line in lines:
            assert line.startswith("  - ") and ("vllm-stack:" in line or str(path) in line), err
