"""The NGINX gateway's files, rendered from the plan's routes.

``nginx.conf`` and ``router.js`` hold no secret. The API keys and vLLM's own key go in
``keys.conf`` (an ``include``), which the platforms ship as a secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from stacks.plan import StackPlan
from stacks.plan.topology import GATEWAY_PORT, HEALTH_PATH, KEYS_FILE

ROUTER_JS = Path(__file__).with_name("router.js")


@dataclass(frozen=True)
class Layout:
    """Where things live for the nginx that runs the config (the container's defaults)."""

    listen: str = str(GATEWAY_PORT)
    js_module: str = "modules/ngx_http_js_module.so"
    njs_dir: str = "/etc/nginx/njs"
    keys_file: str = f"/etc/nginx/secrets/{KEYS_FILE}"
    pid: str = "/tmp/nginx.pid"
    error_log: str = "stderr"
    access_log: str = "/dev/stdout"
    user: str | None = "nginx"
    temp_dir: str | None = None
    upstream_addresses: dict[str, str] = field(default_factory=dict)
    """service -> host:port, replacing the plan's service DNS names (tests point these at 127.0.0.1)."""
    worker_processes: str = "auto"


ERRORS = {
    400: ("invalid_request_error", "bad_request", "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Missing or invalid API key: send Authorization: Bearer <key>."),
    403: ("invalid_request_error", "forbidden", "Forbidden."),
    404: ("invalid_request_error", "not_found", "Not found. The API lives under /v1/; GET /v1/models lists the models."),
    405: ("invalid_request_error", "method_not_allowed", "Method not allowed."),
    408: ("invalid_request_error", "request_timeout", "The request body came too slowly."),
    413: ("invalid_request_error", "request_too_large", "Request body too large."),
    414: ("invalid_request_error", "uri_too_long", "Request URI too long."),
    429: ("rate_limit_error", "rate_limited", "Too many requests."),
    500: ("server_error", "internal_error", "The gateway failed."),
    502: ("server_error", "backend_unavailable", "The model server is not reachable; it may be starting or down."),
    503: ("server_error", "overloaded", "Too many requests in flight for this model; retry later."),
    504: ("server_error", "backend_timeout", "The model server did not answer in time."),
}


def _json_text(obj: object) -> str:
    """JSON for an nginx single-quoted string: no ``$`` (variables) and escaped quotes."""
    text = json.dumps(obj, separators=(",", ":")).replace("$", "\\u0024")
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def upstream_block_name(service: str) -> str:
    return f"up-{service}"


def models_json(plan: StackPlan) -> dict[str, object]:
    """The ``GET /v1/models`` body: every served name, OpenAI list format."""
    data = []
    for r in plan.routes:
        m = plan.model(r.model)
        data.append(
            {
                "id": r.served_name,
                "object": "model",
                "created": 0,
                "owned_by": "vllm-stack",
                "root": m.model,
                "parent": None,
                "max_model_len": m.max_model_len,
            }
        )
    return {"object": "list", "data": data}


def nginx_conf(plan: StackPlan, layout: Layout = Layout()) -> str:
    cfg = plan.gateway
    body = f"{cfg.max_body_mib}m"
    services = {r.service: r.port for r in plan.routes}
    lines: list[str] = [
        "# Rendered by vllm-stack from the stack's model list; edit the stack config, not this file.",
        f"load_module {layout.js_module};",
    ]
    if layout.user:
        lines.append(f"user {layout.user};")
    lines += [
        f"worker_processes {layout.worker_processes};",
        f"pid {layout.pid};",
        f"error_log {layout.error_log} warn;",
        "events { worker_connections 8192; }",
        "",
        "http {",
        "    default_type application/json;",
        "    server_tokens off;",
        "    sendfile on;",
        "    tcp_nodelay on;",
        "    keepalive_timeout 75s;",
        "    keepalive_requests 100000;",
        "    gzip off;",
    ]
    if layout.temp_dir:
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            lines.append(f"    {kind}_temp_path {layout.temp_dir}/{kind};")
    lines += [
        "",
        '    log_format gateway escape=json \'{"time":"$time_iso8601","request_id":"$req_id","remote":"$remote_addr",'
        '"method":"$request_method","uri":"$request_uri","status":$status,"model":"$route_model$path_model",'
        '"upstream":"$upstream_addr","upstream_status":"$upstream_status","request_time":$request_time,'
        '"upstream_connect_time":"$upstream_connect_time","upstream_header_time":"$upstream_header_time",'
        '"upstream_response_time":"$upstream_response_time","bytes_sent":$bytes_sent,"request_length":$request_length}\';',
        # buffered: one write per 64 KiB or second instead of one per request
        f"    access_log {layout.access_log} gateway buffer=64k flush=1s;",
        "",
        f"    js_path {_q(layout.njs_dir)};",
        "    js_import router from router.js;",
        "    js_var $route_model;",
        "",
        "    # $gw_authorized (client key check) and $upstream_authorization (vLLM's own key): a secret file",
        f"    include {layout.keys_file};",
        "",
        "    map $http_x_request_id $req_id {",
        '        "" $request_id;',
        "        default $http_x_request_id;",
        "    }",
        "",
        "    # every served name and alias -> its model's upstream (body routing sets $route_model, path routing $path_model)",
        '    map "$route_model$path_model" $upstream_name {',
        '        default "";',
    ]
    for r in plan.routes:
        lines.append(f"        {_q(r.served_name)} {upstream_block_name(r.service)};")
    lines += ["    }", ""]
    if cfg.max_concurrent_per_model:
        lines += ["    limit_conn_zone $upstream_name zone=per_model:10m;", "    limit_conn_status 503;", ""]
    for service, port in services.items():
        addr = layout.upstream_addresses.get(service, f"{service}:{port}")
        lines += [
            f"    upstream {upstream_block_name(service)} {{",
            f"        server {addr} max_fails=0;",
            "        keepalive 64;",
            "        keepalive_timeout 60s;",
            "    }",
        ]
    proxy = [
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $proxy_host;",
        "proxy_set_header X-Request-ID $req_id;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header Authorization $upstream_authorization;",
        "proxy_buffering off;",
        "proxy_cache off;",
        "proxy_connect_timeout 5s;",
        f"proxy_read_timeout {cfg.read_timeout_seconds}s;",
        f"proxy_send_timeout {cfg.read_timeout_seconds}s;",
    ]
    if cfg.max_concurrent_per_model:
        proxy.append(f"limit_conn per_model {cfg.max_concurrent_per_model};")
    auth = "if ($gw_authorized = 0) { return 401; }"
    lines += [
        "",
        "    server {",
        f"        listen {layout.listen} reuseport;",
        "        server_name _;",
        f"        client_max_body_size {body};",
        f"        client_body_buffer_size {body};  # njs reads bodies from memory only",
        "        add_header X-Request-ID $req_id always;",
        "",
    ]
    # error pages stay at server level: a location with its own error_page stops inheriting these
    for code in ERRORS:
        lines.append(f"        error_page {code} @error{code};")
    lines += [
        "",
        f"        location = {HEALTH_PATH} {{",
        "            access_log off;",
        '            return 200 \'{"status":"ok"}\\n\';',
        "        }",
        "",
        "        location = /v1/models {",
        f"            {auth}",
        "            if ($request_method !~ ^(GET|HEAD)$) { return 405; }",
        f"            return 200 '{_json_text(models_json(plan))}\\n';",
        "        }",
        "",
    ]
    if cfg.routing == "model":
        lines += [
            "        location /v1/ {",
            f"            {auth}",
            "            js_content router.route;",
            "        }",
            "",
            "        location @proxy {",
            *(f"            {d}" for d in proxy),
            "            proxy_pass http://$upstream_name;",
            "        }",
            "",
        ]
    lines += [
        "        location ~ ^/(?<path_model>[^/]+)/v1/ {",
        f"            {auth}",
        '            if ($upstream_name = "") {',
        f"                return 404 '{_json_text(_error_body(404, 'model_not_found', 'Unknown model in path; GET /v1/models lists the served models.'))}\\n';",
        "            }",
        "            rewrite ^/[^/]+(/v1/.*)$ $1 break;",
        *(f"            {d}" for d in proxy),
        "            proxy_pass http://$upstream_name;",
        "        }",
        "",
        "        location / {",
        "            return 404;",
        "        }",
        "",
    ]
    for code, (etype, ecode, message) in ERRORS.items():
        lines += [f"        location @error{code} {{", f"            return {code} '{_json_text(_error_body(code, ecode, message, etype))}\\n';", "        }"]
    lines += ["    }", "}", ""]
    return "\n".join(lines)


def _error_body(status: int, code: str, message: str, etype: str | None = None) -> dict[str, object]:
    etype = etype or ERRORS.get(status, ("invalid_request_error",))[0]
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def keys_conf(api_keys: list[str], vllm_api_key: str | None) -> str:
    """The secret include: which client keys pass, and the key the gateway sends to vLLM.

    With no client keys the gateway is open (every request authorized).
    """
    for key in [*api_keys, vllm_api_key or ""]:
        if any(c in key for c in "\n\r\"'\\$ \t;{}"):
            raise ValueError("API keys may not contain quotes, backslashes, '$', ';', braces or whitespace; choose another key")
    lines = ["# secret: API keys of the vllm-stack gateway", "map $http_authorization $gw_authorized {"]
    lines.append(f"    default {0 if api_keys else 1};")
    lines += [f'    "Bearer {k}" 1;' for k in api_keys if k]
    lines += ["}", "map $http_authorization $upstream_authorization {"]
    lines.append(f'    default "Bearer {vllm_api_key}";' if vllm_api_key else '    default "";')
    lines += ["}", ""]
    return "\n".join(lines)


def parse_api_keys(value: str) -> list[str]:
    """``apiKeys`` is a comma- or newline-separated list."""
    return [k.strip() for k in value.replace("\n", ",").split(",") if k.strip()]


def render(plan: StackPlan, layout: Layout = Layout()) -> dict[str, str]:
    """The non-secret gateway files (``keys.conf`` is rendered at deploy time from secrets)."""
    return {"nginx.conf": nginx_conf(plan, layout), "router.js": ROUTER_JS.read_text()}
