"""Pulumi config -> validated plan and secrets, before any resource is declared. A user mistake ends the program
with the list of problems, an internal error with one line saying so: both as a RunError, which Pulumi prints
without a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pulumi

from components.stack import StackSecrets
from stacks.config import config_json, from_pulumi
from stacks.errors import ConfigError, debugging, internal_error
from stacks.plan import StackPlan, plan


@contextmanager
def clean_errors() -> Iterator[None]:
    """Every exception of the block as a RunError: the problems of a ConfigError, else one line for an internal error."""
    try:
        yield
    except pulumi.RunError:
        raise
    except ConfigError as err:
        raise pulumi.RunError(err.render()) from None
    except Exception as err:
        if debugging():
            raise
        raise pulumi.RunError(internal_error(err)) from None


def _object(cfg: pulumi.Config, key: str) -> Any:
    """A structured key's value (Pulumi hands it over as JSON text); one that is not JSON (``pulumi config set
    vllm-stack:gpus 0``) stays a string, so the schema names the key and says what it should hold."""
    text = cfg.get(key)
    return None if text is None else config_json(text)


def read_config(cfg: pulumi.Config) -> tuple[StackPlan, StackSecrets]:
    with clean_errors():
        p = plan(from_pulumi(cfg.get, lambda key: _object(cfg, key), pulumi.runtime.is_config_secret))
    secrets = StackSecrets(
        hf_token=cfg.get_secret("hfToken"),
        api_keys=cfg.get_secret("apiKeys"),
        vllm_api_key=cfg.get_secret("vllmApiKey"),
        webui_oidc_client_secret=cfg.get_secret("webuiOidcClientSecret"),
        endpoint_keys={e.key_secret: cfg.require_secret(e.key_secret) for e in p.endpoints if e.key_secret},
    )
    return p, secrets
