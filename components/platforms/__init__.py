"""Where workloads run: ``docker`` (containers on one host) or ``kubernetes`` (objects in a cluster)."""

from __future__ import annotations

import pulumi

from components.platforms.base import Platform
from stacks.plan import StackPlan


def platform_for(name: str, plan: StackPlan, parent: pulumi.Resource) -> Platform:
    """The plan's platform; each SDK is imported only by the stacks that use it (pulumi_kubernetes costs 1.5 s)."""
    if plan.kubernetes:
        from components.platforms.kubernetes import KubernetesPlatform

        return KubernetesPlatform(name, plan, parent)
    from components.platforms.docker import DockerPlatform

    return DockerPlatform(name, plan, parent)
