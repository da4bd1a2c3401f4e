"""The policy pack against what the real program declares for every committed stack (must pass), and against
broken copies of those declarations, made through the stack config where the program allows it and by
editing the recorded inputs where it refuses (each must be reported by the policy it breaks)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from policy.policies import POLICIES
from stacks.plan import topology as net
from stacks.plan.memory import SAFETY_FRACTION
from tests.conftest import ROOT, STACKS
from tests.mock_engine import Mocks, run_program, stack_config
from tests.policy_harness import Declared, Violation, analyze, analyze_remote, declared, edited, pack_server, policy_names

CONTAINER = "docker:index/container:Container"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
SERVICE = "kubernetes:core/v1:Service"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"


@functools.cache
def program(stack: str) -> Mocks:
    return run_program(stack)


def resources(stack: str) -> list[Declared]:
    return declared(program(stack))


def with_config(stack: str, **changes: Any) -> list[Declared]:
    """What the program declares for ``stack`` with some keys of its stack file changed."""
    cfg, secret_keys = stack_config(stack)
    for key, value in changes.items():
        cfg[f"vllm-stack:{key}"] = value if isinstance(value, str) else json.dumps(value)
    from tests.mock_engine import FAKE_SECRETS

    return declared(run_program(stack, secrets={k: FAKE_SECRETS[k] for k in secret_keys}, config=cfg))


def reported(violations: list[Violation], policy: str) -> list[str]:
    return [v.message for v in violations if v.policy == policy]


def only(violations: list[Violation], policy: str) -> list[str]:
    """The messages of ``policy``, asserting that no other policy reported anything."""
    assert {v.policy for v in violations} == {policy}, violations
    return reported(violations, policy)


def _container(props: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers: list[dict[str, Any]] = props["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if name is None or c["name"] == name)


# --- every committed stack passes -------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_committed_stacks_pass_every_policy(stack: str) -> None:
    assert analyze(resources(stack)) == []


def test_the_pack_as_pulumi_starts_it_serves_every_policy_over_grpc() -> None:
    """policy/__main__.py run the way Pulumi's pulumi-analyzer-policy-python shim runs it, in policy/."""
    broken = edited(resources("dev"), "vllm-webui", CONTAINER, _set_env("", "ENABLE_PERSISTENT_CONFIG="))
    with pack_server() as stub:
        assert policy_names(stub) == [p.name for p in POLICIES]
        assert analyze_remote(stub, resources("cluster")) == []
        found = analyze_remote(stub, broken)
    assert [v.policy for v in found] == ["open-webui-locked-down"]
    assert found[0].level == 1, "mandatory (pulumirpc.EnforcementLevel.MANDATORY)"


def test_pulumi_policy_yaml_runs_in_the_project_venv() -> None:
    pack = yaml.safe_load((ROOT / "policy/PulumiPolicy.yaml").read_text())
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert pack["runtime"]["name"] == "python"
    assert (ROOT / "policy" / pack["runtime"]["options"]["virtualenv"]).resolve() == (ROOT / project["runtime"]["options"]["virtualenv"]).resolve()


# --- images-pinned ----------------------------------------------------------------------------------------


def test_unpinned_images_are_reported_where_the_program_declares_them() -> None:
    found = analyze(with_config("dev", allowUnpinnedImages="true", webui={"image": "ghcr.io/open-webui/open-webui:main"}))
    assert only(found, "images-pinned") == [
        "vllm-webui-image: name: image tag 'main' in 'ghcr.io/open-webui/open-webui:main' moves; pin a version tag or a digest"
    ]
    found = analyze(with_config("dev", allowUnpinnedImages="true", image={"base": "vllm/vllm-openai", "vllmVersion": "0.26.0"}))
    assert "build.args.BASE_IMAGE" in only(found, "images-pinned")[0]


def test_unpinned_kubernetes_container_image_is_reported() -> None:
    broken = edited(resources("cluster"), "vllm-gateway-deployment", DEPLOYMENT, lambda p: _container(p).update(image="nginx:latest"))
    assert "'latest'" in only(analyze(broken), "images-pinned")[0]


# --- only-gateway-webui-metrics-reachable -----------------------------------------------------------------


def test_a_vllm_container_publishing_a_port_is_reported() -> None:
    broken = edited(resources("dev"), "vllm-yi-6b", CONTAINER, lambda p: p.update(ports=[{"internal": 8000, "external": 8001, "ip": "0.0.0.0"}]))
    assert "'vllm-yi-6b' publishes host port(s) [8001]" in only(analyze(broken), "only-gateway-webui-metrics-reachable")[0]
    broken = edited(resources("multigpu"), "vllm-mistral-7b", CONTAINER, lambda p: p.update(networkMode="host"))
    assert "runs on the host network" in only(analyze(broken), "only-gateway-webui-metrics-reachable")[0]


def test_kubernetes_exposure_of_vllm_is_reported_and_of_the_gateway_allowed() -> None:
    lb = with_config(
        "cluster", kubernetes={**yaml.safe_load((ROOT / "Pulumi.cluster.yaml").read_text())["config"]["vllm-stack:kubernetes"], "serviceType": "LoadBalancer"}
    )
    assert analyze(lb) == [], "the gateway and Open WebUI may get a LoadBalancer"
    broken = edited(resources("cluster"), "vllm-qwen3-8b-service", SERVICE, lambda p: p["spec"].update(type="LoadBalancer"))
    assert "Service 'vllm-qwen3-8b' of type LoadBalancer" in only(analyze(broken), "only-gateway-webui-metrics-reachable")[0]
    broken = edited(resources("cluster"), "vllm-qwen3-32b-deployment", DEPLOYMENT, lambda p: _container(p)["ports"][0].update(hostPort=8000))
    assert "'vllm-qwen3-32b' publishes host port(s) [8000]" in only(analyze(broken), "only-gateway-webui-metrics-reachable")[0]

    def to_vllm(p: dict[str, Any]) -> None:
        p["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = "vllm-qwen3-8b"

    broken = edited(resources("cluster"), "vllm-gateway-ingress", INGRESS, to_vllm)
    assert "Ingress routes to 'vllm-qwen3-8b'" in only(analyze(broken), "only-gateway-webui-metrics-reachable")[0]


# --- open-webui-locked-down -------------------------------------------------------------------------------


def _set_env(entry: str, remove_prefix: str) -> Callable[[dict[str, Any]], None]:
    """Drops the docker env entries starting with ``remove_prefix`` (secret ones are wrapped) and adds ``entry``."""

    def edit(p: dict[str, Any]) -> None:
        envs = p["envs"]
        envs[:] = [e for e in envs if not (e if isinstance(e, str) else e["value"]).startswith(remove_prefix)] + ([entry] if entry else [])

    return edit


@pytest.mark.parametrize(
    ("entry", "prefix", "expected"),
    [
        ("ENABLE_PERSISTENT_CONFIG=True", "ENABLE_PERSISTENT_CONFIG=", "ENABLE_PERSISTENT_CONFIG=False"),
        ("", "ENABLE_PERSISTENT_CONFIG=", "ENABLE_PERSISTENT_CONFIG=False"),
        ("WEBUI_AUTH=False", "WEBUI_AUTH=", "WEBUI_AUTH=False turns login off"),
        ("WEBUI_SECRET_KEY=", "WEBUI_SECRET_KEY=", "WEBUI_SECRET_KEY must come from a Pulumi secret"),
    ],
)
def test_open_webui_docker_breakages_are_reported(entry: str, prefix: str, expected: str) -> None:
    broken = edited(resources("dev"), "vllm-webui", CONTAINER, _set_env(entry, prefix))
    assert expected in only(analyze(broken), "open-webui-locked-down")[0]


def test_open_webui_secret_key_as_a_literal_on_kubernetes_is_reported() -> None:
    def literal(p: dict[str, Any]) -> None:
        env = _container(p)["env"]
        i = next(i for i, e in enumerate(env) if e["name"] == "WEBUI_SECRET_KEY")
        env[i] = {"name": "WEBUI_SECRET_KEY", "value": "hunter2"}

    broken = edited(resources("cluster"), "vllm-webui-deployment", DEPLOYMENT, literal)
    assert "must come from a secretKeyRef" in only(analyze(broken), "open-webui-locked-down")[0]
    assert any(
        e["name"] == "WEBUI_SECRET_KEY" and "secretKeyRef" in e["valueFrom"] for e in _container(program_props("cluster", "vllm-webui-deployment"))["env"]
    )


def program_props(stack: str, name: str) -> dict[str, Any]:
    return next(r.props for r in resources(stack) if r.name == name)


# --- data-kept-on-destroy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_the_retain_label_agrees_with_retain_on_delete(stack: str) -> None:
    """The policy reads the label because the analyzer protocol carries no retainOnDelete: both come from one flag."""
    data = [r for r in resources(stack) if r.type in ("docker:index/volume:Volume", "kubernetes:core/v1:PersistentVolumeClaim", "kubernetes:core/v1:Namespace")]
    assert data
    for r in data:
        labels = r.props.get("labels") or r.props["metadata"]["labels"]
        value = next(x["value"] for x in labels if x["label"] == net.RETAIN_LABEL) if isinstance(labels, list) else labels[net.RETAIN_LABEL]
        assert (value == "true") is r.retain_on_delete is True, r.name


@pytest.mark.parametrize("stack", ["dev", "cluster"])
def test_deleting_data_on_destroy_is_reported_for_every_data_resource(stack: str) -> None:
    found = analyze(with_config(stack, retainDataOnDestroy="false"))
    names = sorted(m.split(":", 1)[0] for m in only(found, "data-kept-on-destroy"))
    if stack == "dev":
        assert names == ["vllm-model-cache", "vllm-prometheus-data", "vllm-vllm-cache", "vllm-webui-data"]
    else:
        assert names == ["vllm-model-cache-pvc", "vllm-namespace", "vllm-open-webui-data-pvc"]


# --- containers-not-privileged ----------------------------------------------------------------------------


def test_privileged_or_over_capable_dcgm_is_reported() -> None:
    broken = edited(resources("dev"), "vllm-dcgm", CONTAINER, lambda p: p.update(privileged=True))
    assert "'dcgm-exporter' is privileged" in only(analyze(broken), "containers-not-privileged")[0]
    broken = edited(resources("dev"), "vllm-dcgm", CONTAINER, lambda p: p["capabilities"]["adds"].append("NET_ADMIN"))
    assert "adds ['NET_ADMIN']" in only(analyze(broken), "containers-not-privileged")[0]
    broken = edited(resources("cluster"), "vllm-dcgm-daemonset", DAEMONSET, lambda p: _container(p)["securityContext"]["capabilities"].pop("drop"))
    assert "must drop ALL" in only(analyze(broken), "containers-not-privileged")[0]
    broken = edited(resources("cluster"), "vllm-qwen3-8b-deployment", DEPLOYMENT, lambda p: _container(p).update(securityContext={"privileged": True}))
    assert "'vllm-qwen3-8b' is privileged" in only(analyze(broken), "containers-not-privileged")[0]


# --- kubernetes-resource-requests -------------------------------------------------------------------------


def test_a_container_without_requests_is_reported() -> None:
    broken = edited(resources("cluster"), "vllm-gateway-deployment", DEPLOYMENT, lambda p: _container(p)["resources"].pop("requests"))
    assert "has no cpu or memory request" in only(analyze(broken), "kubernetes-resource-requests")[0]


# --- gpu-fractions-fit ------------------------------------------------------------------------------------


def _fraction(value: str | None) -> Callable[[dict[str, Any]], None]:
    def edit(p: dict[str, Any]) -> None:
        args: list[str] = p["command"] if "command" in p else _container(p)["args"]
        i = args.index("--gpu-memory-utilization")
        if value is None:
            del args[i : i + 2]
        else:
            args[i + 1] = value

    return edit


def test_over_committed_gpu_is_reported_with_every_server_on_it() -> None:
    found = only(analyze(edited(resources("dev"), "vllm-tinyllama", CONTAINER, _fraction("0.5"))), "gpu-fractions-fit")
    assert len(found) == 1 and "GPU 0:" in found[0] and "vllm-tinyllama 0.5" in found[0] and "vllm-yi-6b" in found[0]
    # without the flag vLLM takes 0.9 of the GPU
    found = only(analyze(edited(resources("dev"), "vllm-yi-6b", CONTAINER, _fraction(None))), "gpu-fractions-fit")
    assert "vllm-yi-6b 0.9" in found[0]
    # a tensor-parallel server counts on each of its GPUs; the other GPUs stay within bounds
    found = only(analyze(edited(resources("multigpu"), "vllm-llama-3-1-8b", CONTAINER, _fraction("0.99"))), "gpu-fractions-fit")
    assert [m.split(":")[0] for m in found] == ["GPU 0", "GPU 1"]
    found = only(analyze(edited(resources("cluster"), "vllm-qwen3-32b-deployment", DEPLOYMENT, _fraction("0.99"))), "gpu-fractions-fit")
    assert "vllm-qwen3-32b-deployment" in found[0]


def test_gpu_margin_comes_from_the_policy_config() -> None:
    total = sum(
        float(r.props["command"][r.props["command"].index("--gpu-memory-utilization") + 1])
        for r in resources("dev")
        if "vllm serve" in " ".join(r.props.get("entrypoints", []))
    )
    assert analyze(resources("dev"), {"gpu-fractions-fit": {"margin": round(1 - total - 0.005, 3)}}) == []
    assert reported(analyze(resources("dev"), {"gpu-fractions-fit": {"margin": round(1 - total + 0.005, 3)}}), "gpu-fractions-fit")


def _labels(r: Declared) -> dict[str, str]:
    return {str(x["label"]): str(x["value"]) for x in r.props.get("labels") or []}


def _without_share(p: dict[str, Any]) -> None:
    p["labels"] = [x for x in p["labels"] if x["label"] != net.GPU_SHARE_LABEL]


def test_a_swap_group_counts_on_its_gpu_with_what_the_plan_holds_for_it() -> None:
    """Its container runs the swapper, no vLLM command line: the policy reads the group's share from its label."""
    swap = resources("swap")
    group = next(r for r in swap if r.type == CONTAINER and net.GPU_SHARE_LABEL in _labels(r))
    share = net.parse_gpu_shares(_labels(group)[net.GPU_SHARE_LABEL])
    assert list(share) == ["0"] and 0.9 < share["0"] <= 1 - SAFETY_FRACTION
    # another program's vLLM server on the same GPU: with the group's share the GPU is over
    neighbour = next(r for r in resources("dev") if r.name == "vllm-tinyllama" and r.type == CONTAINER)
    found = only(analyze([*swap, neighbour]), "gpu-fractions-fit")
    assert len(found) == 1 and found[0].startswith("GPU 0:") and f"{group.name} {share['0']}" in found[0] and "vllm-tinyllama" in found[0]
    # without the label the group's memory was invisible to the policy
    assert analyze([*edited(swap, group.name, CONTAINER, _without_share), neighbour]) == []


def test_ollama_on_a_shared_gpu_counts_with_its_reservation() -> None:
    declared_ = with_config("dev", ollama={"gpus": [0], "models": [{"name": "l", "model": "llama3.2"}]})
    ollama = next(r for r in declared_ if r.name == "vllm-ollama" and r.type == CONTAINER)
    share = net.parse_gpu_shares(_labels(ollama)[net.GPU_SHARE_LABEL])["0"]
    assert share > 0 and analyze(declared_) == []  # the plan made room for it
    # a server's fraction raised into the room the plan holds for Ollama: within bounds alone, over with Ollama
    fractions = {
        r.name: float(r.props["command"][r.props["command"].index("--gpu-memory-utilization") + 1])
        for r in declared_
        if r.type == CONTAINER and "--gpu-memory-utilization" in (r.props.get("command") or [])
    }
    raised = f"{fractions['vllm-tinyllama'] + (1 - SAFETY_FRACTION - sum(fractions.values())) - share / 2:.3f}"
    grown = edited(declared_, "vllm-tinyllama", CONTAINER, _fraction(raised))
    found = only(analyze(grown), "gpu-fractions-fit")
    assert len(found) == 1 and f"vllm-ollama {share}" in found[0] and f"vllm-tinyllama {float(raised)}" in found[0]
    assert analyze(edited(grown, "vllm-ollama", CONTAINER, _without_share)) == []
