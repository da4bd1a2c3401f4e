"""A certificate authority of a test's own, made with the openssl program: certificates for an https fake endpoint.

Nothing here is trusted outside the test's folder; the gateway trusts the CA only where the stack config says so.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require_program


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path


class TestCA:
    """A CA (``ca.pem``) in ``directory`` that signs server certificates for names of the test's choosing."""

    __test__ = False  # not a test class

    def __init__(self, directory: Path, name: str = "vllm-stack test CA") -> None:
        self.openssl = require_program("openssl")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = self.dir / "ca-key.pem"
        self.cert = self.dir / "ca.pem"
        self._run(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-keyout", str(self.key), "-out", str(self.cert), "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    def _run(self, *args: str) -> None:
        subprocess.run([self.openssl, *args], check=True, capture_output=True, timeout=60)

    @property
    def pem(self) -> str:
        return self.cert.read_text()

    def issue(self, name: str, dns: list[str], ips: list[str] | None = None) -> Leaf:
        """A server certificate for ``dns`` names (and IP addresses) signed by this CA."""
        key, csr, cert = (self.dir / f"{name}-{part}" for part in ("key.pem", "req.pem", "cert.pem"))
        ext = self.dir / f"{name}-ext.cnf"
        sans = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips or []]
        ext.write_text(f"subjectAltName={','.join(sans)}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
        self._run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={dns[0]}")
        self._run(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(self.cert),
            "-CAkey",
            str(self.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            str(cert),
            "-extfile",
            str(ext),
        )
        return Leaf(cert, key)
