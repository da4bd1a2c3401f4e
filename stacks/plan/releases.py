"""What differs between vLLM releases, as data: the pinned image's version decides which rules apply."""

from __future__ import annotations

import re

Version = tuple[int, int, int]

DEFAULT_VLLM_VERSION: Version = (0, 11, 2)
"""Version assumed when the base image is pinned by digest."""

REMOVED_FLAGS: dict[str, tuple[Version, str]] = {
    # flag -> (first version without it, what to do instead)
    "--use-v2-block-manager": ((0, 7, 0), "the v2 block manager is the only one now; drop the flag"),
    "--engine-use-ray": ((0, 6, 0), "drop it; the engine runs in-process"),
    "--worker-use-ray": ((0, 6, 0), "use --distributed-executor-backend ray"),
    "--max-context-len-to-capture": ((0, 6, 0), "drop it; CUDA graph capture sizes are chosen by vLLM"),
    "--num-scheduler-steps": ((0, 11, 0), "multi-step scheduling went with the V0 engine; drop it"),
}


def image_vllm_version(base: str) -> Version:
    """vLLM version from a ``vllm/vllm-openai:vX.Y.Z`` tag; the default for digests and other tags."""
    m = re.search(r":v?(\d+)\.(\d+)(?:\.(\d+))?", base.rsplit("/", 1)[-1])
    if not m:
        return DEFAULT_VLLM_VERSION
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def version_text(version: Version) -> str:
    return ".".join(map(str, version))
