"""Wall time of the whole Pulumi program under the mock engine: dev, cluster and generated stacks.

Each case runs in a fresh interpreter so imports count. Prints a table.

    python benchmarks/program_time.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
from tests.mock_engine import run_program
cfg = json.loads({cfg!r}) if {cfg!r} else None
m = run_program({stack!r}, secrets={{}} if cfg else None, config=cfg)
print(json.dumps({{"seconds": time.perf_counter() - t0, "resources": len(m.resources)}}))
"""


def generated_config(n: int) -> dict[str, str]:
    gpus = [{"index": i, "name": "H100", "memoryGiB": 79.6} for i in range(8)]
    models = [{"name": f"m{i}", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [i % 8], "maxModelLen": 2048, "maxNumSeqs": 4} for i in range(n)]
    return {
        "vllm-stack:target": "docker",
        "vllm-stack:gpus": json.dumps(gpus),
        "vllm-stack:models": json.dumps(models),
    }


def generated_cluster(n: int) -> dict[str, str]:
    models = [{"name": f"m{i}", "model": "Qwen/Qwen3-8B", "maxModelLen": 8192, "replicas": 1 + i % 2} for i in range(n)]
    return {
        "vllm-stack:target": "kubernetes",
        "vllm-stack:kubernetes": json.dumps({"gpu": {"name": "NVIDIA L40S", "memoryGiB": 44.4}}),
        "vllm-stack:models": json.dumps(models),
    }


def run(stack: str, cfg: dict[str, str] | None) -> dict[str, float]:
    code = CHILD.format(root=str(ROOT), cfg=json.dumps(cfg) if cfg else "", stack=stack)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    wall = time.perf_counter() - t0
    inner = json.loads(out.stdout.strip().splitlines()[-1])
    return {"wall": wall, "program": inner["seconds"], "resources": inner["resources"]}


def main() -> None:
    rows = [("dev", run("dev", None), 3)]
    for n in (1, 10, 50):
        rows.append((f"generated, {n} models", run("gen", generated_config(n)), n))
    rows.append(("cluster (kubernetes)", run("cluster", None), 3))
    rows.append(("generated k8s, 50 models", run("gen", generated_cluster(50)), 50))
    print(f"{'case':24} {'models':>6} {'resources':>9} {'wall s (incl. python + imports)':>32} {'program s':>10}")
    for name, r, n in rows:
        print(f"{name:24} {n:6d} {int(r['resources']):9d} {r['wall']:32.3f} {r['program']:10.3f}")
    base = rows[1][1]["wall"]
    per_model = (rows[3][1]["wall"] - base) / 49
    print(f"\nper extra model (1 -> 50 models): {per_model * 1000:.1f} ms   targets: dev <= 1.5 s, <= 20 ms per extra model, cluster <= 3 s")


if __name__ == "__main__":
    main()
