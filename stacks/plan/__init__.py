"""The pure plan, the only contract downstream: ``plan(config) -> StackPlan``.

``types`` (what the plan holds) <- ``topology`` (names, ports, paths, volumes, secrets, addresses),
``releases`` (per-release vLLM facts), ``launch`` (vLLM arguments), ``memory`` (GPU arithmetic) <- ``planner``.
"""

from stacks.plan.memory import GIB
from stacks.plan.planner import plan
from stacks.plan.types import GpuPlan, ImagePlan, MemoryFigures, ModelPlan, Route, ScrapeTarget, SecretRef, Service, StackPlan

__all__ = ["GIB", "GpuPlan", "ImagePlan", "MemoryFigures", "ModelPlan", "Route", "ScrapeTarget", "SecretRef", "Service", "StackPlan", "plan"]
