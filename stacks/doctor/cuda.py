"""NVIDIA's driver rules for running a CUDA build (the vLLM image's) on a host driver.

Minor-version compatibility (docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html, Table 1):
an application built with any CUDA 13.x runs on drivers >= 580, 12.x on >= 525, 11.x on >= 450, "with limited
feature-set" (no PTX JIT of newer PTX) when the driver's own CUDA is older than the build's.
Forward compatibility (.../cuda-compatibility/forward-compatibility.html): the cuda-compat package lets a newer CUDA run
on an older driver branch, but only on NVIDIA data-center GPUs, select NGC Server Ready RTX cards and Jetson boards.
"""

from __future__ import annotations

MIN_DRIVER_BRANCH: dict[int, int] = {11: 450, 12: 525, 13: 580}
"""CUDA major -> oldest driver branch that runs it (minor-version compatibility)."""


def driver_branch(version: str) -> int:
    """``580.95.05`` -> 580 (0 when unreadable)."""
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def min_driver_branch(cuda_major: int) -> int:
    """Oldest driver branch for a CUDA major; majors not in the table need at least the newest branch listed."""
    return MIN_DRIVER_BRANCH.get(cuda_major, max(MIN_DRIVER_BRANCH.values()))
