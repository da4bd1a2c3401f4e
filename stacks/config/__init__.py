"""The stack config, one way: ``schema`` (pydantic models) <- ``rules`` (cross-field) <- ``loading`` (files, Pulumi, errors)."""

from stacks.config.loading import (
    NAMESPACE,
    SECRET_KEYS,
    config_json,
    from_pulumi,
    json_schema,
    load_stack,
    parse,
    provider_setting,
    read_stack_file,
    stack_file,
)
from stacks.config.schema import SCALAR_KEYS, STRUCTURED_KEYS, ArchConfig, ModelConfig, StackConfig

__all__ = [
    "NAMESPACE",
    "SCALAR_KEYS",
    "SECRET_KEYS",
    "STRUCTURED_KEYS",
    "ArchConfig",
    "ModelConfig",
    "StackConfig",
    "config_json",
    "from_pulumi",
    "json_schema",
    "load_stack",
    "parse",
    "provider_setting",
    "read_stack_file",
    "stack_file",
]
