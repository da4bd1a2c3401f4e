"""The CPU half of benchmarks/multimodal.py: its plan and command per case, vLLM's log lines as 0.26.0 writes them, the
images it sends (decoded), its requests against the fake vLLM, and the Gemma 3 folder it serves."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import multimodal as bench
from benchmarks.local_model import GEMMA3_NEWLINES, write_gemma3_dir
from stacks.catalog import entry
from stacks.config import parse
from stacks.plan import ModelPlan, plan
from tests.conftest import ROOT
from tests.gateway_harness import free_port, stop, wait_port

# vLLM 0.26.0's own lines (the f-strings and logger formats of v1/worker/gpu_worker.py, utils/mem_utils.py,
# v1/core/kv_cache_utils.py, the runners' load_model and profile_run, MMEncoderAttention.__init__), filled in
LOG = """\
(EngineCore pid=9) INFO 11-23 10:00:01 [gpu_worker.py:378] Using V2 Model Runner
(EngineCore pid=9) INFO 11-23 10:00:02 [mm_encoder_attention.py:330] Using AttentionBackendEnum.FLASH_ATTN for MMEncoderAttention.
(EngineCore pid=9) INFO 11-23 10:00:20 [model_runner.py:306] Model loading took 51.23 GiB and 12.345678 seconds
(EngineCore pid=9) INFO 11-23 10:00:40 [gpu_model_runner.py:6396] Encoder cache will be initialized with a budget of 8192 \
tokens, and profiled with 32 image items of the maximum feature size.
(EngineCore pid=9) DEBUG 11-23 10:00:50 [gpu_worker.py:559] Memory profiling takes 9.81 seconds. Total non KV cache memory: \
55.2GiB; torch peak memory increase: 3.41GiB; non-torch forward increase memory: 0.22GiB; weights memory: 51.23GiB.
(EngineCore pid=9) INFO 11-23 10:00:50 [gpu_worker.py:560] Available KV cache memory: 16.03 GiB
(EngineCore pid=9) INFO 11-23 10:00:51 [kv_cache_utils.py:2177] GPU KV cache size: 29,968 tokens
"""


def test_log_lines_as_vllm_writes_them() -> None:
    seen = bench.parse_log(LOG)
    assert seen == {
        "model_loading_gib": 51.23,
        "available_kv_gib": 16.03,
        "kv_tokens": 29968,
        "peak_activation_gib": 3.41,
        "non_torch_gib": 0.22,
        "encoder_profile": {"budget_tokens": 8192, "items": 32, "modality": "image"},
        "vit_attention": "AttentionBackendEnum.FLASH_ATTN",
        "v2_runner": True,
    }
    assert bench.parse_log("nothing here") == {}


def _case(name: str, total_gib: float = 79.18, version: str = "0.26.0") -> ModelPlan:
    case = bench.CASES[name]
    return plan(parse(bench.stack_raw("google/gemma-3-27b-it", "NVIDIA H100 80GB HBM3", total_gib, version, case["media"], case["env"]))).models[0]


def test_each_case_serves_the_plans_arguments_with_the_fraction_alone(tmp_path: Path) -> None:
    images, v1, text = _case("images"), _case("images-v1"), _case("text")
    cmd = bench.serve_command(images, tmp_path / "model", 18300)
    assert cmd[1:5] == ["-m", "vllm.entrypoints.cli.main", "serve", str(tmp_path / "model")]
    assert "--kv-cache-memory-bytes" not in cmd and "--kv-cache-memory-bytes" in images.args
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.900" and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--limit-mm-per-prompt") + 1] == '{"image":4}' and cmd[-2:] == ["--load-format", "dummy"]
    assert "--skip-tokenizer-init" not in cmd  # chat with images needs the tokenizer and the processor
    assert bench.serve_command(text, tmp_path, 1)[-4:-2] == ["--limit-mm-per-prompt", '{"image":0}']
    assert v1.env["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    p_images, p_v1, p_text = (bench.planned_figures(m, 79.18) for m in (images, v1, text))
    # the V1 runner counts the encoder (and its CUDA graph estimate) inside the budget: less KV for the same fraction
    assert p_v1["encoder_in_budget"] and not p_images["encoder_in_budget"]
    # the V1 profile reserves part of the encoder inside the budget, where the V2 runner leaves it all outside
    reserved = v1.memory.encoder_gib - v1.memory.encoder_outside_gib
    assert reserved > 0 and p_v1["available_kv_gib"] < p_images["available_kv_gib"] - reserved + 0.01
    # text only: no tower, so more KV than with images on the same runner
    assert p_text["encoder"] == {"weights_gib": 0.0, "budget_tokens": 0, "items": 0, "peak_gib": 0.0}
    assert images.encoder
    assert p_text["available_kv_gib"] == pytest.approx(p_images["available_kv_gib"] + images.encoder.weights_gib, abs=0.01)


def test_the_images_it_sends_are_pngs_of_896_pixels() -> None:
    data = bench.png(896, 896, seed=5)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 64 * 1024
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (896, 896, 8, 2)
    idat = data.index(b"IDAT")
    size = struct.unpack(">I", data[idat - 4 : idat])[0]
    raw = zlib.decompress(data[idat + 4 : idat + 4 + size])
    assert len(raw) == 896 * (1 + 3 * 896)
    assert bench.png(896, 896, seed=6) != data  # distinct images: no processor-cache hits
    message = bench.image_message([data])
    assert message["content"][0]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")


@pytest.fixture
def fake_vllm() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_vllm", "--port", str(port), "--name", "mm", "--models", "mm"], cwd=ROOT)
    try:
        wait_port(port, proc)
        yield port
    finally:
        stop(proc)


def test_image_requests_against_the_fake_vllm(fake_vllm: int) -> None:
    load = bench.image_load(fake_vllm, requests=3, per_request=2)
    assert load == {"requests": 3, "images_each": 2, "ok": 3, "prompt_tokens": [7], "failures": []}
    status, answer = bench.post(fake_vllm, {"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert status == 404 and answer["error"]["code"] == 404
    row = {"planned": {"available_kv_gib": 10.0, "kv_tokens": 1000}, "vllm": {"available_kv_gib": 10.3, "kv_tokens": 1010}, "image_load": load}
    assert bench.problems(row) == ["available_kv_gib: planned 10.0 vs vLLM 10.3 (-2.9%)"]
    row["text_only"] = {"image_request_status": 200, "text_request_status": 200}
    assert bench.problems(row)[-1].startswith("text-only server: image request 200")


def test_gemma3_folder_has_the_image_tokens_where_the_config_names_them(tmp_path: Path) -> None:
    e = entry("google/gemma-3-12b-it")
    assert e
    folder = write_gemma3_dir(tmp_path / "g", e["config"], e["processor"])
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(vocab) == 262208 and vocab["<start_of_image>"] == 255999 and vocab["<end_of_image>"] == 256000
    assert vocab["<image_soft_token>"] == 262144 and all(nl in vocab for nl in GEMMA3_NEWLINES)
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok["extra_special_tokens"] == {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    assert "<start_of_image>" in tok["chat_template"]
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    assert pre["size"] == {"height": 896, "width": 896} and pre["do_pan_and_scan"] is None
    assert json.loads((folder / "processor_config.json").read_text()) == {"image_seq_length": 256, "processor_class": "Gemma3Processor"}
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["Gemma3ForConditionalGeneration"]


TRANSFORMERS_PYTHON = os.environ.get("VLLM_STACK_TRANSFORMERS_PYTHON", "/work/ref/tfenv/bin/python")
PROCESS = """
import sys
from PIL import Image
from transformers import AutoProcessor
processor = AutoProcessor.from_pretrained(sys.argv[1])
prompt = processor.tokenizer.apply_chat_template(
    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "w5"}]}], tokenize=False, add_generation_prompt=True)
out = processor(text=prompt, images=[Image.open(sys.argv[2])], return_tensors="np")
ids = list(out["input_ids"][0])
print(type(processor).__name__, ids.count(262144), ids.count(255999), ids.count(256000), tuple(out["pixel_values"].shape))
"""


@pytest.mark.skipif(not Path(TRANSFORMERS_PYTHON).exists(), reason="a Python with transformers>=5.5.3 and pillow (VLLM_STACK_TRANSFORMERS_PYTHON)")
def test_transformers_processes_an_image_from_the_folder(tmp_path: Path) -> None:
    """What vLLM does with the folder before Gemma 3 sees an image: AutoProcessor from it, the chat template's placeholder
    expanded to 256 image tokens between the image markers, the picture resized to 896 px."""
    e = entry("google/gemma-3-27b-it")
    assert e
    folder = write_gemma3_dir(tmp_path / "g", e["config"], e["processor"])
    (tmp_path / "in.png").write_bytes(bench.png(640, 480))
    out = subprocess.run([TRANSFORMERS_PYTHON, "-c", PROCESS, str(folder), str(tmp_path / "in.png")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "Gemma3Processor 256 1 1 (1, 3, 896, 896)"


def test_the_whole_run_against_a_stand_in_for_vllm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """main() end to end with the fake vLLM in place of ``vllm serve`` (printing vLLM's log lines first): every case
    planned, started, asked, stopped by its process group, and the JSON written with what each case found."""
    started: list[list[str]] = []
    real = bench.serve_command

    def stand_in(m: ModelPlan, folder: Path, port: int) -> list[str]:
        started.append(real(m, folder, port))
        code = f"import runpy, sys; print({LOG!r}, flush=True); sys.argv = ['fake_vllm', '--port', '{port}', '--name', 'mm', '--models', 'mm']; "
        code += "runpy.run_module('tests.fake_vllm', run_name='__main__')"
        return [sys.executable, "-c", code]

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(bench, "gpu_facts", lambda: ([("NVIDIA H100 80GB HBM3", int(79.18 * 1024**3))], "0.26.0"))
    monkeypatch.setattr(bench, "used_bytes", lambda index=0: 0)
    monkeypatch.setattr(bench, "serve_command", stand_in)
    out = tmp_path / "result.json"
    monkeypatch.setattr(sys, "argv", ["multimodal.py", "--out", str(out), "--workdir", str(tmp_path / "work"), "--deadline", "200"])
    status = bench.main()
    result = json.loads(out.read_text())
    assert [c["case"] for c in result["cases"]] == ["images", "text", "images-v1"] and len(started) == 3
    images, text, v1 = result["cases"]
    assert images["vllm"]["available_kv_gib"] == 16.03 and images["image_load"]["ok"] == bench.REQUESTS
    assert text["text_only"]["image_request_status"] == 200  # the stand-in takes images: the run must say so
    assert any(p.startswith("text-only server") for p in text["problems"]) and status == 1
    assert v1["env"] == {"VLLM_USE_V2_MODEL_RUNNER": "0"} and v1["planned"]["encoder_in_budget"]
    assert all("--kv-cache-memory-bytes" not in c for c in started)
    assert (tmp_path / "work" / "model" / "preprocessor_config.json").exists()
