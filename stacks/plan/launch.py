"""vLLM server command lines for the pinned release. No secret ever goes in them."""

from __future__ import annotations

from stacks.config.schema import ModelConfig
from stacks.errors import Problem
from stacks.plan.releases import REMOVED_FLAGS, Version, version_text
from stacks.plan.topology import VLLM_PORT

ENTRYPOINT = ["vllm", "serve"]
GPU_MEMORY_FLAG = "--gpu-memory-utilization"
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
"""What vLLM uses without the flag: ``CacheConfig.gpu_memory_utilization = Field(default=0.9)`` in
vllm/config/cache.py of 0.11.2 through 0.14.1 (sdists read)."""

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
    GPU_MEMORY_FLAG: "set models[].gpuMemoryUtilization",
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


def extra_arg_problems(i: int, m: ModelConfig, version: Version) -> list[Problem]:
    out = []
    for j, arg in enumerate(m.extra_args):
        flag = arg.split("=", 1)[0]
        key = f"models[{i}].extraArgs[{j}]"
        if flag in REMOVED_FLAGS and version >= REMOVED_FLAGS[flag][0]:
            out.append(Problem(key, f"{flag} was removed in vLLM {version_text(REMOVED_FLAGS[flag][0])}; {REMOVED_FLAGS[flag][1]}"))
        elif flag in MANAGED_FLAGS:
            out.append(Problem(key, f"{flag} is managed by the stack; {MANAGED_FLAGS[flag]}"))
    return out


def server_args(m: ModelConfig, served_names: list[str], *, tensor_parallel: int, fraction: float, max_model_len: int) -> list[str]:
    """Arguments after ``vllm serve``."""
    args = [m.model, "--host", "0.0.0.0", "--port", str(VLLM_PORT), "--served-model-name", *served_names]
    if tensor_parallel > 1:
        args += ["--tensor-parallel-size", str(tensor_parallel)]
    if m.pipeline_parallel > 1:
        args += ["--pipeline-parallel-size", str(m.pipeline_parallel)]
    args += [GPU_MEMORY_FLAG, f"{fraction:.3f}", "--max-model-len", str(max_model_len), "--max-num-seqs", str(m.max_num_seqs)]
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
