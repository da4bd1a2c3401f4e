"""The real __main__.py under Pulumi's mock engine with each committed docker stack."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.platforms.docker import go_duration
from stacks.config import load_stack, parse, read_stack_file
from stacks.plan import plan
from stacks.render.dockerfile import TEMPLATE
from tests.conftest import ROOT
from tests.mock_engine import FAKE_SECRETS, LAST, SECRET_SIG, SIG_KEY, Mocks, plaintext_leaks, run_program, stack_config

CONTAINER = "docker:index/container:Container"
GPU_STACKS = ["dev", "multigpu"]
DOCKER_STACKS = [*GPU_STACKS, "mac"]
SNAPSHOTS = ROOT / "tests" / "snapshots"


@functools.cache
def declared(name: str) -> Mocks:
    """One mock run per stack with the default fake secrets; tests only read what it recorded."""
    return run_program(name)


@pytest.fixture(scope="module", params=GPU_STACKS)
def stack(request: pytest.FixtureRequest) -> tuple[str, Mocks]:
    return request.param, declared(request.param)


def _containers(m: Mocks) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in m.of_type(CONTAINER)}


def _env(inputs: dict[str, Any]) -> list[str]:
    envs = inputs.get("envs") or []
    if isinstance(envs, dict):  # secret-wrapped list
        envs = envs["value"]
    return list(envs)


def test_one_container_per_model_with_devices_args_health_and_no_port(stack: tuple[str, Mocks]) -> None:
    name, m = stack
    p = plan(load_stack(name))
    containers = _containers(m)
    for mp in p.models:
        c = containers[f"vllm-{mp.name}"]
        assert c["gpus"] == "device=" + ",".join(map(str, mp.gpus))
        assert c["entrypoints"] == ["vllm", "serve"] and c["command"] == mp.args
        assert "ports" not in c, "vLLM ports are never published"
        hc = c["healthcheck"]
        # Go's duration format, the one the docker provider reads back (1800 s is 30m0s): no change on every preview
        assert "/health" in hc["tests"][-1] and hc["startPeriod"] == GO_DURATIONS[mp.startup_seconds]
        # Docker Engine < 25 (API 1.44) refuses to create a container whose health check has a start interval
        assert "startInterval" not in hc
        assert c["wait"] is True and c["waitTimeout"] >= mp.startup_seconds
        assert c["restart"] == "unless-stopped" and c["logOpts"]["max-size"] == "50m"
        assert c["networksAdvanced"][0]["aliases"] == [mp.service]
        assert c["ipcMode"] == "host"  # NCCL / torch workers share /dev/shm
        env = _env(c)
        assert any(e.startswith("VLLM_API_KEY=") for e in env) and any(e.startswith("HF_TOKEN=") for e in env)
        assert not any("--api-key" in a for a in c["command"])
    published = sorted(c["ports"][0]["external"] for c in containers.values() if "ports" in c)
    cfg = load_stack(name)
    assert published == sorted([cfg.gateway.port, cfg.webui.port, cfg.monitoring.dcgm_port, cfg.monitoring.prometheus_port, cfg.monitoring.grafana_port])


def test_tensor_parallel_model_gets_all_its_devices() -> None:
    c = _containers(declared("multigpu"))
    assert c["vllm-llama-3-1-8b"]["gpus"] == "device=0,1"
    assert "--tensor-parallel-size" in c["vllm-llama-3-1-8b"]["command"]
    assert c["vllm-qwen2-5-7b"]["gpus"] == "device=2" and c["vllm-mistral-7b"]["gpus"] == "device=3"


def test_models_sharing_a_gpu_start_one_after_another() -> None:
    """dev: three servers share GPU 0, each container depends on the previous one (which waits until healthy)."""
    m = declared("dev")
    servers = {"vllm-tinyllama", "vllm-qwen2-5-3b", "vllm-yi-6b"}
    deps = {name: [d for d in m.options[(CONTAINER, name)]["depends_on"] if d in servers] for name in servers}
    assert deps == {"vllm-tinyllama": [], "vllm-qwen2-5-3b": ["vllm-tinyllama"], "vllm-yi-6b": ["vllm-qwen2-5-3b"]}
    assert servers <= set(m.options[(CONTAINER, "vllm-gateway")]["depends_on"])
    multi = declared("multigpu")
    multi_servers = {f"vllm-{n}" for n in ("llama-3-1-8b", "qwen2-5-7b", "mistral-7b")}
    assert all(not set(multi.options[(CONTAINER, n)]["depends_on"]) & multi_servers for n in multi_servers)


def test_gateway_and_webui_wiring() -> None:
    m = declared("dev")
    c = _containers(m)
    gw = c["vllm-gateway"]
    assert gw["ports"] == [{"internal": 8080, "external": 8000, "ip": "0.0.0.0"}]
    uploads = gw["uploads"]
    assert isinstance(uploads, dict) and "value" in uploads, "uploads carrying the API keys must be a secret"
    files = {u["file"]: u["content"] for u in uploads["value"]}
    assert {"/etc/nginx/nginx.conf", "/etc/nginx/njs/router.js", "/etc/nginx/secrets/keys.conf", "/etc/nginx/upstream-ids.txt"} <= set(files)
    keys = files["/etc/nginx/secrets/keys.conf"]
    assert '"Bearer sk-fake-user-key-1" "key-1";' in keys and '"open-webui" "Bearer ' in keys
    assert "9113" in files["/etc/nginx/nginx.conf"]  # the metrics server listens, unpublished (ports above)
    assert "sk-fake" not in files["/etc/nginx/nginx.conf"]
    assert "vllm-tinyllama-id" in files["/etc/nginx/upstream-ids.txt"]
    ui = c["vllm-webui"]
    env = _env(ui)
    assert "OPENAI_API_BASE_URLS=http://gateway:8080/v1" in env
    assert "ENABLE_PERSISTENT_CONFIG=False" in env and "ENABLE_OLLAMA_API=False" in env and "ENABLE_SIGNUP=False" in env
    assert "WEBUI_SECRET_KEY=generated-vllm-webui-secret-key" in env
    assert "OPENAI_API_KEYS=generated-vllm-webui-gateway-key" in env
    assert {"volumeName": "vllm-stack-dev-webui-data", "containerPath": "/app/backend/data"} in ui["volumes"]
    dcgm = c["vllm-dcgm"]
    assert dcgm["gpus"] == "all" and dcgm["capabilities"] == {"adds": ["SYS_ADMIN"]} and "privileged" not in dcgm
    prom = c["vllm-prometheus"]
    conf = next(u["content"] for u in prom["uploads"] if u["file"] == "/etc/prometheus/prometheus.yml")
    assert "vllm-yi-6b:8000" in conf and "dcgm-exporter:9400" in conf


def test_image_build_pins_base_and_timezone() -> None:
    m = declared("dev")
    img = m.of_type("docker:index/image:Image")[0].inputs
    assert img["build"]["args"] == {"BASE_IMAGE": "vllm/vllm-openai:v0.26.0", "TZ": "Asia/Seoul"}
    assert img["skipPush"] is True
    # the committed template is built with the stack's values as build arguments: nothing is written at preview or deploy
    dockerfile = Path(img["build"]["dockerfile"])
    assert dockerfile == TEMPLATE and Path(img["build"]["context"]) == TEMPLATE.parent
    assert "ARG TZ" in dockerfile.read_text() and "ENV TZ=${TZ}" in dockerfile.read_text()
    assert sorted(p.name for p in TEMPLATE.parent.iterdir()) == ["Dockerfile"], "the build context holds the Dockerfile only"


def test_data_volumes_retained_unless_opted_out() -> None:
    m = declared("dev")
    assert {r.inputs["name"] for r in m.of_type("docker:index/volume:Volume")} == {
        f"vllm-stack-dev-{v}" for v in ("model-cache", "vllm-cache", "webui-data", "prometheus-data")
    }
    for r in m.of_type("docker:index/volume:Volume"):
        assert m.options[(r.type, r.name)]["retain_on_delete"] is True, r.name
    cfg, keys = stack_config("dev")
    cfg["vllm-stack:retainDataOnDestroy"] = "false"
    opted_out = run_program("dev", secrets={k: FAKE_SECRETS[k] for k in keys}, config=cfg)
    assert not any(opted_out.options[(r.type, r.name)]["retain_on_delete"] for r in opted_out.of_type("docker:index/volume:Volume"))


@pytest.mark.parametrize("name", DOCKER_STACKS)
def test_no_plaintext_secret_in_any_input(name: str) -> None:
    m = declared(name)
    secrets = [v for s in FAKE_SECRETS.values() for v in s.split(",")]
    secrets += [f"generated-vllm-{k}" for k in ("webui-secret-key", "webui-gateway-key", "grafana-admin-password")]
    for r in m.resources:
        assert plaintext_leaks(r.inputs, secrets) == [], f"{r.type} {r.name} leaks a secret"


def test_bad_config_fails_before_any_resource() -> None:
    cfg, keys = stack_config("dev")
    cfg["vllm-stack:models"] = json.dumps([{"name": "Bad Name", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpuMemoryUtilization": 3}])
    with pytest.raises(pulumi.RunError) as exc:
        run_program("dev", secrets={k: FAKE_SECRETS[k] for k in keys}, config=cfg)
    assert "vllm-stack:models[0].gpuMemoryUtilization" in str(exc.value)
    assert LAST[0].resources == [], "nothing may be declared for a bad config"


def test_plaintext_secret_in_config_is_rejected() -> None:
    cfg, _ = stack_config("dev", secrets={})
    cfg["vllm-stack:hfToken"] = "hf_plain"
    with pytest.raises(pulumi.RunError) as exc:
        run_program("dev", secrets={}, config=cfg)
    assert "vllm-stack:hfToken" in str(exc.value) and "hf_plain" not in str(exc.value)


def _graph(m: Mocks) -> list[dict[str, Any]]:
    keep = ("name", "image", "gpus", "command", "entrypoints", "ipcMode", "shmSize", "restart", "wait", "waitTimeout", "ports", "capabilities", "buildArgs")
    out = []
    for r in m.resources:
        entry: dict[str, Any] = {"type": r.type, "name": r.name}
        for k in keep:
            if k in r.inputs:
                entry[k] = r.inputs[k]
        if "build" in r.inputs:
            entry["buildArgs"] = r.inputs["build"].get("args")
        if "healthcheck" in r.inputs:
            entry["startPeriod"] = r.inputs["healthcheck"]["startPeriod"]
        if "volumes" in r.inputs:
            entry["volumes"] = r.inputs["volumes"]
        out.append(entry)
    return sorted(out, key=lambda e: (e["type"], e["name"]))


@pytest.mark.parametrize("name", DOCKER_STACKS)
def test_resource_graph_matches_snapshot(name: str) -> None:
    """Any change to what a stack deploys shows up as a diff of tests/snapshots/<stack>.json.

    Regenerate with UPDATE_SNAPSHOTS=1 and review the diff.
    """
    graph = _graph(declared(name))
    path = SNAPSHOTS / f"{name}.json"
    text = json.dumps(graph, indent=1, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), "run UPDATE_SNAPSHOTS=1 pytest tests/test_program_docker.py"
    assert json.loads(path.read_text()) == json.loads(text)


@pytest.mark.parametrize("name", DOCKER_STACKS)
def test_docker_stack_never_imports_pulumi_kubernetes(name: str) -> None:
    code = (
        "import sys, runpy; sys.path.insert(0, '.');"
        f"from tests.mock_engine import run_program; run_program({name!r});"
        "assert 'pulumi_kubernetes' not in sys.modules, 'pulumi_kubernetes imported';"
        "print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_non_default_ports_everywhere_on_docker() -> None:
    """Every published port moved: each container still listens on its own port, peers use those, the host the new ones."""
    cfg, keys = stack_config("dev")
    ports = {"gateway": 8100, "webui": 3100, "dcgm": 9500, "prometheus": 9191, "grafana": 3300}
    cfg["vllm-stack:gateway"] = json.dumps({"port": ports["gateway"]})
    cfg["vllm-stack:webui"] = json.dumps({"port": ports["webui"]})
    cfg["vllm-stack:monitoring"] = json.dumps({"dcgmPort": ports["dcgm"], "prometheusPort": ports["prometheus"], "grafanaPort": ports["grafana"]})
    c = _containers(run_program("dev", secrets={k: FAKE_SECRETS[k] for k in keys}, config=cfg))
    published = {name: (x["ports"][0]["internal"], x["ports"][0]["external"]) for name, x in c.items() if "ports" in x}
    assert published == {
        "vllm-gateway": (8080, ports["gateway"]),
        "vllm-webui": (8080, ports["webui"]),
        "vllm-dcgm": (9400, ports["dcgm"]),
        "vllm-prometheus": (9090, ports["prometheus"]),
        "vllm-grafana": (3000, ports["grafana"]),
    }
    assert "DCGM_EXPORTER_LISTEN=:9400" in _env(c["vllm-dcgm"])
    conf = next(u["content"] for u in c["vllm-prometheus"]["uploads"] if u["file"] == "/etc/prometheus/prometheus.yml")
    # peers reach the exporter on the port it listens on, not the host's
    assert "dcgm-exporter:9400" in conf and "9500" not in conf
    assert "OPENAI_API_BASE_URLS=http://gateway:8080/v1" in _env(c["vllm-webui"])
    raw = read_stack_file(ROOT / "Pulumi.dev.yaml") | {
        k.split(":")[1]: json.loads(cfg[k]) for k in ("vllm-stack:gateway", "vllm-stack:webui", "vllm-stack:monitoring")
    }
    urls = plan(parse(raw)).urls
    # metrics ports bind to monitoring.bindAddress (127.0.0.1 by default), the rest to docker.bindAddress
    assert (urls.gateway, urls.webui, urls.metrics) == ("http://localhost:8100/v1", "http://localhost:3100", "http://127.0.0.1:9191")
    assert urls.grafana == "http://127.0.0.1:3300"


def _uploads(inputs: dict[str, Any]) -> dict[str, Any]:
    return {u["file"]: u["content"] for u in inputs.get("uploads") or []}


def test_monitoring_containers_on_localhost_with_rules_counters_and_kept_data(stack: tuple[str, Mocks]) -> None:
    from stacks.render.monitoring import alerts, dashboards
    from stacks.render.monitoring.metrics import COUNTERS_FILE

    name, m = stack
    p = plan(load_stack(name))
    c = _containers(m)
    for service in ("vllm-prometheus", "vllm-grafana", "vllm-dcgm"):
        assert [port["ip"] for port in c[service]["ports"]] == ["127.0.0.1"], "metrics stay on the host by default"
    assert c["vllm-gateway"]["ports"][0]["ip"] == "0.0.0.0", "docker.bindAddress still applies to the gateway"
    prom = _uploads(c["vllm-prometheus"])
    assert prom["/etc/prometheus/alerts.yml"] == alerts.render(p) and "rule_files:\n- alerts.yml" in prom["/etc/prometheus/prometheus.yml"]
    assert [v["containerPath"] for v in c["vllm-prometheus"]["volumes"]] == ["/prometheus"]
    assert m.options[("docker:index/volume:Volume", "vllm-prometheus-data")]["retain_on_delete"] is True
    dcgm = c["vllm-dcgm"]
    assert _uploads(dcgm) == {"/etc/dcgm-exporter/vllm-stack-counters.csv": COUNTERS_FILE.read_text()}
    assert "DCGM_EXPORTER_COLLECTORS=/etc/dcgm-exporter/vllm-stack-counters.csv" in _env(dcgm)
    graf = c["vllm-grafana"]
    files = _uploads(graf)
    assert files["/etc/grafana/provisioning/dashboards/vllm-models.json"] == dashboards.render(p)["vllm-models.json"]
    assert {"/etc/grafana/provisioning/datasources/vllm-stack.yml", "/etc/grafana/provisioning/dashboards/vllm-stack.yml"} <= set(files)
    assert "volumes" not in graf, "Grafana keeps no state: every start provisions it afresh"
    assert "vllm-prometheus" in m.options[(CONTAINER, "vllm-grafana")]["depends_on"], "Grafana starts after its data source"


def test_grafana_admin_password_is_a_generated_secret_end_to_end() -> None:
    m = declared("dev")
    [password] = [r for r in m.of_type("random:index/randomPassword:RandomPassword") if r.name == "vllm-grafana-admin-password"]
    assert password.inputs["special"] is False
    envs = m.named("vllm-grafana").inputs["envs"]
    assert envs[SIG_KEY] == SECRET_SIG, "the whole env list is a secret once one entry is"
    assert "GF_SECURITY_ADMIN_PASSWORD=generated-vllm-grafana-admin-password" in envs["value"]


@pytest.mark.parametrize("name", DOCKER_STACKS)
def test_every_image_the_program_declares_is_pinned(name: str) -> None:
    from stacks.config.rules import image_pin_problem

    m = declared(name)
    refs = [r.inputs["name"] for r in m.of_type("docker:index/remoteImage:RemoteImage")]
    refs += [r.inputs["build"]["args"]["BASE_IMAGE"] for r in m.of_type("docker:index/image:Image")]
    assert len(refs) >= (4 if name == "mac" else 5)  # mac: no vLLM image, no DCGM exporter
    assert [r for r in refs if image_pin_problem(r)] == []


GO_DURATIONS = {60: "1m0s", 90: "1m30s", 600: "10m0s", 1800: "30m0s", 3600: "1h0m0s", 3725: "1h2m5s", 7200: "2h0m0s"}
"""Go's time.Duration.String() of these many seconds (the docker provider prints a health check's periods so)."""


def test_go_duration_prints_what_go_prints() -> None:
    assert [go_duration(s) for s in (0, 5, 10, 59)] == ["0s", "5s", "10s", "59s"]
    assert {s: go_duration(s) for s in GO_DURATIONS} == GO_DURATIONS


def test_every_container_is_deleted_before_its_replacement_is_created(stack: tuple[str, Mocks]) -> None:
    """Container names and host ports are fixed: created first, a replacement fails with docker's name conflict
    (pulumi up of a changed maxModelLen did, tests/test_engine_docker.py)."""
    _, m = stack
    containers = m.of_type("docker:index/container:Container")
    assert containers
    for c in containers:
        assert m.options[(c.type, c.name)]["delete_before_replace"] is True, c.name
