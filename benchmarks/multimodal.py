"""A multimodal checkpoint planned and served on this machine's GPU: Gemma 3 with images on and off, planned vs vLLM.

Each case plans one server the way the stack does (stacks.plan for this GPU's CUDA total and this vLLM release) and
starts it with the plan's arguments, but with the fraction alone (no ``--kv-cache-memory-bytes``) so that vLLM
profiles and reports the KV cache it finds room for; random weights (``--load-format dummy``) from the catalog's
published config.json, Gemma 3's processor files and a made-up tokenizer with its image tokens at their ids
(benchmarks/local_model.py): nothing is downloaded. Cases:

- ``images``: images on (mediaPerPrompt images: 4), vLLM's default runner (V2 in 0.26: the encoder is not profiled);
  then 8 concurrent requests of 4 images each (32 images, the profile's batch) and the GPU memory they add.
- ``text``: images off (mediaPerPrompt images: 0): the tower is never built; an image request must be refused.
- ``images-v1``: images on, on the V1 runner (``VLLM_USE_V2_MODEL_RUNNER=0``), which profiles the encoder first (as
  every runner does from 0.27, and vLLM 0.17-0.19 did in the published logs).

    PYTHONPATH=/tmp/site python3 benchmarks/multimodal.py --out benchmarks/results/h100-vllm-0.26.0-multimodal.json

Per case: planned vs vLLM weights, available KV GiB, KV tokens, peak activation, encoder batch; the memory the image
requests added against the plan's encoder figure. A JSON result is written after every step, also when one fails;
every server is stopped by its process group. Serves on 127.0.0.1 only. Exit status 1 when a case fails or a KV figure
is off by more than 2%.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.calibrate import PATTERNS as CALIBRATE_PATTERNS  # noqa: E402
from benchmarks.calibrate import command, gpu_facts, used_bytes, without_kv_bytes  # noqa: E402
from benchmarks.gpu_profile import PATTERNS as PROFILE_PATTERNS  # noqa: E402
from benchmarks.local_model import write_gemma3_dir  # noqa: E402
from benchmarks.processes import stop_group, wait_healthy  # noqa: E402
from stacks.catalog import entry, text_config  # noqa: E402
from stacks.config import parse  # noqa: E402
from stacks.plan import GIB, ModelPlan, plan  # noqa: E402
from stacks.plan.memory import SAFETY_FRACTION  # noqa: E402

GMU = 0.9
MAX_MODEL_LEN = 8192
MAX_NUM_SEQS = 16
IMAGES_PER_PROMPT = 4
REQUESTS = 8
"""8 requests x 4 images = 32 images: the encoder batch vLLM profiles Gemma 3 with on an H100 (budget 8192 / 256)."""

CASES: dict[str, dict[str, Any]] = {
    "images": {"media": {"images": IMAGES_PER_PROMPT}, "env": {}},
    "text": {"media": {"images": 0}, "env": {}},
    "images-v1": {"media": {"images": IMAGES_PER_PROMPT}, "env": {"VLLM_USE_V2_MODEL_RUNNER": "0"}},
    "text-v1": {"media": {"images": 0}, "env": {"VLLM_USE_V2_MODEL_RUNNER": "0"}},
}
"""The run's cases in order: images on and off first (the second start reuses the first's compiled graphs); text-v1 (on
request: --cases) tells whether text-only use profiles differently on the V1 runner."""
DEFAULT_CASES = ("images", "text", "images-v1")

# vLLM 0.26.0's log lines: v1/worker/gpu_worker.py (Available KV cache memory; memory_profiling's DEBUG summary from
# utils/mem_utils.py MemoryProfilingResult.__repr__), v1/core/kv_cache_utils.py (GPU KV cache size), the runners'
# load_model (Model loading took), profile_run (Encoder cache will be initialized ...), MMEncoderAttention.__init__.
PATTERNS = {
    "model_loading_gib": CALIBRATE_PATTERNS["model_loading_gib"],
    "available_kv_gib": PROFILE_PATTERNS["available_kv_gib"],
    "kv_tokens": CALIBRATE_PATTERNS["kv_tokens"],
    "peak_activation_gib": PROFILE_PATTERNS["peak_activation_gib"],
    "non_torch_gib": PROFILE_PATTERNS["non_torch_gib"],
    "encoder_profile": re.compile(r"Encoder cache will be initialized with a budget of (\d+) tokens, and profiled with (\d+) (\w+) items"),
    "vit_attention": re.compile(r"Using (\S+) for MMEncoderAttention"),
    "v2_runner": re.compile(r"Using V2 Model Runner"),
}


def parse_log(text: str) -> dict[str, Any]:
    """The figures vLLM logged (the last of each, as a restarted profile would log again)."""
    seen: dict[str, Any] = {}
    for key, pattern in PATTERNS.items():
        found = pattern.findall(text)
        if not found:
            continue
        last = found[-1]
        if key == "kv_tokens":
            seen[key] = int(last.replace(",", ""))
        elif key == "encoder_profile":
            seen[key] = {"budget_tokens": int(last[0]), "items": int(last[1]), "modality": last[2]}
        elif key in ("vit_attention",):
            seen[key] = last
        elif key == "v2_runner":
            seen[key] = True
        else:
            seen[key] = float(last)
    return seen


def png(width: int, height: int, seed: int = 0) -> bytes:
    """An RGB PNG of 32-pixel tiles whose colours follow ``seed`` (distinct images, so vLLM's caches never answer; quick
    to make and small to send: the encoder's cost does not depend on what the pixels show)."""
    tile = 32
    bands = []
    for band in range(math.ceil(height / tile)):
        row = b"\x00" + bytes(v for x in range(width) for v in ((x // tile * 37 + band + seed) % 256, seed * 53 % 256, (x // tile * 11 + band * 7) % 256))
        bands.append(row * min(tile, height - band * tile))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(bands), 6)) + chunk(b"IEND", b"")


def image_message(images: list[bytes], text: str = "w5 w6") -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(i).decode()}} for i in images]
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


def stack_raw(model: str, gpu_name: str, total_gib: float, version: str, media: dict[str, int], env: dict[str, str]) -> dict[str, Any]:
    return {
        "target": "docker",
        "image": {"base": f"vllm/vllm-openai:v{version}"},
        "gpus": [{"index": 0, "name": gpu_name, "memoryGiB": total_gib}],
        "models": [
            {
                "name": "mm",
                "model": model,
                "gpus": [0],
                "gpuMemoryUtilization": GMU,
                "maxModelLen": MAX_MODEL_LEN,
                "maxNumSeqs": MAX_NUM_SEQS,
                "mediaPerPrompt": media,
                "env": env,
            }
        ],
    }


def serve_command(m: ModelPlan, folder: Path, port: int) -> list[str]:
    """The plan's command with the tokenizer (chat with images needs it and the processor), without the KV bytes: vLLM
    then profiles and reports what it finds room for."""
    return without_kv_bytes(command(m, folder, port, tokenizer=True))


def planned_figures(m: ModelPlan, total_gib: float) -> dict[str, Any]:
    """What the plan says vLLM will report with the fraction alone: requested (ceil of fraction x total, as
    request_memory rounds) less weights and everything the release counts inside the budget."""
    mem = m.memory
    graphs = mem.cudagraph_gib if mem.cudagraph_in_budget else 0
    encoder_reserved = mem.encoder_gib - mem.encoder_outside_gib
    in_budget = mem.activation_gib + mem.non_torch_gib + graphs + encoder_reserved
    requested = math.ceil(mem.fraction * total_gib * GIB) / GIB
    e = m.encoder
    return {
        "weights_gib": mem.weights_gib,
        "available_kv_gib": round(requested - mem.weights_gib - in_budget, 3),
        "kv_tokens": mem.kv_tokens,
        "activation_gib": mem.activation_gib,
        "encoder_gib": mem.encoder_gib,
        "encoder_in_budget": mem.encoder_in_budget,
        "encoder_outside_gib": mem.encoder_outside_gib,
        "peak_activation_gib": round(mem.activation_gib + encoder_reserved, 3),
        # what serving the profile's batch of images adds to the started server: the caching allocator keeps the
        # encoder's blocks beside the prefill's (stacks.plan.multimodal)
        "serving_added_gib": round(mem.activation_gib + mem.encoder_gib, 3),
        # beyond this it would take memory the plan keeps free of every server (SAFETY_FRACTION of the GPU)
        "serving_limit_gib": round(mem.activation_gib + mem.encoder_gib + SAFETY_FRACTION * total_gib, 3),
        "encoder": None if e is None else {"weights_gib": e.weights_gib, "budget_tokens": e.budget_tokens, "items": e.items_per_batch, "peak_gib": e.peak_gib},
    }


def post(port: int, body: dict[str, Any], timeout: float = 120) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def image_load(port: int, requests: int, per_request: int) -> dict[str, Any]:
    """``requests`` chat requests at once, each with ``per_request`` distinct 896 px images (no cache hits)."""
    results: list[tuple[int, dict[str, Any]] | str] = [""] * requests

    def one(k: int) -> None:
        images = [png(896, 896, seed=k * per_request + j) for j in range(per_request)]
        try:
            results[k] = post(port, {"model": "mm", "messages": [image_message(images)], "max_tokens": 2})
        except OSError as err:
            results[k] = f"{type(err).__name__}: {err}"

    threads = [threading.Thread(target=one, args=(k,)) for k in range(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    ok = [r for r in results if isinstance(r, tuple) and r[0] == 200]
    prompt_tokens = sorted({r[1].get("usage", {}).get("prompt_tokens") for r in ok})
    failures = [r if isinstance(r, str) else f"{r[0]}: {str(r[1])[:200]}" for r in results if not (isinstance(r, tuple) and r[0] == 200)]
    return {"requests": requests, "images_each": per_request, "ok": len(ok), "prompt_tokens": prompt_tokens, "failures": failures[:3]}


def wait_released(baseline: int, limit_s: float = 90) -> None:
    """Until the GPU is back near what it held before the last server (its memory is freed after the process exits)."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end and used_bytes() > baseline + GIB // 2:
        time.sleep(1)


def run_case(name: str, case: dict[str, Any], model: str, folder: Path, facts: tuple[str, int, str], port: int, limit_s: float, work: Path) -> dict[str, Any]:
    gpu_name, total, version = facts
    total_gib = int(total / GIB * 100) / 100
    row: dict[str, Any] = {"case": name, "media": case["media"], "env": case["env"]}
    try:
        m = plan(parse(stack_raw(model, gpu_name, total_gib, version, case["media"], case["env"]))).models[0]
    except Exception as err:  # a refusal is a result too
        row["error"] = f"plan: {err}"
        return row
    row["planned"] = planned_figures(m, total_gib)
    row["args"] = without_kv_bytes(m.args)
    log = work / f"{name}.log"
    env = {**os.environ, **m.env, "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "0"}
    baseline = used_bytes()
    row["gpu_used_before_gib"] = round(baseline / GIB, 3)
    t0 = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(serve_command(m, folder, port), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        if error := wait_healthy(proc, port, limit_s):
            row["error"] = error
        row["start_seconds"] = round(time.monotonic() - t0, 1)
        row["vllm"] = parse_log(log.read_text(errors="replace"))
        if "error" not in row:
            row["took_gib"] = round((used_bytes() - baseline) / GIB, 3)
            if m.encoder and m.encoder.tower_loaded:
                before = used_bytes()
                row["image_load"] = image_load(port, REQUESTS, IMAGES_PER_PROMPT)
                row["image_load"]["added_gib"] = round((used_bytes() - before) / GIB, 3)
            else:
                status, answer = post(port, {"model": "mm", "messages": [image_message([png(64, 64)])], "max_tokens": 2})
                text_status, _ = post(port, {"model": "mm", "messages": [{"role": "user", "content": "w5 w6"}], "max_tokens": 2})
                row["text_only"] = {"image_request_status": status, "image_request_error": str(answer)[:300], "text_request_status": text_status}
    except Exception as err:  # record and go on to the next case
        row["error"] = f"{type(err).__name__}: {err}"
    finally:
        stop_group(proc, 60)
        wait_released(baseline)
    if "error" in row:
        lines = log.read_text(errors="replace").splitlines()
        # the root cause sits above the engine's traceback of the API server's wait
        row["errors"] = [line for line in lines if "Error" in line or "error:" in line][:10]
        row["tail"] = lines[-30:]
    row["problems"] = problems(row)
    return row


def problems(row: dict[str, Any]) -> list[str]:
    out = [row["error"]] if "error" in row else []
    p, v = row.get("planned") or {}, row.get("vllm") or {}
    for key in ("available_kv_gib", "kv_tokens"):
        if key in v and p.get(key):
            off = (p[key] - v[key]) / v[key]
            if abs(off) > 0.02:
                out.append(f"{key}: planned {p[key]} vs vLLM {v[key]} ({off:+.1%})")
    load = row.get("image_load")
    if load and "added_gib" in load and p.get("serving_limit_gib") is not None and load["added_gib"] > p["serving_limit_gib"]:
        out.append(f"serving images added {load['added_gib']} GiB, planned {p['serving_added_gib']} GiB (at most {p['serving_limit_gib']})")
    if load and load["ok"] != load["requests"]:
        out.append(f"image requests: {load['ok']}/{load['requests']} answered: {load['failures']}")
    text = row.get("text_only")
    if text and (text["image_request_status"] == 200 or text["text_request_status"] != 200):
        out.append(f"text-only server: image request {text['image_request_status']}, text request {text['text_request_status']}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="google/gemma-3-27b-it", help="a Gemma 3 checkpoint of the catalog")
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--deadline", type=float, default=540, help="seconds for every case together")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vllm-stack-multimodal"))
    args = ap.parse_args()
    end = time.monotonic() + args.deadline
    result: dict[str, Any] = {"model": args.model, "gmu": GMU, "max_model_len": MAX_MODEL_LEN, "max_num_seqs": MAX_NUM_SEQS, "cases": []}

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")

    try:
        gpus, version = gpu_facts()
        facts = (*gpus[0], version)
    except Exception as err:
        result["error"] = f"GPU facts: {err}"
        save()
        return 1
    result |= {"gpu": facts[0], "cuda_total_gib": round(facts[1] / GIB, 4), "vllm": facts[2]}
    e = entry(args.model)
    if e is None or "processor" not in e:
        result["error"] = f"{args.model} is not a catalogued Gemma 3 checkpoint with processor settings"
        save()
        return 1
    args.workdir.mkdir(parents=True, exist_ok=True)
    folder = write_gemma3_dir(args.workdir / "model", e["config"], e["processor"], vocab_size=int(text_config(e["config"]).get("vocab_size", 262208)))
    print(f"{facts[0]}: CUDA total {facts[1] / GIB:.2f} GiB; vLLM {facts[2]}; {args.model}, fraction {GMU}", flush=True)
    for i, name in enumerate(n for n in args.cases.split(",") if n):
        left = end - time.monotonic()
        if name not in CASES or left < 90:
            result["cases"].append({"case": name, "error": "unknown case" if name not in CASES else f"skipped, {left:.0f} s left"})
            save()
            continue
        row = run_case(name, CASES[name], args.model, folder, facts, 18300 + i, min(left - 40, 300), args.workdir)
        result["cases"].append(row)
        save()
        p, v = row.get("planned", {}), row.get("vllm", {})
        print(
            f"{name:10} weights {p.get('weights_gib', '?')} / {v.get('model_loading_gib', '?')} GiB  available KV {p.get('available_kv_gib', '?')} / "
            f"{v.get('available_kv_gib', '?')} GiB  KV tokens {p.get('kv_tokens', '?')} / {v.get('kv_tokens', '?')}  peak activation "
            f"{p.get('peak_activation_gib', '?')} / {v.get('peak_activation_gib', '?')} GiB  encoder {p.get('encoder_gib', '?')} GiB "
            f"({'in' if p.get('encoder_in_budget') else 'outside'} budget) / images added {row.get('image_load', {}).get('added_gib', '-')} GiB  "
            f"start {row.get('start_seconds', '?')} s  {'; '.join(row['problems']) or 'ok'}",
            flush=True,
        )
    return 1 if any(c.get("problems") or c.get("error") for c in result["cases"]) else 0


if __name__ == "__main__":
    sys.exit(main())
