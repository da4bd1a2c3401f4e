"""Gateway: NGINX + njs giving one OpenAI URL for every model (config rendered from the plan's routes)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pulumi

from components.platforms.base import ServiceArgs
from components.workloads import GATEWAY_CONF_DIR


@dataclass(kw_only=True)
class GatewayArgs(ServiceArgs):
    """``workload`` is ``workloads.gateway``; ``after`` the model servers."""

    restart_on: list[pulumi.Input[str]] = field(default_factory=list)
    """Values whose change must restart nginx (docker: upstream container ids, since nginx resolves names once)."""


class Gateway(pulumi.ComponentResource):
    service: pulumi.Output[str]
    """Network name of the gateway."""
    workload: pulumi.CustomResource
    """The resource that runs it."""

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:Gateway", name, None, opts)
        w = args.workload
        if args.restart_on:
            # a changed upload replaces the container, so nginx re-resolves replaced upstreams
            ids = pulumi.Output.all(*args.restart_on).apply(lambda v: "\n".join(map(str, v)) + "\n")
            w = dataclasses.replace(w, files={**w.files, f"{GATEWAY_CONF_DIR}/upstream-ids.txt": ids})
        self.workload = args.platform.run(name, w, self, args.after)
        self.service = pulumi.Output.from_input(w.name)
        self.register_outputs({"service": self.service})
