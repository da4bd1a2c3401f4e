"""The glue __main__ uses: Pulumi config -> validated plan (or a clean error) -> VllmStack."""

from __future__ import annotations

from typing import Any

import pulumi

from components.stack import StackSecrets, VllmStack, VllmStackArgs
from stacks.config import NAMESPACE, SCALAR_KEYS, SECRET_KEYS, STRUCTURED_KEYS, parse
from stacks.errors import ConfigError, Problem
from stacks.plan import StackPlan, plan


def read_config(cfg: pulumi.Config) -> tuple[StackPlan, StackSecrets]:
    """Validate and plan before any resource is declared; a user mistake exits with the error list, no traceback."""
    raw: dict[str, Any] = {}
    for key in (*SCALAR_KEYS, *STRUCTURED_KEYS):
        value = cfg.get_object(key) if key in STRUCTURED_KEYS else cfg.get(key)
        if value is not None:
            raw[key] = value
    problems = [
        Problem(key, f"is in plain text; run `pulumi config set --secret {NAMESPACE}:{key} <value>`")
        for key in SECRET_KEYS
        if cfg.get(key) is not None and not pulumi.runtime.is_config_secret(f"{NAMESPACE}:{key}")
    ]
    try:
        if problems:
            raise ConfigError(problems)
        p = plan(parse(_coerce(raw)))
    except ConfigError as err:
        # RunError: Pulumi prints the message without a stack trace
        raise pulumi.RunError(err.render()) from None
    secrets = StackSecrets(hf_token=cfg.get_secret("hfToken"), api_keys=cfg.get_secret("apiKeys"), vllm_api_key=cfg.get_secret("vllmApiKey"))
    return p, secrets


def _coerce(raw: dict[str, Any]) -> dict[str, Any]:
    """Pulumi hands scalar config over as strings: 'true' -> True for the boolean keys."""
    out = dict(raw)
    for key in ("allowUnpinnedImages", "retainDataOnDestroy"):
        if isinstance(out.get(key), str):
            out[key] = {"true": True, "false": False}.get(out[key].lower(), out[key])
    return out


def run(p: StackPlan, secrets: StackSecrets) -> VllmStack:
    return VllmStack("vllm", VllmStackArgs(plan=p, secrets=secrets))
