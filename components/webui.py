"""OpenWebUI wired to the gateway; the stack config stays the source of truth for its connections."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random

from components.platforms.base import ServiceArgs
from stacks.plan.topology import WEBUI_GATEWAY_KEY, WEBUI_OIDC_CLIENT_SECRET, WEBUI_SECRET_KEY


@dataclass(kw_only=True)
class OpenWebUIArgs(ServiceArgs):
    """``workload`` is ``workloads.open_webui``; ``after`` the gateway."""

    gateway_key: pulumi.Input[str]
    """Key Open WebUI sends to the gateway (secret)."""
    oidc_client_secret: pulumi.Input[str] | None = None
    """Its OpenID Connect client secret (secret), with ``webui.oidc``."""


class OpenWebUI(pulumi.ComponentResource):
    workload: pulumi.CustomResource
    """The resource that runs it."""

    def __init__(self, name: str, args: OpenWebUIArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:OpenWebUI", name, None, opts)
        # its own resource, so the key (and everyone's sessions) survives container replacement
        secret_key = random.RandomPassword(f"{name}-secret-key", length=48, special=False, opts=pulumi.ResourceOptions(parent=self))
        data = {WEBUI_SECRET_KEY.key: secret_key.result, WEBUI_GATEWAY_KEY.key: pulumi.Output.secret(args.gateway_key)}
        if args.oidc_client_secret is not None:
            data[WEBUI_OIDC_CLIENT_SECRET.key] = pulumi.Output.secret(args.oidc_client_secret)
        args.platform.secret(WEBUI_SECRET_KEY.secret, data, parent=self)
        self.workload = args.platform.run(name, args.workload, self, args.after)
        self.register_outputs({})
