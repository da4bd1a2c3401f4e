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


# CUDA of the published vllm/vllm-openai images, from each release's .buildkite/release-pipeline.yaml (the CUDA_VERSION
# build argument of its "Build release image" steps; sdists 0.10.1.1-0.33.0 read). The default tag:
# 0.10.1.1-0.11.0 x86_64 12.8.1 (aarch64 12.9.1); 0.11.2-0.19.1 12.9.1; 0.20.0-0.33.0 13.0.2.
# Variant tags: -cu130 (13.0.1/13.0.2) in 0.14-0.19; -cu129 (12.9.1) in 0.20-0.32; none but nightly -cu134 in 0.33.
IMAGE_CUDA: tuple[tuple[Version, tuple[int, int]], ...] = (
    ((0, 0, 0), (12, 8)),  # releases before 0.10.1 were not read; their CUDA major (12) is what the driver floor depends on
    ((0, 11, 1), (12, 9)),  # 0.11.1 not read; 0.11.2 is
    ((0, 20, 0), (13, 0)),
)
_VARIANT = re.compile(r"-cu(\d\d)(\d)(?:-|$)")


def image_cuda(base: str) -> tuple[int, int]:
    """CUDA (major, minor) a ``vllm/vllm-openai`` image was built with: its ``-cuXYZ`` tag suffix, else its release's default."""
    tag = base.rsplit("/", 1)[-1].partition("@")[0]
    variant = _VARIANT.search(tag)
    if variant:
        return (int(variant.group(1)), int(variant.group(2)))
    version = image_vllm_version(base)
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
