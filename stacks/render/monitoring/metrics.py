"""Every metric name the alert rules and dashboards may use, with where each list was read.

Rules and dashboards must only query metrics the pinned programs really publish (tests/test_monitoring.py
parses every expression and checks its names against ``published()``). Bump these lists with the pins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind

    def exposed(self) -> set[str]:
        """Names on the wire: prometheus_client adds ``_total`` to counters; histograms are ``_bucket``/``_sum``/``_count``."""
        if self.kind == "counter":
            return {f"{self.name}_total"}
        if self.kind == "histogram":
            return {f"{self.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        return {self.name}


def _many(kind: Kind, *names: str) -> list[Metric]:
    return [Metric(n, kind) for n in names]


VLLM_RELEASE = "0.26.0"
VLLM_SOURCE = "vllm-0.26.0.tar.gz (sdist, sha256 23e9fa19d7e20ce7dcc1c074d41503e2116d23f19e688f5d5ea91b741f958502): vllm/v1/metrics/loggers.py"
VLLM_METRICS = [
    # PrometheusStatLogger.__init__, loggers.py l.493-1089; labels model_name (the first served name) and engine (l.468)
    *_many("gauge", "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:num_requests_waiting_by_reason", "vllm:engine_sleep_state"),
    *_many("gauge", "vllm:kv_cache_usage_perc", "vllm:lora_requests_info", "vllm:cache_config_info"),
    *_many("counter", "vllm:corrupted_requests", "vllm:prefix_cache_queries", "vllm:prefix_cache_hits"),
    *_many("counter", "vllm:external_prefix_cache_queries", "vllm:external_prefix_cache_hits", "vllm:mm_cache_queries", "vllm:mm_cache_hits"),
    *_many("counter", "vllm:num_preemptions", "vllm:prompt_tokens", "vllm:prompt_tokens_by_source", "vllm:prompt_tokens_cached"),
    *_many("counter", "vllm:generation_tokens", "vllm:request_success"),
    *_many(
        "histogram",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
        "vllm:iteration_tokens_total",
        "vllm:request_max_num_generation_tokens",
        "vllm:request_params_n",
        "vllm:request_params_max_tokens",
    ),
    *_many(
        "histogram",
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:request_time_per_output_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_inference_time_seconds",
        "vllm:request_prefill_time_seconds",
        "vllm:request_decode_time_seconds",
        "vllm:request_prefill_kv_computed_tokens",
    ),
    # only with --kv-cache-metrics
    *_many("histogram", "vllm:kv_block_lifetime_seconds", "vllm:kv_block_idle_before_evict_seconds", "vllm:kv_block_reuse_gap_seconds"),
]

PROCESS_SOURCE = (
    "prometheus_client's ProcessCollector on its default REGISTRY, which vLLM 0.26.0 serves at /metrics with one API server "
    "(vllm/v1/metrics/prometheus.py get_prometheus_registry; a multiprocess registry, without process metrics, only when "
    "--api-server-count > 1, vllm/entrypoints/cli/serve.py l.268)"
)
PROCESS_METRICS = _many("gauge", "process_start_time_seconds")

PROMETHEUS_SOURCE = "Prometheus itself: one `up` sample per scrape target (docs: Jobs and instances, automatically generated series)"
PROMETHEUS_METRICS = _many("gauge", "up")

KUBE_STATE_SOURCE = "kube-state-metrics docs/metrics/workload/pod-metrics.md (kube-prometheus-stack runs it beside the operator)"
KUBE_STATE_METRICS = [Metric("kube_pod_container_status_restarts", "counter")]

GATEWAY_SOURCE = "the stack's gateway (stacks/render/gateway.py, issue 12): labels model, status_class (2xx/4xx/5xx), key"
GATEWAY_METRICS = [
    Metric("vllm_stack_gateway_requests", "counter"),
    Metric("vllm_stack_gateway_requests_in_flight", "gauge"),
    Metric("vllm_stack_gateway_upstream_latency_seconds", "histogram"),
]

DCGM_RELEASE = "4.5.3-4.8.2"
DCGM_SOURCE = "NVIDIA/dcgm-exporter tag 4.5.3-4.8.2, etc/default-counters.csv (enabled and commented-out lines)"
DCGM_KNOWN_FIELDS = frozenset(
    {
        "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_PROF_PCIE_TX_BYTES", "DCGM_FI_PROF_PCIE_RX_BYTES",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_ENC_UTIL",
        "DCGM_FI_DEV_DEC_UTIL", "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_POWER_VIOLATION", "DCGM_FI_DEV_THERMAL_VIOLATION",
        "DCGM_FI_DEV_SYNC_BOOST_VIOLATION", "DCGM_FI_DEV_BOARD_LIMIT_VIOLATION", "DCGM_FI_DEV_LOW_UTIL_VIOLATION",
        "DCGM_FI_DEV_RELIABILITY_VIOLATION", "DCGM_EXP_CLOCK_EVENTS_COUNT", "DCGM_EXP_XID_ERRORS_COUNT", "DCGM_EXP_GPU_HEALTH_STATUS",
        "DCGM_EXP_P2P_STATUS", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_RESERVED", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "DCGM_FI_DEV_RETIRED_SBE",
        "DCGM_FI_DEV_RETIRED_DBE", "DCGM_FI_DEV_RETIRED_PENDING", "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
        "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
        "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "DCGM_FI_DEV_NVLINK_BANDWIDTH_L0",
        "DCGM_FI_DEV_VGPU_LICENSE_STATUS", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE", "DCGM_FI_DRIVER_VERSION", "DCGM_FI_NVML_VERSION", "DCGM_FI_DEV_BRAND", "DCGM_FI_DEV_SERIAL",
        "DCGM_FI_DEV_OEM_INFOROM_VER", "DCGM_FI_DEV_ECC_INFOROM_VER", "DCGM_FI_DEV_POWER_INFOROM_VER", "DCGM_FI_DEV_INFOROM_IMAGE_VER",
        "DCGM_FI_DEV_VBIOS_VERSION", "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_SM_OCCUPANCY",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_DRAM_ACTIVE", "DCGM_FI_PROF_PIPE_FP64_ACTIVE", "DCGM_FI_PROF_PIPE_FP32_ACTIVE",
        "DCGM_FI_PROF_PIPE_FP16_ACTIVE",
    }
)  # fmt: skip
"""Every field dcgm-exporter's own counters file names; the stack's counters file picks from these."""

COUNTERS_FILE = Path(__file__).with_name("dcgm-counters.csv")
"""The counters the stack's exporter collects (``DCGM_EXPORTER_COLLECTORS``)."""


SWAP_SOURCE = "the stack's swapper (stacks/swap/swapper.py, Swapper.__init__): labels group, model, result, reason, state"
SWAP_METRICS = [
    *_many("counter", "vllm_stack_swap_wakes", "vllm_stack_swap_sleeps", "vllm_stack_swap_rejected", "vllm_stack_swap_restarts"),
    *_many("counter", "vllm_stack_swap_busy_seconds"),
    *_many("histogram", "vllm_stack_swap_wake_seconds", "vllm_stack_swap_sleep_seconds", "vllm_stack_swap_queue_wait_seconds"),
    *_many("gauge", "vllm_stack_swap_waiting", "vllm_stack_swap_in_flight", "vllm_stack_swap_member_state"),
    *_many("gauge", "vllm_stack_swap_awake_members", "vllm_stack_swap_awake_limit"),
]


def dcgm_counters() -> list[tuple[str, str, str]]:
    """``(field, type, help)`` of every line of the counters file; exporter metrics are named after the field."""
    rows = []
    for line in COUNTERS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            field, kind, help_text = (part.strip() for part in line.split(",", 2))
            rows.append((field, kind, help_text))
    return rows


def dcgm_metrics() -> list[Metric]:
    """The exporter names each metric after its field, with the type as written (no ``_total`` added); label fields are no metrics."""
    return [Metric(f, "gauge") for f, kind, _ in dcgm_counters() if kind != "label"]


def published() -> dict[str, str]:
    """Exposed metric name -> where the name was read."""
    out: dict[str, str] = {}
    for metrics, source in (
        (VLLM_METRICS, VLLM_SOURCE),
        (PROCESS_METRICS, PROCESS_SOURCE),
        (PROMETHEUS_METRICS, PROMETHEUS_SOURCE),
        (KUBE_STATE_METRICS, KUBE_STATE_SOURCE),
        (GATEWAY_METRICS, GATEWAY_SOURCE),
        (SWAP_METRICS, SWAP_SOURCE),
        (dcgm_metrics(), DCGM_SOURCE),
    ):
        for m in metrics:
            out |= dict.fromkeys(m.exposed(), source)
    return out
