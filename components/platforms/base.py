"""How a platform is driven: the components hand it Workloads (``stacks.render.workloads``) and stack secrets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pulumi

from stacks.render.kubernetes import Obj
from stacks.render.workloads import Ref, Workload


class Platform(Protocol):
    def image(self, key: str) -> Ref:
        """The image a service runs (``workloads.image_refs``' keys); built or pulled as the platform needs."""
        ...

    def secret(self, name: str, data: Mapping[str, pulumi.Output[str]], parent: pulumi.Resource) -> None:
        """Make stack secret ``name`` (key -> secret value) available to the workloads' ``SecretRef``s."""
        ...

    def run(self, name: str, workload: Workload, parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource]) -> pulumi.CustomResource:
        """Declare the resources that run ``workload``; return the one dependents should wait on."""
        ...

    def objects(self, name: str, objects: Sequence[Obj], parent: pulumi.Resource) -> list[pulumi.CustomResource]:
        """Declare plain Kubernetes objects that run nothing (monitoring objects); a platform without a cluster takes none."""
        ...


@dataclass(kw_only=True)
class ServiceArgs:
    """What every stack service's args hold."""

    workload: Workload
    """What runs (``stacks.render.workloads``)."""
    platform: Platform
    """Where it runs."""
    after: list[pulumi.CustomResource] = field(default_factory=list)
    """Start after these are healthy."""
