"""A small OpenAI-compatible stand-in for a vLLM server, for gateway tests and benchmarks.

Listens on 127.0.0.1 only. It echoes what it saw (backend name, model, request id, Authorization)
in headers and content. Request knobs (in the JSON body): ``max_tokens`` (stream length),
``delay_ms`` (between stream chunks), ``sleep_ms`` (before answering), ``pad_bytes`` (text added to a
plain answer), ``split_ms`` (a stream's usage event is written in two halves this far apart, and
``[DONE]`` apart again, so that a gateway reads them separately).

Run: ``python -m tests.fake_vllm --port 9001 --name a --models a,alias-a``.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What vLLM writes after "usage" in a plain answer (model_dump of ChatCompletionResponse / CompletionResponse, in
# vllm/entrypoints/openai/{chat_completion,completion}/protocol.py of 0.26.0): every field, null unless asked for
TRAILING_CHAT = dict.fromkeys(("prompt_logprobs", "prompt_token_ids", "prompt_text", "kv_transfer_params", "ec_transfer_params", "metrics"))
TRAILING_COMPLETION = dict.fromkeys(("kv_transfer_params", "ec_transfer_params", "metrics"))


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
        data = json.dumps(obj).encode()
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

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "vllm"} for m in self.server.models]})
        else:
            self._send(404, {"error": {"message": "not found", "type": "NotFoundError", "code": 404}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send(400, {"error": {"message": "bad json", "type": "BadRequestError", "code": 400}})
            return
        model = body.get("model")
        if model not in self.server.models:
            self._send(404, {"error": {"message": f"The model `{model}` does not exist.", "type": "NotFoundError", "code": 404}})
            return
        if body.get("sleep_ms"):
            time.sleep(body["sleep_ms"] / 1000)
        rid = self.headers.get("X-Request-ID", "")
        text = f"backend={self.server.name} model={model} rid={rid} bytes={len(raw)}"
        chat = self.path.endswith("/chat/completions")
        if self.path.endswith("/embeddings"):
            self._send(
                200,
                {
                    "object": "list",
                    "model": model,
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0]}],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                },
            )
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
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self._echo_headers()
        self.end_headers()
        self.wfile.flush()
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
            final = {"id": "c1", "object": "chat.completion.chunk" if chat else "text_completion", "created": 0, "model": model, "choices": [], "usage": usage}
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

    def stream_cut_off(self, epoch: int) -> bool:
        return False

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def __init__(self, port: int, name: str, models: list[str]) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.name = name
        self.models = models


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--models", required=True)
    a = ap.parse_args()
    server = Server(a.port, a.name, a.models.split(","))
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
