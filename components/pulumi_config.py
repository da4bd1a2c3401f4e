"""Pulumi config -> validated plan and secrets, before any resource is declared; a user mistake ends the
program with the list of problems (a RunError: no traceback)."""

from __future__ import annotations

import pulumi

from components.stack import StackSecrets
from stacks.config import from_pulumi
from stacks.errors import ConfigError
from stacks.plan import StackPlan, plan


def read_config(cfg: pulumi.Config) -> tuple[StackPlan, StackSecrets]:
    try:
        p = plan(from_pulumi(cfg.get, cfg.get_object, pulumi.runtime.is_config_secret))
    except ConfigError as err:
        raise pulumi.RunError(err.render()) from None
    secrets = StackSecrets(hf_token=cfg.get_secret("hfToken"), api_keys=cfg.get_secret("apiKeys"), vllm_api_key=cfg.get_secret("vllmApiKey"))
    return p, secrets
