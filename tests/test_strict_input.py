"""No traceback for any input: strict YAML (duplicate keys with their line), strict types, "did you mean", the known
crashers (a zoneinfo folder as time zone, a 300-character one, Latin-1 bytes, an unreadable file, ``--out`` on a
file), and one line for an internal error, on the command line and in the Pulumi program alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from stacks.cli import main
from stacks.config import parse
from stacks.config.schema import MonitoringConfig, yaml_key
from stacks.errors import ConfigError
from stacks.plan import plan
from tests.conftest import ROOT, docker_raw, kube_raw
from tests.mock_engine import LAST, run_program, stack_config

DEV = (ROOT / "Pulumi.dev.yaml").read_text()


def stack(tmp_path: Path, text: str | bytes, name: str = "Pulumi.t.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def dev_with(**keys: str) -> str:
    """The dev stack file with top-level ``vllm-stack:`` lines replaced (values as YAML text)."""
    lines = [line for line in DEV.splitlines() if not any(line.startswith(f"  vllm-stack:{k}:") for k in keys)]
    return "\n".join(lines + [f"  vllm-stack:{k}: {v}" for k, v in keys.items()]) + "\n"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def problems(capsys: pytest.CaptureFixture[str], path: Path) -> list[str]:
    """The problem lines ``plan`` prints for a stack file it refuses (exit 1), whole: nothing is hard-wrapped."""
    code, _, err = cli(capsys, "plan", str(path))
    assert code == 1, err
    head, *lines = err.splitlines()
    assert head.endswith("in the stack config:")
    assert all(line.startswith("  - ") for line in lines), err
    return [line[4:] for line in lines]


# --- the known crashers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "words"),
    [("Europe", "did you mean Europe/"), ("A" * 300, "(300 characters)"), ("Asia/Seol", "did you mean Asia/Seoul"), ("../../etc/passwd", "IANA")],
    ids=["zoneinfo-folder", "300-characters", "typo", "path"],
)
def test_bad_time_zones_are_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str], zone: str, words: str) -> None:
    [line] = problems(capsys, stack(tmp_path, dev_with(timezone=json.dumps(zone))))
    assert line.startswith("vllm-stack:timezone: unknown time zone") and words in line, line
    assert len(line) < 300, "a long value is shortened in the message"


def test_latin1_bytes_name_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = stack(tmp_path, dev_with(timezone="Europe/Berlin").encode() + "  # café\n".encode("latin-1"))
    [line] = problems(capsys, path)
    lines = dev_with(timezone="Europe/Berlin").count("\n") + 1
    assert line == f"{path}, line {lines}: byte 0xe9 is not UTF-8; save the file as UTF-8"


def test_utf8_with_bom_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "plan", "--json", str(stack(tmp_path, b"\xef\xbb\xbf" + DEV.encode())))
    assert code == 0 and json.loads(out)["target"] == "docker"


def test_unreadable_stack_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        path = stack(tmp_path, DEV)
        path.chmod(0)
    else:
        path = Path("/proc/self/mem")  # root reads any file by permission; this one refuses every read
    [line] = problems(capsys, path)
    assert line.startswith(f"cannot read {path}: ") and "readable file" in line


@pytest.mark.parametrize("name", ["A" * 5000, "A" * 5000 + ".yaml"])
def test_a_name_too_long_for_the_system(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, _, err = cli(capsys, "plan", name)
    assert code == 1 and "File name too long" in err and f"({len(name)} characters)" in err and len(err) < 400
    code, _, err = cli(capsys, "render", "dev", "--out", f"/tmp/{name}")
    assert code == 1 and err.startswith("render: cannot write /tmp/AAA") and "File name too long" in err and len(err) < 400


def test_a_folder_as_stack_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "Pulumi.dir.yaml"
    folder.mkdir()
    assert problems(capsys, folder) == [f"{folder} is a folder; name a stack file such as Pulumi.dev.yaml"]


def test_render_out_on_a_file_or_under_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = stack(tmp_path, "x", "taken")
    code, _, err = cli(capsys, "render", "dev", "--out", str(a_file))
    assert code == 1 and err == f"render: --out {a_file} is a file; give a folder (it is created when missing)\n"
    code, _, err = cli(capsys, "render", "dev", "--out", str(a_file / "sub"))
    assert code == 1 and err.startswith(f"render: cannot write {a_file}") and err.count("\n") == 1, err
    assert a_file.read_text() == "x"


# --- strict YAML --------------------------------------------------------------------------------------------------


def test_duplicate_keys_are_named_with_their_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = DEV.replace("      maxNumSeqs: 64\n", "      maxNumSeqs: 64\n      maxNumSeqs: 8\n") + "  vllm-stack:timezone: UTC\n"
    lines = text.splitlines()
    first_seqs = lines.index("      maxNumSeqs: 64") + 1
    first_zone = next(i for i, line in enumerate(lines) if line.startswith("  vllm-stack:timezone:")) + 1
    path = stack(tmp_path, text)
    assert problems(capsys, path) == [
        f"vllm-stack:timezone: given twice (lines {first_zone} and {len(lines)}); keep one ({path}, line {len(lines)})",
        f"vllm-stack:models[0].maxNumSeqs: given twice (lines {first_seqs} and {first_seqs + 1}); keep one ({path}, line {first_seqs + 1})",
    ]


def test_duplicate_outside_the_namespace_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = stack(tmp_path, DEV + "config: {}\n")
    first, last = DEV.splitlines().index("config:") + 1, DEV.count("\n") + 1
    [line] = problems(capsys, path)
    assert line == f"{path}, line {last}: config: given twice (lines {first} and {last}); keep one"


def test_merge_keys_may_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = DEV.replace("  vllm-stack:gateway:\n    port: 8000\n", "  vllm-stack:gateway:\n    <<: {port: 9000}\n    port: 8000\n")
    assert "<<:" in text
    code, out, _ = cli(capsys, "plan", "--json", str(stack(tmp_path, text)))
    assert code == 0 and json.loads(out)["gateway"]["service"]["published"] == 8000


# each line holds ten of the line before: a million values from six short lines
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcde", "bcdef", strict=True))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("config:\n  vllm-stack:gpus: [1, 2\n", "line 3: not valid YAML"),
        ("config: {}\n---\nconfig: {}\n", "line 2: not valid YAML: expected a single document"),
        ("config:\n  vllm-stack:timezone: !!python/name:os.system\n", "line 2: not valid YAML: could not determine a constructor"),
        ("config:\n  vllm-stack:timezone: \x07\n", "line 2: character '\\x07' (#x0007) is not allowed in YAML"),
        ("a: &a [*a]\n", "contains itself through an alias"),
        (ALIAS_BOMB, "expands to more than 100,000 values"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ("- 1\n- 2\n", "must hold a mapping with a `config:` mapping"),
        ("config:\n  vllm-stack:: docker\n", "`vllm-stack:` names no key"),
    ],
    ids=["unclosed", "two-documents", "python-tag", "control-char", "self-alias", "alias-bomb", "deep", "not-a-mapping", "empty-key"],
)
def test_broken_yaml_names_the_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, words: str) -> None:
    path = stack(tmp_path, text)
    [line] = problems(capsys, path)
    assert words in line and (str(path) in line or "vllm-stack:" in line), line


# --- strict types and "did you mean" ------------------------------------------------------------------------------


def _problem(raw: dict[str, Any], key: str) -> str:
    with pytest.raises(ConfigError) as exc:
        plan(parse(raw))
    found = {p.key: p.message for p in exc.value.problems}
    assert key in found, exc.value.render()
    return found[key]


IMAGE_HINT = "an image reference: [registry/]repository[:tag][@sha256:digest], lowercase, e.g. vllm/vllm-openai:v0.11.2"
MONITORING_KEYS = [yaml_key(name) for name in MonitoringConfig.model_fields]


def _model(**kw: Any) -> dict[str, Any]:
    raw = docker_raw()
    raw["models"][0].update(kw)
    return raw


@pytest.mark.parametrize(
    ("raw", "key", "message"),
    [
        (_model(maxNumSeqs=True), "models[0].maxNumSeqs", "must be a whole number, not the boolean true"),
        (_model(maxModelLen="2048"), "models[0].maxModelLen", "must be a whole number, not the string '2048'"),
        (_model(maxModelLen=2048.0), "models[0].maxModelLen", "must be a whole number, not the number 2048.0"),
        (_model(gpuMemoryUtilization=True), "models[0].gpuMemoryUtilization", "must be a number or 'auto', not the boolean true"),
        (_model(enforceEager="yes"), "models[0].enforceEager", "must be true or false, not the string 'yes'"),
        (_model(env={"A": 1}), "models[0].env.A", "must be a string, not the number 1"),
        (_model(dtype="fp4"), "models[0].dtype", "must be 'auto', 'float16', 'bfloat16' or 'float32', not the string 'fp4'"),
        (docker_raw(gpus=[{"index": True, "memoryGiB": 24}]), "gpus[0].index", "must be a whole number, not the boolean true"),
        (docker_raw(gateway={"port": "8000"}), "gateway.port", "must be a whole number, not the string '8000'"),
        (docker_raw(image={"base": "v\\llm/vllm-openai:v0.11.2"}), "image.base", "'v\\\\llm/vllm-openai:v0.11.2' is not " + IMAGE_HINT),
        (docker_raw(gateway={"image": "nginx:1.28\nRUN id"}), "gateway.image", "'nginx:1.28\\nRUN id' is not " + IMAGE_HINT),
        (_model(maxNumSeq=8), "models[0].maxNumSeq", "unknown key; did you mean maxNumSeqs?"),
        (_model(max_model_len=2048), "models[0].max_model_len", "unknown key; did you mean maxModelLen?"),
        (_model(MaxModelLen=2048), "models[0].MaxModelLen", "unknown key; did you mean maxModelLen?"),
        (docker_raw(modles=[]), "modles", "unknown key; did you mean models?"),
        (docker_raw(hftoken={"secure": "x"}), "hftoken", "unknown key; did you mean hfToken?"),
        (docker_raw(gateway={"prot": 1}), "gateway.prot", "unknown key; did you mean port?"),
        (docker_raw(monitoring={"zzz": 1}), "monitoring.zzz", "unknown key; this section takes " + ", ".join(MONITORING_KEYS)),
    ],
    ids=lambda v: v if isinstance(v, str) and "." not in v and " " not in v else None,
)
def test_strict_types_and_did_you_mean(raw: dict[str, Any], key: str, message: str) -> None:
    assert _problem(raw, key) == message


def test_floats_take_whole_numbers_and_pulumi_strings_still_work() -> None:
    raw = docker_raw(gpus=[{"index": 0, "memoryGiB": 24}, {"index": 1, "memoryGiB": 24, "reservedGiB": 1}])
    assert [g.memory_gib for g in plan(parse(raw)).gpus] == [24.0, 24.0]
    cfg, secrets = stack_config("dev")
    cfg["vllm-stack:allowUnpinnedImages"] = "true"  # Pulumi hands every scalar key over as a string
    cfg["vllm-stack:image"] = json.dumps({"base": "vllm/vllm-openai:latest", "vllmVersion": "0.26.0"})
    run_program("dev", secrets=dict.fromkeys(secrets, "x"), config=cfg)
    assert LAST[0].resources


# --- KEDA scale to zero: it must be able to wake up -----------------------------------------------------------------


def _autoscaled(**autoscaling: Any) -> dict[str, Any]:
    raw = kube_raw()
    raw["models"][0]["autoscaling"] = {"enabled": True, **autoscaling}
    return raw


def test_scale_to_zero_without_a_wake_signal_is_refused() -> None:
    message = _problem(_autoscaled(minReplicas=0), "models[0].autoscaling.minReplicas")
    assert message.startswith("0 could never wake up") and "minReplicas: 1" in message and "activationQuery" in message


def test_activation_keys_only_with_scale_to_zero() -> None:
    assert "acts only with minReplicas: 0" in _problem(_autoscaled(activationThreshold=2), "models[0].autoscaling.activationThreshold")
    assert "acts only with minReplicas: 0" in _problem(_autoscaled(activationQuery="sum(x)"), "models[0].autoscaling.activationQuery")


def test_scale_to_zero_with_a_wake_signal_plans() -> None:
    query = 'sum(rate(nginx_ingress_controller_requests{service="gateway"}[2m]))'
    a = plan(parse(_autoscaled(minReplicas=0, activationQuery=query, activationThreshold=0.5))).models[0].autoscaling
    assert a is not None and (a.min_replicas, a.activation_query, a.activation_threshold) == (0, query, 0.5)


# --- internal errors: one line, exit 2, on the command line and in `pulumi up` ---------------------------------------


def test_internal_error_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("renderer fell over\nsecond line")

    monkeypatch.setattr("stacks.cli.render_all", boom)
    monkeypatch.delenv("VLLM_STACK_DEBUG", raising=False)
    code, out, err = cli(capsys, "render", "dev", "--out", "/nonexistent-never-written")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("internal error in vllm-stack (RuntimeError: renderer fell over); this is a bug")
    assert "please report it" in err and "VLLM_STACK_DEBUG=1" in err
    monkeypatch.setenv("VLLM_STACK_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["render", "dev", "--out", "/nonexistent-never-written"])


@pytest.mark.parametrize("command", ["plan dev", "plan --json dev", "schema"])
def test_closed_pipe_is_no_traceback(command: str) -> None:
    """`python -m stacks plan dev | true`: the reader is gone before the first write (small and large outputs alike)."""
    r = subprocess.run(f"{sys.executable} -m stacks {command} | true", shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.stderr == ""


def test_pulumi_program_bad_zone_is_a_run_error_naming_the_key() -> None:
    cfg, secrets = stack_config("dev")
    cfg["vllm-stack:timezone"] = "Europe"
    with pytest.raises(pulumi.RunError) as exc:
        run_program("dev", secrets=dict.fromkeys(secrets, "x"), config=cfg)
    assert "vllm-stack:timezone: unknown time zone 'Europe'" in str(exc.value)
    assert LAST[0].resources == []


def test_pulumi_program_structured_key_that_is_no_json(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, secrets = stack_config("dev")
    cfg["vllm-stack:gpus"] = "RTX 5090"  # `pulumi config set vllm-stack:gpus "RTX 5090"`
    with pytest.raises(pulumi.RunError) as exc:
        run_program("dev", secrets=dict.fromkeys(secrets, "x"), config=cfg)
    assert "vllm-stack:gpus: must be a list, not the string 'RTX 5090'" in str(exc.value)


def test_pulumi_program_internal_error_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any, **__: Any) -> None:
        raise KeyError("gateway")

    monkeypatch.setattr("components.stack.VllmStack", boom)
    monkeypatch.delenv("VLLM_STACK_DEBUG", raising=False)
    with pytest.raises(pulumi.RunError) as exc:
        run_program("dev")
    assert str(exc.value).startswith("internal error in vllm-stack (KeyError: 'gateway'); this is a bug")
    assert "\n" not in str(exc.value)


def test_committed_stack_files_hold_no_duplicate_key() -> None:
    """The strict reader accepts every committed stack (and PyYAML agrees on what they hold)."""
    from stacks.config import strict_yaml

    for path in ROOT.glob("Pulumi*.yaml"):
        assert strict_yaml.load(path.read_text()) == yaml.safe_load(path.read_text()), path
