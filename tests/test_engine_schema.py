"""The bridged providers `make engine` builds speak the pinned Python SDKs' names.

pulumi-docker's and pulumi-random's own provider modules are refused by the Go module proxy, so their Terraform
providers are served through the Pulumi bridge with this project's mapping (engine/docker, engine/random). The
schema each binary writes from that mapping must name every resource, input and nested type field as the pinned
SDK does: a name the SDK sends that the provider does not know would be dropped without a word.
"""

from __future__ import annotations

import inspect
import json
import re
import types
from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker
import pulumi_random
import pytest

from tests.engine_harness import engine_bin

# served by engine/docker/image.go, outside the bridge's schema
NOT_BRIDGED = {"docker:index/image:Image"}


def _names(cls: type) -> set[str]:
    """The wire names of an SDK input class: its properties' pulumi.getter names."""
    return {getattr(v.fget, "_pulumi_name", k) for k, v in vars(cls).items() if isinstance(v, property)}


def _sdk(module: types.ModuleType) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Resource token -> input names, and nested type name -> field names, from the SDK's classes."""
    prefix = module.__name__.split("_", 1)[1]
    resources: dict[str, set[str]] = {}
    nested: dict[str, set[str]] = {}
    for name, cls in vars(module).items():
        if not inspect.isclass(cls):
            continue
        if issubclass(cls, pulumi.CustomResource) and not issubclass(cls, pulumi.ProviderResource) and hasattr(module, f"{name}Args"):
            # the type token the resource registers with, written once in its module
            token = re.search(rf"'({prefix}:index/\w+:{name})'|\"({prefix}:index/\w+:{name})\"", inspect.getsource(cls))
            assert token, name
            resources[token.group(1) or token.group(2)] = _names(getattr(module, f"{name}Args"))
        elif name.endswith("Args") and not hasattr(module, name[: -len("Args")]) and _names(cls):
            nested[name[: -len("Args")]] = _names(cls)
    return resources, nested


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return engine_bin()


@pytest.mark.parametrize("module", [pulumi_docker, pulumi_random], ids=["docker", "random"])
def test_bridged_schema_names_what_the_sdk_sends(module: types.ModuleType, bin_dir: Path) -> None:
    package = module.__name__.split("_", 1)[1]
    schema: dict[str, Any] = json.loads((bin_dir / f"pulumi-resource-{package}.schema.json").read_text())
    resources, nested = _sdk(module)
    assert resources, module.__name__
    for token, names in sorted(resources.items()):
        if token in NOT_BRIDGED:
            continue
        assert token in schema["resources"], f"{token} is not served"
        assert set(schema["resources"][token].get("inputProperties", {})) == names, token
    by_name = {t.rsplit(":", 1)[-1]: t for t in schema.get("types", {})}
    for name, fields in sorted(nested.items()):
        if name in by_name:
            assert set(schema["types"][by_name[name]].get("properties", {})) >= fields, name
    # the nested types the program sets all exist in the schema
    if package == "docker":
        for used in ("ContainerHealthcheck", "ContainerNetworksAdvanced", "ContainerUpload", "ContainerVolume", "ContainerPort", "VolumeLabel"):
            assert used in by_name, used
