"""Docker stacks through the real Pulumi engine (`make engine`) and the test's Docker engine (scripts/with-dockerd.sh).

Previews of the committed docker stacks with the real providers; then one stack on stand-in images
(tests/standin_images.py: a fake vLLM, Debian's nginx with njs as the gateway, an Open WebUI stand-in) that
`pulumi up` really starts: GPU requests accepted through the stand-in NVIDIA hook (tests/gpu_hook), servers that
share a GPU started one after the other in plan order, a request through the gateway container reaching the right
model container; config changes whose `pulumi preview --diff` names exactly the resources they change; destroy
that keeps the data volumes, and deletes them with ``retainDataOnDestroy: false``; state without a plain secret.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from stacks.config import parse
from stacks.plan import plan
from stacks.plan import topology as net
from stacks.plan.memory import SAFETY_FRACTION
from stacks.render.workloads import stack_workloads
from tests.conftest import unavailable
from tests.engine_harness import Project, committed_config, engine_bin, steps_by_urn, urn_type
from tests.standin_images import build, docker

CONTAINER = "docker:index/container:Container"
STANDIN = "vllm-stack-test/standin:1"
STANDIN_PROMETHEUS = "vllm-stack-test/standin-prometheus:1"
API_KEY = "sk-engine-test-client-0123456789abcdefghij"
HF_TOKEN = "hf_engineTestToken0123456789abcdefABCDEF"
# one name per test process: under pytest-xdist two workers may each deploy this module's stack on one daemon
STACK = f"engine-{uuid.uuid4().hex[:6]}"
PREFIX = f"vllm-stack-{STACK}"
NETWORK = f"vllm-{STACK}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return engine_bin()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The test Docker engine with the stand-in images; a GPU container must be accepted (the stand-in hook)."""
    try:
        ok = docker("version", timeout=30).returncode == 0
    except FileNotFoundError:
        ok = False
    if not ok:
        unavailable("a running Docker engine (make test starts one)")
    build({STANDIN: None, STANDIN_PROMETHEUS: "standin-idle"}, tmp_path_factory.mktemp("standin"))
    probe = docker("run", "--rm", "--gpus", "device=0", STANDIN, "true", timeout=120)
    if probe.returncode != 0:
        unavailable(f"a Docker engine with tests/gpu_hook on its PATH (scripts/with-dockerd.sh): {probe.stderr.strip()}")
    yield


def standin_config(gateway_port: int, webui_port: int, prometheus_port: int, grafana_port: int, **changes: Any) -> dict[str, Any]:
    """Two models sharing GPU 0, the gateway, Open WebUI, Prometheus and Grafana, every image a stand-in (as a user
    names images already loaded on a host)."""
    config: dict[str, Any] = {
        "vllm-stack:target": "docker",
        "vllm-stack:timezone": "UTC",
        "vllm-stack:image": {"base": STANDIN, "vllmVersion": "0.26.0"},  # a tag of its own: the release is stated
        "vllm-stack:gpus": [{"index": 0, "name": "Test GPU", "memoryGiB": 23.5}],
        "vllm-stack:models": [
            {"name": "tiny", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 2048, "maxNumSeqs": 8},
            {"name": "qwen", "model": "Qwen/Qwen2.5-0.5B-Instruct", "gpus": [0], "maxModelLen": 4096, "maxNumSeqs": 8},
        ],
        # Debian's njs (the stand-in gateway's) has no QuickJS and no shared dictionaries
        "vllm-stack:gateway": {"image": STANDIN, "port": gateway_port, "jsEngine": "njs"},
        "vllm-stack:webui": {"enabled": True, "image": STANDIN, "port": webui_port},
        # Prometheus and Grafana (its admin password is a generated secret) on the stand-in; no DCGM exporter
        "vllm-stack:monitoring": {
            "dcgm": False,
            "prometheus": True,
            "prometheusImage": STANDIN_PROMETHEUS,
            "prometheusPort": prometheus_port,
            "grafana": True,
            "grafanaImage": STANDIN,
            "grafanaPort": grafana_port,
        },
        "vllm-stack:docker": {"bindAddress": "127.0.0.1", "network": NETWORK},
    }
    config.update(changes)
    return config


def _inspect(name: str) -> dict[str, Any]:
    r = docker("inspect", name)
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)[0]
    return doc


def _post(port: int, path: str, body: dict[str, Any], key: str | None = API_KEY) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, {}


def _ids() -> dict[str, str]:
    """Running containers of the test stack: name -> id."""
    out = docker("ps", "--filter", f"name={PREFIX}-", "--format", "{{.Names}} {{.ID}}").stdout.split("\n")
    return dict(line.split() for line in out if line.strip())


@pytest.mark.parametrize("stack", ["dev", "multigpu"])
def test_preview_of_a_committed_docker_stack_with_the_real_providers(stack: str, bin_dir: Path, daemon: None, tmp_path: Path) -> None:
    project = Project.create(tmp_path, bin_dir)
    project.stack(stack, committed_config(stack), {"vllm-stack:apiKeys": API_KEY, "vllm-stack:hfToken": HF_TOKEN})
    ops = steps_by_urn(project.preview_json(stack))
    assert ops and set(ops.values()) == {"create"}, ops
    types = [urn_type(u) for u in ops]
    for t in ("docker:index/network:Network", "docker:index/volume:Volume", "docker:index/image:Image", "docker:index/remoteImage:RemoteImage"):
        assert t in types, (t, sorted(set(types)))
    models = committed_config(stack)["vllm-stack:models"]
    assert types.count(CONTAINER) >= len(models) + 1  # every server and the gateway


def test_preview_of_the_mac_stack_declares_no_vllm_and_no_gpu(bin_dir: Path, daemon: None, tmp_path: Path) -> None:
    """A host without NVIDIA GPUs (endpoints only): the docker provider plans the gateway and Open WebUI, no vLLM image
    and no container that asks for a GPU."""
    project = Project.create(tmp_path, bin_dir)
    project.stack("mac", committed_config("mac"), {"vllm-stack:apiKeys": API_KEY})
    steps = project.preview_json("mac").get("steps", [])
    assert steps and {s["op"] for s in steps} == {"create"}, [s["op"] for s in steps]
    containers = {s["urn"].rsplit("::", 1)[-1]: s["newState"]["inputs"] for s in steps if urn_type(s["urn"]) == CONTAINER}
    assert {"vllm-gateway", "vllm-webui"} <= set(containers), sorted(containers)
    assert "docker:index/image:Image" not in {urn_type(s["urn"]) for s in steps}
    assert not [name for name, inputs in containers.items() if inputs.get("gpus")], containers.keys()


def test_the_policy_pack_counts_a_swap_groups_gpu_share_under_the_real_engine(bin_dir: Path, daemon: None, tmp_path: Path) -> None:
    """The swap group's container runs the swapper, no vLLM command line: the docker provider takes its gpu-share
    label, and the policy pack, run by the real policy engine, adds the share to GPU 0 (refused under a wider margin)."""
    project = Project.create(tmp_path, bin_dir)
    project.stack("swap", committed_config("swap"), {"vllm-stack:apiKeys": API_KEY, "vllm-stack:hfToken": HF_TOKEN})
    steps = project.preview_json("swap").get("steps", [])
    group = next(s for s in steps if urn_type(s["urn"]) == CONTAINER and s["urn"].endswith("-swap-chat"))
    labels = {x["label"]: x["value"] for x in group["newState"]["inputs"]["labels"]}
    share = net.parse_gpu_shares(labels[net.GPU_SHARE_LABEL])
    assert list(share) == ["0"] and 0.9 < share["0"] <= 1 - SAFETY_FRACTION, labels
    passed = project.run("preview", "--stack", "swap", "--policy-pack", "policy", timeout=600)
    assert "Policies:" in passed.stdout and "vllm-stack@v0.1.0" in passed.stdout, passed.stdout[-3000:]
    # a margin that leaves less than the group's share: refused, naming the group's server
    (tmp_path / "policy-config.json").write_text(json.dumps({"gpu-fractions-fit": {"margin": 0.1}}))
    refused = project.run(
        "preview", "--stack", "swap", "--policy-pack", "policy", "--policy-pack-config", str(tmp_path / "policy-config.json"), timeout=600, check=False
    )
    text = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "gpu-fractions-fit" in text and f"vllm-swap-chat {share['0']}" in text, text[-4000:]


@pytest.fixture(scope="module")
def deployed(bin_dir: Path, daemon: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("engine-docker")
    project = Project.create(tmp, bin_dir)
    config = standin_config(*(_free_port() for _ in range(4)))
    project.stack(STACK, config, {"vllm-stack:apiKeys": API_KEY, "vllm-stack:hfToken": HF_TOKEN})
    project.run("up", "--stack", STACK, "--yes", "--skip-preview", timeout=900)
    try:
        yield project, config
    finally:
        project.run("destroy", "--stack", STACK, "--yes", "--skip-preview", timeout=600, check=False)
        for v in docker("volume", "ls", "-q", "--filter", f"name={PREFIX}-").stdout.split():
            docker("volume", "rm", "-f", v)


def test_up_starts_every_container_with_its_gpu_and_in_plan_order(deployed: tuple[Project, dict[str, Any]]) -> None:
    running = _ids()
    for name in ("vllm-tiny", "vllm-qwen", "gateway", "open-webui"):
        assert f"{PREFIX}-{name}" in running, running
    for name in ("vllm-tiny", "vllm-qwen"):
        c = _inspect(f"{PREFIX}-{name}")
        requests = c["HostConfig"]["DeviceRequests"]
        assert [(r["DeviceIDs"], r["Capabilities"]) for r in requests] == [(["0"], [["gpu"]])], requests
        assert c["State"]["Health"]["Status"] == "healthy"
    # qwen shares GPU 0 with tiny and comes after it in the plan: it starts once tiny answered its health check
    tiny, qwen = _inspect(f"{PREFIX}-vllm-tiny"), _inspect(f"{PREFIX}-vllm-qwen")
    tiny_healthy = min(datetime.fromisoformat(h["End"][:26]) for h in tiny["State"]["Health"]["Log"] if h["ExitCode"] == 0)
    qwen_started = datetime.fromisoformat(qwen["State"]["StartedAt"][:26])
    assert qwen_started > tiny_healthy, (qwen_started, tiny_healthy)


def test_a_request_through_the_gateway_container_reaches_the_right_model(deployed: tuple[Project, dict[str, Any]]) -> None:
    _, config = deployed
    port = config["vllm-stack:gateway"]["port"]
    for model in ("tiny", "qwen"):
        status, body = _post(port, "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        assert status == 200, body
        # the fake vLLM names the server that answered; the gateway passed the vLLM key it holds
        assert f"backend={model} model={model}" in body["choices"][0]["message"]["content"], body
    assert _post(port, "/v1/chat/completions", {"model": "tiny", "messages": []}, key="sk-wrong")[0] == 401


def _webui_file(name: str, complete: Callable[[str], bool] = bool) -> str:
    """A file of the stand-in Open WebUI's data folder. ``pulumi up`` does not wait for Open WebUI (it has no health
    wait), so its container may still be running the models program (or not have started its server, which writes
    the first-start marker) when a test looks: bounded, until the file is there and ``complete``."""
    deadline = time.monotonic() + 120
    while not complete(text := docker("exec", f"{PREFIX}-open-webui", "cat", f"/app/backend/data/{name}").stdout):
        assert time.monotonic() < deadline, f"Open WebUI's stand-in has no complete {name}: {text!r}"
        time.sleep(1)
    return text


def _all_entries(text: str) -> bool:
    """The models program is done: every model it wrote has its grant (the stack's default access: all)."""
    try:
        store = json.loads(text)
    except ValueError:
        return False
    return len(store["grants"]) == len(store["models"]) > 0


def test_open_webui_gets_the_stacks_model_entries_before_it_starts(deployed: tuple[Project, dict[str, Any]]) -> None:
    """The program the stack uploads runs on the image's Python before ``start.sh``: each chat model gets an entry with
    its tool calling (Qwen2.5 has vLLM's hermes parser, TinyLlama none) and every signed-in user's read grant (the
    stand-in keeps what Open WebUI's API is given)."""
    store = json.loads(_webui_file("standin-models.json", _all_entries))
    assert {m: e["params"]["function_calling"] for m, e in store["models"].items()} == {"tiny": "legacy", "qwen": "native"}
    assert {m: e["meta"]["capabilities"]["vision"] for m, e in store["models"].items()} == {"tiny": False, "qwen": False}
    assert sorted(store["grants"]) == [["model", m, "user", "*", "read"] for m in ("qwen", "tiny")]


def test_a_preview_after_up_changes_nothing(deployed: tuple[Project, dict[str, Any]]) -> None:
    """What the daily drift job runs: the state read back from Docker equals what the program declares."""
    project, _ = deployed
    project.run("preview", "--stack", STACK, "--expect-no-changes", "--diff", timeout=600)


def _workloads(config: dict[str, Any]) -> dict[str, str]:
    """What each container of ``config`` runs, by container name, from the plan (the program's only contract)."""
    p = plan(parse({k.split(":", 1)[1]: v for k, v in config.items()}))
    ws = stack_workloads(p, lambda key: key)
    found = [*ws.servers, ws.gateway, ws.webui, ws.dcgm, ws.prometheus, ws.grafana]
    fields = ("image", "entrypoint", "args", "env", "files", "secret_env", "secret_files", "volumes", "port", "publish", "gpus", "user")
    return {f"{PREFIX}-{w.name}": repr([getattr(w, f) for f in fields]) for w in found if w is not None}


def _expected(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """Containers a change should touch: those whose workload differs, and the gateway when a server it routes to is
    replaced (its upload names the servers' container IDs, so nginx starts again and resolves them anew)."""
    old, new = _workloads(before), _workloads(after)
    changed = {n for n in new.keys() | old.keys() if old.get(n) != new.get(n)}
    if any("-vllm-" in n for n in changed):
        changed.add(f"{PREFIX}-gateway")
    return changed


def _container_ops(project: Project, config: dict[str, Any]) -> dict[str, str]:
    """`pulumi preview --json --diff` after writing ``config``: container name -> op, for every container not kept."""
    project.write_config(STACK, config)
    ops = {}
    for step in project.preview_json(STACK).get("steps", []):
        if urn_type(step["urn"]) == CONTAINER and step["op"] != "same":
            state = step.get("newState") or step.get("oldState")
            ops[state["inputs"]["name"]] = step["op"]
            DIFFS[state["inputs"]["name"]] = sorted(step.get("diffs") or step.get("detailedDiff") or [])
    return ops


DIFFS: dict[str, list[str]] = {}
"""The properties each changed container's last preview named, for assertion messages."""


def _apply(project: Project, expected: set[str]) -> None:
    """`pulumi up`, then every container outside ``expected`` still runs as the same container."""
    before = _ids()
    project.run("up", "--stack", STACK, "--yes", "--skip-preview", timeout=900)
    after = _ids()
    kept = {n: i for n, i in before.items() if n not in expected}
    assert {n: after.get(n) for n in kept} == kept
    assert all(after.get(n) not in (None, before.get(n)) for n in expected if n in after), (before, after)


def test_config_changes_diff_and_apply_only_what_they_change(deployed: tuple[Project, dict[str, Any]]) -> None:
    project, config = deployed

    # one model's maxModelLen: the planner also gives the other model on GPU 0 a new share, so both are replaced
    models = [dict(m) for m in config["vllm-stack:models"]]
    models[1]["maxModelLen"] = 2048
    longer = {**config, "vllm-stack:models": models}
    ops = _container_ops(project, longer)
    assert set(ops) == _expected(config, longer) and f"{PREFIX}-vllm-qwen" in ops, ops
    _apply(project, set(ops))
    args = _inspect(f"{PREFIX}-vllm-qwen")["Args"]
    assert args[args.index("--max-model-len") + 1] == "2048"

    # a model on a second GPU: its server is created, the gateway and Prometheus follow, GPU 0's servers stay
    added = {
        **longer,
        "vllm-stack:gpus": [*config["vllm-stack:gpus"], {"index": 1, "name": "Test GPU", "memoryGiB": 23.5}],
        "vllm-stack:models": [*models, {"name": "smol", "model": "Qwen/Qwen2.5-3B-Instruct", "gpus": [1], "maxModelLen": 2048}],
    }
    ops = _container_ops(project, added)
    expected = _expected(longer, added)
    assert set(ops) == expected and ops[f"{PREFIX}-vllm-smol"] == "create", (ops, DIFFS)
    assert f"{PREFIX}-vllm-tiny" not in ops and f"{PREFIX}-vllm-qwen" not in ops
    _apply(project, expected)
    port = config["vllm-stack:gateway"]["port"]
    status, body = _post(port, "/v1/chat/completions", {"model": "smol", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and "backend=smol" in body["choices"][0]["message"]["content"], body

    # rotated client keys: only the gateway's secret include changes
    rotated = "sk-engine-test-rotated-0123456789abcdefghij"
    subprocess.run(
        ["pulumi", "config", "set", "--secret", "--stack", STACK, "vllm-stack:apiKeys", "--non-interactive"],
        cwd=project.dir, env=project.env, input=rotated, check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    ops = _container_ops(project, added)
    assert set(ops) == {f"{PREFIX}-gateway"}, ops
    _apply(project, set(ops))
    assert _post(port, "/v1/chat/completions", {"model": "qwen", "messages": []}, key=rotated)[0] == 200
    assert _post(port, "/v1/chat/completions", {"model": "qwen", "messages": []})[0] == 401


def test_state_holds_no_plaintext_secret(deployed: tuple[Project, dict[str, Any]]) -> None:
    project, _ = deployed
    exported = project.export(STACK)
    state = json.dumps(exported)
    env = dict(e.split("=", 1) for e in _inspect(f"{PREFIX}-vllm-tiny")["Config"]["Env"])
    webui = dict(e.split("=", 1) for e in _inspect(f"{PREFIX}-open-webui")["Config"]["Env"])
    grafana = dict(e.split("=", 1) for e in _inspect(f"{PREFIX}-grafana")["Config"]["Env"])
    generated = {
        "VLLM_API_KEY": env["VLLM_API_KEY"],
        "WEBUI_SECRET_KEY": webui["WEBUI_SECRET_KEY"],
        "GF_SECURITY_ADMIN_PASSWORD": grafana["GF_SECURITY_ADMIN_PASSWORD"],
    }
    assert env["HF_TOKEN"] == HF_TOKEN and all(len(v) >= 32 for v in generated.values()), generated
    for name, value in {"apiKeys": API_KEY, "hfToken": HF_TOKEN, **generated}.items():
        assert value not in state, f"{name} is in the state in plain text"
    stack = next(r for r in exported["deployment"]["resources"] if r["type"] == "pulumi:pulumi:Stack")
    assert "ciphertext" in stack["outputs"]["grafanaAdminPassword"]
    secret_env = ("VLLM_API_KEY=", "HF_TOKEN=", "WEBUI_SECRET_KEY=", "OPENAI_API_KEYS=", "GF_SECURITY_ADMIN_PASSWORD=")
    for r in exported["deployment"]["resources"]:
        if r["type"] != CONTAINER:
            continue
        envs, uploads = r["outputs"].get("envs"), r["outputs"].get("uploads")
        # a container's env list holding a secret is a secret as a whole; one without stays readable
        if isinstance(envs, list):
            assert not any(e.startswith(secret_env) for e in envs), r["urn"]
        else:
            assert "ciphertext" in envs, r["urn"]
        if r["urn"].endswith("::vllm-gateway"):
            assert "ciphertext" in uploads, "the gateway's uploads hold keys.conf"


def test_destroy_keeps_the_data_volumes_and_up_finds_them_again(deployed: tuple[Project, dict[str, Any]]) -> None:
    project, _ = deployed
    marker = _webui_file("standin-first-start")
    assert marker.strip()
    assert docker("exec", f"{PREFIX}-vllm-tiny", "touch", "/root/.cache/huggingface/engine-test-weights").returncode == 0
    project.run("destroy", "--stack", STACK, "--yes", "--skip-preview", timeout=600)
    assert _ids() == {}
    assert docker("network", "inspect", NETWORK).returncode != 0
    volumes = set(docker("volume", "ls", "-q", "--filter", f"name={PREFIX}-").stdout.split())
    assert {f"{PREFIX}-model-cache", f"{PREFIX}-webui-data"} <= volumes, volumes

    project.run("up", "--stack", STACK, "--yes", "--skip-preview", timeout=900)
    again = _webui_file("standin-first-start")
    assert again == marker, "Open WebUI's data volume is not the one it had"
    assert docker("exec", f"{PREFIX}-vllm-qwen", "test", "-e", "/root/.cache/huggingface/engine-test-weights").returncode == 0

    project.write_config(STACK, {**project.config(STACK), "vllm-stack:retainDataOnDestroy": False})
    project.run("up", "--stack", STACK, "--yes", "--skip-preview", timeout=900)
    project.run("destroy", "--stack", STACK, "--yes", "--skip-preview", timeout=600)
    left = set(docker("volume", "ls", "-q", "--filter", f"name={PREFIX}-").stdout.split())
    assert left == set(), left
