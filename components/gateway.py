"""Gateway: NGINX + njs giving one OpenAI URL for every model (config rendered from the plan's routes)."""

from __future__ import annotations

import pulumi

from components.platforms.base import ServiceArgs


class GatewayArgs(ServiceArgs):
    """``workload`` is ``workloads.gateway``; ``after`` the model servers."""


class Gateway(pulumi.ComponentResource):
    service: pulumi.Output[str]
    """Network name of the gateway."""
    workload: pulumi.CustomResource
    """The resource that runs it."""

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:Gateway", name, None, opts)
        self.workload = args.platform.run(name, args.workload, self, args.after)
        self.service = pulumi.Output.from_input(args.workload.name)
        self.register_outputs({"service": self.service})
