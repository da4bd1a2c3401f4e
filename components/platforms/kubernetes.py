"""Kubernetes platform: declares the objects ``stacks.render.kubernetes`` builds, through ``pulumi_kubernetes``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.image import VllmImage, VllmImageArgs
from stacks.plan import StackPlan
from stacks.plan.types import KubernetesPlan
from stacks.render import kubernetes as manifests
from stacks.render.workloads import Ref, Workload, image_refs

TYPED: dict[tuple[str, str], Callable[..., pulumi.CustomResource]] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "PersistentVolumeClaim"): k8s.core.v1.PersistentVolumeClaim,
    ("v1", "Service"): k8s.core.v1.Service,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("apps/v1", "DaemonSet"): k8s.apps.v1.DaemonSet,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("networking.k8s.io/v1", "Ingress"): k8s.networking.v1.Ingress,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
}
TOP_LEVEL = {"metadata": "metadata", "spec": "spec", "data": "data", "stringData": "string_data", "type": "type"}
AWAIT_MARGIN_S = 600
"""Added to a workload's startup budget for Pulumi's wait on its rollout (image pull, scheduling)."""


CONTROLLERS = ("Deployment", "DaemonSet", "LeaderWorkerSet")
"""Kinds that run a workload's pods; Pulumi waits for their rollout (a LeaderWorkerSet's ``Available`` condition)."""


def declare(name: str, obj: manifests.Obj, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """One object as its typed pulumi_kubernetes resource (a CustomResource for CRDs such as KEDA's and the LeaderWorkerSet)."""
    api, kind = obj["apiVersion"], obj["kind"]
    cls = TYPED.get((api, kind))
    if cls is None:
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        return k8s.apiextensions.CustomResource(name, api_version=api, kind=kind, opts=opts, **body)
    # top-level fields are snake_case arguments; nested dicts go through as the API's camelCase
    kwargs: dict[str, Any] = {TOP_LEVEL[k]: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    return cls(name, opts=opts, **kwargs)


class KubernetesPlatform:
    """Runs workloads in the stack's namespace; owns the provider, the namespace, Secrets, PVCs and the pushed image."""

    def __init__(self, name: str, plan: StackPlan, parent: pulumi.Resource) -> None:
        assert plan.kubernetes is not None, "the kubernetes platform runs kubernetes stacks"
        kube: KubernetesPlan = plan.kubernetes
        self.plan = plan
        self.prefix = name
        self.parent = parent
        self.render_only = kube.render_yaml_to is not None
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=kube.kubeconfig,
            context=kube.context,
            render_yaml_to_directory=kube.render_yaml_to,
            opts=pulumi.ResourceOptions(parent=parent),
        )
        # deleting a namespace deletes its PVCs: when data is kept, the namespace is kept too
        self.namespace = declare(f"{name}-namespace", manifests.namespace(plan), self._opts(parent, [], retain=plan.retain_data))
        self.ready: list[pulumi.Resource] = [self.namespace]
        self.claims: set[str] = set()

    def _opts(
        self,
        parent: pulumi.Resource,
        depends_on: Sequence[pulumi.Resource],
        retain: bool = False,
        timeout_s: int | None = None,
    ) -> pulumi.ResourceOptions:
        timeouts = None
        if timeout_s:
            minutes = f"{math.ceil(timeout_s / 60)}m"
            timeouts = pulumi.CustomTimeouts(create=minutes, update=minutes)
        return pulumi.ResourceOptions(parent=parent, provider=self.provider, depends_on=list(depends_on), retain_on_delete=retain, custom_timeouts=timeouts)

    def image(self, key: str) -> Ref:
        refs = image_refs(self.plan)
        if key == "vllm" and self.plan.image.build and self.plan.image.registry:
            # a customised image must be pushed where the cluster pulls it; pods run the pushed digest
            args = VllmImageArgs(image=self.plan.image, repository=self.plan.image.registry, push=True)
            return VllmImage(f"{self.prefix}-image", args, opts=pulumi.ResourceOptions(parent=self.parent)).image_ref
        return refs[key]

    def secret(self, name: str, data: Mapping[str, pulumi.Output[str]], parent: pulumi.Resource) -> None:
        if self.render_only:
            # the provider's render mode writes Secret values in plain text: GitOps users create these Secrets themselves
            keys = ", ".join(sorted(data))
            pulumi.log.warn(f"kubernetes.renderYamlTo: Secret {name} (keys {keys}) is not rendered, its values would be plain text; create it yourself", parent)
            return
        values: dict[str, pulumi.Output[str]] = {k: pulumi.Output.secret(v) for k, v in data.items()}
        self.ready.append(declare(f"{self.prefix}-{name}-secret", manifests.secret(self.plan, name, values), self._opts(parent, [self.namespace])))

    def _claims(self, w: Workload) -> None:
        """The PVCs ``w`` mounts, declared on first use and kept on destroy with the data."""
        for obj in manifests.claims(self.plan, [w]):
            claim = obj["metadata"]["name"]
            if claim not in self.claims:
                self.claims.add(claim)
                opts = self._opts(self.parent, [self.namespace], retain=self.plan.retain_data)
                self.ready.append(declare(f"{self.prefix}-{claim}-pvc", obj, opts))

    def objects(self, name: str, objects: Sequence[manifests.Obj], parent: pulumi.Resource) -> list[pulumi.CustomResource]:
        """Each object after the namespace, named ``<name>-<kind>-<object name>``."""
        opts = self._opts(parent, [self.namespace])
        return [declare(f"{name}-{o['kind'].lower()}-{o['metadata']['name']}", o, opts) for o in objects]

    def run(self, name: str, workload: Workload, parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource]) -> pulumi.CustomResource:
        """Declares the workload's objects; returns its Service (ready endpoints) or else its controller."""
        w = workload
        self._claims(w)
        before = [*self.ready, *depends_on]
        wait = w.startup_seconds + AWAIT_MARGIN_S
        controller: pulumi.CustomResource | None = None
        service: pulumi.CustomResource | None = None
        for obj in manifests.workload_objects(self.plan, w):
            kind = obj["kind"]
            # Pulumi waits for a rollout and for a Service's ready endpoints: both must cover model load
            timeout = wait if kind in (*CONTROLLERS, "Service") else None
            after = before if controller is None else [*before, controller]
            # a workload's further Services (a swap group's members) are named after their own names
            extra = kind == "Service" and obj["metadata"]["name"] != w.name
            resource = declare(f"{name}-{kind.lower()}" + (f"-{obj['metadata']['name']}" if extra else ""), obj, self._opts(parent, after, timeout_s=timeout))
            if kind in ("ConfigMap", "NetworkPolicy"):
                # the pods start with their files and behind their network policy
                before = [*before, resource]
            elif kind in CONTROLLERS:
                controller = resource
            elif kind == "Service" and not extra:
                service = resource
        result = service or controller
        assert result is not None, "every workload has a controller"
        return result
