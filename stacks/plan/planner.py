"""config -> StackPlan: GPU memory, launch args, start order, services, routes, scrape targets and URLs.

The only place that reads the config; everything downstream reads the plan.
"""

from __future__ import annotations

import math

from stacks.catalog import resolve
from stacks.config.schema import DockerConfig, ModelConfig, StackConfig
from stacks.errors import ConfigError, Problem
from stacks.plan import topology as net
from stacks.plan.launch import ENTRYPOINT, extra_arg_problems, server_args
from stacks.plan.memory import (
    ACTIVATION_BASE_GIB,
    ACTIVATION_BYTES_PER_TOKEN_HIDDEN,
    AUTO_MAX_FRACTION,
    DTYPE_BYTES,
    GIB,
    QUANT_BYTES,
    Need,
    docker_fractions,
    figures,
    kubernetes_fractions,
    kv_dtype_bytes,
    min_fraction,
)
from stacks.plan.releases import image_vllm_version, version_text
from stacks.plan.types import (
    Autoscaling,
    DcgmPlan,
    DockerPlan,
    GatewayPlan,
    GpuPlan,
    ImagePlan,
    IngressPlan,
    KeyLimitPlan,
    KubernetesPlan,
    ModelPlan,
    PrometheusPlan,
    Route,
    ScrapeTarget,
    StackPlan,
    Urls,
    WebuiPlan,
)

WEBUI_STARTUP_SECONDS = 300
"""Open WebUI's first start (database migrations) before its health check counts."""


def _needs(config: StackConfig, problems: list[Problem]) -> list[Need]:
    version = image_vllm_version(config.image.base)
    docker = config.target == "docker"
    gpu_mem = {g.index: g.memory_gib for g in config.gpus}
    kube_gib = config.kubernetes.gpu.memory_gib if config.kubernetes else 0.0
    needs = []
    for i, m in enumerate(config.models):
        problems += extra_arg_problems(i, m, version)
        arch = resolve(m.model, m.arch)
        if isinstance(arch, list):
            problems.append(
                Problem(f"models[{i}].arch", f"{m.model!r} is not in the catalog; add arch: {{{', '.join(f'{k}: ...' for k in arch)}}} from its config.json")
            )
            continue
        if docker:
            ids = m.gpus if m.gpus is not None else [config.gpus[0].index]
            tp = m.tensor_parallel or max(1, len(ids) // m.pipeline_parallel)
        else:
            tp = m.tensor_parallel or 1
            ids = []
        mml = m.max_model_len or arch.context_length
        if mml > arch.context_length:
            problems.append(Problem(f"models[{i}].maxModelLen", f"{mml} exceeds {m.model}'s context length {arch.context_length}; lower it"))
        dtype_bytes = DTYPE_BYTES[arch.dtype if m.dtype == "auto" else m.dtype]
        weight_bytes = QUANT_BYTES.get(m.quantization or "", dtype_bytes)
        ranks = tp * m.pipeline_parallel
        gpu_gib_for_default = min((gpu_mem.get(g, 0.0) for g in ids), default=kube_gib)
        batched = m.max_num_batched_tokens or (8192 if gpu_gib_for_default >= 70 else 2048)
        kv_b = kv_dtype_bytes(m.kv_cache_dtype, dtype_bytes)
        kv_heads_rank = max(1.0, arch.kv_heads / tp)
        layers_rank = math.ceil(arch.layers / m.pipeline_parallel)
        needs.append(
            Need(
                index=i,
                name=m.name,
                arch=arch,
                gpu_ids=ids,
                tp=tp,
                max_model_len=mml,
                max_num_seqs=m.max_num_seqs,
                weights_gib=arch.parameters_b * 1e9 * weight_bytes / ranks / GIB,
                activation_gib=ACTIVATION_BASE_GIB + batched * arch.hidden_size * ACTIVATION_BYTES_PER_TOKEN_HIDDEN / GIB / tp,
                kv_per_token_gpu=2 * layers_rank * kv_heads_rank * arch.head_dim * kv_b,
                kv_bytes_per_token=int(2 * arch.layers * arch.kv_heads * arch.head_dim * kv_b),
                fixed=None if m.gpu_memory_utilization == "auto" else float(m.gpu_memory_utilization),
            )
        )
    return needs


def _fit_problem(m: ModelConfig, n: Need, gib: float, fraction: float) -> Problem | None:
    fig = figures(n, fraction, gib)
    if fig.max_full_sequences >= 1:
        return None
    if n.fixed is None:
        return Problem(
            f"models[{n.index}].maxModelLen",
            f"auto can give {m.name} only {fig.fraction:.3f} of its {gib} GiB GPU, too little for one maxModelLen={n.max_model_len} "
            f"sequence after {n.weights_gib:.2f} GiB of weights; lower maxModelLen, set kvCacheDtype: fp8, or move models to another GPU",
        )
    need = min_fraction(n, gib, 1)
    return Problem(
        f"models[{n.index}].gpuMemoryUtilization",
        f"{fig.fraction:.3f} of {gib} GiB leaves {max(fig.kv_gib, 0):.2f} GiB for KV cache ({fig.kv_tokens} tokens) but one "
        f"maxModelLen={n.max_model_len} sequence needs {n.max_model_len * n.kv_per_token_gpu / GIB:.2f} GiB; "
        f"raise it to at least {need:.3f}, lower models[{n.index}].maxModelLen, or set kvCacheDtype: fp8",
    )


def plan(config: StackConfig) -> StackPlan:
    """Plan a validated config, or raise ConfigError listing every problem."""
    problems: list[Problem] = []
    needs = _needs(config, problems)
    if problems:
        raise ConfigError(problems)

    target = config.target
    kube = config.kubernetes
    namespace = kube.namespace if kube else None
    notes: list[str] = []
    if target == "docker":
        fractions, gpu_plans = docker_fractions(config.gpus, needs, problems, notes)
        gpu_mem = {g.index: g.memory_gib for g in config.gpus}
    else:
        assert kube is not None, "the rules require kubernetes settings on that target"
        fractions = kubernetes_fractions(needs, kube.gpu.memory_gib, problems)
        gpu_plans = []
        gpu_mem = {}
        notes.append(f"kubernetes: each pod owns its GPUs ({kube.gpu.name}, {kube.gpu.memory_gib} GiB); auto uses {AUTO_MAX_FRACTION:.2f} or less of each")

    models: list[ModelPlan] = []
    last_on_gpu: dict[int, str] = {}
    for n in needs:
        m = config.models[n.index]
        if n.index not in fractions:
            continue
        gib = min((gpu_mem[g] for g in n.gpu_ids), default=kube.gpu.memory_gib if kube else 0.0)
        fig = figures(n, fractions[n.index], gib)
        problem = _fit_problem(m, n, gib, fractions[n.index])
        if problem:
            problems.append(problem)
        after = sorted({last_on_gpu[g] for g in n.gpu_ids if g in last_on_gpu})
        for g in n.gpu_ids:
            last_on_gpu[g] = m.name
        names = [m.name, *m.served_model_names]
        svc = net.service(target, namespace, net.vllm_service(m.name), net.VLLM_PORT, metrics_path=net.METRICS_PATH)
        auto = m.autoscaling
        models.append(
            ModelPlan(
                name=m.name,
                model=m.model,
                served_names=names + [lo.name for lo in m.lora_modules],
                gpus=list(n.gpu_ids),
                gpu_count=n.tp * m.pipeline_parallel,
                tensor_parallel=n.tp,
                pipeline_parallel=m.pipeline_parallel,
                max_model_len=n.max_model_len,
                max_num_seqs=m.max_num_seqs,
                kv_bytes_per_token=n.kv_bytes_per_token,
                memory=fig,
                fraction_source="auto" if n.fixed is None else "config",
                entrypoint=list(ENTRYPOINT),
                args=server_args(m, names, tensor_parallel=n.tp, fraction=fig.fraction, max_model_len=n.max_model_len),
                env={"TZ": config.timezone, **m.env},
                start_after=after,
                replicas=m.replicas,
                service=svc.name,
                port=svc.port,
                health_path=net.HEALTH_PATH,
                metrics_path=net.METRICS_PATH,
                address=svc.address,
                startup_seconds=m.startup_minutes * 60,
                shm_size_gib=m.shm_size_gib,
                autoscaling=(
                    Autoscaling(
                        min_replicas=auto.min_replicas,
                        max_replicas=auto.max_replicas,
                        prometheus_url=auto.prometheus_url,
                        # vLLM labels its metrics with the first served name, which is the model's name
                        query=f'sum(vllm:num_requests_waiting{{model_name="{m.name}"}})',
                        threshold=auto.waiting_requests,
                    )
                    if auto and auto.enabled
                    else None
                ),
            )
        )
    if problems:
        raise ConfigError(problems)
    return _stack(config, models, gpu_plans, notes)


def _stack(config: StackConfig, models: list[ModelPlan], gpu_plans: list[GpuPlan], notes: list[str]) -> StackPlan:
    target = config.target
    kube = config.kubernetes
    namespace = kube.namespace if kube else None
    gw_cfg, ui_cfg, mon = config.gateway, config.webui, config.monitoring
    gateway = net.service(target, namespace, net.GATEWAY, net.GATEWAY_PORT, gw_cfg.port, metrics_path=net.METRICS_PATH, metrics_port=net.GATEWAY_METRICS_PORT)
    webui = net.service(target, namespace, net.WEBUI, net.WEBUI_PORT, ui_cfg.port) if ui_cfg.enabled else None
    dcgm = net.service(target, namespace, net.DCGM, net.DCGM_PORT, mon.dcgm_port, metrics_path=net.METRICS_PATH) if mon.dcgm else None
    prometheus = net.service(target, namespace, net.PROMETHEUS, net.PROMETHEUS_PORT, mon.prometheus_port, health_path=None) if config.runs_prometheus else None

    scrape = [ScrapeTarget("vllm", m.address, m.metrics_path, labels={"model": m.name}) for m in models]
    if dcgm:
        scrape.append(ScrapeTarget("dcgm", dcgm.address, net.METRICS_PATH))
    if target == "docker":
        # on Kubernetes the metrics port is on the pods only (annotations), never on the Service
        scrape.append(ScrapeTarget("gateway", gateway.metrics_address, net.METRICS_PATH))

    ing = gw_cfg.ingress
    ingress = IngressPlan(ing.host, ing.class_name, ing.tls_secret) if target == "kubernetes" and ing.enabled and ing.host else None
    docker_plan = None
    kube_plan = None
    if target == "docker":
        d = config.docker or DockerConfig()
        host = net.docker_host(d.bind_address)
        docker_plan = DockerPlan(d.network, d.bind_address, host, d.restart, d.log_max_size, d.log_max_files)
        metrics = f"http://{host}:{dcgm.published}{net.METRICS_PATH}" if dcgm else None
        if prometheus:
            metrics = f"http://{host}:{prometheus.published}"
        urls = Urls(gateway=f"http://{host}:{gateway.published}/v1", webui=f"http://{host}:{webui.published}" if webui else None, metrics=metrics)
    else:
        assert kube is not None
        kube_plan = KubernetesPlan(
            namespace=kube.namespace,
            kubeconfig=kube.kubeconfig,
            context=kube.context,
            render_yaml_to=kube.render_yaml_to,
            gpu_name=kube.gpu.name,
            gpu_memory_gib=kube.gpu.memory_gib,
            storage_class=kube.storage_class,
            model_cache_size=kube.model_cache_size,
            model_cache_access_mode=kube.model_cache_access_mode,
            gpu_node_selector=dict(kube.gpu_node_selector),
            tolerations=[t.model_dump(exclude_none=True) for t in kube.tolerations],
            service_type=kube.service_type,
            model_cpu_request=kube.cpu_request,
            model_memory_request=kube.memory_request,
            shm_size=kube.shm_size,
        )
        # outside an Ingress the stack is reached at its Services' cluster addresses
        gateway_url = f"{'https' if ingress.tls_secret else 'http'}://{ingress.host}/v1" if ingress else f"http://{gateway.address}/v1"
        urls = Urls(
            gateway=gateway_url,
            webui=f"http://{webui.address}" if webui else None,
            metrics=f"http://{dcgm.address}{net.METRICS_PATH}" if dcgm else None,
        )

    return StackPlan(
        target=target,
        timezone=config.timezone,
        retain_data=config.retain_data_on_destroy,
        image=ImagePlan(
            base=config.image.base,
            timezone=config.timezone,
            apt_packages=list(config.image.apt_packages),
            build=target == "docker" or bool(config.image.apt_packages),
            vllm_version=version_text(image_vllm_version(config.image.base)),
            registry=config.image.registry,
        ),
        models=models,
        gpus=gpu_plans,
        routes=[Route(s, mp.name, mp.service, mp.port) for mp in models for s in mp.served_names],
        gateway=GatewayPlan(
            service=gateway,
            image=gw_cfg.image,
            routing=gw_cfg.routing,
            max_body_mib=gw_cfg.max_body_mib,
            read_timeout_seconds=gw_cfg.read_timeout_seconds,
            client_timeout_seconds=gw_cfg.client_timeout_seconds,
            max_concurrent_per_model=gw_cfg.max_concurrent_per_model,
            max_concurrent_requests=gw_cfg.max_concurrent_requests,
            max_concurrent_large_requests=gw_cfg.max_concurrent_large_requests,
            worker_processes=gw_cfg.worker_processes,
            key_limits={name: KeyLimitPlan(lim.requests_per_minute, lim.concurrent) for name, lim in gw_cfg.key_limits.items()},
            cors_allow_origins=list(gw_cfg.cors.allow_origins),
            token_usage=gw_cfg.token_usage,
            replicas=gw_cfg.replicas,
            ingress=ingress,
        ),
        webui=(
            WebuiPlan(
                service=webui,
                image=ui_cfg.image,
                enable_signup=ui_cfg.enable_signup,
                replicas=ui_cfg.replicas,
                redis_url=ui_cfg.redis_url,
                database_url=ui_cfg.database_url,
                storage_size=ui_cfg.storage_size,
                startup_seconds=WEBUI_STARTUP_SECONDS,
            )
            if webui
            else None
        ),
        dcgm=DcgmPlan(dcgm, mon.dcgm_image) if dcgm else None,
        prometheus=PrometheusPlan(prometheus, mon.prometheus_image, mon.scrape_interval_seconds) if prometheus else None,
        scrape_targets=scrape,
        docker=docker_plan,
        kubernetes=kube_plan,
        urls=urls,
        notes=notes,
    )
