"""This machine: free disk, free ports, programs on PATH, CDI spec files."""

from __future__ import annotations

import errno
import shutil
import socket
from pathlib import Path


class LocalHost:
    def disk_free(self, path: str) -> tuple[str, int]:
        p = Path(path).absolute()
        while not p.exists() and p != p.parent:
            p = p.parent
        return str(p), shutil.disk_usage(p).free

    def port_in_use(self, address: str, port: int) -> str | None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            # SO_REUSEADDR: connections in TIME_WAIT do not count; a listener still does
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except PermissionError:
                # a privileged port: dockerd (root) may bind it; see whether anything answers there instead
                return self._answers(address, port)
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    return f"{address}:{port} is in use"
                if err.errno == errno.EADDRNOTAVAIL:
                    return f"{address} is not an address of this host"
                return f"{address}:{port} cannot be bound: {err.strerror}"
        return None

    @staticmethod
    def _answers(address: str, port: int) -> str | None:
        target = "127.0.0.1" if address in ("0.0.0.0", "") else "::1" if address == "::" else address
        with socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            return f"{address}:{port} is in use" if s.connect_ex((target, port)) == 0 else None

    def which(self, program: str) -> str | None:
        return shutil.which(program)

    def memory_bytes(self) -> int | None:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
        return None

    def cdi_nvidia_specs(self, dirs: list[str]) -> list[str]:
        found = []
        for d in dirs:
            for f in sorted(Path(d).glob("*")) if Path(d).is_dir() else []:
                if f.suffix in (".yaml", ".yml", ".json") and f.is_file():
                    try:
                        text = f.read_text(errors="replace")
                    except OSError:
                        continue
                    if "nvidia.com/gpu" in text:
                        found.append(str(f))
        return found
