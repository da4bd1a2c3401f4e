"""SwapGroup: the models of one swap group and the swapper in front of them, as one server (container or pod)."""

from __future__ import annotations

import pulumi

from components.platforms.base import ServiceArgs


class SwapGroupArgs(ServiceArgs):
    """``workload`` is ``workloads.swap_group``; ``after`` the servers on its GPUs that must be healthy first."""


class SwapGroup(pulumi.ComponentResource):
    service: pulumi.Output[str]
    """Network name of the swapper's own port (health, state, metrics); each member keeps its own name."""
    workload: pulumi.CustomResource
    """The resource that runs it (container, or the pod's Service)."""

    def __init__(self, name: str, args: SwapGroupArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:SwapGroup", name, None, opts)
        self.workload = args.platform.run(name, args.workload, self, args.after)
        self.service = pulumi.Output.from_input(args.workload.name)
        self.register_outputs({"service": self.service})
