"""What differs between vLLM releases, as data: the pinned image's version decides which rules apply."""

from __future__ import annotations

import re
from collections.abc import Mapping

Version = tuple[int, int, int]

OLDEST_CHECKED: Version = (0, 11, 2)
NEWEST_CHECKED: Version = (0, 34, 0)
"""The releases whose facts below were read from their source (every minor line in between too); a patch release
(0.34.1) follows its minor line's rules."""
OLDEST_PLANNED: Version = (0, 10, 1)
"""Older releases are refused: before it the memory rules below were not read at all (V0 engine era). From it up to
OLDEST_CHECKED only some facts were read (``--kv-cache-memory-bytes``, the image's CUDA): planned with a warning."""

# Sources for everything in this module unless a line says otherwise: each release's sdist (vllm/engine/arg_utils.py
# and the config dataclasses it turns into flags, vllm/entrypoints/*/cli_args.py, vllm/config/, vllm/v1/worker/,
# vllm/envs.py), 0.11.2-0.33.0; the flag sets were taken from each release's own `vllm serve` parser and every
# vanished flag was parsed again to see argparse refuse it (0.15.1 from its wheel: it has no sdist). 0.34.0 from its
# wheel's Python files (/work/ref/src/vllm-0.34.0): its EngineArgs and frontend argument fields against 0.33.0's
# (the same comparison finds every removal of the table below from 0.26 on) drop no flag and add eight.
REMOVED_FLAGS: dict[str, tuple[Version, str]] = {
    # flag -> (first release whose parser refuses it, what to do instead)
    "--use-v2-block-manager": ((0, 7, 0), "the v2 block manager is the only one now; drop the flag"),
    "--engine-use-ray": ((0, 6, 0), "drop it; the engine runs in-process"),
    "--worker-use-ray": ((0, 6, 0), "use --distributed-executor-backend ray"),
    "--max-context-len-to-capture": ((0, 6, 0), "drop it; CUDA graph capture sizes are chosen by vLLM"),
    "--num-scheduler-steps": ((0, 11, 0), "multi-step scheduling went with the V0 engine; drop it"),
    "--guided-decoding-backend": ((0, 12, 0), "use --structured-outputs-config '{\"backend\": ...}'"),
    "--guided-decoding-disable-fallback": ((0, 12, 0), "use --structured-outputs-config '{\"disable_fallback\": true}'"),
    "--guided-decoding-disable-any-whitespace": ((0, 12, 0), "use --structured-outputs-config '{\"disable_any_whitespace\": true}'"),
    "--guided-decoding-disable-additional-properties": ((0, 12, 0), "use --structured-outputs-config '{\"disable_additional_properties\": true}'"),
    "--num-lookahead-slots": ((0, 12, 0), "drop it; speculative decoding is configured with --speculative-config"),
    "--override-pooler-config": ((0, 12, 0), "use --pooler-config"),
    "--eplb-window-size": ((0, 12, 0), "use --eplb-config '{\"window_size\": ...}'"),
    "--eplb-step-interval": ((0, 12, 0), "use --eplb-config '{\"step_interval\": ...}'"),
    "--eplb-log-balancedness": ((0, 12, 0), "use --eplb-config '{\"log_balancedness\": true}'"),
    "--num-redundant-experts": ((0, 12, 0), "use --eplb-config '{\"num_redundant_experts\": ...}'"),
    "--lora-extra-vocab-size": ((0, 12, 0), "drop it; LoRA adapters no longer extend the vocabulary"),
    "--task": ((0, 13, 0), "set models[].task: embed (the stack passes --runner pooling --convert embed)"),
    "--cuda-graph-sizes": ((0, 13, 0), "use --cudagraph-capture-sizes (or --max-cudagraph-capture-size)"),
    "--disable-mm-preprocessor-cache": ((0, 13, 0), "use --mm-processor-cache-gb 0"),
    "--enable-multimodal-encoder-data-parallel": ((0, 13, 0), "use --mm-encoder-tp-mode data"),
    "--disable-log-requests": ((0, 17, 0), "drop it: requests are not logged unless --enable-log-requests is given"),
    "--logits-processor-pattern": ((0, 17, 0), "drop it; the flag is gone without a replacement"),
    "--swap-space": ((0, 18, 0), "drop it: the V1 engine never swaps KV to CPU (--kv-offloading-size offloads it)"),
    "--disable-frontend-multiprocessing": ((0, 19, 0), "drop it; the frontend always runs in its own process"),
    "--max-num-partial-prefills": ((0, 27, 0), "drop it; partial prefills are scheduled by vLLM itself"),
    "--max-long-partial-prefills": ((0, 27, 0), "drop it; partial prefills are scheduled by vLLM itself"),
    "--calculate-kv-scales": ((0, 28, 0), "drop it: fp8 KV scales come from the checkpoint (else 1.0)"),
    "--override-attention-dtype": ((0, 28, 0), "drop it; the flag is gone without a replacement"),
    "--enable-bf16x3-router-gemm": ((0, 30, 0), "drop it; the flag existed only in 0.26-0.29"),
    "--enable-mamba-fine-grained-prefix-cache": ((0, 31, 0), "use --enable-mamba-shared-prefix-checkpoint"),
}
NEGATED = {"--no-eplb-log-balancedness", "--no-disable-log-requests", "--no-disable-frontend-multiprocessing", "--no-calculate-kv-scales"}
"""``--no-X`` spellings vanish with their flag."""
ACCEPTED_AGAIN: dict[str, Version] = {"--disable-log-requests": (0, 33, 0)}
"""0.33 pairs every --enable-X with a --disable-X: --disable-log-requests parses again there (a no-op)."""


def removed_flag(flag: str, version: Version) -> tuple[Version, str] | None:
    """(release that removed it, the fix) when ``flag`` no longer parses in ``version``."""
    name = "--" + flag[len("--no-") :] if flag in NEGATED else flag
    if name not in REMOVED_FLAGS:
        return None
    since, fix = REMOVED_FLAGS[name]
    if version < since or (name in ACCEPTED_AGAIN and version >= ACCEPTED_AGAIN[name] and flag == name):
        return None
    return since, fix


KV_CACHE_MEMORY_BYTES_SINCE: Version = (0, 10, 2)
"""``--kv-cache-memory-bytes`` (CacheConfig.kv_cache_memory_bytes): absent in 0.10.1.1, present from 0.10.2.
It sizes the KV cache exactly but vLLM still refuses to start when free memory is below
``--gpu-memory-utilization`` x total (``request_memory`` in Worker.init_device, every release to 0.34). 0.34's
extensible KV cache, on by default on CUDA, would size the cache from what is free after warm-up and drop that start
check; it is off whenever ``--kv-cache-memory-bytes`` is given (VllmConfig._resolve_extensible_kv_cache, vllm/config/
vllm.py; request_memory, vllm/v1/worker/utils.py, 0.34.0), which the plan always passes from 0.10.2."""


def kv_block_tokens(version: Version) -> int:
    """Tokens per KV block for full and sliding-window attention on CUDA: CacheConfig.DEFAULT_BLOCK_SIZE, 16 up to 0.33
    (FlashAttention and FlashInfer keep it, Platform.update_block_size_for_backend) and 64 from 0.34.0
    (vllm/config/cache.py; FlashAttention's get_preferred_block_size keeps the default it supports,
    vllm/v1/attention/backends/flash_attn.py and backend.py, 0.34.0)."""
    return 64 if version >= (0, 34, 0) else 16


def gpu_memory_utilization_default(version: Version) -> float:
    """CacheConfig.gpu_memory_utilization: 0.9 up to 0.19, 0.92 from 0.20.0."""
    return 0.92 if version >= (0, 20, 0) else 0.9


V2_RUNNER_ENV = "VLLM_USE_V2_MODEL_RUNNER"
"""Set to an integer, it picks the runner over the default (vllm/envs.py maybe_convert_bool: ``bool(int(value))``, 0.26)."""


def runner_env_readable(value: str) -> bool:
    """``V2_RUNNER_ENV``'s value is an integer vLLM reads (the planner refuses any other)."""
    return value.strip().lstrip("-").isdigit()


def uses_v2_model_runner(version: Version, *, moe: bool, pooling: bool, env: Mapping[str, str] | None = None) -> bool:
    """0.22-0.28 run dense generative models on the V2 model runner by default (VllmConfig.use_v2_model_runner ->
    _is_default_v2_model_runner_model: runner "generate", not hybrid, not MoE unless listed). From 0.29 every model
    does, unless it asks for a feature V2 lacks (VllmConfig.use_v2_model_runner and
    _get_v2_model_runner_unsupported_features, vllm/config/vllm.py, 0.29.0-0.33.0; V2 also batches one step more
    with pipeline parallelism, the safe side); 0.34.0 has no other runner (vllm/v1/worker/gpu_model_runner.py is gone). In 0.22-0.28
    ``VLLM_USE_V2_MODEL_RUNNER`` in the server's environment decides instead (callers check ``runner_env_readable``)."""
    if version >= (0, 29, 0):
        return True
    in_releases = (0, 22, 0) <= version < (0, 29, 0)
    chosen = (env or {}).get(V2_RUNNER_ENV)
    if in_releases and chosen is not None and runner_env_readable(chosen):
        return bool(int(chosen))
    return in_releases and not moe and not pooling


ENCODER_PROFILED_BY_V2_SINCE: Version = (0, 27, 0)
"""The V2 model runner profiles the multimodal encoder and its cache from 0.27.0 (PR #47985: EncoderRunner.
profile_encoder_cache in v1/worker/gpu/mm/encoder_runner.py); its profile_run in 0.26.0 runs the text model only."""


def encoder_profiled(version: Version, *, v2_runner: bool) -> bool:
    """Whether vLLM runs the vision encoder on its largest batch before sizing the KV cache (so the budget holds it).

    The V1 runner always does (GPUModelRunner.profile_run, v1/worker/gpu_model_runner.py, every release 0.11-0.33); the
    V2 runner, default for dense generative models in 0.22-0.28 (``uses_v2_model_runner``), only from 0.27.0."""
    return not v2_runner or version >= ENCODER_PROFILED_BY_V2_SINCE


def cudagraphs_in_budget(version: Version, *, v2_runner: bool) -> bool:
    """Whether CUDA-graph memory is taken out of the --gpu-memory-utilization budget.

    Before 0.18 graphs are captured after the KV cache is sized, outside the budget; 0.18-0.19 estimate them but apply
    the estimate only with VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1; from 0.20.0 that switch defaults to 1. The V2
    model runner of 0.22-0.28 returns 0 from profile_cudagraph_memory (vllm/v1/worker/gpu/model_runner.py), so its
    graphs stay outside the budget (measured on an H100 with 0.26.0: no estimate applied); 0.29 gave it an estimate.
    """
    if version < (0, 20, 0):
        return False
    return not (v2_runner and version < (0, 29, 0))


def batch_defaults(version: Version, gpu_total_gib: float, gpu_name: str) -> tuple[int, int]:
    """vLLM's (max_num_batched_tokens, max_num_seqs) for `vllm serve` on this GPU (EngineArgs.get_batch_defaults).

    vLLM compares NVML's total of device 0 (about 0.5 GiB above what CUDA reports, which is ``gpu_total_gib``):
    >= 160 GiB -> 16384/1024 (from 0.28.0); >= 70 GiB and not an A100 -> 8192/1024; otherwise 2048/256.
    """
    nvml_gib = gpu_total_gib + 0.5
    if version >= (0, 28, 0) and nvml_gib >= 160:
        return 16384, 1024
    if nvml_gib >= 70 and "a100" not in gpu_name.lower():
        return 8192, 1024
    return 2048, 256


def async_scheduling(version: Version, *, pooling: bool) -> bool:
    """On by default from 0.14.0 (off for the pooling runner from 0.20.0)."""
    return version >= (0, 14, 0) and not (pooling and version >= (0, 20, 0))


def concurrent_batches(version: Version, *, pp: int, v2_runner: bool, pooling: bool) -> int:
    """Batches in flight at once (VllmConfig.max_concurrent_batches, 0.26): async scheduling overlaps two (the V2 runner
    pp + 1); without it, one per pipeline stage. Sliding-window layers keep the blocks of every batch in flight."""
    if not async_scheduling(version, pooling=pooling):
        return pp
    if v2_runner:
        return pp + 1
    return 2 if pp == 1 else pp


MULTI_NODE_SINCE: Version = (0, 26, 0)
"""A server spanning nodes without Ray: ``vllm serve --nnodes N --node-rank R --master-addr ADDR --master-port P`` on every
node, ``--headless`` on all but the first (the multiprocessing executor across nodes, vllm-project/vllm#23691; read in
0.26.0's and 0.34.0's sources: engine/arg_utils.py, entrypoints/cli/serve.py run_headless, config/parallel.py).
Older releases were not read for it. Ray is not used: vLLM dropped it from its requirements in 0.19 (0.26.0's wheel
metadata lists no ray; ai-dynamo/dynamo#8515), and images built on vllm/vllm-openai add it themselves to run Ray
(NVIDIA-NeMo/Skills' Dockerfile.vllm over v0.22.1), while the multiprocessing executor needs nothing beyond the image."""

NON_ROOT_SINCE: Version = (0, 22, 0)
"""vLLM images have a ``vllm`` user (UID 2000, GID 0, HOME /home/vllm) from 0.22.0 (docker/Dockerfile; 0.21.0 has none).
The default vllm-openai image still runs as root; run as UID 2000 its HOME is /home/vllm (from /etc/passwd)."""
CU129_RELEASES: tuple[Version, Version] = ((0, 20, 0), (0, 33, 0))
"""[first, end) of the releases published with a ``vX.Y.Z-cu129`` tag (0.20-0.32); 0.19 and older are CUDA 12.9 by default."""


def runner_flags(version: Version, task: str) -> list[str]:
    """How to serve an embedding model: ``--task embed`` up to 0.12, ``--runner pooling --convert embed`` from 0.13."""
    if task != "embed":
        return []
    return ["--task", "embed"] if version < (0, 13, 0) else ["--runner", "pooling", "--convert", "embed"]


def image_vllm_version(base: str) -> Version | None:
    """vLLM version from a ``vllm/vllm-openai:vX.Y.Z`` tag; None when the reference does not say it (a digest alone,
    another tag)."""
    m = re.search(r":v?(\d+)\.(\d+)(?:\.(\d+))?", base.rsplit("/", 1)[-1])
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def parse_version(text: str) -> Version:
    """``0.26.0`` (or ``v0.26``) -> (0, 26, 0)."""
    parts = [int(p) for p in text.lstrip("v").split(".")]
    return (parts[0], parts[1], parts[2] if len(parts) > 2 else 0)


def version_text(version: Version) -> str:
    return ".".join(map(str, version))


def release_rules(version: Version) -> tuple[str, str | None]:
    """(which rules plan the release, a warning or None); ValueError naming the fix when no rules fit it."""
    known = f"{version_text(OLDEST_CHECKED)} to {NEWEST_CHECKED[0]}.{NEWEST_CHECKED[1]}.x"
    if version[:2] > NEWEST_CHECKED[:2]:
        raise ValueError(
            f"vLLM {version_text(version)} is newer than the releases whose rules vllm-stack knows ({known}, read from their "
            f"source): its memory rules and flags may differ and the plan could be wrong; pin v{version_text(NEWEST_CHECKED)} "
            "or older, or update vllm-stack"
        )
    if version < OLDEST_PLANNED:
        raise ValueError(
            f"vLLM {version_text(version)} is older than any release vllm-stack can plan ({known}, read from their source; "
            f"{version_text(OLDEST_PLANNED)} with a warning): pin v{version_text(OLDEST_CHECKED)} or newer"
        )
    if version < OLDEST_CHECKED:
        return (
            f"vLLM {version_text(OLDEST_CHECKED)}'s rules where {version_text(version)}'s were not read",
            f"vLLM {version_text(version)} is older than {version_text(OLDEST_CHECKED)}, the oldest release whose rules were read "
            f"from source: the plan uses {version_text(OLDEST_CHECKED)}'s where its own are unknown; check it on a GPU "
            "(benchmarks/calibrate.py) or pin a newer release",
        )
    return f"vLLM {version[0]}.{version[1]}'s rules (read from its source)", None


# CUDA of the published vllm/vllm-openai images, from each release's .buildkite/release-pipeline.yaml (the CUDA_VERSION
# build argument of its "Build release image" steps; sdists 0.10.1.1-0.33.0 read). The default tag:
# 0.10.1.1-0.11.0 x86_64 12.8.1 (aarch64 12.9.1); 0.11.2-0.19.1 12.9.1; 0.20.0-0.33.0 13.0.2. 0.34.0 (no sdist read):
# its default wheel links CUDA 13 as 0.33.0's does (vllm/cumem_allocator.abi3.so needs libnvrtc.so.13 in both).
# Variant tags: -cu130 (13.0.1/13.0.2) in 0.14-0.19; -cu129 (12.9.1) in 0.20-0.32; none but nightly -cu134 in 0.33.
IMAGE_CUDA: tuple[tuple[Version, tuple[int, int]], ...] = (
    ((0, 0, 0), (12, 8)),  # releases before 0.10.1 were not read; their CUDA major (12) is what the driver floor depends on
    ((0, 11, 1), (12, 9)),  # 0.11.1 not read; 0.11.2 is
    ((0, 20, 0), (13, 0)),
)
_VARIANT = re.compile(r"-cu(\d\d)(\d)(?:-|$)")


def image_cuda(base: str, version: Version) -> tuple[int, int]:
    """CUDA (major, minor) a ``vllm/vllm-openai`` image of release ``version`` was built with: its ``-cuXYZ`` tag suffix,
    else its release's default."""
    tag = base.rsplit("/", 1)[-1].partition("@")[0]
    variant = _VARIANT.search(tag)
    if variant:
        return (int(variant.group(1)), int(variant.group(2)))
    return next(cuda for first, cuda in reversed(IMAGE_CUDA) if version >= first)


def min_compute_capability(version: Version) -> tuple[int, int]:
    """Oldest GPU generation a release supports: "compute capability 7.0 or higher (e.g., V100 ...)" up to 0.19,
    "7.5 or higher (e.g., T4 ...)" from 0.20 (docs/getting_started/installation/gpu.cuda.inc.md of each sdist;
    the 0.20+ images are built for 7.5 and up)."""
    return (7, 5) if version >= (0, 20, 0) else (7, 0)


CUDA_COMPAT_ENV = "VLLM_ENABLE_CUDA_COMPATIBILITY"
"""Set to 1, a vLLM image puts its CUDA forward-compatibility libraries first (vllm/env_override.py, docker/Dockerfile)."""
CUDA_COMPAT_ENV_SINCE: Version = (0, 17, 0)
"""First release with that switch (0.16.0 has none; the images up to 0.14 add the compat libraries to the linker cache at build time)."""
