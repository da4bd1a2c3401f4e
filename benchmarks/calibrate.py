"""Does the plan hold on this machine's GPU? Plan a stack for it, start its vLLM servers in plan order, compare.

The stack file's models are planned for the GPU found here (index 0, its total as CUDA reports it) and the vLLM
release importable here. Each server starts as the plan launches it (same arguments: fraction, exact KV bytes,
batch shape), with random weights (`--load-format dummy`, the architecture's config.json written locally from
the catalog: nothing is downloaded) and on 127.0.0.1. Each must answer one completion. Printed per server:
planned vs vLLM's weights, KV tokens, and the memory it really took on the GPU (NVML, before and after its start)
against its planned footprint. Servers are stopped by the process groups started here.

    PYTHONPATH=/path/to/vllm python3 benchmarks/calibrate.py benchmarks/stacks/h100-tight.yaml [--out result.json]

Exit status 1 when a planned server fails to start or serve, when its KV tokens differ from the plan, or when it
takes more GPU memory than planned beyond the plan's safety margin.
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

from benchmarks.processes import stop_group  # noqa: E402
from stacks.catalog import config_json  # noqa: E402
from stacks.config import parse, read_stack_file  # noqa: E402
from stacks.plan import GIB, ModelPlan, StackPlan, plan  # noqa: E402
from stacks.plan.memory import SAFETY_FRACTION  # noqa: E402

PATTERNS = {
    "model_loading_gib": re.compile(r"Model loading took ([\d.]+) GiB"),
    "kv_tokens": re.compile(r"GPU KV cache size: ([\d,]+) tokens"),
    "graphs_gib": re.compile(r"Graph capturing finished in \d+ secs, took (-?[\d.]+) GiB"),
}


def gpu_facts() -> tuple[str, int, str]:
    """(name, CUDA total bytes, vLLM version), read in a child so this process holds no CUDA context."""
    code = "import torch, vllm; print(torch.cuda.get_device_name(0)); print(torch.cuda.mem_get_info()[1]); print(vllm.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    return out[0].strip(), int(out[1]), out[2].strip()


def used_bytes() -> int:
    import pynvml  # nvidia-ml-py: no CUDA context

    pynvml.nvmlInit()
    try:
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used)
    finally:
        pynvml.nvmlShutdown()


def planned(stack_file: Path, gpu_name: str, total: int, version: str) -> StackPlan:
    raw = read_stack_file(stack_file)
    raw |= {"target": "docker", "gpus": [{"index": 0, "name": gpu_name, "memoryGiB": int(total / GIB * 100) / 100}]}
    raw["image"] = {**raw.get("image", {}), "base": f"vllm/vllm-openai:v{version}"}
    for m in raw["models"]:
        m["gpus"] = [0]
    return plan(parse(raw))


def command(m: ModelPlan, folder: Path, port: int) -> list[str]:
    args = list(m.args[1:])  # the plan's arguments, the model id replaced by the local folder
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(folder), *args, "--load-format", "dummy", "--skip-tokenizer-init"]


def start(m: ModelPlan, workdir: Path, port: int, log: Path, limit_s: float) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    folder = workdir / m.name
    folder.mkdir(parents=True, exist_ok=True)
    config = config_json(m.model)
    assert config is not None, f"{m.model} is not in the catalog"
    (folder / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16", **config}))
    env = {**os.environ, **m.env, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ",".join(map(str, m.gpus))}
    with log.open("wb") as out:
        proc = subprocess.Popen(command(m, folder, port), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    seen: dict[str, Any] = {}
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            seen["error"] = f"exited with {proc.returncode}"
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(2)
    else:
        seen["error"] = f"not healthy within {limit_s:.0f} s"
    text = log.read_text(errors="replace")
    for key, pattern in PATTERNS.items():
        found = pattern.findall(text)
        if found:
            seen[key] = int(found[-1].replace(",", "")) if key == "kv_tokens" else float(found[-1])
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
    args = ap.parse_args()
    name, total, version = gpu_facts()
    p = planned(args.stack, name, total, version)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"{name}: CUDA total {total / GIB:.2f} GiB; vLLM {version}; plan for {p.gpus[0].memory_gib} GiB (exact KV: {p.models[0].memory.exact_kv})")
    for note in p.notes:
        print("  " + note)
    margin = SAFETY_FRACTION * p.gpus[0].memory_gib
    procs: list[subprocess.Popen[bytes]] = []
    rows: list[dict[str, Any]] = []
    failed = False
    try:
        for i, m in enumerate(p.models):
            before = used_bytes()
            t0 = time.monotonic()
            proc, seen = start(m, args.workdir, 18100 + i, args.workdir / f"{m.name}.log", args.server_timeout)
            procs.append(proc)
            seen["start_seconds"] = round(time.monotonic() - t0, 1)
            if "error" not in seen and (err := serve_once(m, 18100 + i)):
                seen["error"] = err
            took = (used_bytes() - before) / GIB
            row = {"model": m.name, "fraction": m.memory.fraction, "planned": dataclass_dict(m), "vllm": seen, "took_gib": round(took, 3)}
            rows.append(row)
            problems = []
            if "error" in seen:
                problems.append(seen["error"])
            if seen.get("kv_tokens") != m.memory.kv_tokens:
                problems.append(f"KV tokens {seen.get('kv_tokens')} != planned {m.memory.kv_tokens}")
            if took > m.memory.footprint_gib + margin:
                problems.append(f"took {took:.2f} GiB, planned {m.memory.footprint_gib:.2f} + margin {margin:.2f}")
            row["problems"] = problems
            failed |= bool(problems)
            if args.out:
                args.out.write_text(json.dumps({"gpu": name, "cuda_total_gib": total / GIB, "vllm": version, "servers": rows}, indent=1) + "\n")
            print(
                f"{m.name:14} fraction {m.memory.fraction:.3f}  weights {m.memory.weights_gib:6.2f} / {seen.get('model_loading_gib', '?')} GiB  "
                f"KV tokens {m.memory.kv_tokens:>9,} / {seen.get('kv_tokens', '?')}  footprint {m.memory.footprint_gib:6.2f} / took {took:6.2f} GiB  "
                f"graphs {seen.get('graphs_gib', '?')} GiB  start {seen['start_seconds']} s  {'; '.join(problems) or 'ok'}",
                flush=True,
            )
            if "error" in seen:
                print("\n".join(seen.get("tail", [])))
                break
        print(f"GPU in use with every server running: {used_bytes() / GIB:.2f} of {total / GIB:.2f} GiB")
    finally:
        for proc in reversed(procs):
            stop_group(proc)
    if args.out:
        args.out.write_text(json.dumps({"gpu": name, "cuda_total_gib": total / GIB, "vllm": version, "servers": rows}, indent=1) + "\n")
    return 1 if failed else 0


def dataclass_dict(m: ModelPlan) -> dict[str, Any]:
    from dataclasses import asdict

    return {"args": m.args, "memory": asdict(m.memory), "max_model_len": m.max_model_len, "max_num_seqs": m.max_num_seqs}


if __name__ == "__main__":
    sys.exit(main())
