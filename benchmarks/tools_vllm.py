"""Open WebUI's browser chat against a real vLLM: the model with a tool-call parser takes it, the one without refuses it.

Plans ``benchmarks/stacks/tools-vllm.yaml`` for the GPU found here and starts its two vLLM 0.26 servers as the plan
launches them (tool-calling flags included), each on a local folder with the catalog's config.json, random weights
and the made-up tokenizer and chat template of benchmarks/local_model.py (a tool parser needs a tokenizer; nothing is
downloaded). The rendered gateway runs in front on a real nginx (GATEWAY_NGINX / GATEWAY_NJS_MODULE, as the gateway
tests). Then the request Open WebUI 0.12.4 sends for a browser chat (tests/data/open-webui-0.12.4-chat.json: its 36
built-in tools, no tool_choice, streamed), directly and through the gateway:

- the model with a parser (Qwen2.5, hermes) answers 200 and streams chat chunks;
- the model without (TinyLlama) answers vLLM's 400, byte for byte the body the test suite's stand-in sends;
- the same chat without its tools is answered by both.

    PYTHONPATH=/tmp/site GATEWAY_NGINX=... GATEWAY_NJS_MODULE=... python3 benchmarks/tools_vllm.py --out result.json

Streams are read until their first chunks, then closed (vLLM stops the request). A JSON result is written even when a
step fails; each failure is recorded and the rest still run. What it starts it stops: nginx by its pid, each vLLM by
its process group. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.calibrate import catalog_config, gpu_facts, planned  # noqa: E402
from benchmarks.calibrate import command as vllm_command  # noqa: E402
from benchmarks.local_model import write_model_dir  # noqa: E402
from benchmarks.processes import stop_group, wait_healthy  # noqa: E402
from stacks.plan import ModelPlan, StackPlan  # noqa: E402
from tests.fake_vllm import AUTO_TOOLS_REFUSED, vllm_error_body  # noqa: E402
from tests.gateway_harness import NGINX, free_port, render_into, start_nginx, stop  # noqa: E402

STACK = ROOT / "benchmarks" / "stacks" / "tools-vllm.yaml"
CHAT = ROOT / "tests" / "data" / "open-webui-0.12.4-chat.json"
KEY = "sk-tools-check"
PARSER_TOKENS = {"hermes": {"<tool_call>": 151657, "</tool_call>": 151658}}
"""The markers the parser reads, at the ids the family's tokenizer has them (Qwen2.5's tokenizer.json)."""
FIRST_CHUNKS = 3
"""Stream events read before the stream is closed."""
SERVER_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_USE_FLASHINFER_SAMPLER": "0"}
"""No downloads; PyTorch's sampler instead of FlashInfer's (about 90 s of kernel compilation at the first start on a
machine, and sampling is not what is checked)."""


def command(m: ModelPlan, folder: Path, port: int) -> list[str]:
    """The plan's ``vllm serve`` arguments on ``folder`` at 127.0.0.1:``port``, random weights; the tokenizer is kept."""
    return vllm_command(m, folder, port, tokenizer=True)


def model_folder(m: ModelPlan, workdir: Path) -> Path:
    return write_model_dir(workdir / m.name, catalog_config(m), PARSER_TOKENS.get(m.tool_call_parser or "", {}))


def launch(m: ModelPlan, workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    folder = model_folder(m, workdir)
    log = workdir / f"{m.name}.log"
    env = {**os.environ, **m.env, **SERVER_ENV, "CUDA_VISIBLE_DEVICES": ",".join(map(str, m.gpus))}
    with log.open("wb") as out:
        proc = subprocess.Popen(command(m, folder, port), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc, log


def server_ready(proc: subprocess.Popen[bytes], port: int, log: Path, deadline: float) -> dict[str, Any]:
    """``{"ready_after_s": ...}`` once /health answers, else ``{"error": ..., "tail": [...]}``."""
    t0 = time.monotonic()
    if error := wait_healthy(proc, port, max(0.0, deadline - t0)):
        return {"error": error, "tail": log.read_text(errors="replace").splitlines()[-25:]}
    return {"ready_after_s": round(time.monotonic() - t0, 1)}


def send(url: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """One POST: status, content type, the whole body of an error or plain answer, the first events of a stream."""
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            out: dict[str, Any] = {"status": r.status, "content_type": r.headers.get("Content-Type", "")}
            if not body.get("stream"):
                out["body"] = r.read().decode()
                return out
            events: list[Any] = []
            while len(events) < FIRST_CHUNKS:
                line = r.readline()
                if not line:
                    break
                if line.startswith(b"data: {"):
                    events.append(json.loads(line[6:]))
            out["events"] = events
            return out
    except urllib.error.HTTPError as err:
        return {"status": err.code, "content_type": err.headers.get("Content-Type", ""), "body": err.read().decode()}
    except OSError as err:
        return {"error": repr(err)}


def run_checks(p: StackPlan, direct: dict[str, str], gateway: str, chat: dict[str, Any]) -> tuple[dict[str, bool], dict[str, Any]]:
    """The checks against servers at ``direct`` (served name -> base URL) and the gateway; (checks, what came back)."""
    checks: dict[str, bool] = {}
    seen: dict[str, Any] = {}
    refused = vllm_error_body(AUTO_TOOLS_REFUSED).decode()
    auth = {"Authorization": f"Bearer {KEY}"}
    plain = {k: v for k, v in chat.items() if k != "tools"}
    for m in (m for m in p.models if m.task == "generate"):
        for via, url, headers in (("direct", direct[m.name], {}), ("gateway", gateway, auth)):
            key = f"{m.name} {via}"
            got = send(url + "/v1/chat/completions", {**chat, "model": m.name}, headers)
            seen[f"{key}: browser chat"] = got
            if m.tool_call_parser:
                chunks = got.get("events") or []
                checks[f"{key}: browser chat answered (parser {m.tool_call_parser})"] = got.get("status") == 200 and bool(chunks)
                checks[f"{key}: answer streams chat chunks"] = all(e.get("object") == "chat.completion.chunk" for e in chunks) and bool(chunks)
            else:
                checks[f"{key}: browser chat refused with vLLM's 400, byte for byte"] = got.get("status") == 400 and got.get("body") == refused
                checks[f"{key}: refusal is JSON"] = str(got.get("content_type", "")).startswith("application/json")
            again = send(url + "/v1/chat/completions", {**plain, "model": m.name}, headers)
            seen[f"{key}: chat without tools"] = again
            checks[f"{key}: the chat without tools is answered"] = again.get("status") == 200 and bool(again.get("events"))
    return checks, seen


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--server-timeout", type=float, default=300, help="seconds for all servers to become healthy")
    ap.add_argument("--sequential", action="store_true", help="start the servers one after another (default: together)")
    args = ap.parse_args()
    started = time.monotonic()
    result: dict[str, Any] = {"nginx": NGINX, "servers": {}, "checks": {}}
    procs: list[subprocess.Popen[bytes]] = []
    nginx: subprocess.Popen[bytes] | None = None
    try:
        gpus, version = gpu_facts()
        result |= {"gpu": gpus[0][0], "vllm": version}
        p = planned(STACK, gpus[:1], version)
        work = Path(tempfile.mkdtemp(prefix="vllm-stack-tools-"))
        ports = {m.name: free_port() for m in p.models}
        result["commands"] = {m.name: command(m, work / m.name, ports[m.name])[3:] for m in p.models}
        deadline = time.monotonic() + args.server_timeout
        launched = []
        for m in p.models:
            proc, log = launch(m, work, ports[m.name])
            procs.append(proc)
            launched.append((m, proc, log))
            if args.sequential:
                result["servers"][m.name] = server_ready(proc, ports[m.name], log, deadline)
        for m, proc, log in launched:
            if m.name not in result["servers"]:
                result["servers"][m.name] = server_ready(proc, ports[m.name], log, deadline)
        gw_port = free_port()
        conf = render_into(work / "gw", p, gw_port, {m.service: f"127.0.0.1:{ports[m.name]}" for m in p.models}, [f"open-webui:{KEY}"], None)
        nginx = start_nginx(conf, gw_port)
        chat = json.loads(CHAT.read_text())
        checks, seen = run_checks(p, {n: f"http://127.0.0.1:{port}" for n, port in ports.items()}, f"http://127.0.0.1:{gw_port}", chat)
        result["checks"], result["answers"] = checks, seen
    except Exception as err:
        result["error"] = f"{type(err).__name__}: {err}"
        result["traceback"] = traceback.format_exc().splitlines()[-12:]
    finally:
        if nginx is not None:
            stop(nginx)
        for proc in procs:
            stop_group(proc)
        result["wall_s"] = round(time.monotonic() - started, 1)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")
    for check, ok in result["checks"].items():
        print(f"  {'ok  ' if ok else 'FAIL'} {check}")
    print(json.dumps({k: result.get(k) for k in ("gpu", "vllm", "servers", "wall_s", "error")}))
    return 0 if result["checks"] and all(result["checks"].values()) and "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
