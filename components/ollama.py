"""OllamaServer: the Ollama the stack runs (docker target), whose models the gateway serves like any other."""

from __future__ import annotations

import pulumi

from components.platforms.base import ServiceArgs


class OllamaServerArgs(ServiceArgs):
    """``workload`` is ``workloads.ollama``; ``after`` the vLLM servers (they are planned around what it holds)."""


class OllamaServer(pulumi.ComponentResource):
    service: pulumi.Output[str]
    """Network name of the server."""
    workload: pulumi.CustomResource
    """The resource that runs it."""

    def __init__(self, name: str, args: OllamaServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:OllamaServer", name, None, opts)
        self.workload = args.platform.run(name, args.workload, self, args.after)
        self.service = pulumi.Output.from_input(args.workload.name)
        self.register_outputs({"service": self.service})
