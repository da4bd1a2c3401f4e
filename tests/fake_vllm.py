"""A small OpenAI-compatible stand-in for a vLLM server, for gateway tests and benchmarks.

Listens on 127.0.0.1 only. It echoes what it saw (backend name, model, request id, Authorization)
in headers and content. Request knobs (in the JSON body): ``max_tokens`` (stream length),
``delay_ms`` (between stream chunks), ``sleep_ms`` (before answering), ``pad_bytes`` (text added to a
plain answer), ``split_ms`` (a stream's usage event is written in two halves this far apart, and
``[DONE]`` apart again, so that a gateway reads them separately).

It also answers Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``) as vLLM 0.26.0 does: named
SSE events, usage in ``message_delta``, errors in Anthropic's shape. As a stand-in for an endpoint the stack does not
run: ``--prefix /engines/v1`` (Docker Model Runner's layout), ``--key`` (the key it requires, as Bearer or x-api-key),
``--tls-cert``/``--tls-key`` (https), ``--latest`` (ids listed with ``:latest`` and accepted without it, as Docker
Model Runner and Ollama list them), ``--no-count-tokens`` and ``--ollama`` (``/api/tags`` and ``/api/version``).

Tools are taken or refused as vLLM 0.26 does: a chat with ``tools`` (and ``tool_choice`` left out, so ``auto``) gets vLLM's
400 unless the server runs with ``--enable-auto-tool-choice --tool-call-parser P``. ``--record FILE`` appends each
request (path, headers, body) as a JSON line, for tests that check what a client sent.

Run: ``python -m tests.fake_vllm --port 9001 --name a --models a,alias-a [--enable-auto-tool-choice --tool-call-parser hermes]``.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What vLLM writes after "usage" in a plain answer (model_dump of ChatCompletionResponse / CompletionResponse, in
# vllm/entrypoints/openai/{chat_completion,completion}/protocol.py of 0.26.0): every field, null unless asked for
TRAILING_CHAT = dict.fromkeys(("prompt_logprobs", "prompt_token_ids", "prompt_text", "kv_transfer_params", "ec_transfer_params", "metrics"))
TRAILING_COMPLETION = dict.fromkeys(("kv_transfer_params", "ec_transfer_params", "metrics"))
AUTO_TOOLS_REFUSED = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
"""vLLM 0.26.0's message for tools without a parser (vllm/renderers/online_renderer.py, OnlineRenderer.render_chat)."""


def tool_refusal(body: dict[str, Any], parser: str | None) -> str | None:
    """What vLLM 0.26.0 says to a chat's tools on a server without a tool-call parser, or None when it takes them.

    ChatCompletionRequest.check_tool_usage (vllm/entrypoints/openai/chat_completion/protocol.py) makes a missing
    ``tool_choice`` ``auto`` when tools are given; render_chat refuses ``auto`` without --enable-auto-tool-choice (which
    vLLM accepts only together with --tool-call-parser) and ``required`` or a named tool without a parser. (Mistral
    tokenizers and gpt-oss' Harmony format are exempt in vLLM; the stand-in serves neither.)"""
    choice = body.get("tool_choice", "auto" if body.get("tools") else None)
    if parser or choice in (None, "none"):
        return None
    if choice == "auto":
        return AUTO_TOOLS_REFUSED
    desc = f'function "{choice["function"]["name"]}"' if isinstance(choice, dict) else f'"{choice}"'
    return f"tool_choice={desc} requires --tool-call-parser to be set"


def vllm_error_body(message: str, status: int = 400, etype: str = "BadRequestError") -> bytes:
    """vLLM's ErrorResponse as FastAPI's JSONResponse writes it (starlette: compact separators, UTF-8 unescaped)."""
    error = {"error": {"message": message, "type": etype, "param": None, "code": status}}
    return json.dumps(error, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def setup(self) -> None:
        super().setup()
        # like uvicorn: no Nagle delay between the header and body writes
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, obj: Any) -> None:
        self._send_bytes(status, json.dumps(obj).encode())

    def _send_bytes(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._echo_headers()
        self.end_headers()
        self.wfile.write(data)

    def _echo_headers(self) -> None:
        self.send_header("X-Backend", self.server.name)
        self.send_header("X-Seen-Request-ID", self.headers.get("X-Request-ID", ""))
        self.send_header("X-Seen-Authorization", self.headers.get("Authorization", ""))
        self.send_header("X-Seen-Path", self.path)
        # only when the request has them: an ordinary answer stays what the benchmarks have always measured
        for name, seen in (("X-Api-Key", "X-Seen-Api-Key"), ("Anthropic-Version", "X-Seen-Anthropic-Version")):
            if name in self.headers:
                self.send_header(seen, self.headers[name])

    def _route(self) -> str | None:
        """The path under the server's prefix (``/v1/...``), or None (answered 404) for anything else."""
        prefix = self.server.prefix
        path = self.path
        if prefix and not path.startswith(prefix + "/"):
            self._send(404, {"error": {"message": f"{path} is not under {prefix}", "type": "NotFoundError", "code": 404}})
            return None
        return path[len(prefix) :]

    def _authorized(self, path: str) -> bool:
        key = self.server.key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}" or self.headers.get("X-Api-Key") == key:
            return True
        if path.startswith("/v1/messages"):
            self._send(401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        else:
            self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}})
        return False

    def _known(self, model: object) -> str | None:
        """The listed id a request's model names (``ai/smollm2`` names ``ai/smollm2:latest`` with ``--latest``)."""
        if not isinstance(model, str):
            return None
        for m in self.server.models:
            if model == m or (self.server.latest and f"{model}:latest" == m):
                return model
        return None

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {})
            return
        if self.server.ollama and self.path in ("/api/tags", "/api/version"):
            tags = {"models": [{"name": m, "model": m} for m in self.server.models]}
            self._send(200, tags if self.path == "/api/tags" else {"version": "0.32.15"})
            return
        path = self._route()
        if path is None or not self._authorized(path):
            return
        if path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "vllm"} for m in self.server.models]})
        else:
            self._send(404, {"error": {"message": "not found", "type": "NotFoundError", "code": 404}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        path = self._route()
        if path is None or not self._authorized(path):
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send(400, {"error": {"message": "bad json", "type": "BadRequestError", "code": 400}})
            return
        self.server.record(self.path, dict(self.headers), body)
        model = self._known(body.get("model"))
        if path.startswith("/v1/messages"):
            self._messages(path, body, model, raw)
            return
        if model is None:
            model = body.get("model")
            self._send(404, {"error": {"message": f"The model `{model}` does not exist.", "type": "NotFoundError", "code": 404}})
            return
        refusal = tool_refusal(body, self.server.tool_parser) if self.path.endswith("/chat/completions") else None
        if refusal:
            self._send_bytes(400, vllm_error_body(refusal))
            return
        if body.get("sleep_ms"):
            time.sleep(body["sleep_ms"] / 1000)
        rid = self.headers.get("X-Request-ID", "")
        text = f"backend={self.server.name} model={model} rid={rid} bytes={len(raw)}"
        if body.get("tools"):
            text += f" tools={len(body['tools'])}"
        chat = self.path.endswith("/chat/completions")
        if self.path.endswith("/embeddings"):
            # one vector per input, as vLLM answers a list
            inputs = body.get("input")
            count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
            vectors = [{"object": "embedding", "index": i, "embedding": [float(i % 3), 1.0, 0.5]} for i in range(count)]
            self._send(200, {"object": "list", "model": model, "data": vectors, "usage": {"prompt_tokens": count, "total_tokens": count}})
            return
        if not body.get("stream"):
            text += "p" * int(body.get("pad_bytes") or 0)
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            usage = {"prompt_tokens": 7, "total_tokens": 8, "completion_tokens": 1, "prompt_tokens_details": None}
            obj = "chat.completion" if chat else "text_completion"
            answer = {"id": "cmpl-1", "object": obj, "created": 0, "model": model, "choices": [choice], "usage": usage}
            self._send(200, answer | (TRAILING_CHAT if chat else TRAILING_COMPLETION))
            return
        self._start_stream()
        tokens = int(body.get("max_tokens") or 5)
        delay = body.get("delay_ms", 0) / 1000
        words = [text] + [f" t{i}" for i in range(1, tokens)]
        epoch = getattr(self.server, "epoch", 0)
        for i, word in enumerate(words):
            if self.stream_cut_off(epoch):
                break  # the server fell asleep with mode=abort (tests/fake_sleepy_vllm.py)
            if chat:
                chunk = {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                }
            else:
                chunk = {"id": "c1", "object": "text_completion", "created": 0, "model": model, "choices": [{"index": 0, "text": word, "finish_reason": None}]}
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            if delay and i < len(words) - 1:
                time.sleep(delay)
        if (body.get("stream_options") or {}).get("include_usage"):
            # vLLM's last chunk before [DONE]: no choices, the whole request's usage
            usage = {"prompt_tokens": 7, "total_tokens": 7 + len(words), "completion_tokens": len(words)}
            final: dict[str, Any] = {
                "id": "c1",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            event = f"data: {json.dumps(final)}\n\n".encode()
            split = body.get("split_ms", 0) / 1000
            if split:
                at = event.index(b'"prompt_tokens"') + 5  # inside the usage object
                for part in (event[:at], event[at:]):
                    self._chunk(part)
                    time.sleep(split)
            else:
                self._chunk(event)
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _messages(self, path: str, body: dict[str, Any], model: str | None, raw: bytes) -> None:
        """Anthropic's Messages API as vLLM 0.26.0 answers it (vllm/entrypoints/anthropic): errors in Anthropic's shape."""
        if model is None or (path.endswith("/count_tokens") and not self.server.count_tokens):
            missing = f"The model `{body.get('model')}` does not exist." if model is None else "Not Found"
            self._send(404, {"type": "error", "error": {"type": "not_found_error", "message": missing}})
            return
        if path.endswith("/count_tokens"):
            self._send(200, {"input_tokens": 7})
            return
        rid = self.headers.get("X-Request-ID", "")
        text = f"backend={self.server.name} model={model} rid={rid} bytes={len(raw)}"
        words = [text] + [f" t{i}" for i in range(1, int(body.get("max_tokens") or 5))]
        usage = {"input_tokens": 7, "output_tokens": len(words)}
        if not body.get("stream"):
            content = [{"type": "text", "text": "".join(words)}]
            answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content}
            self._send(200, answer | {"stop_reason": "end_turn", "stop_sequence": None, "usage": usage})
            return
        self._start_stream()
        delay = body.get("delay_ms", 0) / 1000
        start: dict[str, Any] = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model,
            "stop_reason": None,
            "stop_sequence": None,
        }
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start | {"usage": {"input_tokens": 7, "output_tokens": 0}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}) for w in words]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": usage}),
            ("message_stop", {"type": "message_stop"}),
        ]
        for name, data in events:
            self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            if delay and name == "content_block_delta":
                time.sleep(delay)
        self._chunk(b"")

    def stream_cut_off(self, epoch: int) -> bool:
        return False

    def _start_stream(self) -> None:
        """A 200 of chunked server-sent events; the events follow as ``_chunk``s."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self._echo_headers()
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def __init__(
        self,
        port: int,
        name: str,
        models: list[str],
        prefix: str = "",
        key: str | None = None,
        latest: bool = False,
        count_tokens: bool = True,
        ollama: bool = False,
        tls: ssl.SSLContext | None = None,
        tool_parser: str | None = None,
        record_to: str | None = None,
        host: str = "127.0.0.1",
        handler: type[BaseHTTPRequestHandler] = Handler,
    ) -> None:
        super().__init__((host, port), handler)
        self.name = name
        self.models = models
        self.prefix = prefix.rstrip("/")
        self.key = key
        self.latest = latest
        self.count_tokens = count_tokens
        self.ollama = ollama
        self.tls = tls
        self.tool_parser = tool_parser
        self.record_to = record_to
        self.record_lock = threading.Lock()

    def record(self, path: str, headers: dict[str, str], body: Any) -> None:
        if self.record_to:
            line = json.dumps({"backend": self.name, "path": path, "headers": headers, "body": body}) + "\n"
            with self.record_lock, open(self.record_to, "a") as f:
                f.write(line)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is None:
            return sock, addr
        # the handshake in the handler's thread (finish_request), so that a client refusing the certificate holds no one up
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--prefix", default="", help="the OpenAI base path, e.g. /engines/v1 (default: /v1 at the root)")
    ap.add_argument("--key", help="the key requests must carry (Authorization: Bearer or x-api-key)")
    ap.add_argument("--latest", action="store_true", help="ids listed as given, accepted without their :latest")
    ap.add_argument("--no-count-tokens", action="store_true")
    ap.add_argument("--ollama", action="store_true", help="also answer /api/tags and /api/version")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    # vLLM's flags (FrontendArgs, vllm/entrypoints/openai/cli_args.py 0.26.0) and its start-up check of them
    ap.add_argument("--enable-auto-tool-choice", action="store_true")
    ap.add_argument("--tool-call-parser")
    ap.add_argument("--record", help="append each request as a JSON line to this file")
    a = ap.parse_args()
    if a.enable_auto_tool_choice and not a.tool_call_parser:
        ap.exit(1, "Error: --enable-auto-tool-choice requires --tool-call-parser\n")
    # the parser is used only with auto tool choice on (ParserManager.get_tool_parser, vllm/parser/parser_manager.py)
    parser = a.tool_call_parser if a.enable_auto_tool_choice else None
    tls = None
    if a.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(a.tls_cert, a.tls_key)
    prefix = a.prefix[: -len("/v1")] if a.prefix.endswith("/v1") else a.prefix
    server = Server(a.port, a.name, a.models.split(","), prefix, a.key, a.latest, not a.no_count_tokens, a.ollama, tls, parser, a.record)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
