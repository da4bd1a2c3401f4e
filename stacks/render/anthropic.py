"""The gateway in Anthropic's terms: which requests are Messages API requests, and its own errors and model list in
Anthropic's shapes there. Routing needs nothing of its own: ``/v1/messages`` and ``/v1/messages/count_tokens`` carry
``model`` in their JSON body like every other ``/v1/`` request (vLLM 0.26.0 registers both for every generate model,
vllm/entrypoints/anthropic/api_router.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stacks.render.nginx_text import json_text

MESSAGES_URI = r"~^(/[A-Za-z0-9][A-Za-z0-9._:-]*)?/v1/messages(/count_tokens)?/?([?]|$)"
"""A request URI of the Messages API, by body (``/v1/messages``) or by path (``/<model>/v1/messages``)."""

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}
"""Anthropic's error types by status (the anthropic SDK 2.17.0's ErrorType; ``request_too_large`` is the API's 413); any
other status is an ``invalid_request_error``."""

AUTH_MESSAGE = "Missing or invalid API key: send x-api-key: <key> or Authorization: Bearer <key>."


def error_body(status: int, message: str) -> dict[str, Any]:
    """What the anthropic SDK reads: ``error.type`` and ``error.message`` of ``{"type": "error", ...}`` (its APIStatusError)."""
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "invalid_request_error"), "message": message}}


def error_map(variable: str, status: int, openai: dict[str, Any], message: str, echo: Mapping[str, str] | None = None) -> list[str]:
    """A map choosing an error's body by the request's API: Anthropic's shape for the Messages API ($gw_anthropic), else
    ``openai``. ``echo``: placeholders in the message -> the variables that replace them in both bodies."""
    bodies = {"1": json_text(error_body(status, message)), "default": json_text(openai)}
    for placeholder, value in (echo or {}).items():
        bodies = {k: v.replace(placeholder, value) for k, v in bodies.items()}
    return [f"map $gw_anthropic {variable} {{", *(f"    {k} '{v}\\n';" for k, v in bodies.items()), "}"]


def map_lines() -> list[str]:
    """``$gw_anthropic``: 1 for a Messages API request. Read only where the gateway answers itself (errors, the model list)."""
    return ["map $request_uri $gw_anthropic {", '    default "";', f'    "{MESSAGES_URI}" 1;', "}"]


def models_json(data: list[dict[str, Any]]) -> dict[str, Any]:
    """``GET /v1/models`` as Anthropic lists models (a request with ``anthropic-version``): every served name, one page."""
    items = [{"type": "model", "id": m["id"], "display_name": m["id"], "created_at": "1970-01-01T00:00:00Z"} for m in data]
    return {"data": items, "has_more": False, "first_id": items[0]["id"] if items else None, "last_id": items[-1]["id"] if items else None}
