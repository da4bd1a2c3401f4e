"""Swap groups before anything runs: the plan's memory (asleep residue + the largest awake set, exact KV each), its
refusals (each names the key and a fix that works), what is rendered and declared on both targets, and the alert
rules under promtool."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from stacks.config import load_stack, parse
from stacks.errors import ConfigError
from stacks.plan import GIB, plan
from stacks.plan import swap as swap_plan
from stacks.plan.memory import SAFETY_FRACTION
from stacks.render import kubernetes as k8s_render
from stacks.render import swap as swap_files
from stacks.render.monitoring import alerts, dashboards
from stacks.render.workloads import stack_workloads
from tests.conftest import require_program
from tests.mock_engine import FAKE_SECRETS, run_program, stack_config
from tests.test_monitoring import rendered_annotations
from tests.test_program_kubernetes import by_kind, objects

GPU: dict[str, Any] = {"index": 0, "name": "RTX 4090", "memoryGiB": 23.52}
TOTAL = 23.52


def member(name: str, model: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": model, "gpus": [0], "maxModelLen": 8192, "maxNumSeqs": 2, "swap": {"group": "chat"}, **extra}


def raw(*models: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"target": "docker", "gpus": [GPU], "models": list(models), **top}


EIGHT_BS = [member("qwen3-8b", "Qwen/Qwen3-8B"), member("mistral-7b", "mistralai/Mistral-7B-Instruct-v0.3"), member("qwen2-5-7b", "Qwen/Qwen2.5-7B-Instruct")]


def problems(config: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as err:
        plan(parse(config))
    return {p.key: p.message for p in err.value.problems}


def test_the_gpu_holds_every_member_asleep_and_the_largest_awake_on_top() -> None:
    p = plan(parse(raw(*EIGHT_BS)))
    [g] = p.swap_groups
    members = [p.model(n) for n in g.members]
    asleep = sum(m.swap.asleep_gib for m in members if m.swap)
    largest = max(members, key=lambda m: m.memory.footprint_gib - (m.swap.asleep_gib if m.swap else 0))
    assert g.largest_awake == [largest.name] == ["qwen3-8b"]
    assert g.reserved_gib == pytest.approx(asleep + largest.memory.footprint_gib - largest.swap.asleep_gib, abs=0.01)  # type: ignore[union-attr]
    assert g.reserved_gib <= TOTAL * (1 - SAFETY_FRACTION)
    [gpu] = p.gpus
    assert gpu.headroom_gib == pytest.approx(TOTAL * (1 - SAFETY_FRACTION) - g.reserved_gib, abs=0.01)
    # together awake they would not fit: that is the point of the group
    assert sum(m.memory.footprint_gib for m in members) > TOTAL
    for m in members:
        assert m.swap is not None
        # auto: exactly maxNumSeqs full sequences, in bytes, with the fraction gating its start
        assert m.memory.kv_tokens == 2 * 8192 and m.memory.max_full_sequences == 2
        assert m.args[m.args.index("--kv-cache-memory-bytes") + 1] == str(m.memory.kv_cache_bytes)
        # asleep: CUDA context, graphs, non-torch and buffers; what vLLM's fraction gate sees free when it restarts
        assert 0.5 < m.swap.asleep_gib < 1.5
        assert m.memory.free_at_start_gib >= m.memory.fraction * TOTAL
        assert m.swap.host_gib == pytest.approx(m.memory.weights_gib * swap_plan.HOST_COPY_FACTOR, abs=0.01)


def test_members_run_on_127_0_0_1_in_their_groups_server_and_keep_their_names() -> None:
    p = plan(parse(raw(*EIGHT_BS)))
    [g] = p.swap_groups
    assert g.service.name == "swap-chat" and g.service.address == "swap-chat:8000"
    for i, name in enumerate(g.members):
        m = p.model(name)
        assert m.swap is not None and m.service == f"vllm-{name}" and m.address == f"vllm-{name}:{8001 + i}"
        assert m.args[m.args.index("--host") + 1] == "127.0.0.1" and m.args[m.args.index("--port") + 1] == str(m.swap.engine_port)
        assert "--enable-sleep-mode" in m.args and m.env["VLLM_SERVER_DEV_MODE"] == "1"
        assert {r.service for r in p.routes if r.model == name} == {m.service}
    assert p.servers == []
    assert [(t.job, t.target) for t in p.scrape_targets if t.job in ("vllm", "swap")] == [
        *(("vllm", p.model(n).address) for n in g.members),
        ("swap", "swap-chat:8000"),
    ]
    assert g.startup_seconds == sum(p.model(n).startup_seconds for n in g.members)


def test_a_server_beside_the_group_gets_what_the_group_leaves_and_starts_first() -> None:
    small = {"name": "embed", "model": "Qwen/Qwen3-Embedding-0.6B", "gpus": [0], "maxModelLen": 512, "maxNumSeqs": 4}
    config = raw(small, *[{**m, "maxModelLen": 4096, "maxNumSeqs": 1} for m in EIGHT_BS])
    p = plan(parse(config))
    [g] = p.swap_groups
    embed = p.model("embed")
    # the server outside the group sees the group's worst case at its start: everything it reserves is taken
    assert embed.memory.footprint_gib + g.reserved_gib <= TOTAL * (1 - SAFETY_FRACTION) + 0.01
    assert embed.memory.free_at_start_gib >= embed.memory.fraction * TOTAL
    assert g.start_after == ["embed"]
    assert [m.name for m in p.servers] == ["embed"]


def test_a_group_that_does_not_fit_names_the_member_and_the_max_num_seqs_that_fits() -> None:
    config = raw(*[{**m, "maxNumSeqs": 8} for m in EIGHT_BS])
    found = problems(config)
    [(key, message)] = found.items()
    assert key == "models[0].maxNumSeqs" and "swap group 'chat' needs" in message
    fits = int(message.split("maxNumSeqs to ")[1].split(" ")[0])
    config["models"][0]["maxNumSeqs"] = fits
    # the fix named works (the next heaviest member may need its own)
    remaining = problems(config) if _refused(config) else {}
    assert "models[0].maxNumSeqs" not in remaining


def _refused(config: dict[str, Any]) -> bool:
    try:
        plan(parse(config))
    except ConfigError:
        return True
    return False


def test_a_sequence_that_does_not_fit_names_the_longest_max_model_len() -> None:
    fourth = member("r1", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", maxModelLen=4096, maxNumSeqs=1)
    config = raw(*[{**m, "maxModelLen": 32768, "maxNumSeqs": 1} for m in EIGHT_BS], fourth)
    found = problems(config)
    [(key, message)] = found.items()
    assert key == "models[0].maxModelLen"
    longest = int(message.split("maxModelLen to ")[1].split(" ")[0])
    config["models"][0]["maxModelLen"] = longest
    assert "models[0].maxModelLen" not in (problems(config) if _refused(config) else {})


def test_too_many_awake_names_the_most_that_fit() -> None:
    tiny = [member(f"m{i}", "Qwen/Qwen2.5-3B-Instruct", maxModelLen=4096) for i in range(6)]
    config = raw(*tiny, swapGroups={"chat": {"awake": 5}})
    [(key, message)] = problems(config).items()
    assert key == "swapGroups.chat.awake"
    fits = int(message.split("lower it to ")[1].split(",")[0])
    assert 1 <= fits < 5
    config["swapGroups"]["chat"]["awake"] = fits
    p = plan(parse(config))
    assert p.swap_groups[0].awake == fits and len(p.swap_groups[0].largest_awake) == fits


def test_weights_that_cannot_fit_even_alone_name_the_gpu() -> None:
    config = raw(member("big", "Qwen/Qwen3-14B"), member("other", "Qwen/Qwen3-8B"))
    [(key, message)] = problems(config).items()
    assert key == "models[0].gpus" and "weights and runtime overhead" in message and "do not fit even without a KV cache" in message
    # fp8 KV cache cannot help weights, and moving one member elsewhere is what the group's rules refuse
    assert "kvCacheDtype" not in message and "move a model elsewhere" not in message and "remove swap from it" in message


def test_kubernetes_swap_refusals_name_the_pods_gpu_type_not_an_index() -> None:
    models = [{k: v for k, v in m.items() if k != "gpus"} for m in (member("big", "Qwen/Qwen3-32B"), member("other", "Qwen/Qwen3-8B"))]
    config: dict[str, Any] = {"target": "kubernetes", "kubernetes": {"gpu": {"name": "NVIDIA L40S", "memoryGiB": 44.52}}, "models": models}
    [(key, message)] = problems(config).items()
    assert key == "models[0].tensorParallel" and "each NVIDIA L40S GPU of its pod" in message and "GPU 0" not in message, message


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (lambda c: c["models"].pop(1) and c["models"].pop(1), "models[0].swap.group", "only this model"),
        (lambda c: c.update(swapGroups={"chat": {"awake": 3}}), "swapGroups.chat.awake", "none ever sleeps"),
        (lambda c: c.update(swapGroups={"chat": {}, "other": {}}), "swapGroups.other", "no model joins it"),
        (lambda c: c.update(gpus=[GPU, {**GPU, "index": 1}]) or c["models"][2].update(gpus=[1]), "models[2].gpus", "shares its GPUs"),
        (lambda c: c["image"].update(base="vllm/vllm-openai:v0.20.0"), "models[0].swap", "pin 0.26.0 or later"),
        (lambda c: c.update(swapGroups={"chat": {"maxWaitSeconds": 600}}, gateway={"readTimeoutSeconds": 300}), "swapGroups.chat.maxWaitSeconds", "504"),
    ],
)
def test_group_rules_name_the_key_and_the_fix(change: Any, key: str, words: str) -> None:
    config = raw(*copy.deepcopy(EIGHT_BS), image={"base": "vllm/vllm-openai:v0.26.0"})
    change(config)
    found = problems(config)
    assert key in found and words in found[key], found


def test_kubernetes_members_share_one_pod_and_its_gpus() -> None:
    models = [{k: v for k, v in m.items() if k != "gpus"} for m in EIGHT_BS]
    config: dict[str, Any] = {"target": "kubernetes", "kubernetes": {"gpu": {"name": "NVIDIA L40S", "memoryGiB": 44.4}}, "models": models}
    p = plan(parse(config))
    [g] = p.swap_groups
    assert g.gpus == [] and g.gpu_count == 1 and g.service.address == "swap-chat.vllm.svc:8000"
    # without the operator, the pod's annotations point the cluster's Prometheus at the swapper's and members' metrics in one
    objs = {(o["kind"], o["metadata"]["name"]): o for o in k8s_render.stack_objects(p)}
    annotations = objs[("Deployment", "swap-chat")]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics/all" and annotations["prometheus.io/port"] == "8000"
    assert {("Service", f"vllm-{n}") for n in g.members} <= set(objs) and ("Deployment", "vllm-qwen3-8b") not in objs
    bad = copy.deepcopy(config)
    bad["models"][1] |= {"tensorParallel": 2, "replicas": 2}
    found = problems(bad)
    assert "tensorParallel 1" in found["models[1].tensorParallel"] and "models[1].replicas" in found
    spanning = copy.deepcopy(config)
    spanning["models"][1] |= {"nodes": 2, "pipelineParallel": 2}
    assert "cannot join it" in problems(spanning)["models[1].nodes"]


def test_the_swapper_config_is_the_plans_own() -> None:
    p = plan(load_stack("swap"))
    [g] = p.swap_groups
    config = swap_files.config(p, g)
    assert config["awake"] == g.awake and config["queue_size"] == g.queue_size and config["port"] == 8000
    for m, name in zip(config["members"], g.members, strict=True):
        mp = p.model(name)
        assert mp.swap is not None
        assert m["command"] == ["vllm", "serve", *mp.args] and m["port"] == mp.port and m["engine_port"] == mp.swap.engine_port
        assert m["level"] == mp.swap.level and m["env"]["VLLM_SERVER_DEV_MODE"] == "1"
    assert "--enable-sleep-mode" in json.dumps(config) and "Bearer" not in json.dumps(config)
    [w] = stack_workloads(p, lambda key: f"image-{key}").swap_groups
    assert w.entrypoint == ["python3", swap_files.SWAPPER_PATH] and "--supervise" in w.args
    assert w.files[swap_files.SWAPPER_PATH] == swap_files.SWAPPER.read_text()
    assert set(w.extra_ports) == {p.model(n).service for n in g.members} and w.gpus == [0]


def test_docker_runs_one_container_for_the_group_under_every_members_name() -> None:
    m = run_program("swap")
    containers = {r.name: r.inputs for r in m.of_type("docker:index/container:Container")}
    p = plan(load_stack("swap"))
    assert not any(f"vllm-{n}" in containers for n in p.swap_groups[0].members), "no container of its own per member"
    c = containers["vllm-swap-chat"]
    assert c["gpus"] == "device=0" and c["entrypoints"] == ["python3", swap_files.SWAPPER_PATH]
    assert c["networksAdvanced"][0]["aliases"] == ["swap-chat", *sorted(f"vllm-{n}" for n in p.swap_groups[0].members)]
    assert "ports" not in c and c["wait"] is True and "/health" in c["healthcheck"]["tests"][-1] and ":8000/" in c["healthcheck"]["tests"][-1]
    assert {u["file"] for u in c["uploads"]} == {swap_files.SWAPPER_PATH, swap_files.CONFIG_PATH}
    # the gateway restarts when the group's server is replaced (nginx resolves its names once)
    files = {u["file"]: u["content"] for u in containers["vllm-gateway"]["uploads"]["value"]}
    assert "vllm-swap-chat-id" in files["/etc/nginx/upstream-ids.txt"]
    # its Prometheus scrapes each member (relayed by the swapper) and the swapper itself
    prometheus = yaml.safe_load(next(u["content"] for u in containers["vllm-prometheus"]["uploads"] if u["file"].endswith("prometheus.yml")))
    jobs = {j["job_name"]: [t for s in j["static_configs"] for t in s["targets"]] for j in prometheus["scrape_configs"]}
    assert jobs["swap"] == ["swap-chat:8000"] and len(jobs["vllm"]) == 4


def test_kubernetes_declares_one_pod_with_a_service_per_member_and_host_memory(tmp_path: Path) -> None:
    cfg, keys = stack_config("cluster")
    models = [{**{k: v for k, v in m.items() if k != "gpus"}, "maxNumSeqs": 4} for m in EIGHT_BS]
    cfg["vllm-stack:models"] = json.dumps(models)
    cfg["vllm-stack:webui"] = json.dumps({"enabled": True})
    m = run_program("cluster", secrets={k: FAKE_SECRETS[k] for k in keys}, config=cfg)
    deployments, services = by_kind(m, "Deployment"), by_kind(m, "Service")
    d = deployments["swap-chat"]
    [c] = d["spec"]["template"]["spec"]["containers"]
    p = plan(parse({"target": "kubernetes", "kubernetes": {"gpu": {"name": "NVIDIA L40S", "memoryGiB": 44.4}}, "models": models}))
    [g] = p.swap_groups
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and d["spec"]["strategy"] == {"type": "Recreate"}
    requested = int(c["resources"]["requests"]["memory"].removesuffix("Gi"))
    level_one = [p.model(n) for n in g.members]  # every member sleeps at level 1 here
    assert requested >= g.host_memory_gib >= sum(m.memory.weights_gib for m in level_one)
    assert int(c["resources"]["limits"]["memory"].removesuffix("Gi")) >= requested
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= g.startup_seconds
    for name in g.members:
        svc = services[f"vllm-{name}"]
        assert svc["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]
        assert svc["spec"]["ports"][0]["port"] == p.model(name).port == svc["spec"]["ports"][0]["targetPort"]
    assert not any(f"vllm-{n}" in deployments for n in g.members)
    # the cluster's Prometheus (operator) scrapes each member through its Service, and the swapper
    monitors = by_kind(m, "ServiceMonitor")
    assert {f"vllm-{n}" for n in g.members} | {"swap-chat"} <= set(monitors)
    assert monitors["swap-chat"]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "swap-chat"
    # alerts watch the group's container for restarts
    rule = next(r for gr in by_kind(m, "PrometheusRule")["vllm-stack-alerts"]["spec"]["groups"] for r in gr["rules"] if r["alert"] == "VllmServerRestarted")
    assert "swap-chat" in rule["expr"] and "vllm-qwen3-8b" not in rule["expr"]
    for o in objects(m):
        if o["kind"] not in ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"):
            kubernetes_validate.validate(o, kubernetes_validate.latest_version(), strict=True)


def test_swap_alerts_fire_on_thrashing_failed_wakes_and_excess_and_stay_quiet_otherwise(tmp_path: Path) -> None:
    p = plan(load_stack("swap"))
    (tmp_path / "alerts.yml").write_text(alerts.render(p))
    t = p.monitoring.alerts
    assert t is not None
    base = {"job": "swap", "instance": "swap-chat:8000", "group": "chat"}

    def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
        return {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}

    busy = "vllm_stack_swap_busy_seconds_total"
    wakes = "vllm_stack_swap_wakes_total"
    cases = [
        # 40% of each minute swapping, against 10%
        ("SwapGroupThrashing", [series(busy, base, "0+24x40")], [series(busy, base, "0+6x40")], {"group": "chat"}),
        (
            "SwapWakeFailed",
            [series(wakes, {**base, "model": "qwen3-8b", "result": "failed"}, "0x10 1x30")],
            [series(wakes, {**base, "model": "qwen3-8b", "result": "ok"}, "0+1x40")],
            {"group": "chat", "model": "qwen3-8b"},
        ),
        (
            "SwapGroupOverPlan",
            [series("vllm_stack_swap_awake_members", base, "2x40"), series("vllm_stack_swap_awake_limit", base, "1x40")],
            [series("vllm_stack_swap_awake_members", base, "1x40"), series("vllm_stack_swap_awake_limit", base, "1x40")],
            {"group": "chat"},
        ),
    ]
    tests = []
    for name, firing, healthy, labels in cases:
        rule = next(r for g in alerts.groups(p) for r in g["rules"] if r["alert"] == name)
        at = "25m"
        tests.append(
            {
                "interval": "1m",
                "input_series": firing,
                "alert_rule_test": [
                    {
                        "eval_time": at,
                        "alertname": name,
                        "exp_alerts": [{"exp_labels": {**rule["labels"], **labels}, "exp_annotations": rendered_annotations(rule, labels)}],
                    }
                ],
            }
        )
        tests.append(
            {"interval": "1m", "input_series": healthy, "alert_rule_test": [{"eval_time": e, "alertname": name, "exp_alerts": []} for e in ("5m", at)]}
        )
    assert t.swap_time_share == 0.25
    (tmp_path / "t.yml").write_text(yaml.safe_dump({"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([require_program("promtool"), "test", "rules", "t.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # and the dashboard shows the group
    titles = [panel["title"] for panel in dashboards.models(p)["panels"]]
    assert any(title.startswith("Swap groups") for title in titles)
    # none of it where no model swaps
    dev = plan(load_stack("dev"))
    assert not any("Swap" in r["alert"] for g in alerts.groups(dev) for r in g["rules"])


def test_plan_output_shows_the_group_and_what_a_swap_costs() -> None:
    out = subprocess.run(
        [".venv/bin/python", "-m", "stacks", "plan", "swap"], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "swap group chat (GPU 0): 1 of 4 awake at once" in out.stdout
    for words in ("asleep GiB", "host GiB", "wake s", "reserved per GPU", "host memory"):
        assert words in out.stdout


def test_estimates_follow_level_and_weights() -> None:
    p = plan(load_stack("swap"))
    one = [p.model(n) for n in p.swap_groups[0].members if p.model(n).swap.level == 1]  # type: ignore[union-attr]
    two = [p.model(n) for n in p.swap_groups[0].members if p.model(n).swap.level == 2]  # type: ignore[union-attr]
    for m in one:
        assert m.swap is not None and m.swap.wake_seconds == pytest.approx(m.memory.weights_gib / swap_plan.HOST_COPY_GIB_S, abs=0.06)
    for m in two:
        assert m.swap is not None and m.swap.host_gib == 0 and m.swap.sleep_seconds == 0
    assert p.swap_groups[0].host_memory_gib == pytest.approx(sum(m.swap.host_gib for m in one if m.swap) + 4 * swap_plan.PROCESS_HOST_GIB, abs=0.05)
    assert GIB == 1024**3
