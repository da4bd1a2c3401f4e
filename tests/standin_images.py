"""Stand-in container images for the real-engine docker tests, made from this machine's files (no registry pull).

One small root file system is imported with ``docker import``: static busybox (the shell the vLLM Dockerfile's RUN
lines use), Debian's python3 with the part of its standard library a web server needs (the containers' health
checks run ``python3 -c 'import urllib.request ...'`` as in the vLLM image), Debian's nginx with the njs module
(the gateway), and three commands:

- ``vllm serve MODEL --port P --served-model-name A B ...``: tests/fake_vllm.py answering on 0.0.0.0 under the
  first served name, with vLLM's bearer-key check when ``VLLM_API_KEY`` is set;
- ``open-webui``: answers ``/health`` on 8080 and keeps a file in its data folder (``/app/backend/data``);
- ``standin-idle``: answers ``/health``, ``/api/health`` and ``/-/healthy`` on the port in ``PORT`` (Grafana,
  Prometheus).

One image serves every role; a second tag adds the ENTRYPOINT Prometheus' image has.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import tzdata

from tests.conftest import ROOT, unavailable

PYTHON = Path("/usr/bin/python3")
NGINX = Path("/usr/sbin/nginx")
NJS = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")
BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "true", "ln", "echo", "cat", "date", "test", "[", "env", "rm", "mkdir", "sleep", "ls", "id", "touch", "ps", "kill")
ZONES = ("UTC", "Asia/Seoul")
DIRS: tuple[str, ...] = ("bin", "usr/bin", "usr/sbin", "etc", "tmp", "run", "root", "opt/standin", "app/backend/data")
DIRS += ("var/log/nginx", "var/lib/nginx", "etc/nginx", "usr/share/zoneinfo", "usr/share/zoneinfo/Asia")
# the standard library minus what a small web server never imports (tests, GUI, build tools)
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "distutils", "dist-packages", "site-packages", "__pycache__"}

VLLM = """\
#!/usr/bin/python3
# vllm serve MODEL [--host H] [--port P] [--served-model-name A B ...] [...]: tests/fake_vllm.py in a container
import os, sys
sys.path.insert(0, "/opt/standin")
import fake_vllm

args = sys.argv[2:] if sys.argv[1:2] == ["serve"] else sys.argv[1:]
host, port, names = "0.0.0.0", 8000, [args[0]]
i = 1
while i < len(args):
    if args[i] == "--host":
        host = args[i + 1]
    elif args[i] == "--port":
        port = int(args[i + 1])
    elif args[i] == "--served-model-name":
        names = []
        while i + 1 < len(args) and not args[i + 1].startswith("--"):
            names.append(args[i + 1])
            i += 1
    i += 1
key = os.environ.get("VLLM_API_KEY")


class Handler(fake_vllm.Handler):
    def _key_ok(self):
        # vLLM's --api-key check (VLLM_API_KEY): every /v1 route needs the bearer key
        if key and self.path.startswith("/v1") and self.headers.get("Authorization") != f"Bearer {key}":
            self._send(401, {"error": "Unauthorized"})
            return False
        return True

    def do_GET(self):
        if self._key_ok():
            super().do_GET()

    def do_POST(self):
        if self._key_ok():
            super().do_POST()


# vLLM's tool-calling flags, as the stand-in takes them (tests/fake_vllm.py)
parser = args[args.index("--tool-call-parser") + 1] if "--enable-auto-tool-choice" in args and "--tool-call-parser" in args else None
server = fake_vllm.Server(port, names[0], names, tool_parser=parser, host=host, handler=Handler)
print("ready", names, flush=True)
server.serve_forever()
"""

IDLE = """\
#!/usr/bin/python3
# answers /health and /api/health on $PORT (default 8080); open-webui also keeps a file in its data folder
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if os.path.basename(sys.argv[0]) == "open-webui":
    data = "/app/backend/data"
    os.makedirs(data, exist_ok=True)
    marker = os.path.join(data, "standin-first-start")
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(os.environ.get("HOSTNAME", "") + "\\n")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"status":true}'
        self.send_response(200 if self.path in ("/health", "/api/health", "/-/healthy") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
"""


# Open WebUI's image runs ``bash start.sh`` in /app/backend, and the stack runs its models program
# (stacks/render/open_webui_models.py) on the image's Python first: a bash that is busybox's sh, a start.sh that runs
# the stand-in server, and the part of Open WebUI's API the program uses (open_webui.models), keeping what it is given
# in /app/backend/data/standin-models.json for the tests to read.
BASH = """#!/bin/sh
exec /bin/sh "$@"
"""
START = """#!/bin/sh
exec /usr/bin/open-webui
"""
OPEN_WEBUI_MODELS = """\
import json, os

STORE = "/app/backend/data/standin-models.json"


def _load():
    if not os.path.exists(STORE):
        return {"models": {}, "grants": []}
    with open(STORE) as f:
        return json.load(f)


def _save(data):
    with open(STORE, "w") as f:
        json.dump(data, f, sort_keys=True)


class _Fields:
    def __init__(self, **fields):
        self.__dict__.update(fields)

    def model_dump(self):
        return {k: (v.model_dump() if isinstance(v, _Fields) else v) for k, v in self.__dict__.items()}

    @classmethod
    def model_validate(cls, data):
        return cls(**data)


class ModelParams(_Fields):
    pass


class ModelMeta(_Fields):
    pass


class ModelForm(_Fields):
    def __init__(self, id, name, meta, params, base_model_id=None):
        super().__init__(id=id, name=name, meta=meta, params=params, base_model_id=base_model_id)


class Models:
    @staticmethod
    async def get_model_by_id(model_id):
        entry = _load()["models"].get(model_id)
        if entry is None:
            return None
        return ModelForm(entry["id"], entry["name"], ModelMeta(**entry["meta"]), ModelParams(**entry["params"]), entry["base_model_id"])

    @staticmethod
    async def insert_new_model(form, user_id):
        data = _load()
        data["models"][form.id] = form.model_dump() | {"user_id": user_id}
        _save(data)

    @staticmethod
    async def update_model_by_id(model_id, form):
        data = _load()
        data["models"][model_id] = form.model_dump() | {"user_id": data["models"][model_id]["user_id"]}
        _save(data)
"""
ACCESS_GRANTS = """\
from open_webui.models.models import _load, _save


class AccessGrants:
    @staticmethod
    async def grant_access(kind, resource_id, principal_type, principal_id, permission):
        data = _load()
        grant = [kind, resource_id, principal_type, principal_id, permission]
        if grant not in data["grants"]:
            data["grants"].append(grant)
        _save(data)

    @staticmethod
    async def revoke_access(kind, resource_id, principal_type, principal_id, permission):
        data = _load()
        data["grants"] = [g for g in data["grants"] if g != [kind, resource_id, principal_type, principal_id, permission]]
        _save(data)
"""


def _libs(binary: Path) -> set[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30).stdout
    found = set()
    for line in out.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/"):
                found.add(Path(p))
    return found


def _add_text(tar: tarfile.TarFile, name: str, text: str, mode: int = 0o755) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    tar.addfile(info)


def rootfs(path: Path) -> None:
    """Writes the stand-in root file system as a tar file at ``path``."""
    for needed in (PYTHON, NGINX, NJS, BUSYBOX):
        if not needed.exists():
            unavailable(f"{needed} (Debian python3, nginx with libnginx-mod-http-js, busybox-static)")
    python = PYTHON.resolve()
    stdlib = Path(f"/usr/lib/python3.{python.name.rsplit('.', 1)[-1]}")
    libs: set[Path] = set()
    for b in (python, NGINX, NJS):
        libs |= _libs(b)
    dynload = stdlib / "lib-dynload"
    for so in dynload.glob("*.so"):
        libs |= _libs(so)
    with tarfile.open(path, "w") as tar:
        for d in DIRS:
            _add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
        tar.add(BUSYBOX, "bin/busybox")
        for applet in APPLETS:
            _add_link(tar, f"bin/{applet}", "busybox")
        tar.add(python, f"usr/bin/{python.name}")
        _add_link(tar, "usr/bin/python3", python.name)
        for lib in sorted(libs):
            tar.add(lib.resolve(), str(lib).lstrip("/"))
        for root, dirs, files in os.walk(stdlib):
            dirs[:] = sorted(d for d in dirs if d not in STDLIB_SKIP)
            for f in sorted(files):
                if not f.endswith(".pyc"):
                    p = Path(root) / f
                    tar.add(p, str(p).lstrip("/"), recursive=False)
        # the vLLM Dockerfile installs tzdata only when the zone is missing: ship the zones the tests use
        zoneinfo = Path(tzdata.__file__).parent / "zoneinfo"
        for zone in ZONES:
            tar.add(zoneinfo / zone, f"usr/share/zoneinfo/{zone}")
        tar.add(NGINX, "usr/sbin/nginx")
        # the official image's layout: modules/ under the prefix (/etc/nginx), the njs module there
        tar.add(NJS, "etc/nginx/modules/ngx_http_js_module.so")
        _add_link(tar, "usr/share/nginx", "/etc/nginx")
        _add_text(tar, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/nonexistent:/bin/false\n", 0o644)
        _add_text(tar, "etc/group", "root:x:0:\nnginx:x:101:\n", 0o644)
        tar.add(ROOT / "tests" / "fake_vllm.py", "opt/standin/fake_vllm.py")
        _add_text(tar, "usr/bin/vllm", VLLM)
        _add_text(tar, "usr/bin/standin-idle", IDLE)
        _add_link(tar, "usr/bin/open-webui", "standin-idle")
        _add_text(tar, "bin/bash", BASH)
        _add_text(tar, "app/backend/start.sh", START)
        package = f"{str(stdlib).lstrip('/')}/open_webui"
        for d in (package, f"{package}/models"):
            _add_dir(tar, d)
        for name, text in (("__init__.py", ""), ("config.py", ""), ("models/__init__.py", ""), ("models/models.py", OPEN_WEBUI_MODELS)):
            _add_text(tar, f"{package}/{name}", text, 0o644)
        _add_text(tar, f"{package}/models/access_grants.py", ACCESS_GRANTS, 0o644)


def docker(*args: str, timeout: int = 300, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input)


def build(tags: dict[str, str | None], workdir: Path) -> None:
    """Imports the stand-in root file system once per tag, with the tag's ENTRYPOINT (None: none, like the nginx and
    Open WebUI images, whose stacks give the command or run the image's default ``open-webui``)."""
    tar = workdir / "standin-rootfs.tar"
    rootfs(tar)
    for tag, entrypoint in tags.items():
        changes = ["--change", 'CMD ["open-webui"]', "--change", "ENV PATH=/usr/sbin:/usr/bin:/bin", "--change", "WORKDIR /app/backend"]
        if entrypoint:
            # Prometheus' image runs its binary with the stack's arguments: the stand-in ignores them
            changes += ["--change", f'ENTRYPOINT ["{entrypoint}"]']
        r = docker("import", *changes, str(tar), tag)
        assert r.returncode == 0, r.stderr
