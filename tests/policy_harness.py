"""Feed what the real program declared (recorded by the mock engine) to the policy pack, as the engine would.

The engine sends the analyzer each resource's serialized inputs (``AnalyzeRequest``) and, at the end, all of
them (``AnalyzeStackRequest``). Here those requests are built from the ``RegisterResourceRequest`` the
program sent, and answered either by the pack's own servicer in this process or by the pack started as
Pulumi starts it (``python -m pulumi.policy <engine> .`` in ``policy/``), over gRPC on 127.0.0.1.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy.policy import _PolicyAnalyzerServicer

from policy.policies import pack_options
from tests.conftest import ROOT
from tests.mock_engine import Mocks


@dataclass
class Declared:
    """One resource as the analyzer gets it; ``props`` may be edited to make a broken copy."""

    urn: str
    type: str
    name: str
    props: dict[str, Any]
    parent: str
    dependencies: list[str]
    protect: bool
    retain_on_delete: bool
    """Seen by the engine only: the analyzer protocol has no field for it."""


@dataclass(frozen=True)
class Violation:
    policy: str
    message: str
    level: int


def declared(m: Mocks) -> list[Declared]:
    out = []
    for urn, req in m.registrations:
        # the engine marshals with SkipInternalKeys for the analyzer
        props = {k: v for k, v in json_format.MessageToDict(req.object).items() if not k.startswith("__")}
        out.append(Declared(urn, req.type, req.name, props, req.parent, list(req.dependencies), req.protect, req.retainOnDelete))
    return out


def edited(resources: list[Declared], name: str, typ: str, edit: Callable[[dict[str, Any]], None]) -> list[Declared]:
    """A copy of ``resources`` with one resource's inputs changed by ``edit``."""
    out = copy.deepcopy(resources)
    target = next(r for r in out if r.name == name and r.type == typ)
    edit(target.props)
    return out


def _struct(props: dict[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(props, struct_pb2.Struct())


def _options(r: Declared) -> analyzer_pb2.AnalyzerResourceOptions:
    return analyzer_pb2.AnalyzerResourceOptions(protect=r.protect, parent=r.parent)


def analyze_requests(resources: list[Declared]) -> tuple[list[analyzer_pb2.AnalyzeRequest], analyzer_pb2.AnalyzeStackRequest]:
    per_resource = [analyzer_pb2.AnalyzeRequest(type=r.type, name=r.name, urn=r.urn, properties=_struct(r.props), options=_options(r)) for r in resources]
    stack = analyzer_pb2.AnalyzeStackRequest(
        resources=[
            analyzer_pb2.AnalyzerResource(
                type=r.type, name=r.name, urn=r.urn, properties=_struct(r.props), options=_options(r), parent=r.parent, dependencies=r.dependencies
            )
            for r in resources
        ]
    )
    return per_resource, stack


def configure_request(config: dict[str, dict[str, Any]]) -> analyzer_pb2.ConfigureAnalyzerRequest:
    return analyzer_pb2.ConfigureAnalyzerRequest(
        policyConfig={k: analyzer_pb2.PolicyConfig(enforcementLevel=analyzer_pb2.MANDATORY, properties=_struct(v)) for k, v in config.items()}
    )


def _violations(responses: list[Any]) -> list[Violation]:
    # the pack prefixes each message with the policy's description and a newline
    return [Violation(d.policyName, d.message.split("\n", 1)[-1], d.enforcementLevel) for resp in responses for d in resp.diagnostics]


def analyze(resources: list[Declared], config: dict[str, dict[str, Any]] | None = None) -> list[Violation]:
    """Every violation the pack reports for ``resources``, from its own servicer in this process."""
    opts = pack_options()
    servicer = _PolicyAnalyzerServicer(opts["name"], "0.1.0", opts["policies"], opts["enforcement_level"])
    if config:
        servicer.Configure(configure_request(config), None)
    per_resource, stack = analyze_requests(resources)
    return _violations([*(servicer.Analyze(req, None) for req in per_resource), servicer.AnalyzeStack(stack, None)])


@contextmanager
def pack_server() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """The pack started as Pulumi's ``pulumi-analyzer-policy-python`` shim starts it; stopped by its pid."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."],
        cwd=ROOT / "policy",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        if not port.isdigit():
            proc.kill()
            raise AssertionError(f"the pack did not print its port: {port!r} {proc.communicate(timeout=10)[1]}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def analyze_remote(stub: analyzer_pb2_grpc.AnalyzerStub, resources: list[Declared]) -> list[Violation]:
    per_resource, stack = analyze_requests(resources)
    return _violations([*(stub.Analyze(req, timeout=30) for req in per_resource), stub.AnalyzeStack(stack, timeout=30)])


def policy_names(stub: analyzer_pb2_grpc.AnalyzerStub) -> list[str]:
    return [p.name for p in stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30).policies]
