"""``doctor`` for endpoints the stack does not run, with the real HTTP probe against fake endpoints on 127.0.0.1 (a
Docker Model Runner layout, https with a CA of the test's own, a key), and a stack without NVIDIA GPUs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stacks.config import parse
from stacks.doctor import doctor
from stacks.doctor.endpoint_checks import endpoint_checks, key_variable
from stacks.doctor.endpoint_http import HttpEndpoints
from stacks.doctor.probes import Probes
from stacks.doctor.result import Check
from stacks.plan import StackPlan, plan
from tests.conftest import docker_raw
from tests.gateway_harness import free_port, start_backend, stop
from tests.test_doctor import DOCKER_OK, FakeDocker, FakeGpu, FakeHost, FakeKube, inventory
from tests.tls_ca import TestCA

KEY = "sk-endpoint-0123456789"


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, int], TestCA]]:
    tmp = tmp_path_factory.mktemp("doctor-endpoints")
    ca = TestCA(tmp / "pki")
    good = ca.issue("good", ["endpoint.test"])
    ports = {n: free_port() for n in ("dmr", "https", "down")}
    procs = [
        start_backend("dmr", ["ai/smollm2:latest", "ai/qwen3:latest"], ports["dmr"], "--prefix", "/engines/v1", "--latest"),
        start_backend("https", ["gpt-4.1-mini"], ports["https"], "--key", KEY, "--tls-cert", str(good.cert), "--tls-key", str(good.key)),
    ]
    try:
        yield ports, ca
    finally:
        for proc in procs:
            stop(proc)


def _plan(ports: dict[str, int], ca: TestCA, *endpoints: dict[str, Any]) -> StackPlan:
    secrets = {e["apiKeySecret"]: {"secure": "v1:x"} for e in endpoints if "apiKeySecret" in e}
    raw = docker_raw(models=[], gpus=[], monitoring={"grafana": False}, endpoints=list(endpoints), **secrets)
    return plan(parse(raw))


def _dmr(port: int, *models: str) -> dict[str, Any]:
    return {"name": "mac", "url": f"http://127.0.0.1:{port}/engines/v1", "models": [{"name": m.split("/")[-1].split(":")[0], "model": m} for m in models]}


def _hosted(port: int, ca_pem: str | None, name: str = "endpoint.test") -> dict[str, Any]:
    tls = {"serverName": name} | ({"caPem": ca_pem} if ca_pem else {})
    return {
        "name": "hosted",
        "url": f"https://127.0.0.1:{port}/v1",
        "apiKeySecret": "hostedKey",
        "tls": tls,
        "models": [{"name": "gpt", "model": "gpt-4.1-mini"}],
    }


def _only(p: StackPlan) -> Check:
    [check] = endpoint_checks(p, HttpEndpoints())
    return check


def test_a_docker_model_runner_that_lists_the_models_passes(fakes: tuple[dict[str, int], TestCA]) -> None:
    ports, ca = fakes
    c = _only(_plan(ports, ca, _dmr(ports["dmr"], "ai/smollm2", "ai/qwen3:latest")))
    assert c.status == "pass" and "lists ai/smollm2, ai/qwen3:latest" in c.detail


def test_a_model_not_pulled_fails_with_the_pull_command(fakes: tuple[dict[str, int], TestCA]) -> None:
    ports, ca = fakes
    c = _only(_plan(ports, ca, _dmr(ports["dmr"], "ai/smollm2", "ai/gemma3")))
    assert c.status == "fail" and "does not list ai/gemma3" in c.detail and "docker model pull ai/gemma3" in c.fix


def test_an_endpoint_that_is_down_fails(fakes: tuple[dict[str, int], TestCA]) -> None:
    ports, ca = fakes
    c = _only(_plan(ports, ca, _dmr(ports["down"], "ai/smollm2")))
    assert c.status == "fail" and "is not reachable" in c.detail and c.fix


def test_https_with_its_ca_and_key(fakes: tuple[dict[str, int], TestCA], monkeypatch: pytest.MonkeyPatch) -> None:
    ports, ca = fakes
    p = _plan(ports, ca, _hosted(ports["https"], ca.pem))
    monkeypatch.delenv(key_variable("hostedKey"), raising=False)
    without = _only(p)
    assert without.status == "warn" and "VLLM_STACK_HOSTED_KEY" in without.fix
    monkeypatch.setenv("VLLM_STACK_HOSTED_KEY", KEY)
    assert _only(p).status == "pass"
    monkeypatch.setenv("VLLM_STACK_HOSTED_KEY", "sk-wrong")
    assert _only(p).status == "fail"


@pytest.mark.parametrize(("ca_pem", "name", "why"), [(None, "endpoint.test", "certificate"), ("own", "other.test", "other.test")])
def test_a_certificate_the_gateway_would_refuse_fails_with_the_reason(fakes: tuple[dict[str, int], TestCA], ca_pem: str | None, name: str, why: str) -> None:
    ports, ca = fakes
    c = _only(_plan(ports, ca, _hosted(ports["https"], ca.pem if ca_pem else None, name)))
    assert c.status == "fail" and why in c.detail and "tls.caPem" in c.fix, c


def test_docker_internal_names_are_checked_where_the_host_reaches_them() -> None:
    seen: list[str] = []

    class Recording:
        def models(self, url: str, headers: dict[str, str], ca_pem: str | None, server_name: str | None, timeout: float = 10.0) -> list[str]:
            seen.append(url)
            return ["ai/smollm2:latest"]

    p = plan(parse(docker_raw(models=[], gpus=[], endpoints=[_dmr(0, "ai/smollm2") | {"url": "http://model-runner.docker.internal/engines/v1"}])))
    [c] = endpoint_checks(p, Recording())
    assert seen == ["http://localhost:12434/engines/v1"] and c.status == "pass" and "resolves inside containers" in c.detail


def test_a_stack_without_gpus_checks_no_gpu_and_each_endpoint(fakes: tuple[dict[str, int], TestCA]) -> None:
    ports, ca = fakes
    p = _plan(ports, ca, _dmr(ports["dmr"], "ai/smollm2"))
    probes = Probes(gpu=FakeGpu(inventory()), docker=FakeDocker(DOCKER_OK), kube=FakeKube(), host=FakeHost(), endpoints=HttpEndpoints())
    checks = {c.name: c for c in doctor(p, probes, hf_token_set=False)}
    assert checks["NVIDIA driver"].status == "skip" and "no NVIDIA GPU" in checks["NVIDIA driver"].detail
    assert "GPU access" not in checks
    assert checks["endpoint mac"].status == "pass"
    assert {c.status for c in checks.values()} <= {"pass", "skip"}
