"""The endpoint probe: ``GET <url>/models`` as the gateway would send it (its key, https verified against its CAs with
its TLS name), answering the model ids it lists or a ``ProbeError`` that says what failed."""

from __future__ import annotations

import http.client
import json
import socket
import ssl

from stacks.doctor.probes import KeyRefused, ProbeError


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """An https connection to ``host`` whose SNI and certificate name is ``server_name`` (an endpoint's tls.serverName)."""

    def __init__(self, host: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self.server_name = server_name
        self.tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.server_name)


class HttpEndpoints:
    def models(self, url: str, headers: dict[str, str], ca_pem: str | None, server_name: str | None, timeout: float = 10.0) -> list[str]:
        scheme, _, rest = url.partition("://")
        hostport, _, path = rest.partition("/")
        host, _, port_text = hostport.partition(":")
        port = int(port_text or (443 if scheme == "https" else 80))
        conn: http.client.HTTPConnection
        if scheme == "https":
            context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
            conn = _NamedHTTPSConnection(host, port, server_name or host, context, timeout)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        target = f"/{path}".rstrip("/") + "/models"
        try:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            body = response.read(4 * 2**20)
        except ssl.SSLCertVerificationError as err:
            raise ProbeError(
                f"{host}:{port} refused as {server_name or host}: {err.verify_message}",
                "trust its CA with tls.caPem, or set tls.serverName to the name its certificate carries",
            ) from None
        except ssl.SSLError as err:
            raise ProbeError(f"no TLS session with {host}:{port}: {err.reason or err}", "check that the port speaks https, or use an http:// URL") from None
        except (OSError, http.client.HTTPException) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else (str(err) or type(err).__name__)
            raise ProbeError(f"{host}:{port} is not reachable: {reason}", "start the server, or fix the endpoint's url") from None
        finally:
            conn.close()
        if response.status in (401, 403):
            raise KeyRefused(f"GET {target} answered {response.status}: the key is missing or refused", "give the doctor the endpoint's key")
        if response.status != 200:
            raise ProbeError(f"GET {target} answered {response.status}", "check the endpoint's url: it is the base under which /models lives")
        try:
            data = json.loads(body)["data"]
            return [str(m["id"]) for m in data]
        except (ValueError, KeyError, TypeError):
            raise ProbeError(f"GET {target} answered no OpenAI model list", "check the endpoint's url: it is the base under which /models lives") from None
