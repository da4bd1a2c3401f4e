"""What a newcomer meets first, from the command line: the plan table says what its columns are, numbers are never
cut on a narrow terminal, piped doctor output is lines not a padded table, a missing or odd stack file is named for
what it is, model ids are checked, tensor-parallel suggestions are sizes vLLM takes, and the `vllm-stack` command
works from any folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from stacks import cli
from stacks.config import load_stack, parse
from stacks.errors import ConfigError
from stacks.plan import plan
from tests.conftest import ROOT, STACKS, docker_raw
from tests.test_doctor import FakeGpu, probes

VENV_BIN = ROOT / ".venv" / "bin"


def _printed(stack: str, width: int) -> str:
    console = Console(width=width, highlight=False, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    cli._print_plan(plan(load_stack(stack)), console)
    return console.export_text()


def test_the_plan_table_shows_the_settings_beside_what_fits() -> None:
    """'max seqs' showed the full-length sequences that fit, under a header that read like maxNumSeqs."""
    text = _printed("dev", 200)
    assert "maxNum" in text and "full seqs" in text and "maxModel" in text and "max seqs" not in text
    p = plan(load_stack("dev"))
    for m in p.models:
        row = next(line for line in text.splitlines() if line.strip().startswith(m.name + " "))
        cells = row.split()
        assert cells[5:8] == [str(m.max_num_seqs), str(m.memory.max_full_sequences), str(m.max_model_len)], row
    assert any(m.memory.max_full_sequences != m.max_num_seqs for m in p.models), "the two columns differ on the dev stack"


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("width", [24, 40, 60, 80, 92, 100, 140])
def test_no_number_is_cut_or_folded_whatever_the_terminal_width(stack: str, width: int) -> None:
    text = _printed(stack, width)
    assert "…" not in text
    words = set(text.split())
    for m in plan(load_stack(stack)).models:
        f = m.memory
        for figure in (f"{f.kv_tokens:,}", f"{f.weights_gib:.2f}", f"{f.kv_gib:.2f}", str(m.max_model_len)):
            assert any(w.strip("(),*") == figure for w in words), (stack, width, figure)
        assert any(w.rstrip(":") == m.name for w in words), (stack, width, m.name)


def test_piped_doctor_output_is_a_line_per_check_not_a_padded_table(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped, the table used to be as wide as its longest cell sum: lines of 1,191 characters, mostly spaces."""
    monkeypatch.setattr(cli, "local_probes", lambda docker_host=None: probes(gpu_probe=FakeGpu(error=cli.ProbeError("no NVIDIA driver here", "install it"))))
    assert cli.main(["doctor", "dev"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("pass  docker: daemon: ") and any(line.startswith("      fix: install it") for line in lines)
    assert all(not line.endswith(" ") for line in lines) and max(map(len, lines)) < 400
    assert re.search(r"^checks: \d+ pass, \d+ warn, \d+ fail, \d+ skip$", out, re.M)


def test_a_missing_stack_lists_the_stacks_there_are(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert "no stack file at" in err and "the stacks here are cluster, dev, mac, multigpu, multinode, swap" in err


def test_a_link_loop_a_dangling_link_and_a_fifo_are_named_for_what_they_are(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loop, dangling, fifo = tmp_path / "loop.yaml", tmp_path / "dangling.yaml", tmp_path / "fifo.yaml"
    loop.symlink_to(loop)
    dangling.symlink_to(tmp_path / "gone.yaml")
    os.mkfifo(fifo)
    for path, words in ((loop, "symbolic link that loops"), (dangling, "symbolic link to"), (fifo, "is a FIFO (named pipe), not a stack file")):
        assert cli.main(["plan", str(path)]) == 1
        err = capsys.readouterr().err
        assert words in err and "no stack file" not in err, err


ARCH = {"parametersB": 1, "layers": 2, "attentionHeads": 2, "kvHeads": 2, "hiddenSize": 64, "intermediateSize": 128, "vocabSize": 100, "contextLength": 2048}


@pytest.mark.parametrize("model", ["acme/model\nnext", "acme/mod\x00el", "acme/mödel", "acme/model name", "--trust-remote-code", " acme/model"])
def test_a_model_id_with_a_control_space_or_non_ascii_character_is_refused_even_with_arch(model: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(docker_raw(models=[{"name": "m", "model": model, "gpus": [0], "maxModelLen": 1024, "arch": ARCH}]))
    assert err.value.keys == ["models[0].model"]


def test_any_string_with_a_control_character_is_refused_by_key() -> None:
    raw: dict[str, Any] = docker_raw()
    raw["models"][0]["extraArgs"] = ["--seed\x00=1"]
    raw["models"][1]["env"] = {"A": "b\x1bc"}
    with pytest.raises(ConfigError) as err:
        parse(raw)
    assert err.value.keys == ["models[0].extraArgs[0]", "models[1].env.A"]
    raw = docker_raw(models=[{"name": "m", "model": "acme/fine-tune", "gpus": [0], "maxModelLen": 1024, "arch": ARCH}])
    assert plan(parse(raw)).models[0].model == "acme/fine-tune"


@pytest.mark.parametrize(("model", "tp"), [("Qwen/Qwen2.5-14B-Instruct", 3), ("Qwen/Qwen2.5-14B-Instruct", 5), ("Qwen/Qwen2.5-7B-Instruct", 7)])
def test_every_tensor_parallel_size_a_refusal_offers_is_one_vllm_takes(model: str, tp: int) -> None:
    def raw(size: int) -> dict[str, Any]:
        return docker_raw(
            gpus=[{"index": i, "memoryGiB": 80} for i in range(size)], models=[{"name": "m", "model": model, "gpus": list(range(size)), "maxModelLen": 1024}]
        )

    with pytest.raises(ConfigError) as err:
        plan(parse(raw(tp)))
    sizes = [int(n) for n in re.search(r"use one of \[([\d, ]+)\]", err.value.problems[0].message).group(1).split(", ")]  # type: ignore[union-attr]
    assert 5 not in sizes and len(sizes) >= 3
    for size in sizes:
        assert plan(parse(raw(size))).models[0].tensor_parallel == size


def test_the_vllm_stack_command_works_from_any_folder(tmp_path: Path) -> None:
    command = VENV_BIN / "vllm-stack"
    assert command.exists(), "make venv installs it (pyproject.toml [project.scripts])"
    r = subprocess.run([str(command), "plan", "dev"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "planned with vLLM" in r.stdout, r.stderr
    # the venv's python finds the package from anywhere too; `python -m stacks` at the repo root keeps working
    r = subprocess.run([str(VENV_BIN / "python"), "-m", "stacks", "plan", "dev", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "stacks", "schema"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("{")
    # a stack file in the current folder is found by its name before the repository's
    (tmp_path / "Pulumi.dev.yaml").write_text((ROOT / "Pulumi.dev.yaml").read_text().replace("Asia/Seoul", "Europe/Paris"))
    r = subprocess.run([str(command), "plan", "dev"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "TZ Europe/Paris" in r.stdout, r.stderr
