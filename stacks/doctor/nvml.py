"""The GPUs as NVML sees them (``nvidia-ml-py``, imported only when asked, so the rest of the CLI runs without it).

API read from nvidia-ml-py 13.615.71's ``pynvml.py``: ``nvmlDeviceGetMemoryInfo(handle, version=nvmlMemory_v2)`` returns
total / reserved / free / used (``nvmlDeviceGetMemoryInfo_v2``); the v1 call has no ``reserved`` and counts it as used.
"""

from __future__ import annotations

from typing import Any

from stacks.doctor.probes import GpuInfo, GpuInventory, GpuKind, ProbeError

# NVML brand constants (pynvml NVML_BRAND_*) by what they mean for CUDA forward compatibility
_BRAND_KIND: dict[str, GpuKind] = {
    "NVML_BRAND_GEFORCE": "consumer",
    "NVML_BRAND_TITAN": "consumer",
    "NVML_BRAND_GEFORCE_RTX": "consumer",
    "NVML_BRAND_TITAN_RTX": "consumer",
    "NVML_BRAND_TESLA": "datacenter",
    "NVML_BRAND_NVIDIA": "datacenter",
    "NVML_BRAND_QUADRO": "professional",
    "NVML_BRAND_QUADRO_RTX": "professional",
    "NVML_BRAND_NVIDIA_RTX": "professional",
}

_NO_DRIVER_FIX = "install the NVIDIA driver (and reboot), then check that `nvidia-smi` lists the GPUs"


def _init_error(err: Exception) -> ProbeError:
    name = type(err).__name__
    if name in ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded"):
        return ProbeError(f"no NVIDIA driver on this machine (NVML: {err})", _NO_DRIVER_FIX)
    if name == "NVMLError_LibRmVersionMismatch":
        return ProbeError(f"the loaded NVIDIA kernel module and the driver libraries differ (NVML: {err})", "reboot after the driver update")
    if name == "NVMLError_NoPermission":
        return ProbeError(f"NVML refused access (NVML: {err})", "run as a user that may open /dev/nvidia*")
    return ProbeError(f"NVML failed: {err}", "check that `nvidia-smi` works on this machine")


class NvmlProbe:
    """Reads every GPU once; holds no NVML handle afterwards (and never a CUDA context)."""

    def inventory(self) -> GpuInventory:
        try:
            import pynvml as nv
        except ImportError:
            raise ProbeError("nvidia-ml-py is not installed", "pip install -r requirements.txt (it pins nvidia-ml-py)") from None
        try:
            nv.nvmlInit()
        except nv.NVMLError as err:
            raise _init_error(err) from None
        try:
            driver = str(nv.nvmlSystemGetDriverVersion())
            cuda = nv.nvmlSystemGetCudaDriverVersion()
            gpus = [self._gpu(nv, i) for i in range(nv.nvmlDeviceGetCount())]
        except nv.NVMLError as err:
            raise ProbeError(f"NVML failed while reading the GPUs: {err}", "check that `nvidia-smi` works on this machine") from None
        finally:
            nv.nvmlShutdown()
        return GpuInventory(driver=driver, cuda=(cuda // 1000, cuda % 1000 // 10) if cuda else None, gpus=gpus)

    @staticmethod
    def _gpu(nv: Any, index: int) -> GpuInfo:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        try:
            mem = nv.nvmlDeviceGetMemoryInfo(handle, version=nv.nvmlMemory_v2)
            reserved: int | None = int(mem.reserved)
        except nv.NVMLError:  # drivers without nvmlDeviceGetMemoryInfo_v2
            mem = nv.nvmlDeviceGetMemoryInfo(handle)
            reserved = None
        kind: GpuKind = "unknown"
        try:
            brand = nv.nvmlDeviceGetBrand(handle)
            kind = next((k for const, k in _BRAND_KIND.items() if getattr(nv, const, None) == brand), "unknown")
        except nv.NVMLError:
            pass  # brand not reported: "unknown"
        major, minor = nv.nvmlDeviceGetCudaComputeCapability(handle)
        return GpuInfo(
            index=index,
            name=str(nv.nvmlDeviceGetName(handle)),
            kind=kind,
            total_bytes=int(mem.total),
            reserved_bytes=reserved,
            free_bytes=int(mem.free),
            used_bytes=int(mem.used),
            compute_capability=(int(major), int(minor)),
        )
