"""Run a swap group's swapper (``stacks/swap/swapper.py``) on 127.0.0.1 with fake vLLM members that sleep and wake
(``tests/fake_sleepy_vllm.py``), optionally behind the rendered gateway on a real nginx.

The group's config is the plan's own (``stacks.render.swap.config``): only the ports (free ones on 127.0.0.1) and
the members' commands (the fake instead of ``vllm serve``) change. Everything started here is stopped by the
process id it started; members by the process groups the swapper records.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.plan import StackPlan
from stacks.plan.types import SwapGroupPlan
from stacks.render import swap as swap_files
from tests.fake_sleepy_vllm import read_ledger
from tests.gateway_harness import Running, free_port, render_into, start_backend, start_nginx, stop, wait_port

ROOT = Path(__file__).resolve().parent.parent
VLLM_KEY = "internal-vllm-key-for-the-swap-tests"


@dataclass
class Fake:
    """How one member's fake behaves: what it holds on the GPU (MiB) and how long it takes."""

    awake_mib: int = 600
    asleep_mib: int = 50
    startup_ms: int = 0
    wake_ms: int = 0
    sleep_ms: int = 0


@dataclass
class Group:
    admin_port: int
    ports: dict[str, int]
    """Member -> its port on the swapper (where the gateway sends it)."""
    engine_ports: dict[str, int]
    dir: Path
    ledger: Path
    proc: subprocess.Popen[bytes]
    config: dict[str, Any]
    supervised: bool
    gateway: Running | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, path: str, port: int | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port or self.admin_port}{path}", timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200
        return dict(json.loads(body))

    def states(self) -> dict[str, str]:
        return {name: m["state"] for name, m in self.status()["members"].items()}

    def ledger_now(self) -> dict[str, Any]:
        return read_ledger(self.ledger)

    def wait_states(self, want: dict[str, str] | None = None, timeout: float = 20.0, settled: bool = False) -> dict[str, str]:
        """Until the members are in ``want`` (or, ``settled``, none is on its way anywhere)."""
        end = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < end:
            states = self.states()
            if want is not None and all(states[k] == v for k, v in want.items()):
                return states
            if settled and all(s in ("asleep", "awake", "failed") for s in states.values()):
                return states
            time.sleep(0.05)
        raise AssertionError(f"members did not reach {want or 'a settled state'}: {states}")

    def control(self, member: str, **knobs: Any) -> None:
        """Change a fake's behaviour (straight to its 127.0.0.1 port: only a test reaches it)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.engine_ports[member]}/fake/control", data=json.dumps(knobs).encode(), method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def member_pid(self, member: str) -> int:
        return int((self.dir / "state" / f"{member}.pid").read_text())

    def swapper_pid(self) -> int:
        """The swapper serving requests (the supervisor's child when supervised)."""
        if not self.supervised:
            return self.proc.pid
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid and "swapper.py" in (entry / "cmdline").read_text():
                        return int(entry.name)
        raise AssertionError("the supervisor runs no swapper")


def group_config(plan: StackPlan, g: SwapGroupPlan, directory: Path, fakes: dict[str, Fake], gpu_mib: int, **settings: Any) -> dict[str, Any]:
    """The plan's swap.json for ``g``, on free 127.0.0.1 ports, with fakes as members."""
    config = swap_files.config(plan, g)
    ledger = directory / "gpu.json"
    config |= {"listen": "127.0.0.1", "port": free_port(), "state_dir": str(directory / "state"), **settings}
    for m in config["members"]:
        f = fakes.get(m["name"], Fake())
        m["port"], m["engine_port"] = free_port(), free_port()
        names = ",".join(plan.model(m["name"]).served_names)
        m["command"] = [sys.executable, "-m", "tests.fake_sleepy_vllm", "--port", str(m["engine_port"]), "--name", m["name"], "--models", names]
        m["command"] += ["--ledger", str(ledger), "--gpu-mib", str(gpu_mib), "--awake-mib", str(f.awake_mib), "--asleep-mib", str(f.asleep_mib)]
        m["command"] += ["--startup-ms", str(f.startup_ms), "--wake-ms", str(f.wake_ms), "--sleep-ms", str(f.sleep_ms)]
        m["startup_seconds"] = 30
    return config


def start_swapper(config: dict[str, Any], directory: Path, supervised: bool) -> subprocess.Popen[bytes]:
    path = directory / "swap.json"
    path.write_text(json.dumps(config))
    cmd = [sys.executable, str(swap_files.SWAPPER), "--config", str(path)] + (["--supervise"] if supervised else [])
    env = {**os.environ, "VLLM_API_KEY": VLLM_KEY, "PYTHONPATH": str(ROOT)}
    log = open(directory / "swapper.log", "ab")  # noqa: SIM115 - the swapper writes to it as long as it runs
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the swapper exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError("the swap group did not become ready")


def stop_group(g: Group) -> None:
    """The swapper (SIGTERM: it stops its members), then any member it left behind, by the process groups it recorded."""
    if g.proc.poll() is None:
        g.proc.send_signal(signal.SIGTERM)
        try:
            g.proc.wait(40)
        except subprocess.TimeoutExpired:
            g.proc.kill()
            g.proc.wait(5)
    for pidfile in (g.dir / "state").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)


@contextlib.contextmanager
def running_group(
    plan: StackPlan,
    directory: Path,
    fakes: dict[str, Fake] | None = None,
    gpu_mib: int = 1000,
    supervised: bool = False,
    gateway: bool = False,
    api_keys: list[str] | None = None,
    ready: bool = True,
    **settings: Any,
) -> Iterator[Group]:
    """The plan's first swap group with fake members, ready (every member started once, asleep), and optionally the
    rendered gateway in front (the group's members' services pointed at the swapper's ports)."""
    g = plan.swap_groups[0]
    directory.mkdir(parents=True, exist_ok=True)
    config = group_config(plan, g, directory, fakes or {}, gpu_mib, **settings)
    proc = start_swapper(config, directory, supervised)
    group = Group(
        admin_port=config["port"],
        ports={m["name"]: m["port"] for m in config["members"]},
        engine_ports={m["name"]: m["engine_port"] for m in config["members"]},
        dir=directory,
        ledger=directory / "gpu.json",
        proc=proc,
        config=config,
        supervised=supervised,
    )
    nginx: subprocess.Popen[bytes] | None = None
    backends: list[subprocess.Popen[bytes]] = []
    try:
        if ready:
            wait_ready(group.admin_port, proc)
        else:
            wait_port(group.admin_port, proc)
        if gateway:
            gw_port, metrics_port = free_port(), free_port()
            upstreams = {plan.model(n).service: f"127.0.0.1:{group.ports[n]}" for n in g.members}
            for m in plan.servers:
                # models outside the group keep their own servers: plain fakes here
                port = free_port()
                backends.append(start_backend(m.name, m.served_names, port))
                upstreams[m.service] = f"127.0.0.1:{port}"
            gw_dir = directory / "gateway"
            conf = render_into(gw_dir, plan, gw_port, upstreams, api_keys or [], VLLM_KEY, metrics_port)
            nginx = start_nginx(conf, gw_port)
            group.gateway = Running(url=f"http://127.0.0.1:{gw_port}", port=gw_port, metrics_port=metrics_port, plan=plan, dir=gw_dir, nginx=nginx)
        yield group
    finally:
        if nginx is not None:
            stop(nginx)
        for b in backends:
            stop(b)
        stop_group(group)
