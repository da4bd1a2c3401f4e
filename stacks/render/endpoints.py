"""The gateway's side of models served elsewhere (external endpoints and the stack's Ollama).

Body and path routing send an endpoint model's requests to an upstream of its own, as they send a vLLM model's to its
server; that upstream is an internal server of the same nginx on 127.0.0.1, one per model, which puts the request into
the endpoint's terms: the path onto its base URL, the body's ``model`` onto the id it knows (router.upstreamBody), its
own key in place of the gateway's (from keys.conf), https verified against its CAs with SNI, its timeouts; and answers
its failures as JSON naming the endpoint (a refused certificate told apart from an unreachable host by a plain TCP probe
of the same address). Nothing here is rendered for a stack without such models. Facts are nginx 1.22.1 / 1.30.0's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from stacks.plan import StackPlan
from stacks.plan.types import EndpointPlan, ExternalModelPlan
from stacks.render import anthropic
from stacks.render.nginx_text import json_text, nginx_string

if TYPE_CHECKING:
    from stacks.render.gateway import Layout

PORT_BASE = 9200
"""Internal servers listen on 127.0.0.1:9200, 9201, ... (one per endpoint model; never published, reachable only from
inside the gateway's container or pod). TCP, not unix sockets: nginx removes a socket file only on a clean exit, and a
killed gateway restarted in the same container could not bind it again."""
VERIFY_DEPTH = 4
"""Certificates in a chain nginx accepts (``proxy_ssl_verify_depth`` defaults to 1: a leaf and its issuer, too few for a
leaf, an intermediate and a root)."""
TLS_PROTOCOLS = "TLSv1.2 TLSv1.3"
ERROR_PREFIX = "/.gateway-endpoint-error/"
PROBE = "/.gateway-endpoint-probe"
PROBED = "/.gateway-endpoint-probed"
PROBE_CODES = "301 302 303 307 308 400 401 403 404 405 408 410 411 413 414 415 421 426 429 494 495 496 497 500 501 502 503 504"
"""What the plain TCP probe of an https endpoint may get back (a TLS port answering plain HTTP, or nothing); all end as an
empty 204 for auth_request, which would take anything but 2xx, 401 and 403 for its own error."""


def ident(name: str) -> str:
    """A DNS label as part of an nginx variable name."""
    return name.replace("-", "_")


def key_variable(endpoint: str) -> str:
    """keys.conf's variable holding what the gateway sends as an endpoint's key (the whole header value)."""
    return f"$gw_endpoint_key_{ident(endpoint)}"


def key_values(plan: StackPlan, keys: Mapping[str, str]) -> dict[str, str]:
    """keys.conf's value for each endpoint with a key (``keys``: its config key's secret value): the header value it gets."""
    out = {}
    for e in plan.endpoints:
        if e.key_secret:
            key = keys[e.key_secret]
            out[e.name] = key if e.key_header == "x-api-key" else f"Bearer {key}"
    return out


def upstream_name(endpoint: EndpointPlan, probe: bool = False) -> str:
    return f"ep-{endpoint.name}{'-tcp' if probe else ''}"


def listen_addresses(plan: StackPlan, layout: Layout) -> dict[str, str]:
    """Internal listen address of each endpoint model's server, by its service (the routing's upstream)."""
    return {m.service: layout.endpoint_listen.get(m.service, f"127.0.0.1:{PORT_BASE + i}") for i, m in enumerate(plan.externals)}


def ca_file(endpoint: EndpointPlan) -> str:
    """File name of an endpoint's own CA bundle, unique among the gateway's files (ConfigMap keys are file names)."""
    return f"endpoint-{endpoint.name}-ca.pem"


def ca_files(plan: StackPlan) -> dict[str, str]:
    """The CA bundles the gateway's files hold, by file name (public certificates, not secrets)."""
    return {ca_file(e): e.ca_pem if e.ca_pem.endswith("\n") else e.ca_pem + "\n" for e in plan.endpoints if e.ca_pem}


def _https(plan: StackPlan) -> bool:
    return any(e.scheme == "https" for e in plan.endpoints)


def maps(plan: StackPlan) -> list[str]:
    """Why an endpoint answered 502, from the failed attempt's connect time (a number: the connection, TLS included, was
    made) and, for https, the plain TCP probe's (a number: the host answers, so TLS failed)."""
    tls = "the TLS handshake failed: its certificate is not valid for ${gw_ep_tls_name} under the CAs trusted for it, or it speaks no TLS there"
    lines = [
        "# an endpoint's 502: the attempt's connect time (and, for https, a plain TCP probe's) say what failed",
        'map "$upstream_connect_time|$gw_probe_connect" $gw_ep_why {' if _https(plan) else 'map "$upstream_connect_time|" $gw_ep_why {',
        '    default "is not reachable: no connection to its host and port";',
        '    "~^[0-9]" "closed the connection or answered with something that is not HTTP";',
    ]
    if _https(plan):
        lines.append(f'    "~[|][0-9]" "answers on its port, but {tls}";')
    lines.append("}")
    placeholder = "ENDPOINT_WHY"
    message = f"The endpoint `NAME` (URL) {placeholder}."
    openai_body = {"error": {"message": message, "type": "server_error", "param": None, "code": "endpoint_unavailable"}}
    echo = {"NAME": "${gw_ep_name}", "URL": "${gw_ep_url}", placeholder: "${gw_ep_why}"}
    return [*lines, *anthropic.error_map("$gw_ep_502", 502, openai_body, message, echo)]


def _error(status: int, code: str, message: str) -> list[str]:
    openai_body = {"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error", "param": None, "code": code}}
    return [
        f"            if ($gw_anthropic) {{ return {status} '{json_text(anthropic.error_body(status, message))}\\n'; }}",
        f"            return {status} '{json_text(openai_body)}\\n';",
    ]


def _key_headers(e: EndpointPlan) -> list[str]:
    """The endpoint's own key, or none: never the client's, never the gateway's key for vLLM (the routing sets that)."""
    key = key_variable(e.name) if e.key_secret else '""'
    if e.key_header == "x-api-key":
        return ['proxy_set_header Authorization "";', f"proxy_set_header X-Api-Key {key};"]
    return [f"proxy_set_header Authorization {key};", 'proxy_set_header X-Api-Key "";']


def _server(plan: StackPlan, layout: Layout, m: ExternalModelPlan, listen: str) -> list[str]:
    e = plan.endpoint(m.endpoint)
    cfg = plan.gateway
    default_port = {"http": 80, "https": 443}[e.scheme]
    host = e.host if e.port == default_port else f"{e.host}:{e.port}"
    proxy = [
        f"rewrite ^/v1/(.*)$ {e.base_path}/$1 break;",
        f"proxy_pass {e.scheme}://{upstream_name(e)};",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        f"proxy_set_header Host {nginx_string(host)};",
        *_key_headers(e),
        # the body with its model set to the endpoint's id; nginx sends its length as Content-Length
        "proxy_set_body $gw_ext_body;",
        "proxy_buffering off;",
        "proxy_cache off;",
        f"proxy_connect_timeout {e.connect_timeout_seconds}s;",
        f"proxy_read_timeout {e.read_timeout_seconds}s;",
        f"proxy_send_timeout {e.read_timeout_seconds}s;",
    ]
    if e.scheme == "https":
        assert e.tls_name is not None, "an https endpoint has a TLS name"
        proxy += [
            "proxy_ssl_verify on;",
            f"proxy_ssl_verify_depth {VERIFY_DEPTH};",
            f"proxy_ssl_trusted_certificate {nginx_string(f'{layout.ca_dir}/{ca_file(e)}' if e.ca_pem else layout.system_ca)};",
            "proxy_ssl_server_name on;",
            f"proxy_ssl_name {nginx_string(e.tls_name)};",
            f"proxy_ssl_protocols {TLS_PROTOCOLS};",
        ]
    lines = [
        f"    # {m.name}: endpoint {e.name} ({e.url}) as {m.upstream_model}",
        "    server {",
        f"        listen {listen};",
        "        server_name _;",
        "        access_log off;",
        # the routing sends the body with its Content-Length: one buffer of exactly its size, which njs reads
        f"        client_max_body_size {cfg.max_body_mib}m;",
        f"        client_body_buffer_size {cfg.max_body_mib * 1024}k;",
        "        client_body_in_single_buffer on;",
        "        recursive_error_pages on;",
        f"        set $gw_ext_model {nginx_string(m.upstream_model)};",
        f"        set $gw_ep_name {nginx_string(e.name)};",
        f"        set $gw_ep_url {nginx_string(e.url)};",
        f"        set $gw_ep_tls_name {nginx_string(e.tls_name or '')};",
        *(f"        error_page {code} {ERROR_PREFIX}{code};" for code in (500, 502, 504)),
        "",
        "        location /v1/ {",
        *(f"            {d}" for d in proxy),
        "        }",
    ]
    if not e.messages:
        lines += [
            "        location ~ ^/v1/messages(/|$) {",
            *_error(404, "not_found", f"The model `{m.name}` is served by endpoint `{e.name}`, which does not answer the Messages API."),
            "        }",
        ]
    elif not e.count_tokens:
        lines += [
            "        location ~ ^/v1/messages/count_tokens/?$ {",
            *_error(404, "not_found", f"The model `{m.name}` is served by endpoint `{e.name}`, which does not count tokens."),
            "        }",
        ]
    lines += [f"        location = {ERROR_PREFIX}502 {{", "            internal;"]
    if e.scheme == "https":
        lines += [
            f"            auth_request {PROBE};",
            "            auth_request_set $gw_probe_connect $upstream_connect_time;",
            # content phase, after the probe (return would answer in the rewrite phase, before it)
            "            js_content router.endpointError;",
            "        }",
            # a plain TCP connection to the same address, no TLS: whether the host answers there at all
            f"        location = {PROBE} {{",
            "            internal;",
            f"            proxy_pass http://{upstream_name(e, probe=True)};",
            "            proxy_pass_request_body off;",
            '            proxy_set_header Content-Length "";',
            '            proxy_set_header Authorization "";',
            '            proxy_set_header X-Api-Key "";',
            f"            proxy_connect_timeout {e.connect_timeout_seconds}s;",
            "            proxy_read_timeout 5s;",
            "            proxy_intercept_errors on;",
            f"            error_page {PROBE_CODES} = {PROBED};",
            "        }",
            f"        location = {PROBED} {{",
            "            internal;",
            "            return 204;",
            "        }",
        ]
    else:
        lines += ["            return 502 $gw_ep_502;", "        }"]
    lines += [
        f"        location = {ERROR_PREFIX}504 {{",
        "            internal;",
        *_error(504, "endpoint_timeout", f"The endpoint `{e.name}` ({e.url}) did not answer within {e.read_timeout_seconds} s."),
        "        }",
        f"        location = {ERROR_PREFIX}500 {{",
        "            internal;",
        *_error(500, "internal_error", f"The gateway failed to pass the request to endpoint `{e.name}`."),
        "        }",
        "    }",
    ]
    return lines


def upstreams(plan: StackPlan, layout: Layout) -> list[str]:
    """One upstream per endpoint, shared by its models' servers (nginx resolves the host when it starts)."""
    lines = []
    for e in plan.endpoints:
        address = layout.upstream_addresses.get(upstream_name(e), e.address)
        lines += [f"    upstream {upstream_name(e)} {{", f"        server {address} max_fails=0;", "        keepalive 16;", "    }"]
        if e.scheme == "https":
            lines += [f"    upstream {upstream_name(e, probe=True)} {{", f"        server {address} max_fails=0;", "    }"]
    return lines


def servers(plan: StackPlan, layout: Layout) -> list[str]:
    """The internal server of every endpoint model."""
    addresses = listen_addresses(plan, layout)
    lines = ["    # models served elsewhere: the routing's upstream for each is one of these internal servers"]
    for m in plan.externals:
        lines += [*_server(plan, layout, m, addresses[m.service]), ""]
    return lines
