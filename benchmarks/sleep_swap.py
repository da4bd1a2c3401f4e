"""vLLM's sleep mode on the GPU, and a swap group through the real gateway: what the swap plan assumes, measured.

Plans a swap group of a 1B, an 8B and a 14B model (catalog configs; awake one at a time) for the GPU found here
(its total as CUDA reports it), with the 8B's and 14B's fractions set so that the two do not fit awake together.
Then, on 127.0.0.1, nothing downloaded:

1. memory: each server as the plan launches it (``--enable-sleep-mode``, VLLM_SERVER_DEV_MODE=1), one at a time,
   each asleep before the next starts: its cold start, GPU memory awake and asleep at level 1 (NVML, per process),
   host memory (RSS) awake and asleep, wake time and the first token after waking (``/wake_up`` sent at t0; the
   target: the 8B's first token within 2 s p50 on an H100);
2. swap: the 8B and 14B (already running) behind the swapper (``stacks/swap/swapper.py``, which adopts them) and
   the rendered gateway on a real nginx (GATEWAY_NGINX / GATEWAY_NJS_MODULE / GATEWAY_JS_ENGINE, as the gateway
   tests); requests alternate between them, each waiting for the other to be put to sleep and itself woken: swap
   latency (first token) p50/p95 next to each model's cold start;
3. the 1B with weights on disk (a safetensors file of zeros written here, sparse: nothing to download) at level 2:
   asleep, then woken with its weights reloaded (``collective_rpc`` ``reload_weights``) and the first token;
4. level 2 of the 8B and 14B: memory asleep and the wake (their random weights cannot be reloaded: vLLM's dummy
   loader has no ``get_all_weights``, so they are stopped without serving again).

Every step is bounded (``--budget`` seconds in all, default 490) and records its failure instead of aborting the rest;
the JSON result is written after every step. Every server is stopped by its process group, nginx and the swapper by
their pids.

    PYTHONPATH=/path/to/vllm GATEWAY_NGINX=... GATEWAY_NJS_MODULE=... GATEWAY_JS_ENGINE=qjs \\
        python3 benchmarks/sleep_swap.py --out benchmarks/results/h100-vllm-0.26.0-sleep-swap.json

``--fake`` runs the same steps against the fake vLLM of the tests (tests/fake_sleepy_vllm.py): no GPU, no vLLM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.calibrate import PATTERNS as CALIBRATE_PATTERNS  # noqa: E402
from benchmarks.calibrate import catalog_config, command, gpu_facts  # noqa: E402
from benchmarks.calibrate import model_folder as calibrate_folder  # noqa: E402
from benchmarks.processes import stop_group, wait_healthy  # noqa: E402
from stacks.config import parse  # noqa: E402
from stacks.plan import GIB, ModelPlan, StackPlan, plan  # noqa: E402
from stacks.render import swap as swap_files  # noqa: E402
from tests.gateway_harness import NGINX, free_port, render_into, start_nginx, stop  # noqa: E402

SMALL, MEDIUM, LARGE = "llama-1b", "qwen3-8b", "qwen3-14b"
MODELS = {SMALL: "meta-llama/Llama-3.2-1B-Instruct", MEDIUM: "Qwen/Qwen3-8B", LARGE: "Qwen/Qwen3-14B"}
PAIR_FRACTION = 0.55
"""The 8B's and the 14B's fraction: alone each fits beside the others asleep; awake together they would need 1.1 GPUs."""
PROMPT = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203]
"""Token ids (the servers have no tokenizer)."""
ALTERNATIONS = 10
STOP_GRACE_S = 10
WAKE_CYCLES = {SMALL: 2, MEDIUM: 3, LARGE: 2}
PATTERNS = {
    **CALIBRATE_PATTERNS,  # weights, KV tokens, CUDA graphs
    # vllm/v1/worker/gpu_worker.py sleep(), vllm/v1/executor/abstract.py sleep()/wake_up(), 0.26.0
    "sleep_freed_gib": re.compile(r"Sleep mode freed ([\d.]+) GiB memory, ([\d.]+) GiB memory is still in use"),
    "fall_asleep_s": re.compile(r"It took ([\d.]+) seconds to fall asleep"),
    "wake_up_s": re.compile(r"It took ([\d.]+) seconds to wake up tags"),
    # vllm/device_allocator/cumem.py sleep(), 0.26.0
    "cumem_backed_up_gib": re.compile(r"CuMemAllocator: sleep freed ([\d.]+) GiB memory in total, of which ([\d.]+) GiB is backed up in CPU"),
    # vllm/platforms/cuda.py get_attn_backend_cls, 0.26.0
    "attention_backend": re.compile(r"Using (\S+) attention backend out of potential backends"),
}
STEPS = ("memory", "swap", "small", "level2")
"""What ``--steps`` may name: the 8B and 14B awake and asleep, the swap through the gateway, the 1B's levels 1 and 2,
the 8B's and 14B's level 2 (swap and level2 need memory's servers)."""


# --------------------------------------------------------------------------------------------------- plan


def bench_stack(gpu_name: str, total_gib: float, version: str) -> dict[str, Any]:
    """The stack the benchmark plans: the three models in one swap group on GPU 0, one awake at a time."""
    common = {"gpus": [0], "maxModelLen": 4096, "maxNumSeqs": 8, "swap": {"group": "bench", "level": 1}}
    return {
        "target": "docker",
        "image": {"base": f"vllm/vllm-openai:v{version}"},
        "gpus": [{"index": 0, "name": gpu_name, "memoryGiB": int(total_gib * 100) / 100}],
        "models": [
            {"name": SMALL, "model": MODELS[SMALL], **common},
            {"name": MEDIUM, "model": MODELS[MEDIUM], **common, "gpuMemoryUtilization": PAIR_FRACTION},
            {"name": LARGE, "model": MODELS[LARGE], **common, "gpuMemoryUtilization": PAIR_FRACTION},
        ],
        "swapGroups": {"bench": {"awake": 1, "drainSeconds": 5, "maxWaitSeconds": 180, "wakeTimeoutSeconds": 180, "queueSize": 16}},
    }


def bench_plan(gpu_name: str, total_gib: float, version: str) -> StackPlan:
    return plan(parse(bench_stack(gpu_name, total_gib, version)))


def server_command(m: ModelPlan, folder: Path, port: int, dummy: bool, fake: dict[str, Any] | None = None) -> list[str]:
    """The plan's arguments with the model id replaced by the local folder and the port by ``port`` (127.0.0.1 as
    planned); random weights unless ``dummy`` is off. ``fake``: the tests' fake vLLM instead."""
    if fake is not None:
        cmd = [sys.executable, "-m", "tests.fake_sleepy_vllm", "--port", str(port), "--name", m.name, "--models", ",".join(m.served_names)]
        return cmd + [f"--{k.replace('_', '-')}={v}" for k, v in fake.items()]
    assert m.args[m.args.index("--host") + 1] == "127.0.0.1", "members listen on 127.0.0.1"
    return command(m, folder, port, dummy=dummy)


# --------------------------------------------------------------------------------------------------- weights


SAFETENSORS_DTYPE = {"bfloat16": ("BF16", 2), "float16": ("F16", 2), "float32": ("F32", 4)}


def llama_tensors(config: dict[str, Any]) -> list[tuple[str, list[int]]]:
    """Tensor names and shapes of a Llama checkpoint in Hugging Face's layout (what vLLM's LlamaForCausalLM loads)."""
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads, kv_heads, vocab = config["num_attention_heads"], config["num_key_value_heads"], config["vocab_size"]
    hd = config.get("head_dim") or h // heads
    out: list[tuple[str, list[int]]] = [("model.embed_tokens.weight", [vocab, h])]
    for i in range(layers):
        p = f"model.layers.{i}"
        out += [
            (f"{p}.self_attn.q_proj.weight", [heads * hd, h]),
            (f"{p}.self_attn.k_proj.weight", [kv_heads * hd, h]),
            (f"{p}.self_attn.v_proj.weight", [kv_heads * hd, h]),
            (f"{p}.self_attn.o_proj.weight", [h, heads * hd]),
            (f"{p}.mlp.gate_proj.weight", [inter, h]),
            (f"{p}.mlp.up_proj.weight", [inter, h]),
            (f"{p}.mlp.down_proj.weight", [h, inter]),
            (f"{p}.input_layernorm.weight", [h]),
            (f"{p}.post_attention_layernorm.weight", [h]),
        ]
    out.append(("model.norm.weight", [h]))
    if not config.get("tie_word_embeddings"):
        out.append(("lm_head.weight", [vocab, h]))
    return out


def write_zero_safetensors(path: Path, tensors: list[tuple[str, list[int]]], dtype: str) -> int:
    """A safetensors file of zeros (format: 8-byte little-endian header size, JSON header, data), written sparse: no
    bytes to write or read from disk. Returns its size in bytes."""
    code, size = SAFETENSORS_DTYPE[dtype]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors:
        n = size
        for d in shape:
            n *= d
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + offset)
    return 8 + len(text) + offset


def model_folder(work: Path, m: ModelPlan, weights: bool) -> Path:
    """calibrate's folder (the catalog's config.json), with ``weights`` a checkpoint of zeros beside it."""
    folder = calibrate_folder(m, work)
    if weights:
        config = catalog_config(m)
        write_zero_safetensors(folder / "model.safetensors", llama_tensors(config), config["torch_dtype"])
    return folder


# --------------------------------------------------------------------------------------------------- measuring


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    pids.append(int(entry.name))
    return pids


def rss_gib(pgid: int) -> float:
    """Resident host memory of a server's processes (API server, engine core), pinned weights included."""
    total = 0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024**2, 3)


def gpu_gib(pgid: int) -> dict[str, Any]:
    """GPU memory of a server's processes (NVML per process) and the device's use, in GiB."""
    try:
        import pynvml  # nvidia-ml-py: no CUDA context

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            used = pynvml.nvmlDeviceGetMemoryInfo(handle).used
            pids = set(group_pids(pgid))
            mine = sum(p.usedGpuMemory or 0 for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle) if p.pid in pids)
            return {"processes_gib": round(mine / GIB, 3), "device_used_gib": round(used / GIB, 3)}
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:  # no NVML here (--fake): recorded as missing, not an error of the step
        return {"processes_gib": None, "device_used_gib": None, "nvml": repr(e)[:200]}


def http(url: str, method: str = "GET", body: Any = None, timeout: float = 180) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def first_token(url: str, model: str, timeout: float = 240) -> tuple[int, float | None, float]:
    """(status, seconds to the first streamed event, seconds to the end) of a streamed completion."""
    body = json.dumps({"model": model, "prompt": PROMPT, "max_tokens": 4, "stream": True}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first = None
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            while chunk := r.read1(65536):
                if first is None and b"data: {" in chunk:
                    first = time.perf_counter() - t0
            return r.status, first, time.perf_counter() - t0
    except urllib.error.HTTPError as e:
        e.read()
        return e.code, None, time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


# --------------------------------------------------------------------------------------------------- the run


class Run:
    """Servers, steps, the time left and the result, written after every step."""

    def __init__(self, out: Path | None, budget_s: float, work: Path, fake: bool) -> None:
        self.out = out
        self.deadline = time.monotonic() + budget_s
        self.started = time.monotonic()
        self.work = work
        self.fake = fake
        self.servers: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.result: dict[str, Any] = {"steps": [], "servers": {}, "swap": {}, "plan": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def write(self) -> None:
        self.result["wall_s"] = round(time.monotonic() - self.started, 1)
        if self.out:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(self.result, indent=1, default=str) + "\n")

    def step(self, name: str, need_s: float, fn: Callable[[], None]) -> bool:
        """Run ``fn`` when ``need_s`` seconds are left; record how it went (a failure does not stop the run)."""
        record: dict[str, Any] = {"step": name}
        self.result["steps"].append(record)
        if self.left() < need_s:
            record |= {"ok": False, "skipped": f"{self.left():.0f} s left of the budget, the step needs about {need_s:.0f} s"}
            print(f"[{name}] skipped: {record['skipped']}", flush=True)
            self.write()
            return False
        t0 = time.monotonic()
        try:
            fn()
            record["ok"] = True
        except Exception as e:  # a failed step is recorded; the next ones still run
            record |= {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc().splitlines()[-6:]}
        record["seconds"] = round(time.monotonic() - t0, 1)
        print(f"[{name}] {'ok' if record['ok'] else 'FAILED: ' + record.get('error', '')} in {record['seconds']} s", flush=True)
        self.write()
        return bool(record["ok"])

    def server(self, name: str) -> dict[str, Any]:
        return self.result["servers"].setdefault(name, {})

    def log_facts(self, name: str) -> dict[str, Any]:
        text = (self.work / f"{name}.log").read_text(errors="replace") if (self.work / f"{name}.log").exists() else ""
        facts: dict[str, Any] = {}
        for key, pattern in PATTERNS.items():
            found = pattern.findall(text)
            if found:
                facts[key] = [list(f) if isinstance(f, tuple) else f for f in found]
        return facts

    def start(self, m: ModelPlan, weights: bool, fake: dict[str, Any] | None, limit_s: float) -> None:
        """Start ``m``'s server and wait for /health: its cold start, bounded by ``limit_s``."""
        port = free_port()
        folder = model_folder(self.work, m, weights) if fake is None else self.work
        env = {**os.environ, **m.env, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "0"}
        log = self.work / f"{m.name}.log"
        t0 = time.monotonic()
        with log.open("wb") as f:
            proc = subprocess.Popen(
                server_command(m, folder, port, dummy=not weights, fake=fake), stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=ROOT
            )
        self.servers[m.name], self.ports[m.name] = proc, port
        if error := wait_healthy(proc, port, min(limit_s, max(self.left() - 30, 10)), poll_s=1):
            raise RuntimeError(f"{m.name} {error}: {log.read_text(errors='replace').splitlines()[-8:]}")
        self.server(m.name)["cold_start_s"] = round(time.monotonic() - t0, 1)

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def measure(self, name: str, key: str) -> None:
        pgid = self.servers[name].pid
        self.server(name)[key] = {**gpu_gib(pgid), "host_rss_gib": rss_gib(pgid)}

    def sleep(self, name: str, level: int) -> float:
        t0 = time.perf_counter()
        status, body = http(self.url(name, f"/sleep?level={level}&mode=abort"), "POST")
        took = time.perf_counter() - t0
        if status != 200 or json.loads(http(self.url(name, "/is_sleeping"))[1])["is_sleeping"] is not True:
            raise RuntimeError(f"{name}: /sleep?level={level} answered {status} {body[:200]!r}")
        return took

    def wake(self, name: str, reload: bool) -> float:
        """Wake (level 2 with ``reload``: weights, reload, then the KV cache, as the swapper does); seconds taken."""
        t0 = time.perf_counter()
        calls = (
            [("/wake_up?tags=weights", None), ("/collective_rpc", {"method": "reload_weights"}), ("/wake_up?tags=kv_cache", None)]
            if reload
            else [("/wake_up", None)]
        )
        for path, body in calls:
            status, text = http(self.url(name, path), "POST", body)
            if status != 200:
                raise RuntimeError(f"{name}: {path} answered {status} {text[:300]!r}")
        return time.perf_counter() - t0

    def cycles(self, name: str, level: int, n: int, reload: bool = False) -> None:
        """``n`` times: sleep, measure asleep (first time), wake, first token; the server ends asleep."""
        record = self.server(name).setdefault(f"level{level}", {"sleep_s": [], "wake_s": [], "first_token_s": [], "wake_to_first_token_s": []})
        for i in range(n):
            record["sleep_s"].append(round(self.sleep(name, level), 3))
            if i == 0:
                time.sleep(1.0)  # NVML's per-process figure settles after the unmap
                self.measure(name, f"asleep_level{level}")
            woke = self.wake(name, reload)
            status, first, _ = first_token(self.url(name, "/v1/completions"), name)
            if status != 200 or first is None:
                raise RuntimeError(f"{name}: completion after waking answered {status}")
            # the wake was asked for at t0; the completion went out as soon as it returned
            record["wake_s"].append(round(woke, 3))
            record["first_token_s"].append(round(first, 3))
            record["wake_to_first_token_s"].append(round(woke + first, 3))
        record["wake_to_first_token_p50_s"] = percentile(record["wake_to_first_token_s"], 0.5)
        self.sleep(name, 1)

    def stop_all(self) -> None:
        for proc in self.servers.values():
            with contextlib.suppress(Exception):
                stop_group(proc, grace_s=STOP_GRACE_S)


@contextlib.contextmanager
def swapper_and_gateway(run: Run, p: StackPlan, members: list[str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The plan's swapper adopting the running servers (it starts none), and the rendered gateway in front on a real
    nginx when one is there (else the swapper's own ports); yields the URL to send requests to."""
    [g] = p.swap_groups
    config = swap_files.config(p, g)
    state = run.work / "swap-state"
    state.mkdir(exist_ok=True)
    config |= {"listen": "127.0.0.1", "port": free_port(), "state_dir": str(state), "spawn": False}
    config["members"] = [m for m in config["members"] if m["name"] in members]
    for m in config["members"]:
        m["port"], m["engine_port"] = free_port(), run.ports[m["name"]]
        (state / f"{m['name']}.pid").write_text(str(run.servers[m["name"]].pid))
    (run.work / "swap.json").write_text(json.dumps(config))
    with (run.work / "swapper.log").open("wb") as log:
        swapper = subprocess.Popen(
            [sys.executable, str(swap_files.SWAPPER), "--config", str(run.work / "swap.json")], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
    nginx: subprocess.Popen[bytes] | None = None
    try:
        if wait_healthy(swapper, config["port"], 60, poll_s=0.2):
            raise RuntimeError(f"the swapper did not become ready: {(run.work / 'swapper.log').read_text()[-600:]}")
        try:
            gw_port = free_port()
            upstreams = {p.model(m["name"]).service: f"127.0.0.1:{m['port']}" for m in config["members"]}
            upstreams |= {p.model(n).service: "127.0.0.1:9" for n in g.members if n not in members}
            conf = render_into(run.work / "gateway", p, gw_port, upstreams, [], None)
            nginx = start_nginx(conf, gw_port)
            url = f"http://127.0.0.1:{gw_port}"
            run.result["swap"]["through"] = f"gateway ({NGINX})"
        except Exception as e:
            run.result["swap"]["through"] = f"the swapper's ports (no gateway: {e!r})"
            ports = {m["name"]: m["port"] for m in config["members"]}
            url = "member:" + json.dumps(ports)
        run.result["swap"]["swapper_port"] = config["port"]
        yield url, swapper
    finally:
        if nginx is not None:
            stop(nginx)
        # SIGKILL: the swapper's own shutdown would stop the members it adopted, and the next steps reuse them
        if swapper.poll() is None:
            swapper.send_signal(signal.SIGKILL)
            swapper.wait(10)


def alternate(run: Run, url: str, swapper_port: int, pair: list[str], n: int) -> None:
    """Requests alternating between ``pair``: each puts the other to sleep and wakes its own model."""
    swap = run.result["swap"]
    rows = swap.setdefault("requests", [])

    def target(name: str) -> str:
        if url.startswith("member:"):
            return f"http://127.0.0.1:{json.loads(url[7:])[name]}/v1/completions"
        return f"{url}/v1/completions"

    # the first wakes one model; then each request swaps
    status, first, total = first_token(target(pair[0]), pair[0])
    rows.append({"model": pair[0], "swap": "wake only", "status": status, "first_token_s": first and round(first, 3), "total_s": round(total, 3)})
    for i in range(n):
        if run.left() < 45:
            swap["stopped_early"] = f"after {i} of {n} swaps: {run.left():.0f} s of the budget left"
            break
        name = pair[(i + 1) % 2]
        status, first, total = first_token(target(name), name)
        states = json.loads(http(f"http://127.0.0.1:{swapper_port}/status")[1])["members"]
        awake = sorted(k for k, v in states.items() if v["state"] in ("awake", "waking", "draining", "sleeping", "starting"))
        rows.append(
            {
                "model": name,
                "swap": "sleep other + wake",
                "status": status,
                "first_token_s": first and round(first, 3),
                "total_s": round(total, 3),
                "holding": awake,
            }
        )
        run.write()
    # and without a swap: the model awake last, again
    last = rows[-1]["model"]
    for _ in range(2):
        status, first, total = first_token(target(last), last)
        rows.append({"model": last, "swap": "none (awake)", "status": status, "first_token_s": first and round(first, 3), "total_s": round(total, 3)})
    swapped = [r for r in rows if r["swap"] == "sleep other + wake" and r["status"] == 200 and r["first_token_s"] is not None]
    swap["swap_first_token_p50_s"] = percentile([r["first_token_s"] for r in swapped], 0.5)
    swap["swap_first_token_p95_s"] = percentile([r["first_token_s"] for r in swapped], 0.95)
    for name in pair:
        mine = [r["first_token_s"] for r in swapped if r["model"] == name]
        swap[f"{name}_swap_first_token_p50_s"] = percentile(mine, 0.5)
        swap[f"{name}_cold_start_s"] = run.server(name).get("cold_start_s")
    swap["failed_requests"] = [r for r in rows if r["status"] != 200]
    swap["never_more_than_one_awake"] = all(len(r.get("holding", [])) <= 1 for r in rows)
    _, metrics = http(f"http://127.0.0.1:{swapper_port}/metrics")
    swap["swapper_metrics"] = [
        line
        for line in metrics.decode(errors="replace").splitlines()
        if line.startswith(("vllm_stack_swap_wake_seconds_sum", "vllm_stack_swap_sleep_seconds_sum", "vllm_stack_swap_wakes_total", "vllm_stack_swap_busy"))
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--budget", type=float, default=490, help="seconds for the whole run; steps that no longer fit are skipped")
    ap.add_argument("--server-timeout", type=float, default=240)
    ap.add_argument("--fake", action="store_true", help="the tests' fake vLLM instead of vLLM (no GPU): checks everything but the figures")
    ap.add_argument("--fake-gpu-gib", type=float, default=79.18)
    ap.add_argument("--workdir", type=Path, help="model folders, server logs, the swapper's state (default: a new temporary folder)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)} (default: all)")
    ap.add_argument(
        "--small-weights", choices=("disk", "dummy"), default="disk", help="the 1B: zeros from a safetensors file (level 2 reloads them) or the dummy loader"
    )
    args = ap.parse_args()
    steps = set(args.steps.split(","))
    if steps - set(STEPS):
        ap.error(f"--steps: unknown {sorted(steps - set(STEPS))}; choose from {', '.join(STEPS)}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vllm-stack-sleep-swap-"))
    work.mkdir(parents=True, exist_ok=True)
    run = Run(args.out, args.budget, work, args.fake)

    planned: list[StackPlan] = []

    def facts() -> None:
        gpus, version = ([("fake GPU", int(args.fake_gpu_gib * GIB))], "0.26.0") if args.fake else gpu_facts()
        name, total = gpus[0]
        run.result |= {"gpu": name, "cuda_total_gib": round(total / GIB, 2), "vllm": version}
        p = bench_plan(name, total / GIB, version)
        run.result["plan"] = {
            m.name: {"model": m.model, "memory": asdict(m.memory), "swap": asdict(m.swap) if m.swap else None, "args": m.args} for m in p.models
        } | {"group": asdict(p.swap_groups[0])}
        planned.append(p)

    run.step("gpu and plan", 30, facts)
    if not planned:
        run.write()
        return 1
    p = planned[0]
    fakes: dict[str, dict[str, Any] | None] = {name: None for name in MODELS}
    if args.fake:
        ledger = work / "gpu.json"
        fakes = {n: {"ledger": ledger, "gpu_mib": 2000, "awake_mib": 900, "asleep_mib": 50, "wake_ms": 200, "sleep_ms": 100} for n in MODELS}
    limit = args.server_timeout
    try:
        for name in (MEDIUM, LARGE) if "memory" in steps else ():
            m = p.model(name)

            def memory(m: ModelPlan = m) -> None:
                run.start(m, weights=False, fake=fakes[m.name], limit_s=limit)
                run.server(m.name)["log"] = run.log_facts(m.name)
                status, _, _ = first_token(run.url(m.name, "/v1/completions"), m.name)
                if status != 200:
                    raise RuntimeError(f"first completion answered {status}")
                run.measure(m.name, "awake")
                run.cycles(m.name, 1, WAKE_CYCLES[m.name])
                run.server(m.name)["log"] = run.log_facts(m.name)

            # the first server on a machine also compiles FlashInfer's kernels (about 90 s more)
            run.step(f"{name}: start, memory awake and asleep (level 1), wakes", 150 if name == MEDIUM else 130, memory)

        pair = [n for n in (MEDIUM, LARGE) if n in run.servers and run.servers[n].poll() is None]

        def swap() -> None:
            if len(pair) < 2:
                raise RuntimeError(f"needs the 8B and 14B running; running: {pair}")
            with swapper_and_gateway(run, p, pair) as (url, _):
                alternate(run, url, run.result["swap"]["swapper_port"], pair, ALTERNATIONS)

        if "swap" in steps:
            run.step("swap group through the gateway", 90, swap)

        small = p.model(SMALL)

        disk = args.small_weights == "disk" and not args.fake

        def small_levels() -> None:
            run.start(small, weights=disk, fake=fakes[SMALL], limit_s=limit)
            run.server(SMALL)["weights"] = "fake" if args.fake else "zeros on disk (sparse safetensors): level 2 reloads them" if disk else "dummy"
            status, _, _ = first_token(run.url(SMALL, "/v1/completions"), SMALL)
            if status != 200:
                raise RuntimeError(f"first completion answered {status}")
            run.measure(SMALL, "awake")
            run.cycles(SMALL, 1, WAKE_CYCLES[SMALL])
            if disk or args.fake:
                run.cycles(SMALL, 2, 1, reload=True)
            run.server(SMALL)["log"] = run.log_facts(SMALL)
            stop_group(run.servers.pop(SMALL), grace_s=STOP_GRACE_S)

        if "small" in steps:
            what = "levels 1 and 2 (weights reloaded)" if disk or args.fake else "level 1 (dummy weights)"
            run.step(f"{SMALL}: start, {what}", 100, small_levels)

        def level2(name: str) -> Callable[[], None]:
            def go() -> None:
                for other in run.servers:  # the swap step leaves one of the pair awake: both awake do not fit
                    if other != name and json.loads(http(run.url(other, "/is_sleeping"))[1])["is_sleeping"] is not True:
                        run.sleep(other, 1)
                run.wake(name, reload=False)  # from level 1, to fall asleep at level 2
                took = run.sleep(name, 2)
                time.sleep(1.0)
                run.measure(name, "asleep_level2")
                record = run.server(name).setdefault("level2", {})
                record["sleep_s"] = round(took, 3)
                record["wake_s"] = round(run.wake(name, reload=False), 3)
                record["note"] = "random weights (vLLM's dummy loader cannot reload them): woken without the reload, not served again"
                run.server(name)["log"] = run.log_facts(name)
                stop_group(run.servers.pop(name), grace_s=STOP_GRACE_S)

            return go

        for name in (LARGE, MEDIUM) if "level2" in steps else ():
            if name in run.servers:
                run.step(f"{name}: level 2 (memory asleep, wake without reload)", 25, level2(name))
    finally:
        run.stop_all()
        summarize(run)
        run.write()
    print(json.dumps({k: run.result.get(k) for k in ("gpu", "summary", "wall_s")}, indent=1, default=str))
    return 0 if all(s.get("ok") for s in run.result["steps"]) else 1


def summarize(run: Run) -> None:
    """The figures to read first: per model awake/asleep memory, wake to first token, cold start; swap p50/p95."""
    out: dict[str, Any] = {}
    for name, s in run.result["servers"].items():
        planned = run.result["plan"].get(name, {})
        row = {
            "cold_start_s": s.get("cold_start_s"),
            "awake_gpu_gib": (s.get("awake") or {}).get("processes_gib"),
            "asleep_level1_gpu_gib": (s.get("asleep_level1") or {}).get("processes_gib"),
            "asleep_level2_gpu_gib": (s.get("asleep_level2") or {}).get("processes_gib"),
            "awake_host_gib": (s.get("awake") or {}).get("host_rss_gib"),
            "asleep_level1_host_gib": (s.get("asleep_level1") or {}).get("host_rss_gib"),
            "planned_awake_gib": (planned.get("memory") or {}).get("footprint_gib"),
            "planned_asleep_gib": (planned.get("swap") or {}).get("asleep_gib"),
            "level1_wake_s_p50": percentile((s.get("level1") or {}).get("wake_s", []), 0.5),
            "level1_wake_to_first_token_s_p50": (s.get("level1") or {}).get("wake_to_first_token_p50_s"),
            "level2_wake_s": (s.get("level2") or {}).get("wake_s"),
            "level2_wake_to_first_token_s_p50": (s.get("level2") or {}).get("wake_to_first_token_p50_s") if isinstance(s.get("level2"), dict) else None,
        }
        out[name] = row
    swap = run.result.get("swap", {})
    out["swap"] = {k: swap.get(k) for k in ("through", "swap_first_token_p50_s", "swap_first_token_p95_s", "never_more_than_one_awake")}
    medium = out.get(MEDIUM, {}).get("level1_wake_to_first_token_s_p50")
    out["target_8b_level1_first_token_within_2s_p50"] = None if medium is None else medium <= 2.0
    run.result["summary"] = out


if __name__ == "__main__":
    sys.exit(main())
