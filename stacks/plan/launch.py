"""vLLM server command lines for the pinned release. No secret ever goes in them."""

from __future__ import annotations

from stacks.catalog.tool_calls import FLAGS as TOOL_FLAGS
from stacks.catalog.tool_calls import NONE, PLUGIN_FLAG, VLLM_TOOL_PARSERS, catalog_parser
from stacks.config.schema import ModelConfig
from stacks.errors import Problem
from stacks.plan.releases import Version, removed_flag, runner_flags, version_text
from stacks.plan.topology import LEADER_ADDRESS_ENV, VLLM_MASTER_PORT, VLLM_PORT, WORKER_INDEX_ENV

ENTRYPOINT = ["vllm", "serve"]
GPU_MEMORY_FLAG = "--gpu-memory-utilization"
KV_CACHE_FLAG = "--kv-cache-memory-bytes"

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
    KV_CACHE_FLAG: "the plan sizes the KV cache; set models[].gpuMemoryUtilization or maxNumSeqs",
    "--kv-cache-memory": "the plan sizes the KV cache; set models[].gpuMemoryUtilization or maxNumSeqs",
    "--runner": "set models[].task",
    "--convert": "set models[].task",
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
    "--limit-mm-per-prompt": "set models[].mediaPerPrompt (images, videos)",
    "--language-model-only": "set models[].mediaPerPrompt: {images: 0} (and videos: 0) to serve a multimodal checkpoint as text only",
    "--mm-ipc-gpu-memory-gb": "it carves GPU memory for the frontend's video decoding out of the planned KV cache; leave it at vLLM's 0",
    "--nnodes": "set models[].nodes",
    "-n": "set models[].nodes",
    "--node-rank": "set models[].nodes (each pod of a group gets its own rank)",
    "-r": "set models[].nodes (each pod of a group gets its own rank)",
    "--master-addr": "set models[].nodes (the group's leader is the master)",
    "--master-port": "set models[].nodes (the group's leader is the master)",
    "--headless": "set models[].nodes (the workers of a group run headless)",
    "--enable-auto-tool-choice": "set models[].toolCallParser",
    "--tool-call-parser": "set models[].toolCallParser",
    "--api-key": "secrets never go in arguments: pulumi config set --secret vllm-stack:vllmApiKey",
    "--hf-token": "secrets never go in arguments: pulumi config set --secret vllm-stack:hfToken",
}


def extra_arg_problems(i: int, m: ModelConfig, version: Version) -> list[Problem]:
    out = []
    for j, arg in enumerate(m.extra_args):
        flag = arg.split("=", 1)[0]
        key = f"models[{i}].extraArgs[{j}]"
        removed = removed_flag(flag, version)
        if removed:
            out.append(Problem(key, f"{flag} was removed in vLLM {version_text(removed[0])}, so the pinned {version_text(version)} refuses it; {removed[1]}"))
        elif flag in MANAGED_FLAGS:
            out.append(Problem(key, f"{flag} is managed by the stack; {MANAGED_FLAGS[flag]}"))
    return out


def tool_call_parser(i: int, m: ModelConfig, task: str, problems: list[Problem]) -> str | None:
    """The model's parser: ``toolCallParser``, else its family's; None for no tool calling (and for embedding models)."""
    key, wanted = f"models[{i}].toolCallParser", m.tool_call_parser
    if task == "embed":
        if wanted not in (None, NONE):
            problems.append(Problem(key, "an embedding model (task: embed) makes no tool calls; remove toolCallParser"))
        return None
    if wanted is None:
        return catalog_parser(m.model)
    if wanted == NONE:
        return None
    plugin = any(a.split("=", 1)[0] == PLUGIN_FLAG for a in m.extra_args)
    if wanted not in VLLM_TOOL_PARSERS and not plugin:
        problems.append(
            Problem(
                key,
                f"{wanted!r} is not a tool-call parser of vLLM 0.26.0 ({', '.join(sorted(VLLM_TOOL_PARSERS))}); name one, none, "
                f"or add {PLUGIN_FLAG} to extraArgs for a parser your plugin registers",
            )
        )
    return wanted


def server_args(
    m: ModelConfig,
    served_names: list[str],
    *,
    version: Version,
    task: str,
    tensor_parallel: int,
    pipeline_parallel: int,
    nodes: int,
    fraction: float,
    kv_cache_bytes: int | None,
    max_model_len: int,
    multimodal: list[str] | None = None,
    tool_call_parser: str | None = None,
) -> list[str]:
    """Arguments after ``vllm serve``: the fraction gates the start; where the release has it, the KV cache is sized in bytes."""
    args = [m.model, "--host", "0.0.0.0", "--port", str(VLLM_PORT), "--served-model-name", *served_names]
    if tensor_parallel > 1:
        args += ["--tensor-parallel-size", str(tensor_parallel)]
    if pipeline_parallel > 1:
        args += ["--pipeline-parallel-size", str(pipeline_parallel)]
    args += node_args(nodes)
    args += runner_flags(version, task)
    args += [GPU_MEMORY_FLAG, f"{fraction:.3f}"]
    if kv_cache_bytes is not None:
        args += [KV_CACHE_FLAG, str(kv_cache_bytes)]
    args += ["--max-model-len", str(max_model_len), "--max-num-seqs", str(m.max_num_seqs)]
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
    if tool_call_parser:
        args += [TOOL_FLAGS[0], TOOL_FLAGS[1], tool_call_parser]
    return args + list(multimodal or []) + list(m.extra_args)


def node_args(nodes: int) -> list[str]:
    """A server spanning nodes: every pod of its LeaderWorkerSet runs ``vllm serve`` with the group's rank of its node and
    the leader as master (Kubernetes expands ``$(VAR)`` from the container's environment, which the controller fills)."""
    if nodes == 1:
        return []
    return [
        "--distributed-executor-backend",
        "mp",
        "--nnodes",
        str(nodes),
        "--node-rank",
        f"$({WORKER_INDEX_ENV})",
        "--master-addr",
        f"$({LEADER_ADDRESS_ENV})",
        "--master-port",
        str(VLLM_MASTER_PORT),
    ]


def worker_args(leader_args: list[str]) -> list[str]:
    """The other nodes of a group run the same command without an API server (``--headless``, vLLM 0.26 run_headless)."""
    return [*leader_args, "--headless"]
