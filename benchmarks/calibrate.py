"""Does the plan hold on this machine's GPUs? Plan a stack for them, start its vLLM servers in plan order, compare.

The stack file's models are planned for the GPUs found here (every CUDA device in PCI order, each its total as CUDA
reports it) and the vLLM release importable here; each model keeps the ``gpus`` its stack file gives (``[0]`` when
it gives none), so a tensor-parallel server spans several. Each server starts as the plan launches it (same
arguments: fraction, exact KV bytes, batch shape), with random weights (`--load-format dummy`, the architecture's
config.json written locally from the catalog: nothing is downloaded) and on 127.0.0.1, on its GPUs only
(CUDA_VISIBLE_DEVICES), NCCL's NVLink multicast off (NCCL_NVLS_ENABLE=0) where it spans GPUs. Each must answer one
completion. Printed per server: planned vs vLLM's weights (per rank), KV tokens, and the memory it really took on
each of its GPUs (NVML, before and after its start) against its planned footprint. With ``--profile`` each server is
first started without its KV bytes, so that vLLM profiles its memory and logs, per rank, weights, peak activation and
non-torch memory; it is stopped as soon as every rank has. Servers are stopped by the process groups started here.

    PYTHONPATH=/path/to/vllm python3 benchmarks/calibrate.py benchmarks/stacks/h100-tight.yaml [--out result.json] [--profile]

Exit status 1 when a planned server fails to start or serve, when its KV tokens differ from the plan, or when it
takes more memory on one of its GPUs than planned beyond the plan's safety margin. The JSON result is written after
every server and when a step fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_profile import PATTERNS as PROFILE_PATTERNS  # noqa: E402
from benchmarks.processes import stop_group, wait_healthy  # noqa: E402
from stacks.catalog import config_json  # noqa: E402
from stacks.config import parse, read_stack_file  # noqa: E402
from stacks.errors import ConfigError  # noqa: E402
from stacks.plan import GIB, ModelPlan, StackPlan, plan  # noqa: E402
from stacks.plan.launch import KV_CACHE_FLAG  # noqa: E402
from stacks.plan.memory import SAFETY_FRACTION  # noqa: E402

PATTERNS = {
    "model_loading_gib": re.compile(r"Model loading took ([\d.]+) GiB"),
    "kv_tokens": re.compile(r"GPU KV cache size: ([\d,]+) tokens"),
    "graphs_gib": re.compile(r"Graph capturing finished in \d+ secs, took (-?[\d.]+) GiB"),
}
PER_RANK = ("model_loading_gib", "graphs_gib")
"""Logged by every rank of a server spanning GPUs (GPUModelRunner.load_model, capture_model, vLLM 0.26)."""
PROFILE_KEYS = ("weights_gib", "peak_activation_gib", "non_torch_gib")
"""Of vLLM's memory profile, logged by every rank at DEBUG (MemoryProfilingResult.__repr__, vllm/utils/mem_utils.py 0.26)."""
PROCESS = re.compile(r"^\((?P<name>[A-Za-z]+(?:_[A-Z]+\d+)*) pid=\d+\) ")
"""The prefix vLLM puts on a worker's lines (``(Worker_TP1 pid=123) ``: vllm/utils/system_utils.py _add_prefix, the name
from WorkerProc's ranks in vllm/v1/executor/multiproc_executor.py, 0.26); lines without it are the main process's."""
PCI_ORDER = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
"""CUDA numbers the devices as NVML does (by PCI bus), so an index means the same GPU to both."""
MULTI_GPU_ENV = {"NCCL_NVLS_ENABLE": "0"}
"""A server spanning GPUs keeps NCCL's NVLink multicast (NVLS) off: the lent multi-GPU machines require it."""


def gpu_facts() -> tuple[list[tuple[str, int]], str]:
    """([(name, CUDA total bytes)] of every device, vLLM version), read in a child so this process holds no CUDA context."""
    code = (
        "import torch, vllm\n"
        "for i in range(torch.cuda.device_count()):\n"
        "    print(torch.cuda.get_device_name(i), torch.cuda.mem_get_info(i)[1], sep='\\t')\n"
        "print(vllm.__version__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, **PCI_ORDER}, timeout=300)
    return parse_facts(done.stdout)


def parse_facts(text: str) -> tuple[list[tuple[str, int]], str]:
    *devices, version = [line for line in text.splitlines() if line.strip()]
    return [(name, int(total)) for name, total in (line.rsplit("\t", 1) for line in devices)], version.strip()


def used_bytes(index: int = 0) -> int:
    import pynvml  # nvidia-ml-py: no CUDA context

    pynvml.nvmlInit()
    try:
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)
    finally:
        pynvml.nvmlShutdown()


def planned(stack_file: Path, gpus: list[tuple[str, int]], version: str) -> StackPlan:
    raw = read_stack_file(stack_file)
    inventory = [{"index": i, "name": name, "memoryGiB": int(total / GIB * 100) / 100} for i, (name, total) in enumerate(gpus)]
    raw |= {"target": "docker", "gpus": inventory}
    raw["image"] = {**raw.get("image", {}), "base": f"vllm/vllm-openai:v{version}"}
    for m in raw["models"]:
        m.setdefault("gpus", [0])
    return plan(parse(raw))


def server_env(m: ModelPlan) -> dict[str, str]:
    """What a server's process gets besides this one's environment: its GPUs only, no downloads."""
    env = {**m.env, **PCI_ORDER, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ",".join(map(str, m.gpus))}
    return env | (MULTI_GPU_ENV if len(m.gpus) > 1 else {})


def by_process(text: str, pattern: re.Pattern[str]) -> dict[str, float]:
    """The last value ``pattern`` finds on each process's lines (``main`` for lines without a worker prefix)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        found = pattern.search(line)
        if found:
            prefix = PROCESS.match(line)
            out[prefix.group("name") if prefix else "main"] = float(found.group(1).replace(",", ""))
    return out


def command(m: ModelPlan, folder: Path, port: int, *, tokenizer: bool = False, dummy: bool = True) -> list[str]:
    """The plan's ``vllm serve`` arguments on the local ``folder`` at 127.0.0.1:``port``: random weights unless ``dummy``
    is off, no tokenizer unless ``tokenizer`` is on (chat, tool calls and the Messages API need one)."""
    args = list(m.args[1:])  # the plan's arguments, the model id replaced by the local folder
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    weights = ["--load-format", "dummy"] if dummy else []
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(folder), *args, *weights, *([] if tokenizer else ["--skip-tokenizer-init"])]


def catalog_config(m: ModelPlan) -> dict[str, Any]:
    """The catalog's config.json of ``m``'s model, bfloat16 unless it names its dtype: what its folder is served from."""
    config = config_json(m.model)
    assert config is not None, f"{m.model} is not in the catalog"
    return {"torch_dtype": "bfloat16", **config}


def model_folder(m: ModelPlan, workdir: Path) -> Path:
    folder = workdir / m.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(catalog_config(m)))
    return folder


def without_kv_bytes(cmd: list[str]) -> list[str]:
    """The command with the plan's KV bytes taken out: vLLM then profiles its memory and sizes KV from the fraction."""
    if KV_CACHE_FLAG not in cmd:
        return list(cmd)
    i = cmd.index(KV_CACHE_FLAG)
    return cmd[:i] + cmd[i + 2 :]


def profile(m: ModelPlan, workdir: Path, port: int, log: Path, limit_s: float) -> dict[str, Any]:
    """vLLM's own memory profile of every rank (DEBUG log), the server stopped as soon as each rank has logged it."""
    cmd = without_kv_bytes(command(m, model_folder(m, workdir), port))
    env = {**os.environ, **server_env(m), "VLLM_LOGGING_LEVEL": "DEBUG"}
    seen: dict[str, Any] = {}
    t0 = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while True:
            ranks = by_process(log.read_text(errors="replace"), PROFILE_PATTERNS["non_torch_gib"])
            if len(ranks) >= len(m.gpus):
                break
            if proc.poll() is not None:
                seen["error"] = f"exited with {proc.returncode} before every rank profiled"
                break
            if time.monotonic() - t0 > limit_s:
                seen["error"] = f"no memory profile of every rank within {limit_s:.0f} s"
                break
            time.sleep(2)
    finally:
        stop_group(proc, 30)
    text = log.read_text(errors="replace")
    seen["ranks"] = {key: by_process(text, PROFILE_PATTERNS[key]) for key in PROFILE_KEYS}
    seen["seconds"] = round(time.monotonic() - t0, 1)
    if "error" in seen:
        seen["tail"] = text.splitlines()[-25:]
    return seen


def start(m: ModelPlan, workdir: Path, port: int, log: Path, limit_s: float) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    folder = model_folder(m, workdir)
    env = {**os.environ, **server_env(m)}
    with log.open("wb") as out:
        proc = subprocess.Popen(command(m, folder, port), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    seen: dict[str, Any] = {}
    if error := wait_healthy(proc, port, limit_s):
        seen["error"] = error
    text = log.read_text(errors="replace")
    for key, pattern in PATTERNS.items():
        found = pattern.findall(text)
        if found:
            seen[key] = int(found[-1].replace(",", "")) if key == "kv_tokens" else float(found[-1])
    seen["ranks"] = {key: by_process(text, PATTERNS[key]) for key in PER_RANK}
    if "error" in seen:
        seen["tail"] = text.splitlines()[-25:]
    return proc, seen


def serve_once(m: ModelPlan, port: int) -> str | None:
    body = json.dumps({"model": m.name, "prompt": [1, 2, 3, 4], "max_tokens": 4}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
        return None if answer.get("choices") else f"no choices: {answer}"
    except OSError as err:
        return f"completion failed: {err}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("stack", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vllm-stack-calibrate"))
    ap.add_argument("--server-timeout", type=float, default=300)
    ap.add_argument("--profile", action="store_true", help="first start each server without its KV bytes for vLLM's memory profile per rank")
    args = ap.parse_args()
    gpus, version = gpu_facts()
    result: dict[str, Any] = {
        "stack": args.stack.name,
        "gpu": gpus[0][0],
        "cuda_total_gib": gpus[0][1] / GIB,
        "gpus": [{"index": i, "name": n, "cuda_total_gib": round(t / GIB, 3)} for i, (n, t) in enumerate(gpus)],
        "vllm": version,
        "servers": [],
    }

    def write() -> None:
        if args.out:
            args.out.write_text(json.dumps(result, indent=1) + "\n")

    try:
        p = planned(args.stack, gpus, version)
    except ConfigError as err:
        result["error"] = str(err)
        write()
        print(err)
        return 1
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"{len(gpus)} x {gpus[0][0]}: CUDA total {gpus[0][1] / GIB:.2f} GiB; vLLM {version}; exact KV: {p.models[0].memory.exact_kv}")
    for note in p.notes:
        print("  " + note)
    procs: list[subprocess.Popen[bytes]] = []
    failed = False
    try:
        for i, m in enumerate(p.models):
            port = 18100 + i
            row: dict[str, Any] = {"model": m.name, "gpus": m.gpus, "fraction": m.memory.fraction, "planned": dataclass_dict(m)}
            result["servers"].append(row)
            if args.profile:
                row["profile"] = profile(m, args.workdir, port, args.workdir / f"{m.name}.profile.log", args.server_timeout)
                write()
            before = {g: used_bytes(g) for g in m.gpus}
            t0 = time.monotonic()
            proc, seen = start(m, args.workdir, port, args.workdir / f"{m.name}.log", args.server_timeout)
            procs.append(proc)
            seen["start_seconds"] = round(time.monotonic() - t0, 1)
            if "error" not in seen and (failure := serve_once(m, port)):
                seen["error"] = failure
            took = {g: (used_bytes(g) - before[g]) / GIB for g in m.gpus}
            row |= {"vllm": seen, "took_gib": round(max(took.values()), 3), "took_gib_by_gpu": {str(g): round(t, 3) for g, t in took.items()}}
            row["problems"] = problems = check(m, seen, took, SAFETY_FRACTION * min(p.gpus[g].memory_gib for g in m.gpus))
            failed |= bool(problems)
            write()
            loading = seen.get("ranks", {}).get("model_loading_gib") or {"main": seen.get("model_loading_gib", "?")}
            print(
                f"{m.name:14} GPUs {','.join(map(str, m.gpus)):5} fraction {m.memory.fraction:.3f}  weights {m.memory.weights_gib:6.2f} / "
                f"{' '.join(f'{k}={v}' for k, v in sorted(loading.items()))} GiB  KV tokens {m.memory.kv_tokens:>9,} / {seen.get('kv_tokens', '?')}  "
                f"footprint {m.memory.footprint_gib:6.2f} / took {' '.join(f'{t:.2f}' for t in took.values())} GiB  "
                f"graphs {seen.get('graphs_gib', '?')} GiB  start {seen['start_seconds']} s  {'; '.join(problems) or 'ok'}",
                flush=True,
            )
            if args.profile:
                ranks = row["profile"]["ranks"]
                print("  vLLM's profile per rank (GiB): " + json.dumps(ranks, sort_keys=True))
            if "error" in seen:
                print("\n".join(seen.get("tail", [])))
                break
        in_use = {g.index: used_bytes(g.index) / GIB for g in p.gpus}
        result["in_use_gib_by_gpu"] = {str(g): round(v, 3) for g, v in in_use.items()}
        print("GPUs in use with every server running: " + ", ".join(f"GPU {g} {v:.2f} GiB" for g, v in in_use.items()))
    except Exception as err:  # every step's failure is recorded; the servers are stopped below
        result["error"] = f"{type(err).__name__}: {err}"
        failed = True
        print(result["error"])
    finally:
        for proc in reversed(procs):
            stop_group(proc)
        write()
    return 1 if failed else 0


def check(m: ModelPlan, seen: dict[str, Any], took: dict[int, float], margin: float) -> list[str]:
    """What the run says against the plan: a failure, KV tokens other than planned, a GPU holding more than planned."""
    problems = []
    if "error" in seen:
        problems.append(seen["error"])
    if seen.get("kv_tokens") != m.memory.kv_tokens:
        problems.append(f"KV tokens {seen.get('kv_tokens')} != planned {m.memory.kv_tokens}")
    for g, t in took.items():
        if t > m.memory.footprint_gib + margin:
            problems.append(f"took {t:.2f} GiB on GPU {g}, planned {m.memory.footprint_gib:.2f} + margin {margin:.2f}")
    return problems


def dataclass_dict(m: ModelPlan) -> dict[str, Any]:
    from dataclasses import asdict

    return {"args": m.args, "memory": asdict(m.memory), "max_model_len": m.max_model_len, "max_num_seqs": m.max_num_seqs}


if __name__ == "__main__":
    sys.exit(main())
