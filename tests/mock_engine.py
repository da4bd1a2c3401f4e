"""Run the real __main__.py under Pulumi's mock engine with a stack file's config; record every resource."""

from __future__ import annotations

import asyncio
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import config as runtime_config
from pulumi.runtime.mocks import MockMonitor

ROOT = Path(__file__).resolve().parent.parent
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"

FAKE_SECRETS = {
    "vllm-stack:hfToken": "hf_FAKEtokenVALUE0123456789",
    "vllm-stack:apiKeys": "sk-fake-user-key-1,sk-fake-user-key-2",
    "vllm-stack:vllmApiKey": "vk-fake-internal-0123456789",
}


@dataclass
class Recorded:
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str | None = None


@dataclass
class Mocks(pulumi.runtime.Mocks):
    resources: list[Recorded] = field(default_factory=list)
    options: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(type, name) -> resource options the engine saw: retain_on_delete, delete_before_replace, depends_on URNs, create_timeout."""
    providers: dict[tuple[str, str], str] = field(default_factory=dict)
    """(type, name) -> provider reference (``urn::id``) the engine saw."""
    registrations: list[tuple[str, Any]] = field(default_factory=list)
    """(URN, RegisterResourceRequest) of every resource, in order: the serialized inputs as the engine got them."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        self.resources.append(Recorded(args.typ, args.name, dict(args.inputs)))
        state = dict(args.inputs)
        if args.typ == "docker:index/image:Image":
            state["repoDigest"] = f"{args.inputs.get('imageName', 'img')}@sha256:{'0' * 64}"
        if args.typ == "docker:index/remoteImage:RemoteImage":
            state["imageId"] = f"sha256:{args.name}"
        if args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = f"generated-{args.name}"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == typ]

    def named(self, name: str, typ: str = "docker:index/container:Container") -> Recorded:
        return next(r for r in self.resources if r.name == name and r.type == typ)


LAST: list[Mocks] = [Mocks()]
"""The mocks of the latest run, also when it raised."""


_register = MockMonitor.RegisterResource


def _recording_register(self: MockMonitor, request: Any) -> Any:
    # resource options never reach Mocks.new_resource; record them from the engine request
    if isinstance(self.mocks, Mocks):
        self.mocks.options[(request.type, request.name)] = {
            "retain_on_delete": bool(request.retainOnDelete),
            "delete_before_replace": bool(request.deleteBeforeReplace),
            "depends_on": [u.rsplit("::", 1)[-1] for u in request.dependencies],
            "create_timeout": request.customTimeouts.create,
        }
        if request.provider:
            self.mocks.providers[(request.type, request.name)] = request.provider
    response = _register(self, request)
    if isinstance(self.mocks, Mocks):
        copy = type(request)()
        copy.CopyFrom(request)
        self.mocks.registrations.append((response.urn, copy))
    return response


MockMonitor.RegisterResource = _recording_register  # type: ignore[method-assign]


def stack_config(stack: str, secrets: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    config: dict[str, str] = {}
    for key, value in doc["config"].items():
        config[key] = value if isinstance(value, str) else json.dumps(value)
    secret_keys = []
    for key, value in (secrets if secrets is not None else FAKE_SECRETS).items():
        config[key] = value
        secret_keys.append(key)
    return config, secret_keys


def run_program(stack: str, secrets: dict[str, str] | None = None, config: dict[str, str] | None = None) -> Mocks:
    """Run __main__.py for ``stack`` with mocks; returns what it declared. Exceptions propagate."""
    cfg, secret_keys = stack_config(stack, secrets) if config is None else (config, list((secrets or {}).keys()))
    runtime_config.CONFIG.set({})
    runtime_config._SECRET_KEYS.set(set())
    pulumi.runtime.set_all_config(cfg, secret_keys)
    mocks = Mocks()
    LAST[0] = mocks
    # asyncio.run elsewhere (load tests) leaves no current loop; Pulumi's runtime needs one
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_mocks(mocks, project="vllm-stack", stack=stack, preview=False)

    @pulumi.runtime.test
    def program() -> None:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

    program()
    return mocks


def plaintext_leaks(value: Any, secrets: list[str], path: str = "") -> list[str]:
    """Paths where a secret value appears outside a Pulumi secret wrapper."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return []
        return [leak for k, v in value.items() for leak in plaintext_leaks(v, secrets, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        return [leak for i, v in enumerate(value) for leak in plaintext_leaks(v, secrets, f"{path}[{i}]")]
    if isinstance(value, str):
        return [path for s in secrets if s in value]
    return []
