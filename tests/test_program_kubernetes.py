"""The real __main__.py under Pulumi's mock engine with the cluster stack: every Kubernetes object it declares."""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pulumi
import pytest
import yaml

from stacks.cli import main as cli_main
from stacks.config import load_stack, parse
from stacks.config.rules import image_pin_problem
from stacks.plan import StackPlan, plan
from stacks.render import kubernetes as kube_manifests
from stacks.render.workloads import stack_workloads
from tests.conftest import ROOT
from tests.mock_engine import FAKE_SECRETS, LAST, SIG_KEY, Mocks, plaintext_leaks, run_program, stack_config

K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "PodMonitor", "PrometheusRule"}
"""Kinds kubernetes-validate has no schema for: KEDA's checked field by field below, the operator's in test_monitoring_types.py."""
SNAPSHOT = ROOT / "tests" / "snapshots" / "cluster.json"
GENERATED = ["generated-vllm-vllm-api-key", "generated-vllm-webui-gateway-key", "generated-vllm-webui-secret-key"]


def unwrap(value: Any) -> Any:
    """Drop Pulumi's secret wrappers and turn whole floats back into ints (the mock engine's numbers)."""
    if isinstance(value, dict):
        if SIG_KEY in value:
            return unwrap(value["value"])
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def objects(m: Mocks) -> list[dict[str, Any]]:
    """Declared Kubernetes objects as manifests (provider excluded)."""
    out = []
    for r in m.resources:
        if r.type.startswith("kubernetes:"):
            out.append(unwrap(r.inputs))
    return out


def by_kind(m: Mocks, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects(m) if o["kind"] == kind}


def resource_of(m: Mocks, kind: str, name: str) -> tuple[str, str]:
    for r in m.resources:
        if r.type.startswith("kubernetes:") and r.inputs.get("kind") == kind and unwrap(r.inputs)["metadata"]["name"] == name:
            return r.type, r.name
    raise KeyError((kind, name))


def cluster_config(**structured: Any) -> tuple[dict[str, str], dict[str, str]]:
    """The cluster stack's config with some structured keys replaced (models without the embedding model: Open WebUI
    goes without document search)."""
    cfg, keys = stack_config("cluster")
    if "models" in structured and "webui" not in structured and not any(m["name"] == "embed" for m in structured["models"]):
        structured["webui"] = {k: v for k, v in cluster_value("webui").items() if k != "embeddingModel"}
    for key, value in structured.items():
        cfg[f"vllm-stack:{key}"] = json.dumps(value)
    return cfg, {k: FAKE_SECRETS[k] for k in keys}


def cluster_value(key: str) -> Any:
    return copy.deepcopy(yaml.safe_load((ROOT / "Pulumi.cluster.yaml").read_text())["config"][f"vllm-stack:{key}"])


def load_plan(stack: str) -> StackPlan:
    return plan(load_stack(stack))


@functools.cache
def declared() -> Mocks:
    return run_program("cluster")


def container(o: dict[str, Any]) -> dict[str, Any]:
    [c] = o["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_strictly(version: str) -> None:
    objs = objects(declared())
    assert len(objs) > 20
    checked = set()
    for o in objs:
        if o["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(o, version, strict=True)
        checked.add(o["kind"])
    assert checked == {"Namespace", "Secret", "PersistentVolumeClaim", "ConfigMap", "Deployment", "DaemonSet", "Service", "PodDisruptionBudget", "Ingress"}


def test_validation_catches_a_broken_object() -> None:
    """The validator is strict: a misspelt field fails (so the test above can fail)."""
    deployment = copy.deepcopy(by_kind(declared(), "Deployment")["vllm-qwen3-8b"])
    container(deployment)["startupProbes"] = container(deployment).pop("startupProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_model_deployments_gpu_limits_placement_strategy_and_shm() -> None:
    deployments = by_kind(declared(), "Deployment")
    expected = {"vllm-qwen3-8b": (1, 2), "vllm-llama-3-1-8b": (1, None), "vllm-qwen3-32b": (2, 1)}
    for name, (gpus, replicas) in expected.items():
        d = deployments[name]
        c = container(d)
        pod = d["spec"]["template"]["spec"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == str(gpus), name
        assert c["resources"]["requests"] == {"cpu": "2", "memory": "16Gi"}
        assert d["spec"].get("replicas") == replicas, name
        assert d["spec"]["strategy"] == {"type": "Recreate"}
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L40S"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert pod["enableServiceLinks"] is False
        [shm] = [v for v in pod["volumes"] if v["name"] == "dshm"]
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
        assert c["command"] == ["vllm", "serve"]
        assert "--tensor-parallel-size" not in c["args"] or c["args"][c["args"].index("--tensor-parallel-size") + 1] == str(gpus)


def test_model_probes_cover_the_startup_budget() -> None:
    for name, d in by_kind(declared(), "Deployment").items():
        if not name.startswith("vllm-"):
            continue
        c = container(d)
        startup = c["startupProbe"]
        assert startup["httpGet"] == {"path": "/health", "port": "http"}
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60, name
        assert c["readinessProbe"]["httpGet"]["path"] == "/health"
        assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    cfg, secrets = cluster_config(models=[{**cluster_value("models")[0], "startupMinutes": 90}])
    m = run_program("cluster", secrets=secrets, config=cfg)
    startup = container(by_kind(m, "Deployment")["vllm-qwen3-8b"])["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 90 * 60


def test_model_services_match_gateway_upstreams() -> None:
    services = by_kind(declared(), "Service")
    conf = by_kind(declared(), "ConfigMap")["gateway-files"]["data"]["nginx.conf"]
    for name in ("vllm-qwen3-8b", "vllm-llama-3-1-8b", "vllm-qwen3-32b"):
        s = services[name]
        assert s["spec"]["type"] == "ClusterIP"
        assert s["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
        assert f"server {name}:8000" in conf


def test_keda_scaled_object_for_the_autoscaled_model_only() -> None:
    scaled = by_kind(declared(), "ScaledObject")
    assert list(scaled) == ["vllm-llama-3-1-8b"]
    o = scaled["vllm-llama-3-1-8b"]
    assert o["apiVersion"] == "keda.sh/v1alpha1"
    spec = o["spec"]
    assert spec["scaleTargetRef"] == {"name": "vllm-llama-3-1-8b"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 3)
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == 'sum(vllm:num_requests_waiting{model_name="llama-3-1-8b"})'
    assert trigger["metadata"]["threshold"] == "8"
    assert trigger["metadata"]["serverAddress"].startswith("http://")


def test_keda_scale_to_zero_wakes_on_its_activation_query() -> None:
    """At zero replicas the queue metric has no series (KEDA reads an empty result as 0, never above the activation
    threshold): a model allowed to sleep carries a second trigger that sees demand without a pod."""
    models = cluster_value("models")
    wake = 'sum(rate(nginx_ingress_controller_requests{service="gateway"}[2m]))'
    models[1]["autoscaling"] |= {"minReplicas": 0, "activationQuery": wake, "activationThreshold": 0.5}
    cfg, secrets = cluster_config(models=models)
    spec = by_kind(run_program("cluster", secrets=secrets, config=cfg), "ScaledObject")["vllm-llama-3-1-8b"]["spec"]
    assert spec["minReplicaCount"] == 0
    queue, demand = spec["triggers"]
    assert queue["metadata"]["query"] == 'sum(vllm:num_requests_waiting{model_name="llama-3-1-8b"})'
    assert demand == {
        "type": "prometheus",
        "metadata": {"serverAddress": queue["metadata"]["serverAddress"], "query": wake, "threshold": "8", "activationThreshold": "0.5"},
    }
    # KEDA's trigger metadata is a map of strings
    assert all(isinstance(v, str) for t in spec["triggers"] for v in t["metadata"].values())


def test_data_is_kept_on_destroy_with_its_namespace() -> None:
    m = declared()
    pvcs = by_kind(m, "PersistentVolumeClaim")
    assert pvcs["model-cache"]["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "500Gi"}},
        "storageClassName": "fast-rwx",
    }
    assert pvcs["open-webui-data"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    kept = {(o["kind"], o["metadata"]["name"]) for o in objects(m) if m.options[resource_of(m, o["kind"], o["metadata"]["name"])]["retain_on_delete"]}
    # deleting the namespace would delete the PVCs with it
    assert kept == {("Namespace", "llm"), ("PersistentVolumeClaim", "model-cache"), ("PersistentVolumeClaim", "open-webui-data")}
    cfg, secrets = cluster_config()
    cfg["vllm-stack:retainDataOnDestroy"] = "false"
    opted_out = run_program("cluster", secrets=secrets, config=cfg)
    assert not any(opt["retain_on_delete"] for opt in opted_out.options.values())


def test_read_write_once_cache_is_one_pvc_per_model() -> None:
    kube = cluster_value("kubernetes") | {"modelCacheAccessMode": "ReadWriteOnce"}
    cfg, secrets = cluster_config(kubernetes=kube)
    m = run_program("cluster", secrets=secrets, config=cfg)
    pvcs = by_kind(m, "PersistentVolumeClaim")
    assert {"vllm-qwen3-8b-cache", "vllm-llama-3-1-8b-cache", "vllm-qwen3-32b-cache"} <= set(pvcs)
    assert "model-cache" not in pvcs
    volumes = by_kind(m, "Deployment")["vllm-qwen3-32b"]["spec"]["template"]["spec"]["volumes"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}
    assert claims == {"vllm-qwen3-32b-cache"}


def test_secrets_are_secret_objects_referenced_never_literal() -> None:
    m = declared()
    secrets = {r.name: r.inputs for r in m.resources if r.type == "kubernetes:core/v1:Secret"}
    assert {unwrap(i)["metadata"]["name"] for i in secrets.values()} == {"hf-token", "vllm-api-key", "gateway-keys", "open-webui"}
    for inputs in secrets.values():
        assert inputs["stringData"].get(SIG_KEY), "Secret data must stay a Pulumi secret"
    values = {o["metadata"]["name"]: o["stringData"] for o in by_kind(m, "Secret").values()}
    assert values["hf-token"] == {"token": FAKE_SECRETS["vllm-stack:hfToken"]}
    assert values["vllm-api-key"] == {"key": FAKE_SECRETS["vllm-stack:vllmApiKey"]}
    assert "sk-fake-user-key-2" in values["gateway-keys"]["keys.conf"]
    env = {e["name"]: e for e in container(by_kind(m, "Deployment")["vllm-qwen3-8b"])["env"]}
    assert env["VLLM_API_KEY"] == {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm-api-key", "key": "key"}}}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token", "optional": True}
    webui_env = {e["name"]: e for e in container(by_kind(m, "Deployment")["open-webui"])["env"]}
    assert webui_env["WEBUI_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "open-webui", "key": "secret-key"}
    assert webui_env["OPENAI_API_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "open-webui", "key": "gateway-key"}
    gateway = container(by_kind(m, "Deployment")["gateway"])
    assert {"name": "secret-gateway-keys", "mountPath": "/etc/nginx/secrets/keys.conf", "subPath": "keys.conf", "readOnly": True} in gateway["volumeMounts"]


def test_no_plaintext_secret_anywhere_but_inside_secret_wrappers() -> None:
    m = declared()
    secrets = [v for s in FAKE_SECRETS.values() for v in s.split(",")] + GENERATED
    for r in m.resources:
        assert plaintext_leaks(r.inputs, secrets) == [], f"{r.type} {r.name} leaks a secret"
    for o in objects(m):
        if o["kind"] == "Secret":
            continue
        text = json.dumps(o)
        assert not any(s in text for s in secrets), f"{o['kind']} {o['metadata']['name']} holds a secret value"


def test_without_hf_token_no_hf_secret_is_declared() -> None:
    cfg, secrets = cluster_config()
    del cfg["vllm-stack:hfToken"]
    secrets.pop("vllm-stack:hfToken")
    m = run_program("cluster", secrets=secrets, config=cfg)
    assert "hf-token" not in by_kind(m, "Secret")
    env = {e["name"]: e for e in container(by_kind(m, "Deployment")["vllm-qwen3-8b"])["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_labels_and_selectors() -> None:
    for o in objects(declared()):
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "vllm-stack", o["metadata"]["name"]
        assert labels["app.kubernetes.io/managed-by"] == "pulumi"
        assert "app.kubernetes.io/component" in labels
        if o["kind"] in ("Deployment", "DaemonSet"):
            template = o["spec"]["template"]["metadata"]["labels"]
            assert o["spec"]["selector"]["matchLabels"].items() <= template.items()
            assert template["app.kubernetes.io/name"] == o["metadata"]["name"]
        if o["kind"] in ("Service", "PodDisruptionBudget"):
            sel = o["spec"]["selector"] if o["kind"] == "Service" else o["spec"]["selector"]["matchLabels"]
            assert sel == {"app.kubernetes.io/name": o["metadata"]["name"], "app.kubernetes.io/part-of": "vllm-stack"}


def test_gateway_configmap_deployment_budget_service_and_ingress() -> None:
    m = declared()
    cm = by_kind(m, "ConfigMap")["gateway-files"]
    assert set(cm["data"]) == {"nginx.conf", "router.js"}
    d = by_kind(m, "Deployment")["gateway"]
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["strategy"]["type"] == "RollingUpdate"
    assert d["spec"]["template"]["metadata"]["annotations"]["vllm-stack/config-hash"]
    mounts = {mt["mountPath"]: mt for mt in container(d)["volumeMounts"]}
    assert mounts["/etc/nginx/nginx.conf"]["subPath"] == "nginx.conf"
    assert mounts["/etc/nginx/njs/router.js"]["subPath"] == "router.js"
    assert "nodeSelector" not in d["spec"]["template"]["spec"], "the gateway needs no GPU node"
    pdb = by_kind(m, "PodDisruptionBudget")["gateway"]
    assert pdb["spec"]["maxUnavailable"] == 1
    svc = by_kind(m, "Service")["gateway"]
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    ing = by_kind(m, "Ingress")["gateway"]
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["rules"][0]["host"] == "llm.example.internal"
    assert ing["spec"]["tls"] == [{"hosts": ["llm.example.internal"], "secretName": "llm-tls"}]
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    # the gateway starts after every model's Service answers
    depends = m.options[resource_of(m, "Deployment", "gateway")]["depends_on"]
    assert {"vllm-qwen3-8b-service", "vllm-llama-3-1-8b-service", "vllm-qwen3-32b-service", "vllm-gateway-configmap"} <= set(depends)


def test_service_type_from_config() -> None:
    kube = cluster_value("kubernetes") | {"serviceType": "LoadBalancer"}
    cfg, secrets = cluster_config(kubernetes=kube)
    services = by_kind(run_program("cluster", secrets=secrets, config=cfg), "Service")
    assert services["gateway"]["spec"]["type"] == "LoadBalancer"
    assert services["open-webui"]["spec"]["type"] == "LoadBalancer"
    assert services["vllm-qwen3-8b"]["spec"]["type"] == "ClusterIP"


def test_open_webui_one_replica_with_kept_data() -> None:
    d = by_kind(declared(), "Deployment")["open-webui"]
    assert d["spec"]["replicas"] == 1
    assert d["spec"]["strategy"] == {"type": "Recreate"}
    env = {e["name"]: e.get("value") for e in container(d)["env"]}
    assert env["OPENAI_API_BASE_URLS"] == "http://gateway.llm.svc:80/v1"
    [data] = [v for v in d["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert data["persistentVolumeClaim"]["claimName"] == "open-webui-data"
    assert by_kind(declared(), "Service")["open-webui"]["spec"]["ports"][0]["port"] == 8080


def test_several_webui_replicas_need_redis_and_database() -> None:
    cfg, secrets = cluster_config(webui={"port": 8080, "replicas": 2})
    with pytest.raises(pulumi.RunError) as exc:
        run_program("cluster", secrets=secrets, config=cfg)
    assert "vllm-stack:webui.replicas" in str(exc.value)
    assert LAST[0].resources == []
    shared = {"port": 8080, "replicas": 2, "redisUrl": "redis://redis.llm.svc:6379/0", "databaseUrl": "postgresql://webui@db.llm.svc/webui"}
    cfg, secrets = cluster_config(webui=shared)
    m = run_program("cluster", secrets=secrets, config=cfg)
    d = by_kind(m, "Deployment")["open-webui"]
    assert d["spec"]["replicas"] == 2 and d["spec"]["strategy"]["type"] == "RollingUpdate"
    assert by_kind(m, "PersistentVolumeClaim")["open-webui-data"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_dcgm_daemonset_sys_admin_only_and_skippable() -> None:
    ds = by_kind(declared(), "DaemonSet")["dcgm-exporter"]
    c = container(ds)
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]}}
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L40S"}
    assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}), "the exporter must not take a GPU from the models"
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in c["env"]
    assert by_kind(declared(), "Service")["dcgm-exporter"]["spec"]["ports"][0]["port"] == 9400
    cfg, secrets = cluster_config(monitoring={"dcgm": False})
    m = run_program("cluster", secrets=secrets, config=cfg)
    assert by_kind(m, "DaemonSet") == {} and "dcgm-exporter" not in by_kind(m, "Service")


def test_every_image_is_pinned() -> None:
    for o in objects(declared()):
        if o["kind"] in ("Deployment", "DaemonSet"):
            image = container(o)["image"]
            assert image_pin_problem(image) is None, image


def test_customised_image_is_pushed_and_run_by_digest() -> None:
    image = {"base": "vllm/vllm-openai:v0.26.0", "aptPackages": ["curl"], "registry": "registry.example.internal/ml/vllm"}
    cfg, secrets = cluster_config(image=image)
    m = run_program("cluster", secrets=secrets, config=cfg)
    [built] = m.of_type("docker:index/image:Image")
    assert built.inputs["imageName"].startswith("registry.example.internal/ml/vllm:")
    assert built.inputs["skipPush"] is False
    ref = container(by_kind(m, "Deployment")["vllm-qwen3-8b"])["image"]
    assert ref == f"{built.inputs['imageName']}@sha256:{'0' * 64}"
    # without a registry the cluster could never pull it
    cfg, secrets = cluster_config(image={"base": "vllm/vllm-openai:v0.26.0", "aptPackages": ["curl"]})
    with pytest.raises(pulumi.RunError) as exc:
        run_program("cluster", secrets=secrets, config=cfg)
    assert "vllm-stack:image.registry" in str(exc.value)


def test_uncustomised_image_uses_the_pinned_base_without_a_build() -> None:
    m = declared()
    assert m.of_type("docker:index/image:Image") == []
    assert container(by_kind(m, "Deployment")["vllm-qwen3-8b"])["image"] == "vllm/vllm-openai:v0.26.0"


def test_provider_from_config_and_render_mode_declares_no_secret(tmp_path: Path) -> None:
    [provider] = declared().of_type("pulumi:providers:kubernetes")
    assert "renderYamlToDirectory" not in provider.inputs
    kube = cluster_value("kubernetes") | {"kubeconfig": "~/.kube/lab", "context": "lab-admin", "renderYamlTo": str(tmp_path / "yaml")}
    cfg, secrets = cluster_config(kubernetes=kube)
    m = run_program("cluster", secrets=secrets, config=cfg)
    [provider] = m.of_type("pulumi:providers:kubernetes")
    assert (provider.inputs["kubeconfig"], provider.inputs["context"]) == ("~/.kube/lab", "lab-admin")
    assert provider.inputs["renderYamlToDirectory"] == str(tmp_path / "yaml")
    # the provider would write Secret values to those files in plain text
    assert by_kind(m, "Secret") == {}
    assert by_kind(m, "Deployment"), "everything else is still declared"
    # what the user must create instead (the program warns with this list) is every Secret the pods read
    wanted = {(r.secret, r.key) for r in stack_workloads(load_plan("cluster"), lambda key: key).secret_refs()}
    read: set[tuple[str, str]] = set()
    for o in objects(declared()):
        if o["kind"] in ("Deployment", "DaemonSet"):
            pod = o["spec"]["template"]["spec"]
            read |= {
                (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                for e in container(o).get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            secret_volumes = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
            read |= {(secret_volumes[mt["name"]], mt["subPath"]) for mt in container(o)["volumeMounts"] if mt["name"] in secret_volumes}
    expected = {("hf-token", "token"), ("vllm-api-key", "key"), ("gateway-keys", "keys.conf"), ("open-webui", "secret-key"), ("open-webui", "gateway-key")}
    assert wanted == read == expected


def test_every_kubernetes_resource_uses_the_stack_provider() -> None:
    m = declared()
    for r in m.resources:
        if r.type.startswith("kubernetes:"):
            assert m.providers[(r.type, r.name)].split("::")[-2] == "vllm-k8s", r.name


def test_rendered_yaml_equals_what_the_program_declares(tmp_path: Path) -> None:
    assert cli_main(["render", "cluster", "--out", str(tmp_path)]) == 0
    files = sorted((tmp_path / "kubernetes").glob("*.yaml"))
    rendered = [yaml.safe_load(f.read_text()) for f in files]
    assert [kube_manifests.file_name(o) for o in rendered] == [f.name for f in files]
    declared_objs = [o for o in objects(declared()) if o["kind"] != "Secret"]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(rendered, key=key) == sorted(declared_objs, key=key)
    assert not any(o["kind"] == "Secret" for o in rendered)
    text = "".join(f.read_text() for f in files)
    assert not any(s in text for s in FAKE_SECRETS.values())


def test_bad_kubernetes_config_fails_before_any_resource() -> None:
    cfg, secrets = cluster_config(monitoring={"prometheus": True})
    with pytest.raises(pulumi.RunError) as exc:
        run_program("cluster", secrets=secrets, config=cfg)
    assert "vllm-stack:monitoring.prometheus" in str(exc.value)
    assert LAST[0].resources == []


def _snapshot(m: Mocks) -> list[dict[str, Any]]:
    out = []
    for o in objects(m):
        o = copy.deepcopy(o)
        if o["kind"] == "ConfigMap":  # file contents are covered by the gateway tests
            o["data"] = sorted(o["data"])
        if o["kind"] == "Secret":
            o["stringData"] = sorted(o["stringData"])
        out.append(o)
    return sorted(out, key=lambda o: (o["kind"], o["metadata"]["name"]))


def test_declared_objects_match_snapshot() -> None:
    """A change to the cluster's objects shows as a diff of tests/snapshots/cluster.json (UPDATE_SNAPSHOTS=1 rewrites)."""
    text = json.dumps(_snapshot(declared()), indent=1, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.exists(), "run UPDATE_SNAPSHOTS=1 pytest tests/test_program_kubernetes.py"
    assert json.loads(SNAPSHOT.read_text()) == json.loads(text)


def test_non_default_ports_everywhere_on_kubernetes() -> None:
    """Service ports follow the config, containers keep listening on their own ports, peers use the Service ports."""
    cfg, secrets = cluster_config(gateway={"port": 8100}, webui={"port": 3100}, monitoring={"dcgm": True, "dcgmPort": 9500})
    m = run_program("cluster", secrets=secrets, config=cfg)
    services = by_kind(m, "Service")
    expected = {"gateway": (8100, 8080), "open-webui": (3100, 8080), "dcgm-exporter": (9500, 9400), "vllm-qwen3-8b": (8000, 8000)}
    for name, (service_port, container_port) in expected.items():
        assert services[name]["spec"]["ports"] == [{"name": "http", "port": service_port, "targetPort": "http", "protocol": "TCP"}], name
        controller = {**by_kind(m, "Deployment"), **by_kind(m, "DaemonSet")}[name]
        metrics = [{"name": "metrics", "containerPort": 9113, "protocol": "TCP"}] if name == "gateway" else []
        assert container(controller)["ports"] == [{"name": "http", "containerPort": container_port, "protocol": "TCP"}, *metrics], name
        if name == "gateway":
            assert controller["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9113"
    dcgm = container(by_kind(m, "DaemonSet")["dcgm-exporter"])
    assert {"name": "DCGM_EXPORTER_LISTEN", "value": ":9400"} in dcgm["env"]
    webui_env = {e["name"]: e.get("value") for e in container(by_kind(m, "Deployment")["open-webui"])["env"]}
    assert webui_env["OPENAI_API_BASE_URLS"] == "http://gateway.llm.svc:8100/v1"
    raw = {k.split(":")[1]: json.loads(v) if v[:1] in "[{" else v for k, v in cfg.items() if k.startswith("vllm-stack:") and k not in FAKE_SECRETS}
    p = plan(parse(raw))
    assert [t.target for t in p.scrape_targets if t.job == "dcgm"] == ["dcgm-exporter.llm.svc:9500"]
    assert p.urls.metrics == "http://dcgm-exporter.llm.svc:9500/metrics" and p.urls.webui == "http://open-webui.llm.svc:3100"


def test_operator_objects_select_the_stack_services_and_carry_the_release_label() -> None:
    m = declared()
    services = by_kind(m, "Service")
    monitors = by_kind(m, "ServiceMonitor")
    p = load_plan("cluster")
    assert set(monitors) == {t.service for t in p.scrape_targets} == {*(mp.service for mp in p.models), "dcgm-exporter"}
    for name, sm in monitors.items():
        selected = [s for s in services.values() if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert [s["metadata"]["name"] for s in selected] == [name]
        [endpoint] = sm["spec"]["endpoints"]
        assert endpoint["port"] == services[name]["spec"]["ports"][0]["name"] and endpoint["path"] == "/metrics"
        assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [rule] = by_kind(m, "PrometheusRule").values()
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert {r["alert"] for r in rule["spec"]["groups"][0]["rules"]} >= {"VllmKvCacheNearlyFull", "GpuXidError", "VllmServerRestarted"}
    for kind in ("Deployment", "DaemonSet"):
        for o in by_kind(m, kind).values():
            annotations = o["spec"]["template"]["metadata"].get("annotations", {})
            assert not any(k.startswith("prometheus.io/") for k in annotations), "the operator finds targets; annotations would scrape twice"


def test_dashboards_are_config_maps_for_the_grafana_sidecar() -> None:
    maps = {k: v for k, v in by_kind(declared(), "ConfigMap").items() if k.startswith("grafana-dashboard-")}
    assert set(maps) == {"grafana-dashboard-vllm-models", "grafana-dashboard-vllm-gpus"}
    for cm in maps.values():
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        [(file, text)] = cm["data"].items()
        assert file.endswith(".json") and json.loads(text)["templating"]["list"][0]["type"] == "datasource"


def test_dcgm_exporter_reads_the_stack_counters_file() -> None:
    from stacks.render.monitoring.metrics import COUNTERS_FILE

    m = declared()
    ds = by_kind(m, "DaemonSet")["dcgm-exporter"]
    env = {e["name"]: e.get("value") for e in container(ds)["env"]}
    mount = next(v for v in container(ds)["volumeMounts"] if v["mountPath"] == env["DCGM_EXPORTER_COLLECTORS"])
    assert mount["readOnly"] is True
    assert by_kind(m, "ConfigMap")["dcgm-exporter-files"]["data"][mount["subPath"]] == COUNTERS_FILE.read_text()


def test_every_pod_runs_with_least_privilege_and_vllm_as_its_own_user() -> None:
    """No privilege escalation anywhere, every capability dropped but what a container needs (nginx's master: CHOWN,
    SETGID, SETUID; DCGM: SYS_ADMIN), RuntimeDefault seccomp; vLLM 0.22+ runs as the image's vllm user (UID 2000)."""
    needs = {"gateway": ["CHOWN", "SETGID", "SETUID"], "dcgm-exporter": ["SYS_ADMIN"]}
    for kind in ("Deployment", "DaemonSet"):
        for name, o in by_kind(declared(), kind).items():
            pod = o["spec"]["template"]["spec"]
            c = container(o)
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert c["securityContext"]["allowPrivilegeEscalation"] is False and c["securityContext"]["privileged"] is False, name
            assert c["securityContext"]["capabilities"] == ({"add": needs[name], "drop": ["ALL"]} if name in needs else {"drop": ["ALL"]}), name
            if name.startswith("vllm-"):
                assert (c["securityContext"]["runAsNonRoot"], c["securityContext"]["runAsUser"], c["securityContext"]["runAsGroup"]) == (True, 2000, 0)
                assert pod["securityContext"]["fsGroup"] == 2000
                env = {e["name"]: e.get("value") for e in c["env"]}
                assert env["HF_HOME"] == "/home/vllm/.cache/huggingface" and env["VLLM_CACHE_ROOT"] == "/home/vllm/.cache/vllm"
                assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/home/vllm/.cache/huggingface", "/home/vllm/.cache/vllm"}
    # an image without the vllm user (before 0.22) keeps root, with the same least privilege otherwise
    cfg, secrets = cluster_config(image={"base": "vllm/vllm-openai:v0.21.0"})
    old = container(by_kind(run_program("cluster", secrets=secrets, config=cfg), "Deployment")["vllm-qwen3-8b"])
    assert "runAsUser" not in old["securityContext"] and old["securityContext"]["allowPrivilegeEscalation"] is False


def test_open_webui_offers_chat_models_only_and_embeds_through_the_gateway() -> None:
    env = {e["name"]: e for e in container(by_kind(declared(), "Deployment")["open-webui"])["env"]}
    configs = json.loads(env["OPENAI_API_CONFIGS"]["value"])
    assert configs["0"]["model_ids"] == [r.served_name for r in load_plan("cluster").routes if r.model != "embed"]
    assert env["RAG_EMBEDDING_ENGINE"]["value"] == "openai" and env["RAG_EMBEDDING_MODEL"]["value"] == "embed"
    assert env["RAG_OPENAI_API_BASE_URL"]["value"] == "http://gateway.llm.svc:80/v1"
    assert env["RAG_OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "open-webui", "key": "gateway-key"}
    assert env["WEBUI_AUTH"]["value"] == "True" and env["ENABLE_PERSISTENT_CONFIG"]["value"] == "False"


def test_open_webui_oidc_with_its_client_secret_as_a_secret() -> None:
    webui = cluster_value("webui") | {"oidc": {"providerUrl": "https://sso.example.internal/.well-known/openid-configuration", "clientId": "webui"}}
    cfg, secrets = cluster_config(webui=webui)
    with pytest.raises(pulumi.RunError) as exc:
        run_program("cluster", secrets=secrets, config=cfg)
    assert "vllm-stack:webui.oidc" in str(exc.value) and "webuiOidcClientSecret" in str(exc.value)
    cfg["vllm-stack:webuiOidcClientSecret"] = "oidc-fake-client-secret"
    m = run_program("cluster", secrets={**secrets, "vllm-stack:webuiOidcClientSecret": "oidc-fake-client-secret"}, config=cfg)
    env = {e["name"]: e for e in container(by_kind(m, "Deployment")["open-webui"])["env"]}
    assert env["OPENID_PROVIDER_URL"]["value"].startswith("https://sso.example.internal/")
    assert env["OAUTH_CLIENT_ID"]["value"] == "webui" and env["ENABLE_OAUTH_SIGNUP"]["value"] == "False"
    assert env["OAUTH_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "open-webui", "key": "oidc-client-secret"}
    assert by_kind(m, "Secret")["open-webui"]["stringData"]["oidc-client-secret"] == "oidc-fake-client-secret"
    for r in m.resources:
        assert plaintext_leaks(r.inputs, ["oidc-fake-client-secret"]) == [], r.name
