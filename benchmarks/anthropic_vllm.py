"""Anthropic's Messages API through the gateway in front of a real vLLM, driven by the anthropic SDK.

Plans ``benchmarks/stacks/gateway-vllm.yaml`` for the GPU found here and serves its model from a local folder: random
weights (``--load-format dummy``) and a made-up tokenizer with a chat template (``benchmarks/local_model.py``; the
Messages API needs one), nothing downloaded, 127.0.0.1 only, vLLM requiring the gateway's own key. Renders the gateway
for it and runs it with a real nginx (GATEWAY_NGINX / GATEWAY_NJS_MODULE / GATEWAY_JS_ENGINE, as the gateway tests).
Then, with the anthropic SDK (``--sdk DIR``: where it was installed offline, see benchmarks/anthropic-sdk.txt):
messages with the key as x-api-key and as Authorization: Bearer, a stream (named events in order, deltas as they
come), count_tokens, an unknown model (the gateway's Anthropic-shaped 404), a wrong key (401), and vLLM's own
Anthropic-shaped error passed through (a path-routed request naming a model vLLM does not serve). The access log's
token usage must be the SDK's. ``--fake`` runs the same against the repo's fake vLLM (no GPU; what the tests use).

    pip install --no-index --no-deps --target /tmp/anth .gpu-anthropic/*.whl
    PYTHONPATH=/tmp/site GATEWAY_NGINX=... GATEWAY_NJS_MODULE=... GATEWAY_JS_ENGINE=qjs \\
        python3 benchmarks/anthropic_vllm.py --sdk /tmp/anth --out benchmarks/results/h100-vllm-0.26.0-anthropic.json

Exit status 1 when a check or a step fails; the JSON result is written either way, each step's failure recorded.
What it starts it stops: nginx by its pid, vLLM (or the fake) by its process group.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.calibrate import catalog_config, command, gpu_facts, planned  # noqa: E402
from benchmarks.local_model import write_model_dir  # noqa: E402
from benchmarks.processes import stop_group, wait_healthy  # noqa: E402
from stacks.plan import ModelPlan, StackPlan  # noqa: E402
from tests.gateway_harness import JS_ENGINE, NGINX, access_log_line, free_port, render_into, start_nginx, stop  # noqa: E402

STACK = ROOT / "benchmarks" / "stacks" / "gateway-vllm.yaml"
KEY = "sk-anthropic-check"
VLLM_KEY = "vk-anthropic-check"
HELLO = [{"role": "user", "content": "hello there, how are you"}]


def server_command(m: ModelPlan, folder: Path, port: int) -> list[str]:
    """The plan's vLLM command with the model folder, random weights and its tokenizer (the Messages API needs one)."""
    return command(m, folder, port, tokenizer=True)


def write_folder(m: ModelPlan, folder: Path) -> Path:
    return write_model_dir(folder, catalog_config(m))


def start_vllm(m: ModelPlan, work: Path, port: int, limit_s: float) -> subprocess.Popen[bytes]:
    folder = write_folder(m, work / m.name)
    env = {**os.environ, **m.env, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "0", "VLLM_API_KEY": VLLM_KEY}
    with (work / "vllm.log").open("wb") as out:
        proc = subprocess.Popen(server_command(m, folder, port), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    _healthy(proc, port, limit_s, work / "vllm.log")
    return proc


def start_fake(m: ModelPlan, work: Path, port: int, limit_s: float) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "tests.fake_vllm", "--port", str(port), "--name", m.name, "--models", ",".join(m.served_names), "--key", VLLM_KEY]
    with (work / "fake.log").open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _healthy(proc, port, limit_s, work / "fake.log")
    return proc


def _healthy(proc: subprocess.Popen[bytes], port: int, limit_s: float, log: Path) -> None:
    if error := wait_healthy(proc, port, limit_s, poll_s=1):
        raise RuntimeError(f"server {error}: " + " | ".join(log.read_text(errors="replace").splitlines()[-15:]))


def through_gateway(anthropic: ModuleType, gw: str, log: Path, p: StackPlan, streams: int) -> tuple[dict[str, bool], dict[str, Any]]:
    """Every check through the gateway at ``gw`` (its access log at ``log``); a step that raises is a failed check."""
    m = p.models[0]
    name, alias = m.served_names[0], m.served_names[-1]
    checks: dict[str, bool] = {}
    figures: dict[str, Any] = {"errors": {}}

    def client(**kw: Any) -> Any:
        return anthropic.Anthropic(base_url=gw, max_retries=0, timeout=120, **kw)

    def step(label: str, fn: Callable[[], bool]) -> None:
        try:
            checks[label] = bool(fn())
        except Exception as err:  # recorded, and the next step runs
            checks[label] = False
            figures["errors"][label] = f"{type(err).__name__}: {err}"[:500]

    by_x_api_key = client(default_headers={"x-api-key": KEY})
    by_bearer = client(api_key=KEY)

    def create(c: Any, rid: str) -> bool:
        raw = c.messages.with_raw_response.create(model=name, max_tokens=12, messages=HELLO, extra_headers={"X-Request-ID": rid})
        msg = raw.parse()
        line = access_log_line(log, rid)
        figures[f"usage_{rid}"] = [msg.usage.input_tokens, msg.usage.output_tokens]
        return (
            msg.type == "message"
            and msg.content[0].type == "text"
            and msg.usage.output_tokens > 0
            and (line["prompt_tokens"], line["completion_tokens"], line["key"], line["model"])
            == (msg.usage.input_tokens, msg.usage.output_tokens, "team-a", name)
        )

    step("x-api-key: answer, usage logged is the SDK's", lambda: create(by_x_api_key, "anth-x-api-key"))
    step("Bearer: answer, usage logged is the SDK's", lambda: create(by_bearer, "anth-bearer"))

    def stream() -> bool:
        kinds: list[str] = []
        stamps: list[float] = []
        t0 = time.perf_counter()
        with by_x_api_key.messages.stream(model=alias, max_tokens=24, messages=HELLO, extra_headers={"X-Request-ID": "anth-stream"}) as s:
            for event in s:
                kinds.append(event.type)
                if event.type == "content_block_delta":
                    stamps.append(time.perf_counter() - t0)
            final = s.get_final_message()
        line = access_log_line(log, "anth-stream")
        figures["stream_events"] = {"first": kinds[0], "last": kinds[-1], "count": dict(Counter(kinds))}
        figures["stream_delta_spread_ms"] = round((stamps[-1] - stamps[0]) * 1000, 3) if stamps else None
        ordered = kinds[0] == "message_start" and kinds[-1] == "message_stop" and "message_delta" in kinds
        logged = (line["prompt_tokens"], line["completion_tokens"]) == (final.usage.input_tokens, final.usage.output_tokens)
        return ordered and len(stamps) > 2 and logged

    step("stream: named events in order, deltas as they come, usage logged", stream)

    def count() -> bool:
        counted = by_bearer.messages.count_tokens(model=name, messages=HELLO).input_tokens
        figures["count_tokens"] = counted
        return counted > 0 and counted == figures.get("usage_anth-bearer", [None])[0]

    step("count_tokens: what create reported as input", count)

    def unknown() -> bool:
        try:
            by_x_api_key.messages.create(model="no-such-model", max_tokens=4, messages=HELLO)
        except anthropic.NotFoundError as err:
            return err.type == "not_found_error" and "no-such-model" in str(err.api_message)
        return False

    step("unknown model: the gateway's Anthropic-shaped 404", unknown)

    def wrong_key() -> bool:
        try:
            client(default_headers={"x-api-key": KEY.upper()}).messages.create(model=name, max_tokens=4, messages=HELLO)
        except anthropic.AuthenticationError as err:
            return err.type == "authentication_error"
        return False

    step("wrong key: 401 authentication_error", wrong_key)

    def vllm_error() -> bool:
        # routed to vLLM by path, naming a model it does not serve: vLLM's own error, in Anthropic's shape
        try:
            anthropic.Anthropic(base_url=f"{gw}/{name}", api_key=KEY, max_retries=0).messages.create(model="not-served", max_tokens=4, messages=HELLO)
        except anthropic.APIStatusError as err:
            figures["vllm_error"] = [err.status_code, err.type, str(err.api_message)[:200]]
            return 400 <= err.status_code < 500 and err.type is not None
        return False

    step("vLLM's own error passes in Anthropic's shape", vllm_error)

    ttft: list[float] = []
    for _ in range(streams):
        t0 = time.perf_counter()
        with by_x_api_key.messages.stream(model=name, max_tokens=4, messages=HELLO) as s:
            for event in s:
                if event.type == "content_block_delta":
                    ttft.append(time.perf_counter() - t0)
                    break
    figures["ttft_p50_ms"] = round(statistics.median(ttft) * 1000, 3) if ttft else None
    return checks, figures


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--sdk", help="folder the anthropic SDK was installed into (pip --target); searched first")
    ap.add_argument("--fake", action="store_true", help="the repo's fake vLLM instead of vLLM (no GPU)")
    ap.add_argument("--server-timeout", type=float, default=300)
    ap.add_argument("--streams", type=int, default=20, help="timed streams through the gateway")
    args = ap.parse_args()
    started = time.monotonic()
    result: dict[str, Any] = {"nginx": NGINX, "js_engine": JS_ENGINE, "checks": {}, "steps": {}}
    server: subprocess.Popen[bytes] | None = None
    nginx: subprocess.Popen[bytes] | None = None
    work = Path(tempfile.mkdtemp(prefix="vllm-stack-anthropic-"))
    try:
        if args.sdk:
            sys.path.insert(0, args.sdk)
        import anthropic

        result["anthropic"] = {"version": anthropic.__version__, "from": str(Path(anthropic.__file__).parent)}
        gpus, version = ([("fake", 80 * 2**30)], "0.26.0") if args.fake else gpu_facts()
        result |= {"gpu": gpus[0][0], "vllm": version}
        p = planned(STACK, gpus[:1], version)
        m = p.models[0]
        port = free_port()
        server = (start_fake if args.fake else start_vllm)(m, work, port, args.server_timeout)
        result["steps"]["server"] = f"healthy after {time.monotonic() - started:.0f} s"
        gw_port = free_port()
        conf = render_into(work / "gw", p, gw_port, {m.service: f"127.0.0.1:{port}"}, [f"team-a:{KEY}"], VLLM_KEY)
        nginx = start_nginx(conf, gw_port)
        result["steps"]["gateway"] = "listening"
        checks, figures = through_gateway(anthropic, f"http://127.0.0.1:{gw_port}", conf.parent / "access.log", p, args.streams)
        result["checks"], result["figures"] = checks, figures
    except Exception as err:
        result["error"] = f"{type(err).__name__}: {err}"[:2000]
        result["traceback"] = traceback.format_exc()[-3000:]
    finally:
        if nginx is not None:
            stop(nginx)
        if server is not None:
            stop_group(server, grace_s=30)
        result["wall_s"] = round(time.monotonic() - started, 1)
        if args.out:
            args.out.write_text(json.dumps(result, indent=1) + "\n")
    for check, ok in result["checks"].items():
        print(f"  {'ok  ' if ok else 'FAIL'} {check}")
    print(json.dumps({k: v for k, v in result.items() if k not in ("checks", "traceback")}))
    return 0 if result["checks"] and all(result["checks"].values()) and "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
