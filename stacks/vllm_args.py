"""vLLM server command lines for the pinned image's vLLM version. No secret ever goes in them."""

from __future__ import annotations

import re

from stacks.config import ModelConfig
from stacks.errors import Problem

DEFAULT_VLLM_VERSION = (0, 11, 2)
"""Version assumed when the base image is pinned by digest."""
VLLM_PORT = 8000
ENTRYPOINT = ["vllm", "serve"]

# flag -> (first version without it, what to do instead)
REMOVED_FLAGS: dict[str, tuple[tuple[int, int, int], str]] = {
    "--use-v2-block-manager": ((0, 7, 0), "the v2 block manager is the only one now; drop the flag"),
    "--engine-use-ray": ((0, 6, 0), "drop it; the engine runs in-process"),
    "--worker-use-ray": ((0, 6, 0), "use --distributed-executor-backend ray"),
    "--max-context-len-to-capture": ((0, 6, 0), "drop it; CUDA graph capture sizes are chosen by vLLM"),
    "--num-scheduler-steps": ((0, 11, 0), "multi-step scheduling went with the V0 engine; drop it"),
}

# flags the stack sets from typed keys: setting them in extraArgs would fight the plan
MANAGED_FLAGS: dict[str, str] = {
    "--host": "the stack binds every server itself",
    "--port": "the stack binds every server itself",
    "--model": "set models[].model",
    "--served-model-name": "set models[].name and models[].servedModelNames",
    "--tensor-parallel-size": "set models[].tensorParallel",
    "-tp": "set models[].tensorParallel",
    "--pipeline-parallel-size": "set models[].pipelineParallel",
    "-pp": "set models[].pipelineParallel",
    "--gpu-memory-utilization": "set models[].gpuMemoryUtilization",
    "--max-model-len": "set models[].maxModelLen",
    "--max-num-seqs": "set models[].maxNumSeqs",
    "--max-num-batched-tokens": "set models[].maxNumBatchedTokens",
    "--dtype": "set models[].dtype",
    "--quantization": "set models[].quantization",
    "-q": "set models[].quantization",
    "--kv-cache-dtype": "set models[].kvCacheDtype",
    "--enforce-eager": "set models[].enforceEager",
    "--enable-prefix-caching": "set models[].enablePrefixCaching",
    "--no-enable-prefix-caching": "set models[].enablePrefixCaching",
    "--trust-remote-code": "set models[].trustRemoteCode",
    "--lora-modules": "set models[].loraModules",
    "--enable-lora": "set models[].loraModules",
    "--api-key": "secrets never go in arguments: pulumi config set --secret vllm-stack:vllmApiKey",
    "--hf-token": "secrets never go in arguments: pulumi config set --secret vllm-stack:hfToken",
}


def image_vllm_version(base: str) -> tuple[int, int, int]:
    """vLLM version from a ``vllm/vllm-openai:vX.Y.Z`` tag; the default for digests and other tags."""
    m = re.search(r":v?(\d+)\.(\d+)(?:\.(\d+))?", base.rsplit("/", 1)[-1])
    if not m:
        return DEFAULT_VLLM_VERSION
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def extra_arg_problems(i: int, m: ModelConfig, version: tuple[int, int, int]) -> list[Problem]:
    out = []
    for j, arg in enumerate(m.extra_args):
        flag = arg.split("=", 1)[0]
        key = f"models[{i}].extraArgs[{j}]"
        if flag in REMOVED_FLAGS and version >= REMOVED_FLAGS[flag][0]:
            since = ".".join(map(str, REMOVED_FLAGS[flag][0]))
            out.append(Problem(key, f"{flag} was removed in vLLM {since}; {REMOVED_FLAGS[flag][1]}"))
        elif flag in MANAGED_FLAGS:
            out.append(Problem(key, f"{flag} is managed by the stack; {MANAGED_FLAGS[flag]}"))
    return out


def server_args(m: ModelConfig, *, tensor_parallel: int, fraction: float, max_model_len: int) -> list[str]:
    """Arguments after ``vllm serve``."""
    args = [m.model, "--host", "0.0.0.0", "--port", str(VLLM_PORT), "--served-model-name", *m.all_served_names]
    if tensor_parallel > 1:
        args += ["--tensor-parallel-size", str(tensor_parallel)]
    if m.pipeline_parallel > 1:
        args += ["--pipeline-parallel-size", str(m.pipeline_parallel)]
    args += ["--gpu-memory-utilization", f"{fraction:.3f}", "--max-model-len", str(max_model_len), "--max-num-seqs", str(m.max_num_seqs)]
    if m.max_num_batched_tokens:
        args += ["--max-num-batched-tokens", str(m.max_num_batched_tokens)]
    if m.dtype != "auto":
        args += ["--dtype", m.dtype]
    if m.quantization:
        args += ["--quantization", m.quantization]
    if m.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", m.kv_cache_dtype]
    if m.enforce_eager:
        args.append("--enforce-eager")
    if m.enable_prefix_caching is not None:
        args.append("--enable-prefix-caching" if m.enable_prefix_caching else "--no-enable-prefix-caching")
    if m.trust_remote_code:
        args.append("--trust-remote-code")
    if m.lora_modules:
        args += ["--enable-lora", "--lora-modules", *(f"{lo.name}={lo.path}" for lo in m.lora_modules)]
    return args + list(m.extra_args)
