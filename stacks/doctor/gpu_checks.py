"""The docker host's GPUs (NVML) against the plan: count, memory, driver for the image's CUDA, generation, free memory."""

from __future__ import annotations

import math

from stacks.doctor.cuda import driver_branch, min_driver_branch
from stacks.doctor.probes import GpuInfo, GpuInventory, GpuProbe, ProbeError
from stacks.doctor.result import Check, skipped
from stacks.plan.memory import CUDA_CONTEXT_GIB, GIB, SAFETY_FRACTION
from stacks.plan.releases import CUDA_COMPAT_ENV, CUDA_COMPAT_ENV_SINCE, image_cuda, min_compute_capability, parse_version, version_text
from stacks.plan.types import GpuPlan, ModelPlan, StackPlan

MEMORY_TOLERANCE = 0.01
"""The stack's memoryGiB may differ this much from what CUDA reports before the plan is called wrong."""
FULL_FEATURES_CC = (8, 0)
"""bfloat16 and FlashAttention need compute capability 8.0 in vLLM (vllm/platforms/cuda.py check_if_supports_dtype,
vllm/vllm_flash_attn/flash_attn_interface.py); below it vLLM falls back to float16 and other attention kernels."""
INVENTORY = "`python -m stacks doctor --inventory` prints the gpus block for this host"
DEPENDENT = ["GPUs", "driver for the image", "GPU memory", "GPU generation", "GPU free memory"]


def gib(n_bytes: float) -> float:
    return n_bytes / GIB


def floor2(x: float) -> float:
    """GiB rounded down to 2 decimals: a plan made from it never over-states the GPU."""
    return math.floor(x * 100) / 100


def _arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None


def gpu_checks(plan: StackPlan, probe: GpuProbe) -> list[Check]:
    try:
        inv = probe.inventory()
    except ProbeError as err:
        return [Check("gpu", "NVIDIA driver", "fail", err.message, err.fix), *skipped("gpu", DEPENDENT, "needs the NVIDIA driver (NVML)")]
    by_index = {g.index: g for g in inv.gpus}
    cuda = f" (CUDA {inv.cuda[0]}.{inv.cuda[1]})" if inv.cuda else ""
    out = [Check("gpu", "NVIDIA driver", "pass", f"driver {inv.driver}{cuda}, {len(inv.gpus)} GPU(s): {', '.join(sorted({g.name for g in inv.gpus}))}")]
    out.append(_count(plan, inv))
    out.append(_driver(plan, inv))
    for gp in plan.gpus:
        g = by_index.get(gp.index)
        if g is None:
            continue
        models = [plan.model(n) for n in gp.models]
        out.append(_memory(gp, g))
        out.append(_generation(plan, gp, g, models))
        out.append(_free(gp, g, models))
    return out


def _count(plan: StackPlan, inv: GpuInventory) -> Check:
    planned = sorted(gp.index for gp in plan.gpus)
    missing = [i for i in planned if i not in {g.index for g in inv.gpus}]
    detail = f"stack uses GPU(s) {', '.join(map(str, planned))}; this host has {len(inv.gpus)}"
    if missing:
        return Check("gpu", "GPUs", "fail", f"{detail}: no GPU {', '.join(map(str, missing))}", f"list only this host's GPUs in vllm-stack:gpus ({INVENTORY})")
    return Check("gpu", "GPUs", "pass", detail)


def _driver(plan: StackPlan, inv: GpuInventory) -> Check:
    need = image_cuda(plan.image.base, parse_version(plan.image.vllm_version))
    need_text = f"{need[0]}.{need[1]}"
    assumed = f" (pinned by digest: CUDA taken from vLLM {plan.image.vllm_version}'s default image)" if "@" in plan.image.base else ""
    branch = driver_branch(inv.driver)
    floor = min_driver_branch(need[0])
    image = f"{plan.image.base} is built with CUDA {need_text}{assumed}"
    if branch >= floor:
        if inv.cuda and inv.cuda < need:
            return Check(
                "gpu",
                "driver for the image",
                "warn",
                f"{image}; driver {inv.driver} supports CUDA {inv.cuda[0]}.{inv.cuda[1]}: it runs under minor-version compatibility (no JIT of newer PTX)",
                f"if kernels fail to load, update the driver to one supporting CUDA {need_text}",
            )
        return Check("gpu", "driver for the image", "pass", f"{image}; driver {inv.driver} runs it (CUDA {need[0]}.x needs R{floor}+)")
    detail = f"{image}, which needs driver R{floor}+; this host has {inv.driver}"
    kinds = {g.kind for g in inv.gpus}
    switch = parse_version(plan.image.vllm_version) >= CUDA_COMPAT_ENV_SINCE
    fixes = [f"update the driver to R{floor}+"]
    if need[0] >= 13:
        fixes.append(f"pin a CUDA 12.9 image (the default tag up to vLLM 0.19, the -cu129 tag for 0.20-0.32; R{min_driver_branch(12)}+)")
    if not (kinds and kinds <= {"datacenter"}):
        return Check("gpu", "driver for the image", "fail", f"{detail} (CUDA forward compatibility needs data-center GPUs)", "; or ".join(fixes))
    if switch and all(m.env.get(CUDA_COMPAT_ENV) == "1" for m in plan.models):
        return Check(
            "gpu", "driver for the image", "warn", f"{detail}; every model sets {CUDA_COMPAT_ENV}=1 (CUDA forward compatibility)", fixes[0] + " to drop it"
        )
    if switch:
        fixes.insert(1, f"set env: {{{CUDA_COMPAT_ENV}: '1'}} on every model (the image's CUDA forward compatibility)")
    return Check("gpu", "driver for the image", "warn", f"{detail}; data-center GPUs can run it with CUDA forward compatibility", "; or ".join(fixes))


def _memory(gp: GpuPlan, g: GpuInfo) -> Check:
    real = gib(g.cuda_total_bytes)
    smi = f"nvidia-smi {g.total_bytes // 2**20:,} MiB" + (f", {g.reserved_bytes // 2**20:,} MiB reserved by the driver" if g.reserved_bytes is not None else "")
    detail = f"stack: {gp.name}, {gp.memory_gib} GiB; host: {g.name}, {real:.2f} GiB as CUDA reports it ({smi})"
    name = f"GPU {gp.index} memory"
    if g.reserved_bytes is None:
        detail += "; this driver has no NVML memory info v2, so its reserved memory is unknown"
    if abs(gp.memory_gib - real) > MEMORY_TOLERANCE * real:
        return Check("gpu", name, "fail", detail, f"set memoryGiB: {floor2(real)} for GPU {gp.index} ({INVENTORY})")
    squash = "".join(gp.name.lower().split())
    if gp.name != "GPU" and squash not in "".join(g.name.lower().split()):
        return Check("gpu", name, "warn", detail + ": the names differ", f"check that GPU {gp.index} is the one the stack means ({INVENTORY})")
    return Check("gpu", name, "pass", detail)


def _generation(plan: StackPlan, gp: GpuPlan, g: GpuInfo, models: list[ModelPlan]) -> Check:
    cc = g.compute_capability
    name = f"GPU {gp.index} generation"
    version = parse_version(plan.image.vllm_version)
    floor = min_compute_capability(version)
    detail = f"{g.name}: compute capability {cc[0]}.{cc[1]}"
    if cc < floor:
        return Check(
            "gpu",
            name,
            "fail",
            f"{detail}; vLLM {version_text(version)} needs {floor[0]}.{floor[1]} or newer",
            "use a newer GPU, or pin vLLM 0.19.x or older (the last releases that support compute capability 7.0)",
        )
    if cc >= FULL_FEATURES_CC:
        return Check("gpu", name, "pass", detail)
    bf16 = [m.name for m in models if _arg(m.args, "--dtype") == "bfloat16"]
    if bf16:
        return Check("gpu", name, "fail", f"{detail}: vLLM refuses bfloat16 below 8.0 ({', '.join(bf16)} set it)", f"set dtype: float16 on {', '.join(bf16)}")
    graphs = [m.name for m in models if "--enforce-eager" not in m.args]
    return Check(
        "gpu",
        name,
        "warn",
        f"{detail}, older than 8.0: no bfloat16 (dtype auto falls back to float16) and no FlashAttention (vLLM picks another attention backend)",
        (
            f"if {', '.join(graphs)} fails while compiling or capturing CUDA graphs, set enforceEager: true on it (no torch.compile, "
            "no CUDA graphs: slower decoding, less memory)"
        )
        if graphs
        else "every model already runs with enforceEager",
    )


def _free(gp: GpuPlan, g: GpuInfo, models: list[ModelPlan]) -> Check:
    name = f"GPU {gp.index} free memory"
    total = g.cuda_total_bytes
    free = gib(g.free_bytes)
    if not models:
        return Check("gpu", name, "pass", f"{free:.2f} GiB free; no server planned on it")
    first = models[0]
    start = first.memory.fraction * gib(total) + CUDA_CONTEXT_GIB
    # the plan's own footprints: budgets in use plus what each holds outside it (CUDA context, graphs)
    all_servers = sum(m.memory.footprint_gib for m in models)
    if any(m.swap for m in models):
        # a swap group's members are awake in turns: it counts as what the plan reserves for it
        all_servers = gp.memory_gib * (1 - SAFETY_FRACTION) - gp.reserved_gib - gp.headroom_gib
    detail = (
        f"{free:.2f} GiB free; {first.name} starts first and needs {start:.2f} GiB "
        f"({first.memory.fraction:.3f} x {gib(total):.2f} GiB, vLLM's start check, + {CUDA_CONTEXT_GIB} GiB CUDA context)"
    )
    if free < start:
        return Check(
            "gpu",
            name,
            "fail",
            detail,
            f"stop what holds GPU {gp.index}'s memory (`nvidia-smi` lists the processes), or set reservedGiB: {math.ceil(gib(g.used_bytes) * 10) / 10} "
            f"on GPU {gp.index} so the plan leaves it alone",
        )
    if len(models) > 1 and free < all_servers:
        return Check(
            "gpu",
            name,
            "warn",
            f"{detail}; all {len(models)} servers together need {all_servers:.2f} GiB, more than is free now",
            f"free GPU {gp.index}'s memory or set reservedGiB: {math.ceil(gib(g.used_bytes) * 10) / 10} on it",
        )
    return Check("gpu", name, "pass", detail + (f"; all {len(models)} servers need {all_servers:.2f} GiB" if len(models) > 1 else ""))
