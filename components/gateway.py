"""Gateway: NGINX + njs giving one OpenAI URL for every model (config rendered from the plan's routes)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components.files import gateway as files
from components.platforms.base import ServiceArgs, Workload

CONF_DIR = "/etc/nginx"


@dataclass
class GatewayArgs(ServiceArgs):
    """Gateway settings: ``plan.config.gateway``; ``image`` is the pinned NGINX (with njs)."""

    keys_conf: pulumi.Output[str]
    """The secret include with client keys and vLLM's key (``files.keys_conf``)."""
    servers: list[pulumi.CustomResource] = field(default_factory=list)
    """Model servers: the gateway starts after them."""
    restart_on: list[pulumi.Input[str]] = field(default_factory=list)
    """Values whose change must restart nginx (docker: upstream container ids, since nginx resolves names once)."""


class Gateway(pulumi.ComponentResource):
    service: pulumi.Output[str]
    """Network name of the gateway."""
    workload: pulumi.CustomResource
    """The resource that runs it."""

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:Gateway", name, None, opts)
        p = args.plan
        rendered = files.render(p)
        conf: dict[str, pulumi.Input[str]] = {f"{CONF_DIR}/nginx.conf": rendered["nginx.conf"], f"{CONF_DIR}/njs/router.js": rendered["router.js"]}
        if args.restart_on:
            # a changed upload replaces the container, so nginx re-resolves replaced upstreams
            conf[f"{CONF_DIR}/upstream-ids.txt"] = pulumi.Output.all(*args.restart_on).apply(lambda ids: "\n".join(map(str, ids)) + "\n")
        w = Workload(
            name=p.gateway_service,
            image=args.image,
            args=["nginx", "-g", "daemon off;"],
            env={"TZ": p.config.timezone},
            port=p.gateway_port_in_container,
            publish=p.config.gateway.port,
            health_path="/health",
            health_port=p.gateway_port_in_container,
            files=conf,
            secret_files={f"{CONF_DIR}/secrets/{files.KEYS_FILE}": args.keys_conf},
            replicas=p.config.gateway.replicas,
            labels={"vllm-stack.component": "gateway"},
        )
        self.workload = args.platform.run(name, w, self, args.servers)
        self.service = pulumi.Output.from_input(p.gateway_service)
        self.register_outputs({"service": self.service})
