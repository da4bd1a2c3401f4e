"""A swap group's files: the swapper (``stacks/swap/swapper.py``, shipped as it is) and its config, from the plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stacks.plan import StackPlan
from stacks.plan.types import SwapGroupPlan

SWAPPER = Path(__file__).resolve().parent.parent / "swap" / "swapper.py"
DIR = "/opt/vllm-stack"
"""Where the group's server keeps the swapper and its config (read-only uploads, a ConfigMap on kubernetes)."""
SWAPPER_PATH = f"{DIR}/swapper.py"
CONFIG_PATH = f"{DIR}/swap.json"
STATE_DIR = "/tmp/vllm-swap"
"""The members' pid files and the ready mark; the swapper's supervisor clears it when the container starts."""
METRICS_ALL = "/metrics/all"
"""The swapper's metrics and every member's, each member's series labelled ``model`` (one scrape for pod annotations)."""


def config(plan: StackPlan, g: SwapGroupPlan) -> dict[str, Any]:
    """What the swapper reads: the group's settings and each member's command, ports and sleep level (no secret:
    the vLLM key comes from the environment)."""
    members = []
    for name in g.members:
        m = plan.model(name)
        assert m.swap is not None, "members of a swap group carry its figures"
        members.append(
            {
                "name": m.name,
                "port": m.port,
                "engine_port": m.swap.engine_port,
                "level": m.swap.level,
                "idle_seconds": m.swap.idle_seconds,
                "command": [*m.entrypoint, *m.args],
                "env": m.env,
                "startup_seconds": m.startup_seconds,
            }
        )
    return {
        "group": g.name,
        "awake": g.awake,
        "queue_size": g.queue_size,
        "max_wait_seconds": g.max_wait_seconds,
        "drain_seconds": g.drain_seconds,
        "wake_timeout_seconds": g.wake_timeout_seconds,
        "listen": "0.0.0.0",
        "port": g.service.port,
        "state_dir": STATE_DIR,
        "members": members,
    }


def render(plan: StackPlan, g: SwapGroupPlan) -> dict[str, str]:
    """``swapper.py`` and ``swap.json`` of one group."""
    return {"swapper.py": SWAPPER.read_text(), "swap.json": json.dumps(config(plan, g), indent=1) + "\n"}
