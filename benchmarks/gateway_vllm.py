"""The gateway in front of a real vLLM: does what the fake backend imitates hold against the real thing?

Plans ``benchmarks/stacks/gateway-vllm.yaml`` for the GPU found here, starts its vLLM server as the plan launches it
(random weights from the catalog's config.json, nothing downloaded, 127.0.0.1), renders the gateway for it and runs
it with a real nginx (GATEWAY_NGINX / GATEWAY_NJS_MODULE / GATEWAY_JS_ENGINE, as the gateway tests). Then, through
the gateway: a plain completion, streams with and without ``stream_options.include_usage``, path routing and an
unknown model. It checks that the access log's token usage is vLLM's own, that the request id the gateway made is
the one vLLM served under, and that each stream's events arrive one by one; and it times the first token of
streams sent directly and through the gateway, interleaved.

    PYTHONPATH=/path/to/vllm GATEWAY_NGINX=... GATEWAY_NJS_MODULE=... GATEWAY_JS_ENGINE=qjs \\
        python3 benchmarks/gateway_vllm.py [--out result.json]

Exit status 1 when a check fails. What it starts it stops: nginx by its pid, vLLM by its process group.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.calibrate import gpu_facts, planned, start  # noqa: E402
from benchmarks.processes import stop_group  # noqa: E402
from tests.gateway_harness import JS_ENGINE, NGINX, access_log_line, free_port, render_into, start_nginx, stop  # noqa: E402

STACK = ROOT / "benchmarks" / "stacks" / "gateway-vllm.yaml"
KEY = "sk-gpu-check"
PROMPT = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203]  # token ids: the server has no tokenizer


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, list[float]]:
    """(status, headers, body, arrival time of each read) of one POST; reads a stream as it comes."""
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            reads, stamps = [], []
            while chunk := r.read1(65536):
                reads.append(chunk)
                stamps.append(time.perf_counter() - t0)
            return r.status, dict(r.headers), b"".join(reads), stamps
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read(), []


def events(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.decode().split("\n") if line.startswith("data: {")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--server-timeout", type=float, default=400)
    ap.add_argument("--streams", type=int, default=60, help="timed streams per target")
    args = ap.parse_args()
    gpus, version = gpu_facts()
    name = gpus[0][0]
    p = planned(STACK, gpus[:1], version)
    m = p.models[0]
    work = Path(tempfile.mkdtemp(prefix="vllm-stack-gateway-"))
    port = free_port()
    checks: dict[str, Any] = {}
    result: dict[str, Any] = {"gpu": name, "vllm": version, "nginx": NGINX, "js_engine": JS_ENGINE, "checks": checks}
    server, seen = start(m, work, port, work / "vllm.log", args.server_timeout)
    nginx: subprocess.Popen[bytes] | None = None
    try:
        if "error" in seen:
            print("\n".join(seen.get("tail", [])))
            result["error"] = seen["error"]
            return 1
        gw_port = free_port()
        conf = render_into(work / "gw", p, gw_port, {m.service: f"127.0.0.1:{port}"}, [f"team-a:{KEY}"], None)
        nginx = start_nginx(conf, gw_port)
        gw, direct = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {KEY}"}
        log = conf.parent / "access.log"

        status, headers, body, _ = post(gw + "/v1/completions", {"model": "tiny", "prompt": PROMPT, "max_tokens": 16, "ignore_eos": True}, auth)
        answer = json.loads(body)
        rid = headers.get("X-Request-ID", "")
        line = access_log_line(log, rid)
        checks["plain: usage logged is vLLM's"] = (line["prompt_tokens"], line["completion_tokens"]) == (
            answer["usage"]["prompt_tokens"],
            answer["usage"]["completion_tokens"],
        )
        checks["plain: vLLM served under the gateway's request id"] = status == 200 and bool(rid) and rid in answer["id"]
        checks["plain: log names model and key"] = (line["model"], line["key"], line["status"]) == ("tiny", "team-a", 200)
        result["plain_tail_after_usage_bytes"] = len(body) - body.rindex(b'"usage"')

        stream = {"model": "tiny", "prompt": PROMPT, "max_tokens": 24, "ignore_eos": True, "stream": True}
        status, headers, body, stamps = post(gw + "/v1/completions", {**stream, "stream_options": {"include_usage": True}}, auth)
        evs = events(body)
        usage = evs[-1].get("usage") or {}
        line = access_log_line(log, headers.get("X-Request-ID", ""))
        checks["stream asking for usage: usage logged is vLLM's"] = (line["prompt_tokens"], line["completion_tokens"]) == (
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
        )
        checks["stream: one event per token, passed as they come"] = len(evs) == 24 + 1 and len(stamps) > 2
        status, headers, body, _ = post(gw + "/v1/completions", stream, auth)
        line = access_log_line(log, headers.get("X-Request-ID", ""))
        checks["stream not asking: no usage, none logged"] = status == 200 and line["completion_tokens"] is None and "usage" not in body.decode()

        status, headers, body, _ = post(gw + "/tinyllama/v1/completions", {"model": "tiny", "prompt": PROMPT, "max_tokens": 2}, auth)
        # vLLM names its first served name in answers, whichever alias was asked for
        checks["path routing"] = status == 200 and json.loads(body)["model"] in m.served_names
        status, headers, body, _ = post(gw + "/v1/completions", {"model": "nope", "prompt": PROMPT}, auth)
        checks["unknown model: the gateway's 404"] = status == 404 and json.loads(body)["error"]["code"] == "model_not_found"

        # first token, direct and through the gateway, interleaved
        ttft: dict[str, list[float]] = {"direct": [], "gateway": []}
        timed = {"model": "tiny", "prompt": PROMPT, "max_tokens": 4, "stream": True}
        for _ in range(args.streams):
            for target, url, hdrs in (("direct", direct, {}), ("gateway", gw, auth)):
                _, _, _, stamps = post(url + "/v1/completions", timed, hdrs)
                ttft[target].append(stamps[0])
        result["ttft_p50_ms"] = {t: round(statistics.median(v) * 1000, 3) for t, v in ttft.items()}
        result["ttft_added_p50_ms"] = round((statistics.median(ttft["gateway"]) - statistics.median(ttft["direct"])) * 1000, 3)
    finally:
        if nginx is not None:
            stop(nginx)
        stop_group(server)
    for check, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {check}")
    print(json.dumps({k: v for k, v in result.items() if k != "checks"}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if checks and all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
