"""Instructions nginx spends per gateway request, counted by callgrind: deterministic where CPU time on a shared box is not.

Renders the gateway (one worker) for a one-model stack in front of the fake vLLM, runs nginx under
``valgrind --tool=callgrind`` in one process (``master_process off``), sends warm-up requests, zeroes the counters
(``callgrind_control --zero``), sends ``--requests`` non-streaming completions over 8 keep-alive connections, dumps the
counters and prints instructions per request. ``--endpoint`` adds a model served by an external endpoint to the stack
(requests still for the vLLM model); ``--to-endpoint`` sends them to that endpoint model instead (both nginx hops).
Run it from another checkout (a copy of this file there) to compare two versions of the gateway.

    python benchmarks/gateway_instructions.py [--requests 2000] [--endpoint | --to-endpoint] [--usage]

127.0.0.1 only; what it starts it stops by pid.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stacks.config import parse  # noqa: E402
from stacks.plan import plan  # noqa: E402
from tests.conftest import docker_raw  # noqa: E402
from tests.gateway_harness import NGINX, free_port, render_into, start_backend, stop  # noqa: E402
from tests.loadgen import request_bytes, run_load  # noqa: E402

KEY = "sk-bench"


def totals(dump: Path) -> int:
    """The ``summary``/``totals`` line of a callgrind dump: instructions (the first event, Ir)."""
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"no totals in {dump}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--endpoint", action="store_true", help="the stack also serves a model from an external endpoint")
    ap.add_argument("--to-endpoint", action="store_true", help="the requests ask for that endpoint model")
    ap.add_argument("--usage", action="store_true", help="gateway.tokenUsage: true")
    args = ap.parse_args()
    for program in ("valgrind", "callgrind_control"):
        if not shutil.which(program):
            sys.exit(f"{program} is not installed (Debian: valgrind)")
    endpoint = args.endpoint or args.to_endpoint
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        try:
            backend = free_port()
            procs.append(start_backend("alpha", ["alpha"], backend))
            raw: dict[str, Any] = docker_raw(
                models=[{"name": "alpha", "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpus": [0], "maxModelLen": 1024}],
                gateway={"tokenUsage": args.usage},
            )
            if endpoint:
                ep = free_port()
                procs.append(start_backend("endpoint", ["endpoint-model"], ep))
                raw["endpoints"] = [{"name": "ep", "url": f"http://127.0.0.1:{ep}/v1", "models": [{"name": "remote", "model": "endpoint-model"}]}]
            p = plan(parse(raw))
            port = free_port()
            conf = render_into(work, p, port, {p.models[0].service: f"127.0.0.1:{backend}"}, [KEY], "vk")
            out = work / "callgrind.out"
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", NGINX, "-p", str(work), "-c", str(conf)]
            nginx = subprocess.Popen([*cmd, "-g", "daemon off; master_process off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append(nginx)
            payload = [request_bytes(port, "/v1/completions", {"model": "remote" if args.to_endpoint else "alpha", "prompt": "hi"}, KEY)]
            deadline = time.monotonic() + 120
            while True:  # valgrind starts nginx slowly
                try:
                    if run_load(port, payload, 1, 1).non_2xx == 0:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or nginx.poll() is not None:
                    raise RuntimeError("nginx under valgrind did not answer")
                time.sleep(0.5)
            assert run_load(port, payload, args.warmup, 8).non_2xx == 0
            subprocess.run(["callgrind_control", "--zero", str(nginx.pid)], check=True, capture_output=True, timeout=60)
            res = run_load(port, payload, args.requests, 8)
            assert res.non_2xx == 0, res.statuses
            subprocess.run(["callgrind_control", "--dump", str(nginx.pid)], check=True, capture_output=True, timeout=60)
            dumps = sorted(work.glob("callgrind.out*"), key=lambda f: f.stat().st_mtime)
            dumped = [f for f in dumps if re.search(r"\.\d+$", f.name)] or dumps
            per_request = totals(dumped[-1]) / args.requests
        finally:
            for proc in reversed(procs):
                stop(proc)
    result = {"instructions_per_request": round(per_request), "requests": args.requests, "endpoint": endpoint, "to_endpoint": args.to_endpoint}
    print(json.dumps(result | {"usage": args.usage, "nginx": NGINX}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
