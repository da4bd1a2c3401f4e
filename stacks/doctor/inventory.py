"""``doctor --inventory``: this host's GPUs as the ``gpus`` block of a stack file, with the memory figure the planner expects."""

from __future__ import annotations

import json
import math
from typing import Any

from stacks.doctor.gpu_checks import floor2, gib
from stacks.doctor.probes import GpuInventory

RESERVE_HINT_GIB = 0.25
"""Memory other processes hold now above which the block suggests reservedGiB."""


def inventory_yaml(inv: GpuInventory, host: str) -> str:
    cuda = f" (CUDA {inv.cuda[0]}.{inv.cuda[1]})" if inv.cuda else ""
    lines = [
        f"# GPUs of {host} from NVML, driver {inv.driver}{cuda}.",
        "# memoryGiB is the total as CUDA reports it (what vLLM's --gpu-memory-utilization multiplies):",
        "# NVML's total less the memory the driver reserves, rounded down.",
        "config:",
        "  vllm-stack:gpus:",
    ]
    for g in inv.gpus:
        smi = f"nvidia-smi: {g.total_bytes // 2**20:,} MiB total"
        smi += f", {g.reserved_bytes // 2**20:,} MiB reserved" if g.reserved_bytes is not None else "; reserved unknown (no NVML memory info v2)"
        lines += [f"    - index: {g.index}", f"      name: {json.dumps(g.name)}", f"      memoryGiB: {floor2(gib(g.cuda_total_bytes))}  # {smi}"]
        used = gib(g.used_bytes)
        if used > RESERVE_HINT_GIB:
            lines.append(f"      # reservedGiB: {math.ceil(used * 10) / 10}  # in use by other processes now; keep it if they stay")
    return "\n".join(lines) + "\n"


def inventory_json(inv: GpuInventory) -> dict[str, Any]:
    return {
        "driver": inv.driver,
        "cuda": ".".join(map(str, inv.cuda)) if inv.cuda else None,
        "gpus": [
            {
                "index": g.index,
                "name": g.name,
                "memoryGiB": floor2(gib(g.cuda_total_bytes)),
                "nvmlTotalMiB": g.total_bytes // 2**20,
                "nvmlReservedMiB": None if g.reserved_bytes is None else g.reserved_bytes // 2**20,
                "freeMiB": g.free_bytes // 2**20,
                "usedMiB": g.used_bytes // 2**20,
                "computeCapability": ".".join(map(str, g.compute_capability)),
                "kind": g.kind,
            }
            for g in inv.gpus
        ],
    }
