"""Cross-field rules pydantic cannot express field by field. Each returns every problem found."""

from __future__ import annotations

from collections import Counter

from stacks.config.schema import DNS_LABEL, URL, AutoscalingConfig, ModelConfig, StackConfig, yaml_key
from stacks.config.swap_rules import swap_problems
from stacks.errors import Problem

UNPINNED_TAGS = {"latest", "main", "nightly", "edge", "stable", "master"}


def image_pin_problem(ref: str) -> str | None:
    """Why an image reference is not pinned, or None when it is (a version tag or a digest)."""
    if "@sha256:" in ref:
        return None
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {ref!r} has no tag; pin a version tag (e.g. {ref}:v1.2.3) or a digest"
    tag = last.split(":", 1)[1]
    if tag in UNPINNED_TAGS:
        return f"image tag {tag!r} in {ref!r} moves; pin a version tag or a digest"
    return None


def _set_keys(section: object, keys: tuple[str, ...]) -> list[str]:
    fields_set: set[str] = getattr(section, "model_fields_set", set())
    return [k for k in keys if k in fields_set]


def _target_problems(c: StackConfig) -> list[Problem]:
    out: list[Problem] = []
    if c.target == "docker":
        if c.kubernetes is not None:
            out.append(Problem("kubernetes", "only applies to target kubernetes; remove it or set target: kubernetes"))
        if not c.gpus and c.models:
            out.append(
                Problem(
                    "gpus",
                    "vLLM models need the host's NVIDIA GPUs, e.g. [{index: 0, name: RTX 5090, memoryGiB: 31.8}]; "
                    "on a host without one (a Mac), serve every model from endpoints (Docker Model Runner) and remove models",
                )
            )
        if not c.gpus:
            out += _no_gpu_problems(c)
        if c.image.registry:
            out.append(Problem("image.registry", "images are built on the docker host itself; remove it (it is for target kubernetes)"))
        for key in _set_keys(c.gateway, ("replicas", "ingress")):
            out.append(Problem(f"gateway.{key}", "only applies to target kubernetes; remove it"))
        for key in _set_keys(c.webui, ("replicas", "redis_url", "database_url", "storage_size")):
            out.append(Problem(f"webui.{yaml_key(key)}", "only applies to target kubernetes; remove it"))
        for key in _set_keys(c.monitoring, ("prometheus_operator", "operator_labels")):
            out.append(Problem(f"monitoring.{yaml_key(key)}", "only applies to target kubernetes (the docker target runs its own Prometheus); remove it"))
        if c.monitoring.grafana and not c.runs_prometheus:
            out.append(
                Problem(
                    "monitoring.grafana",
                    "the docker target's Grafana reads the stack's own Prometheus, which monitoring.prometheus: false turns off; "
                    "remove monitoring.grafana (or set it to false), or remove monitoring.prometheus: false",
                )
            )
        for i, m in enumerate(c.models):
            if m.replicas != 1:
                out.append(Problem(f"models[{i}].replicas", "the docker target runs one server per model; remove it or use target kubernetes"))
            if m.autoscaling is not None:
                out.append(Problem(f"models[{i}].autoscaling", "only applies to target kubernetes; remove it"))
            if m.nodes > 1:
                out.append(
                    Problem(
                        f"models[{i}].nodes",
                        "the docker target runs every server on one host; a model spanning nodes needs target kubernetes (a LeaderWorkerSet "
                        "per model), or split it over this host's GPUs with tensorParallel / pipelineParallel and remove nodes",
                    )
                )
    else:
        if c.kubernetes is None:
            out.append(Problem("kubernetes", "target kubernetes needs this section, at least {gpu: {name: NVIDIA L40S, memoryGiB: 44.5}}"))
        if c.docker is not None:
            out.append(Problem("docker", "only applies to target docker; remove it or set target: docker"))
        if c.gpus:
            out.append(Problem("gpus", "the kubernetes target schedules GPUs itself; remove it and set kubernetes.gpu"))
        for i, m in enumerate(c.models):
            if m.gpus is not None:
                out.append(Problem(f"models[{i}].gpus", "device indices are for target docker; on kubernetes set tensorParallel (GPUs per pod)"))
            if m.autoscaling and m.autoscaling.enabled:
                out += _autoscaling_problems(f"models[{i}].autoscaling", m.autoscaling)
            out += _node_problems(c, i)
        if c.webui.replicas > 1 and not (c.webui.redis_url and c.webui.database_url):
            out.append(Problem("webui.replicas", "several Open WebUI replicas need webui.redisUrl and webui.databaseUrl; set both or use 1"))
        if c.gateway.ingress.enabled and not c.gateway.ingress.host:
            out.append(Problem("gateway.ingress.host", "an enabled Ingress needs a host name"))
        if c.image.apt_packages and not c.image.registry:
            out.append(
                Problem(
                    "image.registry",
                    "a customised image (aptPackages) must be pushed where the cluster can pull it; set image.registry or drop aptPackages",
                )
            )
        for key in _set_keys(c.monitoring, ("bind_address", "grafana_image", "grafana_port")):
            out.append(Problem(f"monitoring.{yaml_key(key)}", "only applies to target docker; remove it"))
        if c.monitoring.operator_labels and not c.monitoring.prometheus_operator:
            out.append(Problem("monitoring.operatorLabels", "labels the operator's objects; set prometheusOperator: true or remove it"))
        if c.monitoring.prometheus:
            out.append(
                Problem(
                    "monitoring.prometheus",
                    "the kubernetes target uses the cluster's Prometheus (model and DCGM pods carry prometheus.io/* annotations); remove it",
                )
            )
        if c.ollama is not None:
            out.append(Problem("ollama", "the stack runs Ollama on the docker target only; run it in the cluster yourself and add it under endpoints"))
    return out


def _no_gpu_problems(c: StackConfig) -> list[Problem]:
    """A docker stack without NVIDIA GPUs (a Mac with Docker Desktop) runs no vLLM and no DCGM: their settings are refused."""
    why = "this stack lists no gpus, so no vLLM runs"
    out = [Problem(f"image.{yaml_key(k)}", f"{why} and no vLLM image is built; remove it") for k in sorted(c.image.model_fields_set)]
    if c.monitoring.dcgm:
        out.append(Problem("monitoring.dcgm", "this stack lists no gpus: there is no NVIDIA GPU for the DCGM exporter to watch; remove it"))
    for key in sorted(c.monitoring.model_fields_set & {"dcgm_image", "dcgm_port"}):
        out.append(Problem(f"monitoring.{yaml_key(key)}", "this stack lists no gpus and runs no DCGM exporter; remove it"))
    return out


def one_node_reason(m: ModelConfig) -> str | None:
    """Why a model must stay on one node (what refuses ``nodes`` for it), or None: no refusal may suggest nodes to it."""
    if m.swap is not None:
        return f"swap group {m.swap.group!r} runs in one pod on one node"
    if m.autoscaling is not None and m.autoscaling.enabled:
        return "KEDA scaling of a model spanning nodes is not offered"
    return None


def _node_problems(c: StackConfig, i: int) -> list[Problem]:
    """Kubernetes: a model spanning nodes runs one pipeline stage per node (vLLM's multi-node guidance: tensor parallel
    within a node, pipeline parallel across nodes), every pod on a node of its own with the model cache mounted."""
    m = c.models[i]
    key = f"models[{i}]"
    out: list[Problem] = []
    per_pod = (m.tensor_parallel or 1) * (m.pipeline_parallel if m.nodes == 1 else 1)
    per_node = c.kubernetes.gpu.per_node if c.kubernetes else None
    if per_node and per_pod > per_node:
        narrower = f"lower tensorParallel to {per_node} or less"
        single = one_node_reason(m)
        if m.nodes > 1:
            fix = narrower
        elif single:
            fix = f"{narrower} ({single})"
        else:
            fix = f"use nodes: {-(-per_pod // per_node)} with tensorParallel {per_node} or fewer"
        out.append(Problem(f"{key}.tensorParallel", f"a pod would need {per_pod} GPUs but a node has {per_node} (kubernetes.gpu.perNode); {fix}"))
    if m.nodes == 1:
        return out
    if "pipeline_parallel" in m.model_fields_set and m.pipeline_parallel != m.nodes:
        out.append(
            Problem(
                f"{key}.pipelineParallel",
                f"a model spanning {m.nodes} nodes runs one pipeline stage per node; set pipelineParallel: {m.nodes} or remove it "
                "(tensor parallel across nodes is not offered: it needs InfiniBand-class links between nodes)",
            )
        )
    if m.autoscaling and m.autoscaling.enabled:
        out.append(Problem(f"{key}.autoscaling", "KEDA scaling of a model spanning nodes is not offered; set replicas (groups of nodes) instead"))
    if c.kubernetes and c.kubernetes.model_cache_access_mode == "ReadWriteOnce":
        out.append(
            Problem(
                "kubernetes.modelCacheAccessMode",
                f"{m.name} spans {m.nodes} nodes and every one of them mounts the model cache; use ReadWriteMany (a ReadWriteOnce volume attaches to one node)",
            )
        )
    return out


def _autoscaling_problems(key: str, a: AutoscalingConfig) -> list[Problem]:
    out: list[Problem] = []
    if a.min_replicas > a.max_replicas:
        out.append(Problem(f"{key}.minReplicas", "must not exceed maxReplicas"))
    # KEDA wakes a ScaledObject at zero only when a trigger is active (value > activationThreshold, an empty result
    # counting as 0: kedacore/keda pkg/scalers/prometheus_scaler.go); vllm:num_requests_waiting has no series
    # without a pod, and the gateway answers 502 at once, so nothing queues while the model sleeps.
    if a.min_replicas == 0 and not a.activation_query:
        out.append(
            Problem(
                f"{key}.minReplicas",
                "0 could never wake up: with no pod, nothing reports vllm:num_requests_waiting, so KEDA sees no demand; "
                "use minReplicas: 1, or set activationQuery to a PromQL query that counts requests for this model while none of its pods runs",
            )
        )
    if a.min_replicas > 0:
        for field in ("activation_query", "activation_threshold"):
            if field in a.model_fields_set:
                why = "acts only with minReplicas: 0 (KEDA ignores activation above zero); remove it or set minReplicas: 0"
                out.append(Problem(f"{key}.{yaml_key(field)}", why))
    return out


def _gpu_problems(c: StackConfig) -> list[Problem]:
    if c.target != "docker":
        return []
    out: list[Problem] = []
    counts = Counter(g.index for g in c.gpus)
    for i, g in enumerate(c.gpus):
        if counts[g.index] > 1:
            out.append(Problem(f"gpus[{i}].index", f"GPU index {g.index} is listed twice; each GPU once"))
        if g.reserved_gib >= g.memory_gib:
            out.append(Problem(f"gpus[{i}].reservedGiB", "must be less than memoryGiB"))
    known = sorted(counts)
    if c.ollama is not None:
        missing = [g for g in c.ollama.gpus if g not in counts]
        if missing:
            fix = f"add it to gpus or fix the index (known: {known})" if known else "Docker Desktop on a Mac passes no GPU into containers; remove it"
            out.append(Problem("ollama.gpus", f"GPU {missing} is not in gpus; {fix}"))
        if len(set(c.ollama.gpus)) != len(c.ollama.gpus):
            out.append(Problem("ollama.gpus", "lists a GPU twice; list each device once"))
    for i, m in enumerate(c.models):
        ranks = m.pipeline_parallel * (m.tensor_parallel or 1)
        if m.gpus is None:
            if len(c.gpus) != 1 or ranks != 1 or m.tensor_parallel not in (None, 1):
                out.append(Problem(f"models[{i}].gpus", f"say which GPUs this model uses, e.g. gpus: [{known[0] if known else 0}]"))
            continue
        if not m.gpus:
            out.append(Problem(f"models[{i}].gpus", "needs at least one GPU index"))
            continue
        if len(set(m.gpus)) != len(m.gpus):
            out.append(Problem(f"models[{i}].gpus", "lists a GPU twice; list each device once"))
        missing = [g for g in m.gpus if g not in counts]
        if missing:
            out.append(Problem(f"models[{i}].gpus", f"GPU {missing} is not in gpus (known: {known}); add it to gpus or fix the index"))
        tp = m.tensor_parallel or max(1, len(m.gpus) // m.pipeline_parallel)
        if tp * m.pipeline_parallel != len(m.gpus):
            out.append(
                Problem(
                    f"models[{i}].tensorParallel",
                    f"tensorParallel ({tp}) x pipelineParallel ({m.pipeline_parallel}) must equal the {len(m.gpus)} GPUs in models[{i}].gpus",
                )
            )
    return out


def _served(c: StackConfig) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Every model the gateway routes, whoever serves it: (its key, its name, [(key, served name), ...])."""
    out = []
    for i, m in enumerate(c.models):
        names = [(f"models[{i}].servedModelNames[{j}]", a) for j, a in enumerate(m.served_model_names)]
        names += [(f"models[{i}].loraModules[{j}].name", lo.name) for j, lo in enumerate(m.lora_modules)]
        out.append((f"models[{i}]", m.name, names))
    for e, ep in enumerate(c.endpoints):
        for i, em in enumerate(ep.models):
            out.append(
                (
                    f"endpoints[{e}].models[{i}]",
                    em.name,
                    [(f"endpoints[{e}].models[{i}].servedModelNames[{j}]", a) for j, a in enumerate(em.served_model_names)],
                )
            )
    if c.ollama is not None:
        for i, om in enumerate(c.ollama.models):
            out.append((f"ollama.models[{i}]", om.name, [(f"ollama.models[{i}].servedModelNames[{j}]", a) for j, a in enumerate(om.served_model_names)]))
    return out


def _name_problems(c: StackConfig) -> list[Problem]:
    out: list[Problem] = []
    owner: dict[str, tuple[str, str]] = {}
    for where, model_name, aliases in _served(c):
        if not DNS_LABEL.match(model_name):
            out.append(Problem(f"{where}.name", f"{model_name!r} must be a DNS-1123 label: lowercase letters, digits and '-', at most 63"))
        names = [(f"{where}.name", model_name), *aliases]
        for key, name in names:
            # nginx matches the route map ignoring case: two names that differ only in case cannot both route
            folded = name.lower()
            if folded in owner:
                same = "" if owner[folded][1] == name else f" (as {owner[folded][1]!r}; names are matched ignoring case)"
                out.append(Problem(key, f"{name!r} is already served by {owner[folded][0]}{same}; served names must be unique"))
            else:
                owner[folded] = (key, name)
    return out


def _endpoint_problems(c: StackConfig, reserved_keys: frozenset[str]) -> list[Problem]:
    out: list[Problem] = []
    if not (c.models or c.endpoints or c.ollama):
        out.append(Problem("models", "the stack serves no model: list models (vLLM on the stack's GPUs), endpoints, or ollama.models"))
    names: dict[str, str] = {"ollama": "ollama"} if c.ollama is not None else {}
    secrets: dict[str, str] = {}
    for e, ep in enumerate(c.endpoints):
        key = f"endpoints[{e}]"
        if not DNS_LABEL.match(ep.name):
            out.append(Problem(f"{key}.name", f"{ep.name!r} must be a DNS-1123 label: lowercase letters, digits and '-', at most 63"))
        elif ep.name in names:
            out.append(Problem(f"{key}.name", f"{ep.name!r} is already the name of {names[ep.name]}; name each endpoint once"))
        names.setdefault(ep.name, key)
        url = URL.match(ep.url)
        if url and url["port"] and not 0 < int(url["port"]) < 65536:
            out.append(Problem(f"{key}.url", f"port {url['port']} is not a TCP port (1-65535)"))
        if url and url["scheme"] == "http" and ep.tls.model_fields_set:
            out.append(Problem(f"{key}.tls", "applies to https URLs only; remove it or use https"))
        if ep.read_timeout_seconds and ep.read_timeout_seconds > c.gateway.read_timeout_seconds:
            out.append(
                Problem(
                    f"{key}.readTimeoutSeconds",
                    f"{ep.read_timeout_seconds} exceeds gateway.readTimeoutSeconds ({c.gateway.read_timeout_seconds}), which ends the request first; "
                    "lower it or raise gateway.readTimeoutSeconds",
                )
            )
        secret = ep.api_key_secret
        if secret is not None and secret in reserved_keys:
            out.append(Problem(f"{key}.apiKeySecret", f"{secret!r} is one of the stack's own keys; name a key of its own, e.g. {ep.name.replace('-', '')}Key"))
        elif secret is not None and secret in secrets:
            out.append(
                Problem(f"{key}.apiKeySecret", f"{secret!r} is also the key of {secrets[secret]}; endpoints may share a key only by naming it once each")
            )
        if secret is not None:
            secrets.setdefault(secret, key)
    if c.ollama is not None and c.ollama.max_loaded_models and c.ollama.max_loaded_models > len(c.ollama.models):
        out.append(Problem("ollama.maxLoadedModels", f"{c.ollama.max_loaded_models} exceeds the {len(c.ollama.models)} models listed; lower it or remove it"))
    return out


def _key_limit_problems(c: StackConfig) -> list[Problem]:
    seen: dict[str, str] = {}
    out: list[Problem] = []
    for name in c.gateway.key_limits:
        if name.lower() in seen:
            out.append(Problem(f"gateway.keyLimits.{name}", f"differs from {seen[name.lower()]!r} only in case; key names are matched ignoring case"))
        seen[name.lower()] = name
    return out


def _port_problems(c: StackConfig) -> list[Problem]:
    ports: list[tuple[str, int]] = [("gateway.port", c.gateway.port)]
    if c.webui.enabled:
        ports.append(("webui.port", c.webui.port))
    if c.target == "docker":
        if c.runs_prometheus:
            ports.append(("monitoring.prometheusPort", c.monitoring.prometheus_port))
        if c.runs_dcgm:
            ports.append(("monitoring.dcgmPort", c.monitoring.dcgm_port))
        if c.grafana_dashboards:
            ports.append(("monitoring.grafanaPort", c.monitoring.grafana_port))
    out: list[Problem] = []
    seen: dict[int, str] = {}
    for key, port in ports:
        if port in seen:
            out.append(Problem(key, f"port {port} is already used by {seen[port]}; choose another port"))
        seen[port] = key
    return out


def _image_problems(c: StackConfig) -> list[Problem]:
    if c.allow_unpinned_images:
        return []
    # no vLLM image is pulled or built for a stack without models
    refs = [("image.base", c.image.base)] if c.models else []
    refs.append(("gateway.image", c.gateway.image))
    if c.webui.enabled:
        refs.append(("webui.image", c.webui.image))
    if c.ollama is not None:
        refs.append(("ollama.image", c.ollama.image))
    if c.runs_dcgm:
        refs.append(("monitoring.dcgmImage", c.monitoring.dcgm_image))
    if c.runs_prometheus:
        refs.append(("monitoring.prometheusImage", c.monitoring.prometheus_image))
    if c.target == "docker" and c.grafana_dashboards:
        refs.append(("monitoring.grafanaImage", c.monitoring.grafana_image))
    out = []
    for key, ref in refs:
        why = image_pin_problem(ref)
        if why:
            out.append(Problem(key, f"{why} (or set allowUnpinnedImages: true)"))
    return out


def cross_field_problems(c: StackConfig, reserved_keys: frozenset[str] = frozenset()) -> list[Problem]:
    """``reserved_keys``: the stack's own config keys, which an endpoint's ``apiKeySecret`` may not name."""
    return [
        *_target_problems(c),
        *_gpu_problems(c),
        *_name_problems(c),
        *_endpoint_problems(c, reserved_keys),
        *_key_limit_problems(c),
        *_port_problems(c),
        *_image_problems(c),
        *swap_problems(c),
    ]
