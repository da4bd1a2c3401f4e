"""config -> StackPlan: GPU memory, launch args, start order, services, routes, scrape targets and URLs.

The only place that reads the config; everything downstream reads the plan.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from stacks.catalog import CONFIG_NAMES, Arch, quantized_by_name, resolve
from stacks.config.rules import cross_field_problems
from stacks.config.schema import DEFAULT_VLLM_IMAGE, DockerConfig, ImageConfig, ModelConfig, OidcConfig, StackConfig
from stacks.errors import ConfigError, Problem, shown
from stacks.plan import swap as swapping_plan
from stacks.plan import topology as net
from stacks.plan.endpoints import external_plans, ollama_plan
from stacks.plan.fixes import with_fixes
from stacks.plan.launch import ENTRYPOINT, extra_arg_problems, server_args, tool_call_parser, worker_args
from stacks.plan.memory import DTYPE_BYTES, GIB, SAFETY_FRACTION, KvLayout
from stacks.plan.monitoring import monitoring_plan
from stacks.plan.multimodal import EncoderFigures, limit_args, media_problems
from stacks.plan.nodes import node_problems, too_big, tp_accepted
from stacks.plan.releases import (
    CU129_RELEASES,
    KV_CACHE_MEMORY_BYTES_SINCE,
    NEWEST_CHECKED,
    NON_ROOT_SINCE,
    V2_RUNNER_ENV,
    Version,
    batch_defaults,
    image_vllm_version,
    parse_version,
    release_rules,
    runner_env_readable,
    version_text,
)
from stacks.plan.sharing import Gpu, GpuShortfall, Server, gpu_name, share
from stacks.plan.stages import Model, Sizing, size
from stacks.plan.types import (
    Autoscaling,
    DcgmPlan,
    DockerPlan,
    EncoderPlan,
    EndpointPlan,
    ExternalModelPlan,
    GatewayPlan,
    GpuPlan,
    ImagePlan,
    IngressPlan,
    KeyLimitPlan,
    KubernetesPlan,
    MemoryFigures,
    ModelPlan,
    OllamaPlan,
    PrometheusPlan,
    Route,
    ScrapeTarget,
    StackPlan,
    StageMemory,
    SwapGroupPlan,
    SwapMember,
    Urls,
    WebuiPlan,
)

OFFICIAL_IMAGE = re.compile(r"(^|/)vllm/vllm-openai[:@]")
"""vLLM's own images, whose tag is the release (a mirror keeps the path); another repository's tag may be anything."""
WEBUI_STARTUP_SECONDS = 300
"""Open WebUI's first start (database migrations) before its health check counts."""


@dataclass
class _Model:
    """A model on its way through the planner: config, facts and its server in the sharing."""

    index: int
    config: ModelConfig
    arch: Arch
    task: str
    tp: int
    pp: int
    kv_dtype_bytes: float
    server: Server
    sizing: Sizing
    tool_call_parser: str | None
    media: dict[str, int] | None = None

    @property
    def encoder(self) -> EncoderFigures | None:
        return self.sizing.encoder


def _parallel_problems(i: int, m: ModelConfig, arch: Arch, tp: int, pp: int) -> list[Problem]:
    """What vLLM refuses at start (ModelConfig.verify_with_parallel_config, QKVParallelLinear, vLLM 0.26)."""
    out = []
    fits = [d for d in range(1, min(arch.attention_heads, 64) + 1) if tp_accepted(arch, d)]
    if arch.attention_heads % tp:
        out.append(Problem(f"models[{i}].tensorParallel", f"{tp} does not divide {m.model}'s {arch.attention_heads} attention heads; use one of {fits}"))
    elif arch.kv_heads % tp and tp % arch.kv_heads:
        out.append(
            Problem(
                f"models[{i}].tensorParallel",
                f"{tp} neither divides {m.model}'s {arch.kv_heads} KV heads nor is a multiple of them (vLLM splits or replicates them); use one of {fits}",
            )
        )
    if pp > arch.layers:
        key = f"models[{i}].nodes" if m.nodes > 1 else f"models[{i}].pipelineParallel"
        out.append(Problem(key, f"{pp} stages for {arch.layers} layers; use at most {arch.layers}"))
    return out


def _describe_problem(i: int, m: ModelConfig, missing: list[str]) -> Problem:
    """A model outside the catalog: the ``arch`` keys its memory figure still needs, each with its config.json name."""
    where = "; ".join(f"{k}: {CONFIG_NAMES[k]}" for k in missing)
    return Problem(
        f"models[{i}].arch",
        f"{m.model!r} is not in the catalog; add arch: {{{', '.join(f'{k}: ...' for k in missing)}}} from its config.json "
        f"(huggingface.co/{m.model}/blob/main/config.json for a Hub model) so its weights, activation and KV are planned at their real size ({where})",
    )


def _quantization(i: int, m: ModelConfig, arch: Arch, problems: list[Problem]) -> str | None:
    """The checkpoint's method: configured, else the catalog's config.json; a quantized-looking id nobody describes is refused."""
    if m.quantization:
        return m.quantization.replace("_", "-")
    if arch.quantization:
        return arch.quantization
    word = quantized_by_name(m.model)
    if word:
        problems.append(
            Problem(
                f"models[{i}].quantization",
                f"{m.model!r} says {word!r} but the catalog does not know its method; set quantization (awq, gptq, fp8, ...) "
                "so the plan counts its weights at their real size",
            )
        )
    return None


def _models(config: StackConfig, version: Version, problems: list[Problem]) -> list[_Model]:
    docker = config.target == "docker"
    kube = config.kubernetes
    gpu_by_index = {g.index: g for g in config.gpus}
    out = []
    for i, m in enumerate(config.models):
        problems += extra_arg_problems(i, m, version)
        problems += node_problems(i, m, version)
        arch = resolve(m.model, m.arch, quantized=bool(m.quantization or quantized_by_name(m.model)))
        if isinstance(arch, list):
            problems.append(_describe_problem(i, m, arch))
            continue
        # across nodes, one pipeline stage per node (config rules)
        pp = m.nodes if m.nodes > 1 else m.pipeline_parallel
        if docker:
            ids = config.docker_gpus(m)
            tp = m.tensor_parallel or max(1, len(ids) // pp)
            gpu_total = min(gpu_by_index[g].memory_gib for g in ids if g in gpu_by_index) if ids else 0.0
            gpu_type = gpu_by_index[ids[0]].name if ids and ids[0] in gpu_by_index else ""
        else:
            assert kube is not None
            tp = m.tensor_parallel or 1
            ids = list(range(tp * pp))
            gpu_total, gpu_type = kube.gpu.memory_gib, kube.gpu.name
        parallel = _parallel_problems(i, m, arch, tp, pp)
        problems += parallel
        quant = _quantization(i, m, arch, problems)
        mml = m.max_model_len or arch.context_length
        if mml > arch.context_length:
            problems.append(Problem(f"models[{i}].maxModelLen", f"{mml} exceeds {m.model}'s context length {arch.context_length}; lower it"))
        if parallel:
            continue
        task = m.task or arch.task
        pooling = task == "embed"
        media = m.media_per_prompt.model_dump(exclude_none=True) if m.media_per_prompt else None
        if media_problems(i, m.model, arch.vision, media, problems):
            continue
        default_tokens, _ = batch_defaults(version, gpu_total, gpu_type)
        # vLLM caps its default batch at what maxNumSeqs full sequences need (EngineArgs defaults)
        batched = m.max_num_batched_tokens or min(default_tokens, m.max_num_seqs * mml)
        dtype_bytes = DTYPE_BYTES[arch.dtype if m.dtype == "auto" else m.dtype]
        kv_bytes = 1.0 if m.kv_cache_dtype.startswith("fp8") else dtype_bytes
        runner = m.env.get(V2_RUNNER_ENV)
        if runner is not None and not runner_env_readable(runner):
            problems.append(Problem(f"models[{i}].env.{V2_RUNNER_ENV}", f"vLLM reads it as an integer (bool(int(value))); set 0 or 1, not {runner!r}"))
            continue
        spec = Model(
            arch, version, dtype_bytes, quant, kv_bytes, batched, m.max_num_seqs, pooling, m.enforce_eager, mml, media, tuple(m.extra_args), dict(m.env)
        )
        sizing = size(spec, tp=tp, pp=pp)
        layout = sizing.layout
        server = Server(
            index=i,
            name=m.name,
            gpus=list(ids),
            overhead=sizing.overhead,
            layout=layout,
            max_model_len=mml,
            max_num_seqs=m.max_num_seqs,
            fixed=None if m.gpu_memory_utilization == "auto" else float(m.gpu_memory_utilization),
            longest_len=_longest_len(layout, mml),
        )
        if not docker and kube and (big := too_big(i, m, arch, spec, sizing, mml, kube.gpu)):
            problems.append(big)
            continue
        out.append(_Model(i, m, arch, task, tp, pp, kv_bytes, server, sizing, tool_call_parser(i, m, task, problems), media))
    return out


def _longest_len(layout: KvLayout | None, current: int) -> Callable[[float], int]:
    def longest(gib: float) -> int:
        if layout is None:
            return current
        lo, hi = 0, current
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if layout.sequence_bytes(mid) / GIB <= gib:
                lo = mid
            else:
                hi = mid - 1
        return lo // 16 * 16

    return longest


def _gpus(config: StackConfig, models: list[_Model]) -> dict[int, Gpu]:
    if config.target == "docker":
        return {g.index: Gpu(g.index, g.name, g.memory_gib, g.reserved_gib) for g in config.gpus}
    assert config.kubernetes is not None
    kube = config.kubernetes.gpu
    # every pod owns its GPUs: each server gets GPUs of its own; a swap group's members share their pod's
    gpus: dict[int, Gpu] = {}
    by_group: dict[str, list[int]] = {}
    for md in models:
        group = md.config.swap.group if md.config.swap else None
        if group in by_group:
            md.server.gpus = list(by_group[group])
            continue
        first = len(gpus)
        md.server.gpus = list(range(first, first + len(md.server.gpus)))
        gpus |= {g: Gpu(g, kube.name, kube.memory_gib) for g in md.server.gpus}
        if group:
            by_group[group] = md.server.gpus
    return gpus


def _release(img: ImageConfig, problems: list[Problem]) -> tuple[Version, str, str | None]:
    """The vLLM release the image is, whose rules plan it: the tag's, else ``image.vllmVersion``; (version, which rules,
    a warning). A release the rules do not cover, or an image that does not say its release, is a problem."""
    tagged = image_vllm_version(img.base)
    stated = parse_version(img.vllm_version) if img.vllm_version else None
    if stated and tagged and stated != tagged and OFFICIAL_IMAGE.search(img.base):
        problems.append(
            Problem(
                "image.vllmVersion", f"says {img.vllm_version} but image.base is tagged {version_text(tagged)}; make them agree or remove image.vllmVersion"
            )
        )
    version = stated or tagged
    if version is None:
        example = version_text(image_vllm_version(DEFAULT_VLLM_IMAGE) or NEWEST_CHECKED)
        problems.append(
            Problem(
                "image.base",
                f"{shown(img.base)!r} does not say which vLLM release it is (a digest alone, or a tag of your own), and the "
                f"plan follows each release's memory rules and flags; set image.vllmVersion to its release (e.g. {example}), "
                f"or put the version tag before the digest (vllm/vllm-openai:v{example}@sha256:...)",
            )
        )
        return NEWEST_CHECKED, "", None
    try:
        rules, warning = release_rules(version)
    except ValueError as err:
        problems.append(Problem("image.vllmVersion" if stated else "image.base", str(err)))
        return version, "", None
    return version, rules, warning


def _image(config: StackConfig, version: Version, rules: str, problems: list[Problem]) -> ImagePlan:
    img = config.image
    base = img.base
    if img.cuda == "12.9":
        if "@" in base:
            problems.append(Problem("image.cuda", "a digest pins one build already; pin the -cu129 image's digest in image.base and remove image.cuda"))
        elif version < CU129_RELEASES[0]:
            problems.append(Problem("image.cuda", f"vLLM {version_text(version)} images are CUDA 12.9 already; remove image.cuda"))
        elif version >= CU129_RELEASES[1]:
            fix = "pin a 0.20-0.32 release or update the driver to R580+"
            problems.append(Problem("image.cuda", f"vLLM {version_text(version)} publishes no -cu129 image; {fix}"))
        else:
            base = f"{base}-cu129"
    non_root = img.run_as_non_root if img.run_as_non_root is not None else config.target == "kubernetes" and version >= NON_ROOT_SINCE
    if img.run_as_non_root and version < NON_ROOT_SINCE:
        problems.append(Problem("image.runAsNonRoot", f"vLLM {version_text(version)} images have no vllm user (from 0.22.0); pin 0.22+ or remove it"))
    if img.run_as_non_root and config.target == "docker":
        problems.append(
            Problem(
                "image.runAsNonRoot",
                "the docker target's new named volumes are owned by root and the vllm user (UID 2000) could not write its caches; "
                "remove it (it is the default on kubernetes, where fsGroup makes the volumes writable)",
            )
        )
    return ImagePlan(
        base=base,
        timezone=config.timezone,
        apt_packages=list(img.apt_packages),
        # no vLLM runs without models (a stack serving endpoints only): nothing to build
        build=bool(config.models) and (config.target == "docker" or bool(img.apt_packages)),
        vllm_version=version_text(version),
        vllm_rules=rules,
        registry=img.registry,
        run_as_non_root=non_root,
    )


def plan(config: StackConfig) -> StackPlan:
    """Plan a validated config, or raise ConfigError listing every problem; a GPU that cannot hold its models is one
    problem, with the fixes that work (each checked by planning the stack with it)."""
    try:
        return _plan(config)
    except ConfigError as err:
        problems = err.problems
    if not any(isinstance(p, GpuShortfall) for p in problems):
        raise ConfigError(problems)
    raise ConfigError([_explained(config, p, problems) if isinstance(p, GpuShortfall) else p for p in problems]) from None


def _explained(config: StackConfig, p: GpuShortfall, problems: list[Problem]) -> Problem:
    """The problem with the fixes that make the stack plan (what else was wrong may stay wrong)."""
    others = [o for o in problems if o is not p]
    total = config.kubernetes.gpu.memory_gib if config.kubernetes else next(g.memory_gib for g in config.gpus if g.index == p.gpu)
    return with_fixes(config, p, total, lambda candidate: _works(candidate, others))


def _works(candidate: StackConfig, others: list[Problem]) -> bool:
    """The candidate plans, or fails only with problems the stack had besides the one being fixed (or outside the models)."""
    try:
        _plan(candidate)
    except ConfigError as err:
        return all(p in others or not p.key.startswith("models[") for p in err.problems)
    return not any(p.key.startswith("models[") for p in cross_field_problems(candidate))


def _plan(config: StackConfig) -> StackPlan:
    problems: list[Problem] = []
    version, rules, warning = _release(config.image, problems)
    image = _image(config, version, rules, problems)
    models = _models(config, version, problems)
    if problems:
        raise ConfigError(problems)
    exact = version >= KV_CACHE_MEMORY_BYTES_SINCE
    docker = config.target == "docker"
    gpus = _gpus(config, models)
    notes: list[str] = [f"warning: {warning}"] if warning else []
    notes += [f"models[{md.index}] ({md.config.name}): {a}" for md in models for a in md.arch.assumptions]
    ollama = ollama_plan(config, {g for md in models for g in md.server.gpus}, problems)
    if problems:
        raise ConfigError(problems)
    if ollama is not None:
        for g in ollama.shared_gpus:
            # vLLM servers are planned around what Ollama's models hold once loaded, as around any other reservation
            gpus[g] = replace(gpus[g], reserved=gpus[g].reserved + ollama.reserved_gib)
            notes.append(
                f"GPU {g}: {ollama.reserved_gib:.2f} GiB set aside for Ollama ({', '.join(f'{m.model} {m.memory_gib:.2f}' for m in ollama.models)} GiB)"
            )
    gpu_key = "models[{i}].gpus" if docker else "models[{i}].tensorParallel"
    # swap groups first: their members' KV is settled and their reservation taken before the other servers share the rest
    swapping, swap_problems = swapping_plan.prepare(config, [(md.config, md.server) for md in models], gpus, version, exact)
    problems += swap_problems
    if problems:
        raise ConfigError(problems)
    standalone = [md for md in models if swapping.member(md.index) is None]
    problems += swapping_plan.fit_problems(swapping, gpus, [md.server for md in standalone], gpu_key, pods=not docker)
    if not problems:
        share(swapping.gpus, [md.server for md in standalone], exact=exact, notes=notes if docker else [], problems=problems, gpu_key=gpu_key, pods=not docker)
    # a swap group or the other servers that do not fit may not fit for what Ollama's models hold: say so
    if problems and ollama is not None and ollama.shared_gpus:
        problems.append(
            Problem(
                "ollama",
                f"its models hold {ollama.reserved_gib:.2f} GiB of GPU {', '.join(map(str, ollama.shared_gpus))} once loaded, which the vLLM "
                "servers there are planned around; lower contextLength, numParallel or maxLoadedModels, or give Ollama a GPU of its own",
            )
        )
    if problems:
        raise ConfigError(problems)
    if not docker:
        assert config.kubernetes is not None
        kube = config.kubernetes.gpu
        notes.append(f"kubernetes: each pod owns its GPUs ({kube.name}, {kube.memory_gib} GiB); auto budgets each server what its GPUs leave")

    target = config.target
    namespace = config.kubernetes.namespace if config.kubernetes else None
    plans: list[ModelPlan] = []
    gpu_plans: list[GpuPlan] = []
    # a swap group's reservation counts as used from the start: the worst case of its members awake
    used: dict[int, float] = {g: swapping.gpus[g].reserved for g in gpus}
    overcommitted = _overcommitted(swapping.gpus, standalone, exact, problems) if docker else set()
    # per GPU, what every swap group reserves and every other server holds (settled by now)
    resident = {
        g: swapping.gpus[g].reserved - gpus[g].reserved + sum(md.server.footprint(gpus[g].total, exact) for md in standalone if g in md.server.gpus)
        for g in gpus
    }
    last_on_gpu: dict[int, str] = {}
    members: dict[str, SwapMember] = {}
    group_after: dict[str, list[str]] = {}
    for md in models:
        m, s = md.config, md.server
        total = s.gpu_total(gpus)
        o = s.overhead
        kv_gib = s.kv_bytes / GIB
        footprint = s.footprint(total, exact)
        member = swapping.member(md.index)
        group = swapping.group_of(md.index)
        if member is not None and group is not None:
            # when it (re)starts: every other server and group of its GPUs at their worst, its own group's others too
            free_at_start = min(
                swapping.free_at_start(group, member, gpus[g].total, gpus[g].reserved + resident[g] - swapping.reservation(group, gpus[g].total))
                for g in s.gpus
            )
        else:
            free_at_start = min(gpus[g].total - used[g] - o.context for g in s.gpus)
        if s.fixed is not None or not exact:
            problem = _fixed_problem(s, gpus[s.gpus[0]], not docker)
            if problem:
                problems.append(problem)
        if free_at_start + 1e-9 < s.fraction * total and not any(g in overcommitted for g in s.gpus):
            tight = min(s.gpus, key=lambda g: gpus[g].total - used[g])
            problems.append(
                GpuShortfall(
                    f"models[{s.index}].gpuMemoryUtilization",
                    f"when {s.name} starts, {free_at_start:.2f} GiB are free on {gpu_name(gpus[tight], not docker)} but vLLM wants "
                    f"{s.fraction:.3f} x {total} = {s.fraction * total:.2f} GiB free (the servers before it hold the rest)",
                    gpu=tight,
                    models=tuple(md.index for md in models if tight in md.server.gpus),
                    short_gib=s.fraction * total - free_at_start,
                )
            )
        if member is None:
            for g in s.gpus:
                used[g] += footprint
        blocks = s.kv_bytes // s.layout.block_bytes if s.layout else 0
        per_seq = s.layout.blocks_per_sequence(s.max_model_len) if s.layout else 0
        figures = MemoryFigures(
            fraction=s.fraction,
            weights_gib=round(o.weights, 3),
            activation_gib=round(o.activation, 3),
            non_torch_gib=round(o.non_torch, 3),
            cudagraph_gib=round(o.cudagraphs, 3),
            cudagraph_in_budget=o.cudagraphs_in_budget,
            outside_budget_gib=round(o.outside_budget, 3),
            kv_gib=round(kv_gib, 3),
            kv_cache_bytes=s.kv_bytes,
            exact_kv=exact,
            kv_tokens=s.layout.reported_tokens(blocks, s.max_model_len) if s.layout else 0,
            max_full_sequences=blocks // per_seq if per_seq else 0,
            footprint_gib=round(footprint, 3),
            free_at_start_gib=round(free_at_start, 3),
            encoder_gib=round(o.encoder + o.encoder_outside, 3),
            encoder_in_budget=md.encoder.profiled if md.encoder else True,
            encoder_outside_gib=round(o.encoder_outside, 3),
            stages=_stage_figures(md, footprint) if md.pp > 1 else [],
        )
        after = sorted({last_on_gpu[g] for g in s.gpus if g in last_on_gpu}) if docker else []
        names = [m.name, *m.served_model_names]
        svc = net.service(target, namespace, net.vllm_service(m.name), net.VLLM_PORT, metrics_path=net.METRICS_PATH)
        args = server_args(
            m,
            names,
            version=version,
            task=md.task,
            tensor_parallel=md.tp,
            pipeline_parallel=md.pp,
            nodes=m.nodes,
            fraction=s.fraction,
            kv_cache_bytes=s.kv_bytes if exact and s.layout else None,
            max_model_len=s.max_model_len,
            multimodal=limit_args(md.arch.vision, md.media),
            tool_call_parser=md.tool_call_parser,
        )
        env = {"TZ": config.timezone, **m.env}
        swap_figures = None
        if member is not None and group is not None:
            # the group's server runs it: the group starts once, after the servers started before its first member
            group_after.setdefault(group.name, after)
            after = []
            swap_figures = swapping_plan.member_plan(swapping, member, total)
            args = swapping_plan.member_args(args, swap_figures.engine_port)
            env |= swapping_plan.member_env()
            svc = swapping_plan.member_service(config, member)
        for g in s.gpus:
            last_on_gpu[g] = m.name
        auto = m.autoscaling
        plans.append(
            ModelPlan(
                name=m.name,
                model=m.model,
                served_names=names + [lo.name for lo in m.lora_modules],
                gpus=list(s.gpus) if docker else [],
                gpu_count=md.tp * md.pp,
                tensor_parallel=md.tp,
                pipeline_parallel=md.pp,
                max_model_len=s.max_model_len,
                max_num_seqs=m.max_num_seqs,
                task=md.task,  # type: ignore[arg-type]
                kv_bytes_per_token=_kv_bytes_per_token(md),
                memory=figures,
                fraction_source="auto" if s.fixed is None else "config",
                entrypoint=list(ENTRYPOINT),
                args=args,
                tool_call_parser=md.tool_call_parser,
                env=env,
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
                        activation_query=auto.activation_query,
                        activation_threshold=auto.activation_threshold,
                    )
                    if auto and auto.enabled
                    else None
                ),
                encoder=_encoder_plan(md.encoder),
                nodes=m.nodes,
                group=net.vllm_group(m.name) if m.nodes > 1 else None,
                swap=swap_figures,
            )
        )
        if m.nodes > 1:
            plans[-1] = replace(plans[-1], worker_args=worker_args(plans[-1].args))
        if swap_figures is not None:
            members[m.name] = swap_figures
    if docker:
        for g, gpu in sorted(gpus.items()):
            here = [md for md in models if g in md.server.gpus]
            # a swap group's members count as its reservation (in swapping.gpus' reserved), not one by one
            footprints = sum(p.memory.footprint_gib for p, md in zip(plans, models, strict=True) if g in md.server.gpus and p.swap is None)
            outside = sum(md.server.overhead.outside_budget for md in here if swapping.member(md.index) is None)
            headroom = swapping.gpus[g].room - footprints
            gpu_plans.append(
                GpuPlan(
                    index=g,
                    name=gpu.name,
                    memory_gib=gpu.total,
                    reserved_gib=gpu.reserved,
                    models=[md.config.name for md in here],
                    fraction_sum=round(sum(md.server.fraction for md in here if swapping.member(md.index) is None) + swapping.awake_fraction(g), 3),
                    overhead_gib=round(outside + SAFETY_FRACTION * gpu.total, 3),
                    headroom_gib=round(headroom, 3),
                )
            )
    endpoints, externals = external_plans(config)
    embedders = [n for p in plans if p.task == "embed" for n in p.served_names]
    embedders += [n for em in externals if em.task == "embed" for n in em.served_names]
    wanted = config.webui.embedding_model
    if wanted and wanted not in embedders:
        problems.append(
            Problem("webui.embeddingModel", f"{wanted!r} is not a served embedding model; name one with task: embed ({', '.join(embedders) or 'none yet'})")
        )
    if problems:
        raise ConfigError(problems)
    startup = {p.name: p.startup_seconds for p in plans}
    groups = swapping_plan.group_plans(config, swapping, gpus, members, startup, group_after)
    return _stack(config, image, plans, gpu_plans, notes, groups, (endpoints, externals, ollama))


def _stage_figures(md: _Model, heaviest_footprint: float) -> list[StageMemory]:
    """Every pipeline stage's GPUs: its own layers' weights and KV (the same blocks, each of its layers' size), the heaviest
    stage's other overheads; stages run one per node when the server spans nodes."""
    s, o = md.server, md.server.overhead
    most = max(st.layers for st in md.sizing.stages)
    out = []
    for i, st in enumerate(md.sizing.stages):
        kv = s.kv_bytes * st.layers / most / GIB
        lighter = (o.weights - st.weights) + (o.activation - st.activation) + (s.kv_bytes / GIB - kv)
        out.append(
            StageMemory(
                stage=i,
                node=i if md.config.nodes > 1 else 0,
                first_layer=st.first_layer,
                layers=st.layers,
                weights_gib=round(st.weights, 3),
                activation_gib=round(st.activation, 3),
                kv_gib=round(kv, 3),
                footprint_gib=round(heaviest_footprint - lighter, 3),
            )
        )
    return out


def _overcommitted(gpus: dict[int, Gpu], models: list[_Model], exact: bool, problems: list[Problem]) -> set[int]:
    """GPUs whose configured fractions, with what each server holds outside its budget, exceed what is there."""
    out = set()
    for g, gpu in sorted(gpus.items()):
        here = [md.server for md in models if g in md.server.gpus]
        need = sum(s.footprint(gpu.total, exact) for s in here)
        room = gpu.room
        fixed = [s for s in here if s.fixed is not None]
        if fixed and need > room + 1e-9:
            out.add(g)
            last = fixed[-1]
            problems.append(
                GpuShortfall(
                    f"models[{last.index}].gpuMemoryUtilization",
                    f"{gpu_name(gpu, False)} is over-committed: "
                    + ", ".join(f"models[{s.index}] {s.fraction:.3f}" for s in here)
                    + f" need {need:.2f} GiB with what each holds outside its budget (CUDA contexts, graphs) but {room:.2f} GiB "
                    f"are there after the reservation and safety margin",
                    gpu=g,
                    models=tuple(s.index for s in here),
                    short_gib=need - room,
                )
            )
    return out


def _oidc_env(oidc: OidcConfig | None) -> dict[str, str]:
    """Open WebUI's names for the settings (open_webui/config.py of v0.12.4); env always wins for them (OAuth settings
    persist only with ENABLE_OAUTH_PERSISTENT_CONFIG, off by default)."""
    if oidc is None:
        return {}
    env = {
        "ENABLE_OAUTH": "True",
        "OPENID_PROVIDER_URL": oidc.provider_url,
        "OAUTH_CLIENT_ID": oidc.client_id,
        "OAUTH_PROVIDER_NAME": oidc.provider_name,
        "OAUTH_SCOPES": oidc.scopes,
        "ENABLE_OAUTH_SIGNUP": str(oidc.enable_signup),
        "OAUTH_MERGE_ACCOUNTS_BY_EMAIL": str(oidc.merge_accounts_by_email),
        "ENABLE_LOGIN_FORM": str(oidc.password_login),
    }
    if oidc.redirect_uri:
        env["OPENID_REDIRECT_URI"] = oidc.redirect_uri
    return env


def _encoder_plan(e: EncoderFigures | None) -> EncoderPlan | None:
    if e is None:
        return None
    return EncoderPlan(
        limits=dict(e.limits),
        modalities=[k for k, v in e.limits.items() if v > 0],
        tower_loaded=e.tower_loaded,
        weights_gib=round(e.weights_gib, 3),
        profiled_modality=e.modality,
        embeds_per_item=e.embeds_per_item,
        items_per_batch=e.items_per_batch,
        budget_tokens=e.budget_tokens,
        peak_gib=round(e.peak_gib, 3),
        cache_gib=round(e.cache_gib, 3),
        processor_cache_gib=round(e.processor_cache_gib, 3),
    )


def _takes_images(m: ModelPlan) -> bool:
    return m.encoder is not None and "image" in m.encoder.modalities


def _kv_bytes_per_token(md: _Model) -> int:
    """Whole model, all ranks, if every layer held every token: 2 x layers x KV heads x head dim x KV dtype bytes."""
    a = md.arch
    return 0 if a.encoder_only else int(2 * a.layers * a.kv_heads * a.head_dim * md.kv_dtype_bytes)


def _fixed_problem(s: Server, gpu: Gpu, pods: bool) -> GpuShortfall | None:
    """A configured fraction (or any fraction where KV follows it) that cannot hold one maxModelLen sequence."""
    if s.layout is None:
        return None
    per_seq = s.layout.blocks_per_sequence(s.max_model_len)
    if s.kv_bytes // s.layout.block_bytes >= per_seq:
        return None
    kv = max(s.kv_bytes / GIB, 0)
    return GpuShortfall(
        f"models[{s.index}].gpuMemoryUtilization",
        f"{s.fraction:.3f} of {gpu_name(gpu, pods)} leaves {kv:.2f} GiB for KV cache after {s.overhead.weights:.2f} GiB of weights and "
        f"{s.overhead.in_budget:.2f} GiB of runtime overhead, but one maxModelLen={s.max_model_len} sequence needs {s.sequence_gib:.2f} GiB",
        gpu=gpu.index,
        models=(s.index,),
        short_gib=s.base + s.sequence_gib - s.fraction * gpu.total,
    )


def _stack(
    config: StackConfig,
    image: ImagePlan,
    models: list[ModelPlan],
    gpu_plans: list[GpuPlan],
    notes: list[str],
    swap_groups: list[SwapGroupPlan],
    served_elsewhere: tuple[list[EndpointPlan], list[ExternalModelPlan], OllamaPlan | None],
) -> StackPlan:
    endpoints, externals, ollama = served_elsewhere
    target = config.target
    kube = config.kubernetes
    namespace = kube.namespace if kube else None
    gw_cfg, ui_cfg, mon = config.gateway, config.webui, config.monitoring
    gateway = net.service(target, namespace, net.GATEWAY, net.GATEWAY_PORT, gw_cfg.port, metrics_path=net.METRICS_PATH, metrics_port=net.GATEWAY_METRICS_PORT)
    webui = net.service(target, namespace, net.WEBUI, net.WEBUI_PORT, ui_cfg.port) if ui_cfg.enabled else None
    dcgm = net.service(target, namespace, net.DCGM, net.DCGM_PORT, mon.dcgm_port, metrics_path=net.METRICS_PATH) if config.runs_dcgm else None
    prometheus = net.service(target, namespace, net.PROMETHEUS, net.PROMETHEUS_PORT, mon.prometheus_port, health_path=None) if config.runs_prometheus else None

    scrape = [ScrapeTarget(net.JOB_VLLM, m.address, m.metrics_path, labels={"model": m.name}, service=m.service) for m in models]
    if dcgm:
        scrape.append(ScrapeTarget(net.JOB_DCGM, dcgm.address, net.METRICS_PATH, service=dcgm.name))
    scrape += swapping_plan.scrape_targets(swap_groups)
    if target == "docker":
        # on Kubernetes the metrics port is on the pods only (annotations or a PodMonitor), never on the Service
        scrape.append(ScrapeTarget(net.JOB_GATEWAY, gateway.metrics_address, net.METRICS_PATH, service=gateway.name))
    monitoring = monitoring_plan(config, models, gpu_plans)

    ing = gw_cfg.ingress
    ingress = IngressPlan(ing.host, ing.class_name, ing.tls_secret) if target == "kubernetes" and ing.enabled and ing.host else None
    docker_plan = None
    kube_plan = None
    if target == "docker":
        d = config.docker or DockerConfig()
        host = net.docker_host(d.bind_address)
        docker_plan = DockerPlan(d.network, d.bind_address, host, d.restart, d.log_max_size, d.log_max_files)
        # the metrics ports bind to monitoring.bindAddress (127.0.0.1 by default), not docker.bindAddress
        metrics_host = net.docker_host(mon.bind_address)
        metrics = f"http://{metrics_host}:{dcgm.published}{net.METRICS_PATH}" if dcgm else None
        if prometheus:
            metrics = f"http://{metrics_host}:{prometheus.published}"
        grafana = monitoring.grafana
        urls = Urls(
            gateway=f"http://{host}:{gateway.published}/v1",
            webui=f"http://{host}:{webui.published}" if webui else None,
            metrics=metrics,
            grafana=f"http://{metrics_host}:{grafana.service.published}" if grafana else None,
        )
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

    routes = [Route(s, mp.name, mp.service, mp.port) for mp in models for s in mp.served_names]
    routes += [Route(s, em.name, em.service, 0, kind="external") for em in externals for s in em.served_names]
    tasks = {mp.name: mp.task for mp in models} | {em.name: em.task for em in externals}
    models_by_name = {mp.name: mp for mp in models}
    return StackPlan(
        target=target,
        timezone=config.timezone,
        retain_data=config.retain_data_on_destroy,
        image=image,
        models=models,
        gpus=gpu_plans,
        routes=routes,
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
            request_metrics=gw_cfg.request_metrics,
            js_engine=gw_cfg.js_engine,
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
                chat_models=[r.served_name for r in routes if tasks[r.model] == "generate"],
                vision_models=[
                    r.served_name for r in routes if r.model in models_by_name and tasks[r.model] == "generate" and _takes_images(models_by_name[r.model])
                ],
                embedding_model=ui_cfg.embedding_model,
                # Open WebUI's own (legacy) tool calling where vLLM has no parser, and for models served elsewhere (whose
                # tool support the stack cannot know): never vLLM's 400 for a browser chat
                function_calling={
                    r.served_name: "native" if r.model in models_by_name and models_by_name[r.model].tool_call_parser else "legacy"
                    for r in routes
                    if tasks[r.model] == "generate"
                },
                model_access=ui_cfg.model_access,
                oidc=_oidc_env(ui_cfg.oidc),
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
        monitoring=monitoring,
        swap_groups=swap_groups,
        endpoints=endpoints,
        externals=externals,
        ollama=ollama,
    )
