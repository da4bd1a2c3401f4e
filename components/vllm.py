"""VllmServer: one vLLM OpenAI-compatible server per model, as the plan launches it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components.platforms.base import Platform, Workload
from stacks.plan import ModelPlan

HF_HOME = "/root/.cache/huggingface"
VLLM_CACHE = "/root/.cache/vllm"


@dataclass
class VllmServerArgs:
    model: ModelPlan
    """The model's launch spec from the plan."""
    image: pulumi.Input[str]
    """vLLM image reference."""
    platform: Platform
    """Where it runs."""
    hf_token: pulumi.Output[str] | None
    """Hugging Face token (secret), passed as HF_TOKEN."""
    vllm_api_key: pulumi.Output[str]
    """Key vLLM requires on /v1 (secret), passed as VLLM_API_KEY."""
    after: list[pulumi.CustomResource] = field(default_factory=list)
    """Servers that must be healthy first (they share a GPU)."""


class VllmServer(pulumi.ComponentResource):
    service: pulumi.Output[str]
    """Network name of the server."""
    workload: pulumi.CustomResource
    """The resource that runs it (container or Deployment)."""

    def __init__(self, name: str, args: VllmServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:VllmServer", name, None, opts)
        m = args.model
        secret_env = {"VLLM_API_KEY": args.vllm_api_key}
        if args.hf_token is not None:
            secret_env["HF_TOKEN"] = args.hf_token
        w = Workload(
            name=m.service,
            image=args.image,
            entrypoint=m.entrypoint,
            args=m.args,
            env={"HF_HOME": HF_HOME, "VLLM_CACHE_ROOT": VLLM_CACHE, **m.env},
            secret_env=secret_env,
            port=m.port,
            health_path=m.health_path,
            health_port=m.port,
            startup_seconds=m.startup_seconds,
            gpus=m.gpus,
            gpu_count=m.gpu_count,
            volumes={"model-cache": HF_HOME, "vllm-cache": VLLM_CACHE},
            shm_size_gib=m.shm_size_gib,
            # NCCL and PyTorch workers share memory through /dev/shm: host IPC unless a size is set
            ipc_host=m.shm_size_gib is None,
            wait_healthy=True,
            replicas=m.replicas,
            labels={"vllm-stack.model": m.name},
        )
        self.workload = args.platform.run(name, w, self, args.after)
        self.service = pulumi.Output.from_input(m.service)
        self.register_outputs({"service": self.service})
