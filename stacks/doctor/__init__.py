"""``python -m stacks doctor``: this machine against a stack's plan, before ``pulumi up``.

Reads the plan (never the config or rendered files) and asks the machine through small probes
(``probes``: NVML, the docker CLI, kubectl, the local host) that tests replace with fakes.
"""

from stacks.doctor.docker_cli import DockerCli
from stacks.doctor.endpoint_http import HttpEndpoints
from stacks.doctor.host import LocalHost
from stacks.doctor.inventory import inventory_json, inventory_yaml
from stacks.doctor.kubectl import Kubectl
from stacks.doctor.nvml import NvmlProbe
from stacks.doctor.probes import ProbeError, Probes
from stacks.doctor.result import Check
from stacks.doctor.run import doctor


def local_probes(docker_host: str | None = None) -> Probes:
    """The real probes; ``docker_host``: the stack's ``docker:host``, if it sets one."""
    return Probes(gpu=NvmlProbe(), docker=DockerCli(docker_host), kube=Kubectl(), host=LocalHost(), endpoints=HttpEndpoints())


__all__ = ["Check", "ProbeError", "Probes", "doctor", "inventory_json", "inventory_yaml", "local_probes"]
