"""Per-release vLLM facts (stacks/plan/releases.py) to 0.34, and a plan that says which release's rules it used and
refuses a release (or an image) whose rules it does not know."""

from __future__ import annotations

from typing import Any

import pytest

from stacks.catalog import lookup
from stacks.cli import main as cli_main
from stacks.config import parse
from stacks.errors import ConfigError
from stacks.plan import StackPlan, plan
from stacks.plan.memory import kv_layout
from stacks.plan.releases import (
    NEWEST_CHECKED,
    REMOVED_FLAGS,
    batch_defaults,
    concurrent_batches,
    cudagraphs_in_budget,
    image_vllm_version,
    kv_block_tokens,
    release_rules,
    removed_flag,
    uses_v2_model_runner,
)
from tests.conftest import docker_raw

TINY = {"name": "tiny", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 2048}
GEMMA = {"name": "gemma", "model": "google/gemma-3-1b-it", "gpus": [1], "maxModelLen": 8192}


def _plan(base: str, **image: Any) -> StackPlan:
    return plan(parse(docker_raw(image={"base": base, **image}, models=[TINY, GEMMA])))


def _refusal(**image: Any) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        plan(parse(docker_raw(image=image, models=[TINY])))
    return err.value


def test_0_34_lays_the_kv_cache_out_in_64_token_blocks() -> None:
    """CacheConfig.DEFAULT_BLOCK_SIZE: 16 to 0.33.0, 64 in 0.34.0."""
    assert [kv_block_tokens(v) for v in ((0, 11, 2), (0, 26, 0), (0, 33, 0), (0, 34, 0), (0, 34, 2))] == [16, 16, 16, 64, 64]
    old, new = _plan("vllm/vllm-openai:v0.33.0").model("tiny"), _plan("vllm/vllm-openai:v0.34.0").model("tiny")
    # whole blocks of every layer: 64 tokens a block now, 16 before
    assert new.memory.kv_cache_bytes % (64 * new.kv_bytes_per_token) == 0 and new.memory.kv_tokens % 64 == 0
    assert old.memory.kv_cache_bytes % (16 * old.kv_bytes_per_token) == 0
    # a sliding window holds its window, the batches in flight and one block more: a bigger block at 0.34
    gemma = lookup("google/gemma-3-1b-it")
    assert gemma
    layouts = [kv_layout(gemma, tp=1, pp=1, kv_bytes=2, in_flight_tokens=4096, block_tokens=kv_block_tokens(v)) for v in ((0, 33, 0), (0, 34, 0))]
    for layout, tokens in zip(layouts, (16, 64), strict=True):
        assert layout and layout.block_tokens == tokens and layout.windows.count(None) == 1 and layout.windows.count(512) == 6
        blocks = 8192 // tokens + 6 * (-(-(512 - 1 + 4096) // tokens) + 1)
        assert layout.sequence_bytes(8192) == blocks * layout.block_bytes


def test_from_0_29_every_model_runs_on_the_v2_runner_and_0_34_has_no_other() -> None:
    assert not uses_v2_model_runner((0, 21, 0), moe=False, pooling=False)
    assert uses_v2_model_runner((0, 26, 0), moe=False, pooling=False) and not uses_v2_model_runner((0, 26, 0), moe=True, pooling=False)
    for version in ((0, 29, 0), (0, 33, 0), (0, 34, 0)):
        assert all(uses_v2_model_runner(version, moe=moe, pooling=pooling) for moe in (False, True) for pooling in (False, True))
    # VllmConfig.max_concurrent_batches (0.34.0): async scheduling keeps pp + 1 batches in flight, pooling runs synchronously
    assert concurrent_batches((0, 34, 0), pp=2, v2_runner=True, pooling=False) == 3
    assert concurrent_batches((0, 34, 0), pp=2, v2_runner=True, pooling=True) == 2
    # its CUDA graphs are estimated inside the budget (the extensible KV cache, which would measure them, is off with
    # --kv-cache-memory-bytes)
    assert cudagraphs_in_budget((0, 34, 0), v2_runner=True) and not cudagraphs_in_budget((0, 26, 0), v2_runner=True)
    assert batch_defaults((0, 34, 0), 79.18, "H100") == (8192, 1024) and batch_defaults((0, 34, 0), 23.5, "RTX 4090") == (2048, 256)


def test_0_34_still_takes_every_flag_0_33_took() -> None:
    for flag in REMOVED_FLAGS:
        assert removed_flag(flag, (0, 34, 0)) == removed_flag(flag, (0, 33, 0)), flag
    assert removed_flag("--disable-log-requests", (0, 34, 0)) is None


def test_the_plan_says_which_releases_rules_it_used(capsys: pytest.CaptureFixture[str]) -> None:
    assert _plan("vllm/vllm-openai:v0.34.0").image.vllm_rules == "vLLM 0.34's rules (read from its source)"
    assert _plan("vllm/vllm-openai:v0.34.1").image.vllm_rules == "vLLM 0.34's rules (read from its source)", "a patch follows its minor line"
    assert cli_main(["plan", "dev"]) == 0
    assert "planned with vLLM 0.26's rules (read from its source)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("image", "key", "words"),
    [
        ({"base": "vllm/vllm-openai:v0.35.0"}, "image.base", "newer than the releases whose rules vllm-stack knows (0.11.2 to 0.34.x"),
        ({"base": "vllm/vllm-openai:v1.0.0"}, "image.base", "pin v0.34.0 or older"),
        ({"base": "vllm/vllm-openai:v0.9.0"}, "image.base", "older than any release vllm-stack can plan"),
        ({"base": "vllm/vllm-openai@sha256:" + "b" * 64}, "image.base", "set image.vllmVersion to its release"),
        ({"base": "registry.example/ml/vllm:prod"}, "image.base", "set image.vllmVersion"),
        ({"base": "vllm/vllm-openai:v0.26.0", "vllmVersion": "0.25.0"}, "image.vllmVersion", "but image.base is tagged 0.26.0"),
        ({"base": "vllm/vllm-openai@sha256:" + "b" * 64, "vllmVersion": "0.40.0"}, "image.vllmVersion", "newer than the releases"),
    ],
)
def test_a_release_without_known_rules_is_refused_naming_the_key(image: dict[str, str], key: str, words: str) -> None:
    err = _refusal(**image)
    assert err.keys == [key] and words in err.problems[0].message


def test_an_older_release_with_part_of_its_facts_plans_with_a_warning() -> None:
    rules, warning = release_rules((0, 10, 1))
    assert "0.11.2's rules" in rules and warning and "check it on a GPU" in warning
    p = _plan("vllm/vllm-openai:v0.10.1")
    assert p.notes[0].startswith("warning: vLLM 0.10.1 is older than 0.11.2")
    assert release_rules(NEWEST_CHECKED)[1] is None


def test_a_release_stated_for_another_repository_is_taken() -> None:
    """A mirror under another name, or a tag of the user's own: image.vllmVersion says the release."""
    p = _plan("registry.example/ml/vllm:2025-05-01", vllmVersion="0.34.0")
    assert p.image.vllm_version == "0.34.0" and p.model("tiny").memory.kv_tokens % 64 == 0
    assert image_vllm_version("mirror.example:5000/vllm/vllm-openai:v0.30.0") == (0, 30, 0)
    assert image_vllm_version("vllm/vllm-openai@sha256:" + "a" * 64) is None
