"""The NGINX gateway's files, rendered from the plan's routes.

``nginx.conf`` and ``router.js`` hold no secret. The API keys and vLLM's own key go in
``keys.conf`` (an ``include``), which the platforms ship as a secret. What nginx itself does
(the facts behind each directive) is noted next to the directive; the sources are nginx 1.22.1 and
1.30.0 (``src/http``) and njs 0.7.9 / 0.9.6, read in their repositories.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.keys import ApiKey, check_key, with_key
from stacks.plan import StackPlan
from stacks.plan.topology import GATEWAY_METRICS_PORT, GATEWAY_PORT, HEALTH_PATH, KEYS_FILE, METRICS_PATH
from stacks.plan.types import GatewayPlan
from stacks.render import anthropic, endpoints, nginx_hash
from stacks.render.nginx_text import json_text as _json_text
from stacks.render.nginx_text import nginx_string

ROUTER_JS = Path(__file__).with_name("router.js")
GATEWAY_CONF_DIR = "/etc/nginx"
"""The official nginx image's configuration folder (the layout of its files, keys.conf and CA bundles below it)."""
ERROR_PREFIX = "/.gateway-error/"
"""Error pages are internal URIs, not named locations: nginx cannot redirect a request whose request line it
could not parse (no URI) to a named location and answers its own HTML 500 instead."""
READ_BODY = "/.gateway-read-body"
"""The mirror module's target: mirroring it makes nginx read the request body before the content phase."""
ROUTE_ERROR_UPSTREAM = "gw-route-error"
"""Where body routing sends what it cannot route: the metrics server, which answers it as JSON."""
LARGE_BODY_DIGITS = 6
"""Bodies with a Content-Length of at most this many digits (under 1 MB) are small; larger or chunked ones are large."""
SCAN_DIGITS = 5
"""nginx scans bodies of up to this many digits (under 100 kB) for ``model`` itself: a map copies its input twice (the
value, then a lowercased copy for the hash), so a scanned body costs three times its size, and a body it leaves to
router.js more (measured, benchmarks/gateway_memory.py: 5.9 MiB for one just under 1 MB, 3.0 MiB unscanned). Larger
bodies go to router.js, which copies less and reads them 4-5x slower (a 526 KiB chat: 8-10 ms against 2 ms)."""
SCANNED_LENGTH = f'"~^[0-9]{{1,{SCAN_DIGITS}}}$"'
"""A map key matching the Content-Length of a body nginx scans; maps over ``$request_body`` are read only behind it."""
SCAN_DEPTH = 16
"""Nesting the PCRE scan follows (a JSON schema 8 objects deep); deeper bodies are left to router.js."""
SHARED_DICT = "vllm_stack_gateway"
"""The njs shared dictionary holding the metrics' counters (``router.js`` DICT)."""
USAGE_PATTERN = r'~(?s)^.*"usage"\s*:\s*\{[^}]*?"prompt_tokens"\s*:\s*(?<gw_up>[0-9]{1,18})[^}]*?"completion_tokens"\s*:\s*(?<gw_uc>[0-9]{1,18})'
"""The last ``usage`` object's tokens; vLLM's UsageInfo lists prompt_tokens before completion_tokens
(vllm/entrypoints/openai/engine/protocol.py, 0.26.0)."""
ANTHROPIC_USAGE_PATTERN = r'~(?s)^.*"usage"\s*:\s*\{[^}]*?"input_tokens"\s*:\s*(?<gw_ai>[0-9]{1,18})[^}]*?"output_tokens"\s*:\s*(?<gw_ao>[0-9]{1,18})'
"""The same in a Messages API answer: vLLM's AnthropicUsage lists input_tokens before output_tokens, and its streams end
with a message_delta event carrying the whole request's usage (vllm/entrypoints/anthropic/protocol.py and serving.py,
0.26.0, where every such stream asks for usage)."""
INCLUDE_USAGE = r'~"include_usage"\s*:\s*true'
"""A request asking for usage in its stream (``stream_options.include_usage``; continuous stats need it too)."""
FORCE_INCLUDE_USAGE = "--enable-force-include-usage"
"""vLLM flag that puts ``usage`` in every stream (vllm/entrypoints/serve/utils/api_utils.py should_include_usage, 0.26.0)."""


@dataclass(frozen=True)
class Layout:
    """Where things live for the nginx that runs the config (the container's defaults)."""

    listen: str = str(GATEWAY_PORT)
    metrics_listen: str = str(GATEWAY_METRICS_PORT)
    js_module: str = "modules/ngx_http_js_module.so"
    """The official image's module path (``/etc/nginx/modules`` links to ``/usr/lib/nginx/modules``)."""
    njs_dir: str = "/etc/nginx/njs"
    keys_file: str = f"/etc/nginx/secrets/{KEYS_FILE}"
    pid: str = "/tmp/nginx.pid"
    error_log: str = "stderr"
    access_log: str = "/dev/stdout"
    user: str | None = "nginx"
    temp_dir: str | None = None
    upstream_addresses: dict[str, str] = field(default_factory=dict)
    """service (or an endpoint's upstream, ``ep-<name>``) -> host:port, replacing the plan's DNS names (tests point these at 127.0.0.1)."""
    worker_processes: int | None = None
    """None: the plan's ``gateway.workerProcesses``."""
    shared_dict: bool = True
    """``js_shared_dict_zone`` for the metrics' counters: njs 0.8+ (the pinned image); Debian 12's njs 0.7.9 lacks it."""
    js_engine: str | None = None
    """None: the plan's ``gateway.jsEngine``; tests name the engine of the njs they load (Debian 12's has only ``njs``)."""
    endpoint_listen: dict[str, str] = field(default_factory=dict)
    """Endpoint model service -> its internal server's ``127.0.0.1:port`` (``endpoints.PORT_BASE`` onwards when absent)."""
    ca_dir: str = f"{GATEWAY_CONF_DIR}/ca"
    """Where the endpoints' own CA bundles are (``endpoints.ca_files``)."""
    system_ca: str = "/etc/ssl/certs/ca-certificates.crt"
    """The image's CA bundle: nginx:1.30.0 (Debian trixie) keeps ca-certificates (stable/debian/Dockerfile of
    nginx/docker-nginx removes only gnupg1 after installing both)."""

    @property
    def metrics_address(self) -> str:
        """The metrics server as this nginx reaches it (it also answers body-routing errors)."""
        return self.metrics_listen if ":" in self.metrics_listen else f"127.0.0.1:{self.metrics_listen}"


ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "bad_request", "Bad request: the request line, a header or the chunked body is malformed."),
    401: ("invalid_request_error", "invalid_api_key", "Missing or invalid API key: send Authorization: Bearer <key>."),
    403: ("invalid_request_error", "forbidden", "Forbidden."),
    404: ("invalid_request_error", "not_found", "Not found. The API lives under /v1/; GET /v1/models lists the models."),
    405: ("invalid_request_error", "method_not_allowed", "Method not allowed."),
    408: ("invalid_request_error", "request_timeout", "The request came too slowly."),
    413: ("invalid_request_error", "request_too_large", "Request body too large."),
    414: ("invalid_request_error", "uri_too_long", "Request URI too long."),
    429: ("rate_limit_error", "too_many_requests_in_flight", "Too many requests in flight (for this gateway or this API key); retry shortly."),
    431: ("invalid_request_error", "headers_too_large", "A request header is too large (8 KiB at most)."),
    500: ("server_error", "internal_error", "The gateway failed."),
    501: ("invalid_request_error", "not_implemented", "Unsupported Transfer-Encoding; send the body with Content-Length or chunked."),
    502: ("server_error", "backend_unavailable", "The model server is not reachable; it may be starting or down."),
    503: ("server_error", "overloaded", "Too many requests in flight for this model; retry later."),
    504: ("server_error", "backend_timeout", "The model server did not answer in time."),
    505: ("invalid_request_error", "http_version_not_supported", "HTTP version not supported; use HTTP/1.1."),
}
RATE_LIMITED = ("rate_limit_error", "rate_limit_exceeded", "Rate limit of this API key reached; retry after the time in Retry-After.")
NOT_POST = ("invalid_request_error", "method_not_allowed", "Method not allowed here; the API takes POST (GET /v1/models lists the models).")
ROUTE_ERRORS: dict[str, tuple[int, str, str]] = {
    "invalid_json": (400, "invalid_json", "The request body is not valid JSON."),
    "missing_model": (400, "missing_model", 'The request body needs a "model" string.'),
    "body_in_file": (
        413,
        "request_too_large",
        "The chunked body with its chunk framing is larger than this gateway buffers; send it with Content-Length or in larger chunks.",
    ),
    "model_not_found": (404, "model_not_found", "The model {model}does not exist. GET /v1/models lists the served models."),
}
"""Body routing's verdicts (router.js returns them after a space) -> status, code, message; {model}: the echoed name."""


def upstream_block_name(service: str) -> str:
    return f"up-{service}"


def models_json(plan: StackPlan) -> dict[str, Any]:
    """The ``GET /v1/models`` body: every served name, OpenAI list format."""
    data: list[dict[str, object]] = []
    for r in plan.routes:
        if r.kind == "external":
            em = plan.external(r.model)
            root, max_len, owner = em.upstream_model, em.max_model_len, f"vllm-stack:{em.endpoint}"
        else:
            m = plan.model(r.model)
            root, max_len, owner = m.model, m.max_model_len, "vllm-stack"
        data.append({"id": r.served_name, "object": "model", "created": 0, "owned_by": owner, "root": root, "parent": None, "max_model_len": max_len})
    return {"object": "list", "data": data}


def _error_body(status: int, code: str, message: str, etype: str | None = None) -> dict[str, object]:
    etype = etype or ERRORS.get(status, ("invalid_request_error",))[0]
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def _body(status: int) -> str:
    etype, code, message = ERRORS[status]
    return f"'{_json_text(_error_body(status, code, message, etype))}\\n'"


def _anthropic_body(status: int, message: str | None = None) -> str:
    """The same error in Anthropic's shape, for Messages API requests ($gw_anthropic)."""
    text = message or (anthropic.AUTH_MESSAGE if status == 401 else ERRORS[status][2])
    return f"'{_json_text(anthropic.error_body(status, text))}\\n'"


# Every variable the access log writes comes from the client only after a check that keeps it printable ASCII:
# escape=json leaves bytes >= 0x80 as they are, and one stray byte makes the line unparseable.
LOG_FORMAT = (
    '{"time":"$time_iso8601","request_id":"$req_id","remote":"$remote_addr","method":"$gw_log_method",'
    '"uri":"$gw_log_uri","status":$status,"model":"$gw_log_model","key":"$gw_key_label",'
    '"prompt_tokens":$gw_prompt_tokens,"completion_tokens":$gw_completion_tokens,'
    '"upstream":"$gw_log_upstream","upstream_status":"$upstream_status","request_time":$request_time,'
    '"upstream_connect_time":"$upstream_connect_time","upstream_header_time":"$upstream_header_time",'
    '"upstream_response_time":"$upstream_response_time","bytes_sent":$bytes_sent,"request_length":$request_length}'
)
USAGE_FIELDS = ("$gw_prompt_tokens", "$gw_completion_tokens")


def log_format(cfg: GatewayPlan) -> str:
    """Without gateway.tokenUsage the token fields are written as null outright: no maps for the log to look through."""
    fmt = LOG_FORMAT
    for var in () if cfg.token_usage else USAGE_FIELDS:
        fmt = fmt.replace(var, "null")
    return fmt


def _maps(plan: StackPlan) -> list[str]:
    cfg = plan.gateway
    lines = [
        # a client's X-Request-ID is kept when it is a sane token; anything else (bytes, 200+ characters) is replaced
        "map $http_x_request_id $req_id {",
        "    default $request_id;",
        '    "~^[A-Za-z0-9._:/+=@-]{1,200}$" $http_x_request_id;',
        "}",
        # the client's method, from its request line (an error page turns $request_method into GET)
        "map $request $gw_log_method {",
        '    default "-";',
        '    "~^(?<gw_method>[A-Z_-]{1,32}) " $gw_method;',
        "}",
        # \\z: PCRE's $ also matches before a final newline
        "map $request_uri $gw_log_uri {",
        '    default "(not printable ASCII, or over 2048 bytes)";',
        '    "~^[\\x20-\\x7e]{0,2048}\\z" $request_uri;',
        "}",
        "",
        # the client's key as keys.conf matches it: Anthropic clients send x-api-key (the anthropic SDK before 2.0, an
        # ANTHROPIC_API_KEY), others Authorization: Bearer; x-api-key, when sent, is the one checked
        "map $http_x_api_key $gw_credential {",
        '    "" $http_authorization;',
        '    default "Bearer $http_x_api_key";',
        "}",
        *anthropic.map_lines(),
        "",
        # $gw_key is the name of the request's key, set once the credential matched its key byte for byte
        "map $gw_key $gw_key_label {",
        '    "" "-";',
        "    default $gw_key;",
        "}",
        "",
        # concurrency admitted per nginx (the zones are shared by its workers): all requests, and the large ones
        # (Content-Length of 1 MB or more, or chunked: nginx gives a chunked body its whole client_body_buffer_size)
        'map "$http_content_length:$http_transfer_encoding" $gw_large {',
        f'    "~^[0-9]{{0,{LARGE_BODY_DIGITS}}}:$" "";',
        "    default large;",
        "}",
        "limit_conn_zone $server_port zone=gw_requests:1m;",
        "limit_conn_zone $gw_large zone=gw_large:1m;",
        "limit_conn_status 429;",
        "limit_req_status 429;",
        "limit_conn_log_level warn;",
        "limit_req_log_level warn;",
    ]
    rates, concurrency = _key_limit_groups(cfg)
    for rpm, names in rates.items():
        lines += [f"map $gw_key $gw_rate_{rpm} {{", '    default "";', *(f"    {nginx_string(n)} {nginx_string(n)};" for n in names), "}"]
        lines.append(f"limit_req_zone $gw_rate_{rpm} zone=gw_rate_{rpm}:1m rate={rpm}r/m;")
    for n_conc, names in concurrency.items():
        lines += [f"map $gw_key $gw_conc_{n_conc} {{", '    default "";', *(f"    {nginx_string(n)} {nginx_string(n)};" for n in names), "}"]
        lines.append(f"limit_conn_zone $gw_conc_{n_conc} zone=gw_conc_{n_conc}:1m;")
    # Retry-After: a rate-limited key waits for one request's worth of its rate; a full house retries in a second
    retry = {n: math.ceil(60 / lim.requests_per_minute) for n, lim in cfg.key_limits.items() if lim.requests_per_minute}
    lines += ["map $gw_key $gw_key_retry {", "    default 1;", *(f"    {nginx_string(n)} {s};" for n, s in retry.items()), "}"]
    lines += ["map $limit_req_status $gw_retry_after {", "    REJECTED $gw_key_retry;", "    default 1;", "}"]
    lines += ['map "$limit_req_status:$gw_anthropic" $gw_429_body {']
    lines += [f"    REJECTED: '{_json_text(_error_body(429, RATE_LIMITED[1], RATE_LIMITED[2], RATE_LIMITED[0]))}\\n';"]
    lines += [f"    REJECTED:1 {_anthropic_body(429, RATE_LIMITED[2])};", f'    "~:1$" {_anthropic_body(429)};']
    lines += [f"    default {_body(429)};", "}"]
    # no max_conns left (max_concurrent_per_model) shows as "no live upstreams": $upstream_addr is then the group's name
    lines += ['map "$upstream_addr" $gw_upstream_full {', '    "~(^|, )up-" 1;', "    default 0;", "}"]
    lines += ["", *_routing_maps(plan), "", *_usage_maps(plan), "", *_shaped_errors(plan)]
    if cfg.cors_allow_origins:
        origins = cfg.cors_allow_origins
        lines += ["map $http_origin $gw_cors_origin {", '    default "";']
        lines += ['    "~." "*";'] if "*" in origins else [f"    {nginx_string(o)} $http_origin;" for o in origins]
        lines += ["}", 'map "$request_method:$http_access_control_request_method" $gw_preflight {', '    default "";', '    "~^OPTIONS:." 1;', "}"]
        lines += ["map $gw_preflight $gw_cors_methods {", '    default "";', '    1 "GET, POST, OPTIONS";', "}"]
        lines += ["map $gw_preflight $gw_cors_headers {", '    default "";', "    1 $http_access_control_request_headers;", "}"]
        lines += ["map $gw_preflight $gw_cors_max_age {", '    default "";', "    1 600;", "}"]
    return lines


def top_level_model_pattern(depth: int = SCAN_DEPTH) -> str:
    """PCRE matching a JSON object; ``gw_m`` captures its top-level ``"model"`` when the last one is a plain string.

    Strings are skipped whole (escapes included) and nested arrays and objects by bracket, up to ``depth`` levels; all
    loops are possessive, so PCRE's JIT keeps no backtracking state as it goes (no stack limit, linear time). At the
    top level, each ``"model"`` key sets ``gw_m``: to its value when that is a string without escapes, else to
    nothing, and so does a key with an escape (it may spell ``model``); the last one stands, as in JSON.parse. So for
    a body JSON.parse accepts, a non-empty ``gw_m`` is the model it finds, and an empty one (or no match: deeper, not
    an object) leaves the body to router.js. It does not validate the rest: an invalid body may still name a model,
    and that model's vLLM answers it 400. The named groups, all ``gw_``, become nginx variables.
    """
    s = r'"(?:[^"\\]++|\\.)*+"'
    other = r'[^"\[\]{}]++'
    nested = [f"(?<gw_v{depth}>[\\[{{](?:{other}|(?&gw_s))*+[\\]}}])"]
    nested += [f"(?<gw_v{d}>[\\[{{](?:{other}|(?&gw_s)|(?&gw_v{d + 1}))*+[\\]}}])" for d in range(depth - 1, 0, -1)]
    # (?| ): the three branches share the group, so the last model key's branch decides what it holds
    model = r'(?|"model"\s*+:\s*+"(?<gw_m>[^"\\]*+)"|"model"\s*+:(?<gw_m>)|"[^"\\]*+\\.(?:[^"\\]++|\\.)*+"\s*+:(?<gw_m>))'
    return f"(?s)(?(DEFINE)(?<gw_s>{s}){''.join(nested)})^\\s*+\\{{(?:{model}|{other}|(?&gw_s)|(?&gw_v1))*+\\}}\\s*+$"


def _routing_maps(plan: StackPlan) -> list[str]:
    """Served name -> upstream, for the path (``$path_model``) and, with ``routing: model``, the body; and the name
    the log and the metrics give a request (the served name as configured, whatever case the client wrote)."""
    served = [nginx_string(r.served_name) for r in plan.routes]
    upstreams = [upstream_block_name(r.service) for r in plan.routes]

    def by_name(source: str, target: str, values: list[str], default: str) -> list[str]:
        return [f"map {source} {target} {{", f"    default {default};", *(f"    {n} {v};" for n, v in zip(served, values, strict=True)), "}"]

    lines = [
        "# /<model>/v1/...: every served name and alias -> its model's upstream",
        *by_name("$path_model", "$gw_path_upstream", upstreams, '""'),
        *by_name("$path_model", "$gw_path_name", served, '"-"'),
        "",
        # what the log names: the model once a request reached an upstream ($upstream_addr, which the redirect to an
        # error page keeps), and its server, neither for the router's verdicts (the metrics server answers them)
        "map $gw_log_model $gw_log_upstream {",
        '    "-" "";',
        "    default $upstream_addr;",
        "}",
        "map $upstream_addr $gw_log_model {",
        '    "" "-";',
        f"    default {'$gw_path_name' if plan.gateway.routing == 'path' else '$gw_routed_model'};",
        "}",
    ]
    if plan.gateway.routing == "path":
        return lines
    lines += [
        "map $path_model $gw_routed_model {",
        '    "" $gw_body_name;',
        "    default $gw_path_name;",
        "}",
        *by_name("$gw_model", "$gw_body_name", served, '"-"'),
        "",
        "# POST /v1/...: the body's top-level model. The mirror module has read the body before proxy_pass looks here.",
        "# nginx finds it itself in a Content-Length body under 100 kB (ngx_http_variable_request_body: in memory); router.js",
        "# decides the rest (deeper, escaped, chunked, larger or broken bodies): a model, or a verdict starting with a space",
        "map $http_content_length $gw_scan {",
        '    default "";',
        f"    {SCANNED_LENGTH} $gw_scanned;",
        "}",
        "map $request_body $gw_scanned {",
        '    default "";',
        f"    {nginx_string('~' + top_level_model_pattern())} $gw_m;",
        "}",
        "map $gw_scan $gw_model {",
        '    "" $gw_js_route;',
        "    default $gw_scan;",
        "}",
        *by_name("$gw_model", "$gw_upstream", upstreams, ROUTE_ERROR_UPSTREAM),
        # what cannot be routed goes to the metrics server, which answers it from these headers (empty: not sent)
        "map $gw_upstream $gw_route_error {",
        '    default "";',
        f"    {ROUTE_ERROR_UPSTREAM} $gw_route_verdict;",
        "}",
        "map $gw_model $gw_route_verdict {",
        "    default model_not_found;",
        *(f'    " {v}" {v};' for v in ROUTE_ERRORS if v != "model_not_found"),
        "}",
        "map $gw_route_error $gw_model_echo {",
        '    default "";',
        "    model_not_found $gw_model_safe;",
        "}",
        # an unknown model is named in the answer only when every character is safe inside JSON and a header (\\z: PCRE's
        # $ also matches before a final newline, which would end the header)
        "map $gw_model $gw_model_safe {",
        '    default "";',
        '    "~^[A-Za-z0-9._:/@+=-]{1,128}\\z" $gw_model;',
        "}",
    ]
    return lines


def _usage_maps(plan: StackPlan) -> list[str]:
    """Token usage from the answer's tail that router.js hands over in ``$gw_usage`` (empty: none, or no filter)."""
    lines = [
        '# token usage: the last "usage" in the tail router.js hands over (vLLM: prompt_tokens, then completion_tokens)',
        "map $gw_usage $gw_usage_pc {",
        '    default "";',
        f'    {nginx_string(USAGE_PATTERN)} "$gw_up $gw_uc";',
        f'    {nginx_string(ANTHROPIC_USAGE_PATTERN)} "$gw_ai $gw_ao";',
        "}",
        "map $gw_usage_pc $gw_prompt_tokens {",
        "    default null;",
        '    "~^(?<gw_up2>[0-9]+) " $gw_up2;',
        "}",
        "map $gw_usage_pc $gw_completion_tokens {",
        "    default null;",
        '    "~ (?<gw_uc2>[0-9]+)$" $gw_uc2;',
        "}",
    ]
    if plan.gateway.token_usage:
        forced = any(FORCE_INCLUDE_USAGE in m.args for m in plan.models)
        lines += [
            "# a stream whose request did not ask for usage carries none: router.usage stops filtering it at once (a Messages",
            "# API stream always carries it: $gw_anthropic puts a 1 before its content type)",
            'map "$gw_anthropic$upstream_http_content_type" $gw_usage_off {',
            '    default "";',
            *([] if forced else ['    "~^text/event-stream" $gw_stream_usage_off;']),
            "}",
            # only bodies nginx would scan (a map copies its input twice); a larger one is taken to ask
            "map $http_content_length $gw_stream_usage_off {",
            '    default "";',
            f"    {SCANNED_LENGTH} $gw_small_stream_usage_off;",
            "}",
            "map $request_body $gw_small_stream_usage_off {",
            "    default 1;",
            '    "" "";',
            f'    {nginx_string(INCLUDE_USAGE)} "";',
            "}",
        ]
    return lines


def _key_limit_groups(cfg: GatewayPlan) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """One limit zone per distinct value: keys with the same limit share a zone (each key its own count)."""
    rates: dict[int, list[str]] = {}
    concurrency: dict[int, list[str]] = {}
    for name, lim in sorted(cfg.key_limits.items()):
        if lim.requests_per_minute:
            rates.setdefault(lim.requests_per_minute, []).append(name)
        if lim.concurrent:
            concurrency.setdefault(lim.concurrent, []).append(name)
    return rates, concurrency


def _headers(cfg: GatewayPlan) -> list[str]:
    """Response headers every answer carries; a location with its own add_header repeats them (nginx does not merge)."""
    out = ["add_header X-Request-ID $req_id always;"]
    if cfg.cors_allow_origins:
        out += [
            "add_header Access-Control-Allow-Origin $gw_cors_origin always;",
            'add_header Access-Control-Expose-Headers "X-Request-ID, Retry-After" always;',
            "add_header Access-Control-Allow-Methods $gw_cors_methods always;",
            "add_header Access-Control-Allow-Headers $gw_cors_headers always;",
            "add_header Access-Control-Max-Age $gw_cors_max_age always;",
            "add_header Vary Origin always;",
        ]
    return out


def _limits(cfg: GatewayPlan) -> list[str]:
    """Admission, checked before the body is read (limit_conn and limit_req run once per request, in the first location)."""
    out = [f"limit_conn gw_requests {cfg.max_concurrent_requests};", f"limit_conn gw_large {cfg.max_concurrent_large_requests};"]
    rates, concurrency = _key_limit_groups(cfg)
    out += [f"limit_req zone=gw_rate_{rpm} burst={max(0, rpm - 1)} nodelay;" for rpm in rates]
    out += [f"limit_conn gw_conc_{n} {n};" for n in concurrency]
    return out


def nginx_conf(plan: StackPlan, layout: Layout = Layout()) -> str:
    cfg = plan.gateway
    body = f"{cfg.max_body_mib}m"
    services = {r.service: r.port for r in plan.routes}
    workers = layout.worker_processes or cfg.worker_processes
    engine = layout.js_engine or cfg.js_engine
    counters = cfg.request_metrics and layout.shared_dict
    lines: list[str] = [
        "# Rendered by vllm-stack from the stack's model list; edit the stack config, not this file.",
        f"load_module {layout.js_module};",
    ]
    if layout.user:
        lines.append(f"user {layout.user};")
    # a worker holds a client and an upstream connection per request, plus idle keep-alive ones
    connections = 2 * cfg.max_concurrent_requests + 1024
    lines += [
        f"worker_processes {workers};",
        f"pid {layout.pid};",
        f"error_log {layout.error_log} warn;",
        "pcre_jit on;",
        f"events {{ worker_connections {connections}; }}",
        "",
        "http {",
        "    default_type application/json;",
        "    server_tokens off;",
        "    sendfile on;",
        "    tcp_nodelay on;",
        "    keepalive_timeout 75s;",
        "    keepalive_requests 100000;",
        "    gzip off;",
        # $gw_key is set only for requests whose key matched; others read it empty, which is what they mean
        "    uninitialized_variable_warn off;",
        f"    client_header_timeout {cfg.client_timeout_seconds}s;",
        f"    client_body_timeout {cfg.client_timeout_seconds}s;",
    ]
    if layout.temp_dir:
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            lines.append(f"    {kind}_temp_path {layout.temp_dir}/{kind};")
    lines += [
        "",
        f"    log_format gateway escape=json '{log_format(cfg)}{'$gw_account' if counters else ''}';",
        # buffered: one write per 64 KiB or second instead of one per request
        f"    access_log {layout.access_log} gateway buffer=64k flush=1s;",
        "",
        *([f"    js_engine {engine};"] if engine != "njs" else []),
        f"    js_path {nginx_string(layout.njs_dir)};",
        "    js_import router from router.js;",
        *(["    js_set $gw_js_route router.route;"] if cfg.routing == "model" else []),
        *(
            ["    # an endpoint model's body, its model set to the id the endpoint knows", "    js_set $gw_ext_body router.upstreamBody;"]
            if plan.externals
            else []
        ),
        "    # the answer's tail, from router.usage (empty without the filter)",
        "    js_var $gw_usage;",
    ]
    if counters:
        lines += [
            f"    js_shared_dict_zone zone={SHARED_DICT}:4m type=number;",
            "    # counts the finished request into the metrics (read once, in the log phase; it writes nothing to the log)",
            "    js_set $gw_account router.account;",
        ]
    lines += [
        "",
        "    # $gw_key_candidate, $gw_key_expected (client keys) and $upstream_authorization (vLLM's key): a secret file.",
        "    # Before any map: it sizes the map hash, which nginx refuses to change once a map is read",
        f"    include {layout.keys_file};",
        "",
        *(f"    {ln}" if ln else "" for ln in _maps(plan)),
        "",
        *(f"    {ln}" for ln in (endpoints.maps(plan) if plan.externals else [])),
    ]
    max_conns = f" max_conns={cfg.max_concurrent_per_model}" if cfg.max_concurrent_per_model else ""
    internal = endpoints.listen_addresses(plan, layout)
    for service, port in services.items():
        addr = layout.upstream_addresses.get(service) or internal.get(service) or f"{service}:{port}"
        lines += [
            f"    upstream {upstream_block_name(service)} {{",
            # shared by the workers, so max_conns counts the whole gateway's connections to this model
            f"        zone {upstream_block_name(service)} 64k;",
            f"        server {addr} max_fails=0{max_conns};",
            "        keepalive 64;",
            "        keepalive_timeout 60s;",
            "    }",
        ]
    if cfg.routing == "model":
        lines += [f"    upstream {ROUTE_ERROR_UPSTREAM} {{", f"        server {layout.metrics_address} max_fails=0;", "        keepalive 8;", "    }"]
    proxy = [
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $proxy_host;",
        "proxy_set_header X-Request-ID $req_id;",
        "proxy_set_header Authorization $upstream_authorization;",
        # a client's x-api-key is its gateway key: never passed on
        'proxy_set_header X-Api-Key "";',
        "proxy_buffering off;",
        "proxy_cache off;",
        "proxy_connect_timeout 5s;",
        f"proxy_read_timeout {cfg.read_timeout_seconds}s;",
        f"proxy_send_timeout {cfg.read_timeout_seconds}s;",
    ]
    if cfg.token_usage:
        proxy.append("js_body_filter router.usage;")
    # keys.conf names the key the Authorization header matches ignoring case ($gw_key_candidate, a map) and gives
    # that name's exact header ($gw_key_expected); "=" in an if compares bytes, and only then is the key named
    auth = ["if ($gw_credential != $gw_key_expected) { return 401; }", "set $gw_key $gw_key_candidate;"]
    lines += [
        "",
        "    server {",
        f"        listen {layout.listen} reuseport;",
        "        server_name _;",
        f"        client_max_body_size {body};",
        # nginx reads a Content-Length body into one buffer of exactly its size (ngx_http_request_body.c), the part
        # that came with the headers included (single buffer: $request_body and njs then read it without joining a
        # copy); a chunked one into a buffer of this size, chunk framing included, and spills to a temp file once that
        # is full. The quarter of slack keeps framing of chunks over ~24 bytes in memory: njs before 0.8.10 cannot read
        # a temp file
        f"        client_body_buffer_size {cfg.max_body_mib * 1024 * 5 // 4}k;",
        "        client_body_in_single_buffer on;",
        *(f"        {h}" for h in _headers(cfg)),
        "",
    ]
    if cfg.cors_allow_origins:
        lines += ["        # CORS preflights need no key", "        if ($gw_preflight) { return 204; }", ""]
    # error pages stay at server level: a location with its own error_page stops inheriting these. Recursive: a body
    # discarded after an error can fail again (a bad chunk after a 401) and that answer must be JSON too
    lines.append("        recursive_error_pages on;")
    for code in ERRORS:
        # "=": the answer's status is the error location's (the 502 page answers 503 for a model at max_conns)
        lines.append(f"        error_page {code} {'= ' if code == 502 else ''}{ERROR_PREFIX}{code};")
    lines += [
        f"        error_page 494 ={431} {ERROR_PREFIX}431;  # nginx's code for a header over large_client_header_buffers",
        "",
        f"        location = {HEALTH_PATH} {{",
        "            access_log off;",
        '            return 200 \'{"status":"ok"}\\n\';',
        "        }",
        "",
        "        location = /v1/models {",
        *(f"            {a}" for a in auth),
        "            if ($request_method !~ ^(GET|HEAD)$) { return 405; }",
        # Anthropic's clients send anthropic-version and read Anthropic's list
        f"            if ($http_anthropic_version) {{ return 200 '{_json_text(anthropic.models_json(models_json(plan)['data']))}\\n'; }}",
        f"            return 200 '{_json_text(models_json(plan))}\\n';",
        "        }",
        "",
    ]
    if cfg.routing == "model":
        lines += [
            "        location /v1/ {",
            *(f"            {a}" for a in auth),
            "            if ($request_method != POST) { return 405 $gw_not_post; }",
            *(f"            {d}" for d in _limits(cfg)),
            # the mirror module reads the body in the precontent phase, so proxy_pass (content phase) routes on it:
            # no redirect, one location, and what router.js keeps about the request stays with it
            f"            mirror {READ_BODY};",
            "            mirror_request_body on;",
            *(f"            {d}" for d in proxy),
            "            proxy_set_header X-Gateway-Route-Error $gw_route_error;",
            "            proxy_set_header X-Gateway-Model $gw_model_echo;",
            "            proxy_pass http://$gw_upstream;",
            "        }",
            "",
            f"        location = {READ_BODY} {{",
            "            internal;",
            "            return 204;",
            "        }",
            "",
        ]
    lines += [
        # served names of this charset only: whatever else the path holds never reaches a variable or the log
        "        location ~ ^/(?<path_model>[A-Za-z0-9][A-Za-z0-9._:-]*)/v1/ {",
        *(f"            {a}" for a in auth),
        '            if ($gw_path_upstream = "") {',
        "                return 404 $gw_path_unknown;",
        "            }",
        *(f"            {d}" for d in _limits(cfg)),
        "            rewrite ^/[^/]+(/v1/.*)$ $1 break;",
        *(f"            {d}" for d in proxy),
        "            proxy_pass http://$gw_path_upstream;",
        "        }",
        "",
        "        location / {",
        "            return 404;",
        "        }",
        "",
    ]
    for code in ERRORS:
        lines += [f"        location = {ERROR_PREFIX}{code} {{", "            internal;"]
        if code == 429:
            lines += [
                *(f"            {h}" for h in _headers(cfg)),
                "            add_header Retry-After $gw_retry_after always;",
                "            return 429 $gw_429_body;",
            ]
        elif code == 502:
            lines += [
                "            if ($gw_upstream_full) { return 503 $gw_503_body; }",
                f"            if ($gw_anthropic) {{ return 502 {_anthropic_body(502)}; }}",
                f"            return 502 {_body(502)};",
            ]
        else:
            lines += [f"            if ($gw_anthropic) {{ return {code} {_anthropic_body(code)}; }}", f"            return {code} {_body(code)};"]
        lines.append("        }")
    lines += ["    }", ""]
    if plan.externals:
        lines += [*endpoints.servers(plan, layout), *endpoints.upstreams(plan, layout), ""]
    lines += [
        "    # Prometheus: internal only (never published), no client key",
        "    server {",
        f"        listen {layout.metrics_listen};",
        "        access_log off;",
        f"        location = {METRICS_PATH} {{",
        "            js_content router.metrics;",
        "        }",
        *(_route_error_location() if cfg.routing == "model" else []),
        "        location / {",
        f"            return 404 {_body(404)};",
        "        }",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


def _route_error_location() -> list[str]:
    """The metrics server answers what body routing could not route, from the gateway's X-Gateway-* headers."""
    lines = [
        "        # body routing's verdicts, proxied here by the gateway (a client's own X-Gateway-* headers never pass), and",
        "        # from nowhere else: the port is reachable in the pod's or container's network",
        "        location /v1/ {",
        f"            if ($remote_addr != 127.0.0.1) {{ return 404 {_body(404)}; }}",
    ]
    for verdict, (status, _, _) in ROUTE_ERRORS.items():
        if verdict != "model_not_found":
            lines.append(f"            if ($http_x_gateway_route_error = {verdict}) {{ return {status} $gw_route_{verdict}; }}")
    status = ROUTE_ERRORS["model_not_found"][0]
    lines.append(f"            if ($http_x_gateway_model) {{ return {status} $gw_route_named; }}")
    lines += [f"            return {status} $gw_route_unnamed;", "        }"]
    return lines


def _shaped_errors(plan: StackPlan) -> list[str]:
    """Bodies of the errors the gateway answers in either API's shape, where a plain ``if`` cannot choose (a body in a
    variable, or an answer given from inside another ``if``)."""
    lines = [*anthropic.error_map("$gw_503_body", 503, _error_body(503, ERRORS[503][1], ERRORS[503][2]), ERRORS[503][2])]
    unknown = "Unknown model in path; GET /v1/models lists the served models."
    lines += anthropic.error_map("$gw_path_unknown", 404, _error_body(404, "model_not_found", unknown), unknown)
    if plan.gateway.routing == "model":
        lines += anthropic.error_map("$gw_not_post", 405, _error_body(405, NOT_POST[1], NOT_POST[2], NOT_POST[0]), NOT_POST[2])
        for verdict, (status, code, message) in ROUTE_ERRORS.items():
            if verdict != "model_not_found":
                lines += anthropic.error_map(f"$gw_route_{verdict}", status, _error_body(status, code, message), message)
        status, code, message = ROUTE_ERRORS["model_not_found"]
        named = message.format(model="`MODEL` ")
        lines += anthropic.error_map("$gw_route_named", status, _error_body(status, code, named), named, {"MODEL": "$http_x_gateway_model"})
        lines += anthropic.error_map("$gw_route_unnamed", status, _error_body(status, code, message.format(model="")), message.format(model=""))
    return lines


def keys_conf(plan: StackPlan, api_keys: list[ApiKey], vllm_api_key: str | None, endpoint_keys: Mapping[str, str] | None = None) -> str:
    """The secret include: which client keys pass under which name, the key the gateway sends to vLLM, and each
    endpoint's key (``endpoint_keys``: endpoint name -> the whole header value it gets, ``Bearer <key>`` or the key).

    With no client keys the gateway is open (every request authorized, key name ``-``). nginx.conf lets a request in
    when its credential (``$gw_credential``: the Authorization header, or ``Bearer`` and its x-api-key) equals
    ``$gw_key_expected`` byte for byte. It starts with the map hash's size, for the keys of its own maps and of
    nginx.conf's (nginx.conf includes it before its first map): nginx_hash.py.
    """
    keys = with_key(api_keys)
    if vllm_api_key is not None:
        with_key([ApiKey("vllm", vllm_api_key)])  # the same character rules
    for name, value in (endpoint_keys or {}).items():
        check_key(value.removeprefix("Bearer "), f"the key of endpoint {name!r}")
    maps = [
        "# nginx compares map strings ignoring case: the name of the key the header matches so, and that key's exact header",
        "map $gw_credential $gw_key_candidate {",
        '    default "";',
        *(f'    "Bearer {k.key}" "{k.name}";' for k in keys),
        "}",
        "map $gw_key_candidate $gw_key_expected {",
        # no keys: any header is the expected one; else a newline, which no header value holds
        '    default "\\n";' if keys else "    default $gw_credential;",
        *(f'    "{k.name}" "Bearer {k.key}";' for k in keys),
        "}",
        # a map needs a source: a short, constant one (the server's port) costs nothing to look up
        "map $server_port $upstream_authorization {",
        f'    default "Bearer {vllm_api_key}";' if vllm_api_key else '    default "";',
        "}",
    ]
    for name, value in sorted((endpoint_keys or {}).items()):
        maps += [f"map $server_port {endpoints.key_variable(name)} {{", f'    default "{value}";', "}"]
    hashed = nginx_hash.map_keys(nginx_conf(plan)) + nginx_hash.map_keys("\n".join(maps))
    lines = [
        "# secret: API keys of the vllm-stack gateway",
        "# the map hash (every map of nginx.conf and this file): buckets that hold the longest key",
        *nginx_hash.directives(hashed),
        *maps,
    ]
    return "\n".join([*lines, ""])


# Memory of nginx + njs per request in flight, measured with benchmarks/gateway_memory.py (README, Gateway memory).
# The figures are the pinned image's (nginx 1.30.0, njs 0.9.6 on QuickJS), which holds more per body than Debian 12's
# njs 0.7.9 (3.0x against 2.0x for a large body).
BASE_MIB = 16
"""The master, shared zones and slack; measured idle with one worker: 19-22 MiB (njs 0.7.9 / 0.9.6)."""
WORKER_MIB = 8
"""An idle worker with its njs module."""
SMALL_REQUEST_MIB = 3.1
"""A request whose body is under 1 MB, at its worst (just under 1 MB, read by router.js): measured 3.02 MiB (1.95 on
njs 0.7.9): nginx's buffer and njs' copies of the body (router.js scans bodies over 64 KiB instead of parsing them),
plus the 16-32 KiB of pools that even an empty request holds. Bodies nginx scans (under 100 kB) hold three copies."""
LARGE_REQUEST_FACTOR = 3.25
"""Copies of the body a large request holds: measured 3.0x (2.0x on njs 0.7.9) for Content-Length bodies of 16 MiB,
plus a quarter for a chunked body's buffer (1.25x the body limit)."""
NJS_BYTES_PER_TOKEN = 600
"""With ``jsEngine: njs`` and token usage, what a stream that asks for usage holds per token until it ends: its SSE
event (vLLM's chat chunk: about 250 bytes; more with logprobs) copied into the request's memory, plus the filter's
call (measured: 330-440 bytes per 130-byte event, njs 0.7.9). QuickJS holds nothing per token."""


ENDPOINT_BODY_COPIES = 2
"""An endpoint model's large body is also held by its internal server (one buffer) and by njs, which writes it out with
the endpoint's model id: two more copies (an estimate from how nginx and njs hold bodies, not measured)."""
UNKNOWN_ANSWER_TOKENS = 32768
"""The longest answer assumed of an endpoint model whose maxModelLen the stack does not know."""


def memory_mib(plan: StackPlan) -> tuple[int, int]:
    """(request, limit) of one gateway replica's memory in MiB: at most ``max_concurrent_requests`` in flight,
    of which ``max_concurrent_large_requests`` large ones of up to ``max_body_mib``; nginx refuses the rest with 429.
    On the njs engine with token usage, each small one may also be a stream of the longest answer a model gives."""
    cfg = plan.gateway
    idle = BASE_MIB + WORKER_MIB * cfg.worker_processes
    large = min(cfg.max_concurrent_large_requests, cfg.max_concurrent_requests)
    small = SMALL_REQUEST_MIB
    if cfg.js_engine == "njs" and cfg.token_usage:
        lengths = [m.max_model_len for m in plan.models] + [e.max_model_len or UNKNOWN_ANSWER_TOKENS for e in plan.externals]
        small += max(lengths) * NJS_BYTES_PER_TOKEN / 2**20
    factor = LARGE_REQUEST_FACTOR + (ENDPOINT_BODY_COPIES if plan.externals else 0)
    worst = idle + (cfg.max_concurrent_requests - large) * small + large * factor * cfg.max_body_mib
    limit = math.ceil(worst * 1.2 / 16) * 16  # 20% headroom for allocator fragmentation
    # typical: idle, a few dozen small requests in flight
    return math.ceil((idle + 32 * SMALL_REQUEST_MIB) / 16) * 16, limit


def render(plan: StackPlan, layout: Layout = Layout()) -> dict[str, str]:
    """The non-secret gateway files (``keys.conf`` is rendered at deploy time from secrets), and the endpoints' own CA
    bundles under ``ca/``."""
    files = {"nginx.conf": nginx_conf(plan, layout), "router.js": ROUTER_JS.read_text()}
    return files | {f"ca/{name}": pem for name, pem in endpoints.ca_files(plan).items()}
