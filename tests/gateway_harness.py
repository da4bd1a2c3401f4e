"""Run the rendered gateway with a real nginx on 127.0.0.1 in front of fake backends.

Everything started here is stopped by the process id it started. Shared by tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.config import parse
from stacks.keys import parse_api_keys
from stacks.plan import StackPlan, plan
from stacks.render import endpoints, gateway

ROOT = Path(__file__).resolve().parent.parent
# Debian 12's nginx 1.22.1 + njs 0.7.9 by default. GATEWAY_NGINX / GATEWAY_NJS_MODULE point the tests at another
# build, such as nginx 1.30.0 + njs 0.9.6 of the pinned image (njs 0.8+ also keeps the metrics' counters).
NGINX = os.environ.get("GATEWAY_NGINX", "nginx")
JS_MODULE = os.environ.get("GATEWAY_NJS_MODULE", "/usr/lib/nginx/modules/ngx_http_js_module.so")
SHARED_DICT = "GATEWAY_NJS_MODULE" in os.environ
# Debian's njs has only its own engine; the pinned image's is built with QuickJS too (GATEWAY_JS_ENGINE=qjs)
JS_ENGINE = os.environ.get("GATEWAY_JS_ENGINE", "njs")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_nginx(conf: Path, port: int) -> subprocess.Popen[bytes]:
    """nginx on ``conf`` (its prefix the file's folder), once it listens on ``port``; stopped again if it never does."""
    proc = subprocess.Popen([NGINX, "-p", str(conf.parent), "-c", str(conf), "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc)
    except BaseException:
        stop(proc)
        raise
    return proc


@dataclass
class Running:
    url: str
    port: int
    metrics_port: int
    plan: StackPlan
    dir: Path
    nginx: subprocess.Popen[bytes]
    backends: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    backend_ports: dict[str, int] = field(default_factory=dict)

    @property
    def access_log(self) -> Path:
        return self.dir / "access.log"

    def log_line(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        return access_log_line(self.access_log, request_id, timeout)

    def nginx_pids(self) -> list[int]:
        """The master this harness started and its workers."""
        return child_pids(self.nginx.pid)

    def nginx_cpu_seconds(self) -> float:
        return cpu_seconds(self.nginx_pids())

    def nginx_rss_mib(self) -> float:
        """Resident memory of the master and workers (shared zones counted in each: an upper bound)."""
        total = 0
        for pid in self.nginx_pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024

    @contextlib.contextmanager
    def peak_rss_mib(self) -> Iterator[list[float]]:
        """Samples ``nginx_rss_mib`` every 10 ms while the block runs; the list holds [at the start, the peak]."""
        seen = [self.nginx_rss_mib()] * 2
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                seen[1] = max(seen[1], self.nginx_rss_mib())
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            yield seen
        finally:
            done.set()
            sampler.join()


def access_log_line(log: Path, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The gateway's JSON access log line for ``request_id``, waiting for nginx to write it (its log is buffered for up
    to a second); every line read must be UTF-8 JSON."""
    deadline = time.monotonic() + timeout
    while True:
        for line in log.read_bytes().splitlines():
            entry = json.loads(line.decode("utf-8")) if line.strip() else {}
            if entry.get("request_id") == request_id:
                return dict(entry)
        if time.monotonic() > deadline:
            raise AssertionError(f"no access log line for {request_id}")
        time.sleep(0.1)


def require_nginx_njs() -> None:
    """nginx and its njs module, or skip (fail under CI)."""
    from tests.conftest import require_program, unavailable

    require_program(NGINX)
    if not Path(JS_MODULE).exists():
        unavailable("libnginx-mod-http-js")


def child_pids(parent: int) -> list[int]:
    """``parent`` and its direct children (an nginx master and its workers)."""
    pids = [parent]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                    pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of ``pids`` in seconds, at nanosecond resolution (``/proc/PID/schedstat``; clock ticks are 10 ms)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    return total / 1e9


SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
"""The host's CA bundle (Debian's ca-certificates), which endpoints without their own CA are verified against."""


def tool_flags(args: list[str]) -> list[str]:
    """vLLM's tool-calling flags in a server's command line (the stand-in takes them as vLLM does)."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--enable-auto-tool-choice":
            out.append(arg)
        elif arg == "--tool-call-parser":
            out += args[i : i + 2]
    return out


def start_backend(name: str, models: list[str], port: int, *options: str, record: Path | None = None) -> subprocess.Popen[bytes]:
    """A fake vLLM (``tests.fake_vllm``) on 127.0.0.1:``port``; ``options``: vLLM arguments it honours (tool calling) or
    what makes it a fake endpoint (``--prefix`` ...); ``record``: a file it appends each request to."""
    cmd = [sys.executable, "-m", "tests.fake_vllm", "--port", str(port), "--name", name, "--models", ",".join(models), *options]
    if record:
        cmd += ["--record", str(record)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc


def render_into(
    directory: Path,
    p: StackPlan,
    port: int,
    upstreams: dict[str, str],
    api_keys: list[str],
    vllm_key: str | None,
    metrics_port: int | None = None,
    endpoint_keys: dict[str, str] | None = None,
) -> Path:
    """Files for an nginx on 127.0.0.1; ``api_keys`` are ``apiKeys`` entries (``name:key`` or a bare key);
    ``endpoint_keys`` the endpoints' secrets by config key (``apiKeySecret``)."""
    (directory / "njs").mkdir(parents=True, exist_ok=True)
    (directory / "tmp").mkdir(exist_ok=True)
    (directory / "ca").mkdir(exist_ok=True)
    layout = gateway.Layout(
        listen=f"127.0.0.1:{port}",
        metrics_listen=f"127.0.0.1:{metrics_port or free_port()}",
        js_module=JS_MODULE,
        njs_dir=str(directory / "njs"),
        keys_file=str(directory / gateway.KEYS_FILE),
        pid=str(directory / "nginx.pid"),
        error_log=str(directory / "error.log"),
        access_log=str(directory / "access.log"),
        user="root" if os.geteuid() == 0 else None,
        temp_dir=str(directory / "tmp"),
        upstream_addresses=upstreams,
        worker_processes=1,
        shared_dict=SHARED_DICT,
        js_engine=JS_ENGINE,
        endpoint_listen={m.service: f"127.0.0.1:{free_port()}" for m in p.externals},
        ca_dir=str(directory / "ca"),
        system_ca=SYSTEM_CA,
    )
    files = gateway.render(p, layout)
    (directory / "nginx.conf").write_text(files["nginx.conf"])
    (directory / "njs" / "router.js").write_text(files["router.js"])
    for name, pem in endpoints.ca_files(p).items():
        (directory / "ca" / name).write_text(pem)
    keys = gateway.keys_conf(p, parse_api_keys(",".join(api_keys)), vllm_key, endpoints.key_values(p, endpoint_keys or {}))
    (directory / gateway.KEYS_FILE).write_text(keys)
    return directory / "nginx.conf"


@contextlib.contextmanager
def running_gateway(
    raw: dict[str, Any],
    directory: Path,
    api_keys: list[str] | None = None,
    vllm_key: str | None = "internal-vllm-key",
    endpoint_keys: dict[str, str] | None = None,
    endpoint_addresses: dict[str, str] | None = None,
    record: Path | None = None,
) -> Iterator[Running]:
    """Backends for every vLLM model of ``raw`` (with the plan's tool-calling flags) plus nginx, all on 127.0.0.1;
    stopped on exit. Endpoints are the test's to start (their URLs in ``raw`` point at them, or ``endpoint_addresses``
    maps an endpoint's upstream such as ``ep-ollama`` to its address); ``endpoint_keys`` are their secrets by config
    key. ``record``: a file every backend appends each request it gets to."""
    p = plan(parse(raw))
    ports = {m.service: free_port() for m in p.models}
    backends: dict[str, subprocess.Popen[bytes]] = {}
    nginx: subprocess.Popen[bytes] | None = None
    try:
        for m in p.models:
            backends[m.name] = start_backend(m.name, m.served_names, ports[m.service], *tool_flags(m.args), record=record)
        gw_port, metrics_port = free_port(), free_port()
        upstreams = {s: f"127.0.0.1:{port}" for s, port in ports.items()} | (endpoint_addresses or {})
        conf = render_into(directory, p, gw_port, upstreams, api_keys or [], vllm_key, metrics_port, endpoint_keys)
        nginx = start_nginx(conf, gw_port)
        yield Running(
            url=f"http://127.0.0.1:{gw_port}",
            port=gw_port,
            metrics_port=metrics_port,
            plan=p,
            dir=directory,
            nginx=nginx,
            backends=backends,
            backend_ports={m.name: ports[m.service] for m in p.models},
        )
    finally:
        if nginx is not None:
            stop(nginx)
        for proc in backends.values():
            stop(proc)


SCANNER_CONF = """# nginx's own scan of a request body for its top-level "model", as the gateway renders it, answered as text
worker_processes 1;
pid {dir}/scanner.pid;
error_log {dir}/scanner-error.log warn;
pcre_jit on;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_max_body_size 4m;
    client_body_buffer_size 4m;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    map $request_body $gw_scanned {{
        default "!";
        {pattern} "=$gw_m=";
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            mirror /read;
            mirror_request_body on;
            proxy_set_header X-Scan $gw_scanned;
            proxy_pass http://127.0.0.1:{echo};
        }}
        location = /read {{
            internal;
            return 204;
        }}
    }}
    server {{
        listen 127.0.0.1:{echo};
        location / {{
            return 200 $http_x_scan;
        }}
    }}
}}
"""


@contextlib.contextmanager
def running_scanner(directory: Path) -> Iterator[int]:
    """An nginx on 127.0.0.1 answering each POST with ``!`` (the scan did not match) or ``=`` and what ``gw_m`` caught.

    The pattern is the gateway's own (``gateway.top_level_model_pattern``), run by this nginx's PCRE: the scan is
    tested on its own, apart from router.js, which decides whatever it leaves."""
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    port, echo = free_port(), free_port()
    pattern = gateway.nginx_string("~" + gateway.top_level_model_pattern())
    conf = directory / "scanner.conf"
    conf.write_text(SCANNER_CONF.format(dir=directory, port=port, echo=echo, pattern=pattern))
    proc = start_nginx(conf, port)
    try:
        yield port
    finally:
        stop(proc)
