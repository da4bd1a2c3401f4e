"""Models bigger than a node: the multinode stack under Pulumi's mock engine (a LeaderWorkerSet per such model, its
Service, budget and network policy), every object checked strictly: the LeaderWorkerSet against the CRD schema of the
pinned LeaderWorkerSet release (tests/data, from the Go module sigs.k8s.io/lws), the rest and both pod templates against
Kubernetes' own schemas (kubernetes-validate)."""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from policy.workloads import KUBE_LEADER_WORKER_SET
from scripts import lws_crd
from stacks.cli import main as cli_main
from stacks.config import load_stack
from stacks.plan import plan
from stacks.plan import topology as net
from stacks.render import kubernetes as kube_manifests
from tests.conftest import ROOT
from tests.mock_engine import FAKE_SECRETS, Mocks, run_program, stack_config
from tests.policy_harness import analyze, declared, edited
from tests.test_program_kubernetes import K8S_VERSIONS, by_kind, objects, resource_of

STACK = "multinode"
SNAPSHOT = ROOT / "tests" / "snapshots" / f"{STACK}.json"
OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
"""Checked against the prometheus-operator's types in test_monitoring_types.py."""
MODEL = "vllm-qwen3-235b"
GROUP = "vllm-qwen3-235b-group"


@functools.cache
def program() -> Mocks:
    return run_program(STACK)


def with_config(**structured: Any) -> Mocks:
    cfg, keys = stack_config(STACK)
    for key, value in structured.items():
        cfg[f"vllm-stack:{key}"] = json.dumps(value)
    return run_program(STACK, secrets={k: FAKE_SECRETS[k] for k in keys}, config=cfg)


def stack_value(key: str) -> Any:
    return copy.deepcopy(yaml.safe_load((ROOT / f"Pulumi.{STACK}.yaml").read_text())["config"][f"vllm-stack:{key}"])


def lws(m: Mocks | None = None) -> dict[str, Any]:
    return by_kind(m or program(), "LeaderWorkerSet")[GROUP]


def templates(o: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    t = o["spec"]["leaderWorkerTemplate"]
    return t["leaderTemplate"], t["workerTemplate"]


def only_container(template: dict[str, Any]) -> dict[str, Any]:
    [c] = template["spec"]["containers"]
    return c


# --- the CRD schema, strictly -------------------------------------------------------------------------------------------


def strict(node: Any) -> Any:
    """A CRD's structural schema as JSON Schema that rejects what the API server would prune or refuse: every object
    with declared properties is closed (kubectl apply --validate=strict reports unknown fields), int-or-string is either."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = strict(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [strict(sub) for sub in value]
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(lws_crd.SCHEMA_FILE.read_text())
    return doc


@functools.cache
def validator() -> jsonschema.protocols.Validator:
    schema = strict(crd()["schema"])
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def crd_errors(o: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(o)]


def test_the_crd_schema_is_the_pinned_releases() -> None:
    doc = crd()
    assert (doc["group"], doc["kind"], doc["served"]) == ("leaderworkerset.x-k8s.io", "LeaderWorkerSet", True)
    assert doc["source"].startswith(f"sigs.k8s.io/lws@{lws_crd.VERSION} ") and len(doc["sha256"]) == 64
    assert f"{doc['group']}/v1" == kube_manifests.LWS_API


def test_the_committed_crd_schema_matches_the_go_module() -> None:
    """Derived again from the module in the local Go module cache (GOPROXY=off: nothing is downloaded); `python
    scripts/lws_crd.py` fetches the module where it is not cached yet."""
    if not shutil.which("go"):
        pytest.skip("go not installed")
    try:
        directory = lws_crd.module_dir(offline=True)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"sigs.k8s.io/lws@{lws_crd.VERSION} not in the local module cache: {err}")
    assert lws_crd.SCHEMA_FILE.read_text() == lws_crd.text(lws_crd.derive((directory / lws_crd.CRD).read_text()))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_strictly(version: str) -> None:
    checked = set()
    for o in objects(program()):
        if o["kind"] in OPERATOR_KINDS:
            continue
        if o["kind"] == "LeaderWorkerSet":
            assert crd_errors(o) == []
            # the pod templates against Kubernetes' own PodTemplate schema, as the StatefulSets the controller makes of them
            for template in templates(o):
                pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": GROUP, "namespace": "llm-xl"}, "template": template}
                kubernetes_validate.validate(pod_template, version, strict=True)
        else:
            kubernetes_validate.validate(o, version, strict=True)
        checked.add(o["kind"])
    assert {"LeaderWorkerSet", "Service", "PodDisruptionBudget", "NetworkPolicy", "Deployment"} <= checked


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda o: o["spec"].update(startupPolicies="LeaderCreated"), "spec"),
        (lambda o: o["spec"]["leaderWorkerTemplate"].update(restartPolicy="RecreateGroup"), "spec.leaderWorkerTemplate.restartPolicy"),
        (lambda o: o["spec"]["leaderWorkerTemplate"].update(size="2"), "spec.leaderWorkerTemplate.size"),
        (lambda o: o["spec"]["leaderWorkerTemplate"].pop("workerTemplate"), "spec.leaderWorkerTemplate"),
        (lambda o: only_container(templates(o)[1]).update(volumeMount=[]), "spec.leaderWorkerTemplate.workerTemplate.spec.containers.0"),
        (lambda o: o["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"].update(maxSurge=0.5), "spec.rolloutStrategy.rollingUpdateConfiguration.maxSurge"),
    ],
    ids=["misspelt", "enum", "type", "required", "pod-template-field", "int-or-string"],
)
def test_the_crd_check_is_strict(edit: Any, where: str) -> None:
    """Misspelt, mistyped, missing and out-of-enum fields all fail (so the test above can fail)."""
    broken = copy.deepcopy(lws())
    edit(broken)
    errors = crd_errors(broken)
    assert errors and any(e.split(":")[0] == where for e in errors), errors


# --- what the group runs ------------------------------------------------------------------------------------------------


def test_one_leader_worker_set_groups_the_nodes_of_the_model() -> None:
    o = lws()
    assert o["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert o["metadata"]["annotations"] == {"pulumi.com/waitFor": "condition=Available"}
    spec = o["spec"]
    assert (spec["replicas"], spec["startupPolicy"]) == (1, "LeaderCreated")
    assert spec["leaderWorkerTemplate"]["size"] == 2
    assert spec["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert spec["rolloutStrategy"]["rollingUpdateConfiguration"] == {"maxUnavailable": 1, "maxSurge": 0}
    assert by_kind(program(), "Deployment").keys() == {"gateway", "open-webui"}, "the model runs no Deployment"
    p = plan(load_stack(STACK)).model("qwen3-235b")
    assert (p.nodes, p.gpus_per_node, p.gpu_count, p.tensor_parallel, p.pipeline_parallel) == (2, 8, 16, 8, 2)


def test_leader_serves_and_workers_join_it() -> None:
    leader, worker = (only_container(t) for t in templates(lws()))
    args = leader["args"]
    flag = lambda name: args[args.index(name) + 1]  # noqa: E731
    assert (flag("--tensor-parallel-size"), flag("--pipeline-parallel-size"), flag("--nnodes")) == ("8", "2", "2")
    assert flag("--distributed-executor-backend") == "mp"
    # Kubernetes expands $(VAR) from the container's environment, which the LeaderWorkerSet controller fills
    assert (flag("--node-rank"), flag("--master-addr"), flag("--master-port")) == ("$(LWS_WORKER_INDEX)", "$(LWS_LEADER_ADDRESS)", str(net.VLLM_MASTER_PORT))
    assert worker["args"] == [*args, "--headless"] and "--headless" not in args
    assert leader["command"] == worker["command"] == ["vllm", "serve"]
    assert leader["image"] == worker["image"] == "vllm/vllm-openai:v0.26.0"
    assert leader["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}] and "ports" not in worker
    startup = leader["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] == 90 * 60
    assert leader["readinessProbe"]["httpGet"]["path"] == "/health" and leader["livenessProbe"]["httpGet"]["path"] == "/health"
    assert not {"startupProbe", "readinessProbe", "livenessProbe"} & worker.keys(), "a headless worker answers nothing"
    for c in (leader, worker):
        env = {e["name"]: e for e in c["env"]}
        assert env["VLLM_HOST_IP"] == {"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
        assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "vllm-api-key", "key": "key"}


def test_every_pod_gets_its_node_gpus_cache_and_shared_memory() -> None:
    for template in templates(lws()):
        pod, c = template["spec"], only_container(template)
        assert c["resources"]["limits"] == {"nvidia.com/gpu": "8"}  # a quantity string, as the kubernetes provider writes it
        assert c["resources"]["requests"] == {"cpu": "2", "memory": "16Gi"}
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L40S"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
        assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "model-cache"}
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
        assert template["metadata"]["labels"]["app.kubernetes.io/name"] == MODEL
    assert by_kind(program(), "PersistentVolumeClaim")["model-cache"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_service_reaches_the_leader_and_the_gateway_routes_to_it() -> None:
    m = program()
    service = by_kind(m, "Service")[MODEL]
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": MODEL,
        "app.kubernetes.io/part-of": "vllm-stack",
        "leaderworkerset.sigs.k8s.io/worker-index": "0",
    }
    leader, _ = templates(lws())
    assert {k: v for k, v in service["spec"]["selector"].items() if not k.startswith("leaderworkerset.")}.items() <= leader["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    # the controller names a headless Service after the set: the model's own Service must not take that name
    assert GROUP not in by_kind(m, "Service")
    conf = by_kind(m, "ConfigMap")["gateway-files"]["data"]["nginx.conf"]
    assert f"server {MODEL}:8000" in conf
    gateway = m.options[resource_of(m, "Deployment", "gateway")]["depends_on"]
    assert f"{MODEL}-service" in gateway


def test_leader_metrics_are_scraped_through_the_service() -> None:
    m = program()
    [monitor] = [sm for sm in by_kind(m, "ServiceMonitor").values() if sm["metadata"]["name"] == MODEL]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= by_kind(m, "Service")[MODEL]["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # without the operator, the leader's pods carry the scrape annotations; a headless worker has no metrics to give
    no_operator = with_config(monitoring={"dcgm": True})
    leader, worker = templates(lws(no_operator))
    assert leader["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "8000", "prometheus.io/path": "/metrics"}
    assert "annotations" not in worker["metadata"]


def test_disruption_budget_fits_the_group() -> None:
    pdb = by_kind(program(), "PodDisruptionBudget")[MODEL]
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": MODEL, "app.kubernetes.io/part-of": "vllm-stack"}},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    for template in templates(lws()):
        assert pdb["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()


def test_only_the_group_reaches_its_distributed_ports() -> None:
    policy = by_kind(program(), "NetworkPolicy")[GROUP]
    own = {"matchLabels": {"app.kubernetes.io/name": MODEL, "app.kubernetes.io/part-of": "vllm-stack"}}
    assert policy["spec"] == {
        "podSelector": own,
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": own}]}, {"ports": [{"port": "http", "protocol": "TCP"}]}],
    }


def test_pulumi_waits_for_the_group_within_the_startup_budget() -> None:
    m = program()
    typ, name = resource_of(m, "LeaderWorkerSet", GROUP)
    assert typ == KUBE_LEADER_WORKER_SET
    options = m.options[(typ, name)]
    assert options["create_timeout"] == f"{90 + 10}m"
    assert f"{MODEL}-networkpolicy" in options["depends_on"], "the pods start behind their network policy"
    assert m.options[resource_of(m, "Service", MODEL)]["create_timeout"] == "100m"


def test_policy_pack_checks_both_pod_templates() -> None:
    resources = declared(program())
    assert analyze(resources) == []

    def unpin(props: dict[str, Any]) -> None:
        props["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["image"] = "vllm/vllm-openai:latest"

    found = analyze(edited(resources, f"{MODEL}-leaderworkerset", KUBE_LEADER_WORKER_SET, unpin))
    assert [v.policy for v in found] == ["images-pinned"]


def test_rendered_yaml_equals_what_the_program_declares(tmp_path: Path) -> None:
    assert cli_main(["render", STACK, "--out", str(tmp_path)]) == 0
    files = sorted((tmp_path / "kubernetes").glob("*.yaml"))
    assert "30-leaderworkerset-vllm-qwen3-235b-group.yaml" in [f.name for f in files]
    rendered = [yaml.safe_load(f.read_text()) for f in files]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(rendered, key=key) == sorted([o for o in objects(program()) if o["kind"] != "Secret"], key=key)


def test_declared_objects_match_snapshot() -> None:
    """A change to the stack's objects shows as a diff of tests/snapshots/multinode.json (UPDATE_SNAPSHOTS=1 rewrites)."""
    from tests.test_program_kubernetes import _snapshot

    text = json.dumps(_snapshot(program()), indent=1, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.exists(), "run UPDATE_SNAPSHOTS=1 pytest tests/test_multinode.py"
    assert json.loads(SNAPSHOT.read_text()) == json.loads(text)
