"""VllmServer: one vLLM OpenAI-compatible server per model, as the plan launches it."""

from __future__ import annotations

import pulumi

from components.platforms.base import ServiceArgs


class VllmServerArgs(ServiceArgs):
    """``workload`` is ``workloads.vllm_server``; ``after`` the servers that must be healthy first (they share a GPU)."""


class VllmServer(pulumi.ComponentResource):
    service: pulumi.Output[str]
    """Network name of the server."""
    workload: pulumi.CustomResource
    """The resource that runs it (container or Deployment)."""

    def __init__(self, name: str, args: VllmServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:VllmServer", name, None, opts)
        self.workload = args.platform.run(name, args.workload, self, args.after)
        self.service = pulumi.Output.from_input(args.workload.name)
        self.register_outputs({"service": self.service})
