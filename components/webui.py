"""OpenWebUI wired to the gateway; the stack config stays the source of truth for its connections."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_random as random

from components.platforms.base import ServiceArgs, Workload

DATA_DIR = "/app/backend/data"
PORT = 8080


@dataclass
class OpenWebUIArgs(ServiceArgs):
    """Open WebUI settings: ``plan.config.webui``; ``image`` is the pinned Open WebUI."""

    gateway_key: pulumi.Input[str]
    """Key Open WebUI sends to the gateway (secret)."""
    after: list[pulumi.CustomResource] = field(default_factory=list)
    """Start after these (the gateway)."""


class OpenWebUI(pulumi.ComponentResource):
    workload: pulumi.CustomResource
    """The resource that runs it."""

    def __init__(self, name: str, args: OpenWebUIArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:OpenWebUI", name, None, opts)
        cfg = args.plan.config.webui
        # its own resource, so the key (and everyone's sessions) survives container replacement
        secret_key = random.RandomPassword(f"{name}-secret-key", length=48, special=False, opts=pulumi.ResourceOptions(parent=self))
        env = {
            "OPENAI_API_BASE_URLS": args.plan.webui_api_base.rstrip("/"),
            "ENABLE_OPENAI_API": "True",
            "ENABLE_OLLAMA_API": "False",
            "ENABLE_PERSISTENT_CONFIG": "False",
            "ENABLE_SIGNUP": str(cfg.enable_signup),
            "TZ": args.plan.config.timezone,
            "ANONYMIZED_TELEMETRY": "False",
        }
        if cfg.redis_url:
            env |= {"WEBSOCKET_MANAGER": "redis", "ENABLE_WEBSOCKET_SUPPORT": "True", "WEBSOCKET_REDIS_URL": cfg.redis_url, "REDIS_URL": cfg.redis_url}
        if cfg.database_url:
            env["DATABASE_URL"] = cfg.database_url
        w = Workload(
            name="open-webui",
            image=args.image,
            env=env,
            secret_env={"OPENAI_API_KEYS": pulumi.Output.secret(args.gateway_key), "WEBUI_SECRET_KEY": secret_key.result},
            port=PORT,
            publish=cfg.port,
            health_path="/health",
            health_port=PORT,
            startup_seconds=300,
            volumes={"webui-data": DATA_DIR},
            replicas=cfg.replicas,
            labels={"vllm-stack.component": "open-webui"},
        )
        self.workload = args.platform.run(name, w, self, args.after)
        self.register_outputs({})
