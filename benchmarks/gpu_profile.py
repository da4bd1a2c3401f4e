"""Measure what vLLM spends inside its memory budget, per model and batch shape, on the GPU of this machine.

Each case starts `vllm serve` with random weights (`--load-format dummy`, the architecture's config.json
written locally from the catalog: nothing is downloaded), waits for vLLM's own memory profile
(weights, peak activation, non-torch memory, CUDA-graph estimate, KV cache left), then stops the server by the
process group it started. Cases run one after another so that each profile sees an idle GPU.
The results fit the planner's overhead model (stacks/plan/memory.py; the fitted data lives in benchmarks/results/).

    PYTHONPATH=/path/to/vllm python3 benchmarks/gpu_profile.py --out profile.json [--cases 0-4] [--deadline 540]

Needs an NVIDIA GPU and vLLM importable; serves only on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.processes import stop_group  # noqa: E402

CATALOG = ROOT / "stacks" / "catalog" / "models.json"
GIB = 1024**3

# (catalog model, max_num_seqs, max_num_batched_tokens, extra vLLM args)
CASES: list[tuple[str, int, int, list[str]]] = [
    ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", 1024, 8192, []),
    ("Qwen/Qwen3-8B", 16, 8192, []),
    ("Qwen/Qwen3-8B", 1024, 2048, []),
    ("Qwen/Qwen2.5-3B-Instruct", 256, 8192, []),
    ("meta-llama/Llama-3.1-8B-Instruct", 64, 4096, []),
    ("google/gemma-3-1b-it", 64, 8192, []),
    ("Qwen/Qwen3-30B-A3B", 64, 8192, []),
    ("Qwen/Qwen3-Embedding-0.6B", 64, 8192, ["--runner", "pooling", "--convert", "embed"]),
    ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", 16, 2048, ["--enforce-eager"]),
    ("01-ai/Yi-6B-Chat", 1024, 8192, []),
]

PATTERNS = {
    "weights_gib": re.compile(r"weights memory: ([\d.]+)GiB"),
    "peak_activation_gib": re.compile(r"torch peak memory increase: ([\d.]+)GiB"),
    "non_torch_gib": re.compile(r"non-torch forward increase memory: ([\d.]+)GiB"),
    "available_kv_gib": re.compile(r"Available KV cache memory: (-?[\d.]+) GiB"),
    "cudagraph_util": re.compile(r"current --gpu-memory-utilization=([\d.]+) is equivalent to --gpu-memory-utilization=([\d.]+)"),
    "model_loading_gib": re.compile(r"Model loading took ([\d.]+) GiB"),
}


def cuda_total_bytes() -> int:
    """The GPU's total as CUDA reports it, read in a child so this process holds no CUDA context."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.mem_get_info()[1])"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def model_dir(model: str, base: Path) -> Path:
    entry = json.loads(CATALOG.read_text())[model]
    config = {"torch_dtype": "bfloat16", **entry["config"]}
    folder = base / model.replace("/", "--")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def run_case(model: str, seqs: int, tokens: int, extra: list[str], base: Path, total: int, port: int, limit_s: float) -> dict[str, object]:
    folder = model_dir(model, base)
    gmu = 0.9
    cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(folder), "--load-format", "dummy", "--skip-tokenizer-init"]
    cmd += [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--gpu-memory-utilization",
        str(gmu),
        "--max-model-len",
        str(min(4096, json.loads((folder / "config.json").read_text())["max_position_embeddings"])),
    ]
    cmd += ["--max-num-seqs", str(seqs), "--max-num-batched-tokens", str(tokens), *extra]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "DEBUG", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    result: dict[str, object] = {"model": model, "max_num_seqs": seqs, "max_num_batched_tokens": tokens, "extra": extra, "gmu": gmu}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env)
    tail: list[str] = []
    seen_kv_at: float | None = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = [*tail, line.rstrip()][-40:]
            for key, pattern in PATTERNS.items():
                m = pattern.search(line)
                if m:
                    if key == "cudagraph_util":
                        result["cudagraph_gib"] = round((float(m.group(1)) - float(m.group(2))) * total / GIB, 4)
                    else:
                        result[key] = float(m.group(1))
            if "available_kv_gib" in result and seen_kv_at is None:
                seen_kv_at = time.monotonic()
            if seen_kv_at and ("cudagraph_gib" in result or time.monotonic() - seen_kv_at > 8):
                break
            if time.monotonic() - t0 > limit_s:
                result["error"] = f"no memory profile within {limit_s:.0f} s"
                break
        else:
            result["error"] = f"exited with {proc.wait()}"
    finally:
        stop_group(proc, 30)
    result["seconds"] = round(time.monotonic() - t0, 1)
    if "available_kv_gib" in result and "cudagraph_gib" not in result:
        result["cudagraph_gib"] = 0.0
    if "error" in result or "available_kv_gib" not in result:
        result["tail"] = tail
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cases", default=f"0-{len(CASES) - 1}", help="index range, e.g. 0-4")
    ap.add_argument("--deadline", type=float, default=540, help="seconds for all cases together")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vllm-stack-profile"))
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.cases.split("-"))
    total = cuda_total_bytes()
    end = time.monotonic() + args.deadline
    results = []
    for i in range(lo, hi + 1):
        left = end - time.monotonic()
        if left < 45:
            print(f"case {i}: skipped, {left:.0f} s left", flush=True)
            break
        model, seqs, tokens, extra = CASES[i]
        r = run_case(model, seqs, tokens, extra, args.workdir, total, 18000 + i, min(left - 15, 240))
        r["cuda_total_gib"] = round(total / GIB, 4)
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "tail"}), flush=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
