"""The docs' examples run: every stack-file block in README.md and docs/ is planned, rendered and checked by the
doctor against the GPU it names, every refusal they show is the refusal the stack gives, and the commands they print
run. An example cannot drift from the code again.

A block is tied to what it shows by the HTML comment on the line before its fence:

- ``<!-- example: dev -->`` the ``yaml`` block's keys replace those of ``Pulumi.dev.yaml`` (``dev, models appended``:
  its models are added to the stack's; ``none``: the block is a whole stack file); the result must plan.
- ``<!-- refusal: dev with {path: value, ...} -->`` the plain block is what ``plan`` says for ``Pulumi.dev.yaml`` with
  those keys set (``models[1].maxNumSeqs``; ``models[+]`` appends): the count, and each ``- vllm-stack:KEY: text``
  line (``...`` stands for any text).
"""

from __future__ import annotations

import copy
import re
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.cli import main as cli_main
from stacks.config import parse, read_stack_file
from stacks.doctor import doctor
from stacks.errors import ConfigError
from stacks.plan import plan
from tests.conftest import ROOT
from tests.test_doctor import MIB, FakeGpu, gpu, inventory, probes

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
MARK = re.compile(r"<!-- (example|refusal): (.+?) -->\n$")
NVIDIA_SMI = {"RTX 5090": (32607, 480), "RTX 4090": (24564, 480)}
"""nvidia-smi's memory.total and memory.reserved (MiB) of the GPUs the examples name, as the stack files' comments cite
them: the doctor's memory check must pass for the memoryGiB an example gives."""


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    lang: str
    body: str
    mark: tuple[str, str] | None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            before = text[: m.start()]
            mark = MARK.search(before[-300:])
            out.append(Block(doc, before.count("\n") + 1, m.group(1), m.group(2), (mark.group(1), mark.group(2)) if mark else None))
    return out


BLOCKS = blocks()
EXAMPLES = [b for b in BLOCKS if b.mark and b.mark[0] == "example"]
REFUSALS = [b for b in BLOCKS if b.mark and b.mark[0] == "refusal"]


def test_every_stack_file_block_and_refusal_in_the_docs_is_checked() -> None:
    for b in BLOCKS:
        if b.lang == "yaml" and "vllm-stack:" in b.body:
            assert b.mark and b.mark[0] == "example", f"{b.where}: a stack-file example without <!-- example: STACK -->"
        if re.search(r"problems? in the stack config|^\s*- vllm-stack:", b.body, re.M) and not b.lang:
            assert b.mark and b.mark[0] == "refusal", f"{b.where}: a refusal without <!-- refusal: STACK with {{...}} -->"
    assert len(EXAMPLES) >= 7 and len(REFUSALS) >= 4


def _namespaced(raw: dict[str, Any]) -> dict[str, Any]:
    return {f"vllm-stack:{k}": v for k, v in raw.items()}


def _example_file(b: Block, tmp_path: Path) -> Path:
    assert b.mark
    spec = b.mark[1]
    base, _, how = spec.partition(", ")
    fragment = yaml.safe_load(textwrap.dedent(b.body))
    fragment = fragment.get("config", fragment)
    if base == "none":
        config = fragment
    else:
        config = _namespaced(read_stack_file(ROOT / f"Pulumi.{base}.yaml"))
        for key, value in fragment.items():
            if how == "models appended" and key == "vllm-stack:models":
                config[key] = [*config[key], *value]
            else:
                assert how == "", f"{b.where}: unknown example spec {spec!r}"
                config[key] = value
    path = tmp_path / f"Pulumi.example-{b.line}.yaml"
    path.write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    return path


@pytest.mark.parametrize("block", EXAMPLES, ids=[b.where for b in EXAMPLES])
def test_each_stack_file_example_plans_renders_and_passes_the_doctors_memory_check(block: Block, tmp_path: Path) -> None:
    path = _example_file(block, tmp_path)
    assert cli_main(["plan", str(path)]) == 0, block.where
    assert cli_main(["render", str(path), "--out", str(tmp_path / "out")]) == 0, block.where
    p = plan(parse(read_stack_file(path)))
    if p.target != "docker":
        return
    # the GPUs it names, as NVML would report them: the memoryGiB the example gives is what the doctor accepts
    gpus = []
    for g in p.gpus:
        assert g.name in NVIDIA_SMI, f"{block.where}: add {g.name}'s nvidia-smi figures to NVIDIA_SMI"
        total, reserved = NVIDIA_SMI[g.name]
        gpus.append(gpu(g.index, name=f"NVIDIA GeForce {g.name}", total_bytes=total * MIB, reserved_bytes=reserved * MIB, free_bytes=total * MIB))
    checks = {c.name: c for c in doctor(p, probes(gpu_probe=FakeGpu(inventory(*gpus))), hf_token_set=True)}
    for g in p.gpus:
        assert checks[f"GPU {g.index} memory"].status == "pass", (block.where, checks[f"GPU {g.index} memory"])


def _set(raw: dict[str, Any], path: str, value: Any) -> None:
    parts = re.findall(r"[^.\[\]]+|\[\+\]|\[\d+\]", path)
    node: Any = raw
    for part, last in zip(parts, [*[False] * (len(parts) - 1), True], strict=True):
        if part == "[+]":
            node.append(value)
            return
        key: Any = int(part[1:-1]) if part.startswith("[") else part
        if last:
            node[key] = value
        else:
            if not isinstance(key, int) and key not in node:
                node[key] = {}
            node = node[key]


def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(".*?".join(re.escape(piece) for piece in text.split("...")), re.S)


@pytest.mark.parametrize("block", REFUSALS, ids=[b.where for b in REFUSALS])
def test_each_refusal_the_docs_show_is_the_stacks(block: Block) -> None:
    assert block.mark
    base, _, change = block.mark[1].partition(" with ")
    raw = copy.deepcopy(read_stack_file(ROOT / f"Pulumi.{base}.yaml"))
    for path, value in yaml.safe_load(change).items():
        _set(raw, path, value)
    with pytest.raises(ConfigError) as err:
        plan(parse(raw))
    problems = err.value.problems
    lines = block.body.strip("\n").splitlines()
    if count := re.match(r"^(\d+) problems? in the stack config:$", lines[0]):
        assert int(count.group(1)) == len(problems), (block.where, err.value.render())
        lines = lines[1:]
    for line in lines:
        m = re.match(r"^\s*- vllm-stack:(\S+): (.*)$", line)
        assert m, f"{block.where}: {line!r}"
        real = [p.message for p in problems if p.key == m.group(1)]
        assert any(_pattern(m.group(2)).fullmatch(r) for r in real), (block.where, line, real)


def _doc_commands() -> list[tuple[str, str]]:
    """``python -m stacks ...`` and ``vllm-stack ...`` lines of the docs' shell blocks (no placeholders), with where they are."""
    out = []
    for b in BLOCKS:
        if b.lang != "sh":
            continue
        for line in b.body.splitlines():
            cmd = line.split(" #", 1)[0].strip()
            if cmd.startswith(("python -m stacks ", "vllm-stack ", ".venv/bin/vllm-stack ")) and "<" not in cmd and "|" not in cmd:
                out.append((b.where, cmd))
    return out


@pytest.mark.parametrize(("where", "cmd"), _doc_commands())
def test_each_command_the_docs_print_runs(where: str, cmd: str, tmp_path: Path) -> None:
    cmd = re.sub(r"--out \S+", f"--out {tmp_path}", cmd)
    r = subprocess.run(["bash", "-c", f". .venv/bin/activate && {cmd}"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    # doctor fails on a machine that lacks what the stack needs (exit 1): that is its answer, not a crash
    assert r.returncode == 0 or (" doctor " in f" {cmd} " and r.returncode == 1), (where, cmd, r.stderr)
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, (where, r.stderr)


def test_the_readme_stacks_table_is_the_stack_files() -> None:
    readme = (ROOT / "README.md").read_text()
    for stack in ("dev", "multigpu", "cluster"):
        row = next(line for line in readme.splitlines() if line.startswith(f"| `Pulumi.{stack}.yaml` |"))
        raw = read_stack_file(ROOT / f"Pulumi.{stack}.yaml")
        p = plan(parse(copy.deepcopy(raw)))
        for m in p.models:
            family = m.model.split("/")[-1]
            named = re.findall(r"[A-Za-z][\w.]*-[\w.-]*\d[\w.]*", row)
            assert any(family.lower().startswith(n.lower()) or n.lower().startswith(family.lower()) for n in named), (stack, m.model, row)
        sizes = {g.memory_gib for g in p.gpus} or {p.kubernetes.gpu_memory_gib if p.kubernetes else 0}
        assert all(f"{s} GiB" in row for s in sizes), (stack, sizes, row)


def test_the_readme_names_every_manifest_stage_render_writes() -> None:
    from stacks.render.kubernetes import APPLY_STAGE, LAST_STAGE

    readme = (ROOT / "README.md").read_text()
    listed = {int(n) for n in re.findall(r"`(\d\d)` [A-Z]", readme[readme.index("<stage>-<kind>-<name>.yaml") :][:600])}
    listed |= {int(n) for n in re.findall(r"`(\d\d)` every other kind", readme)}
    assert listed == {*APPLY_STAGE.values(), LAST_STAGE}
