"""A small OpenAI-compatible server (stdlib ``http.server``) on 127.0.0.1, standing in for a self-hosted vLLM or Ollama.

It answers ``POST /v1/chat/completions`` and ``POST /v1/embeddings`` over real HTTP, so litellm's OpenAI client, the
outbound policy's connection guard, the retries and the accounting all run for real. It enforces a context window
the way vLLM does (prompt tokens plus ``max_tokens`` over the window: HTTP 400), counts the prompt tokens it received
with the same tokenizer litellm uses for an unknown model (cl100k), reports them as ``usage``, and keeps a log of
every request so a test can compare the recorded totals with what was really sent.

``script`` holds what the server does for the next requests, in order; ``respond`` answers every other request:

- ``("429", seconds)``: HTTP 429 with ``Retry-After: seconds``;
- ``("500",)``: HTTP 500;
- ``("sleep", seconds)``: wait before answering (a client timeout shorter than that sees a timeout);
- a string: the answer text as is (fenced or malformed JSON included);
- a callable: gets the request's messages and returns the answer text.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402  (after the cost-map switch: importing litellm otherwise fetches a price map)


def count_prompt(messages: list[dict[str, Any]]) -> int:
    return int(litellm.token_counter(model="gpt-3.5-turbo", messages=messages))


def count_text(text: str) -> int:
    return int(litellm.token_counter(model="gpt-3.5-turbo", text=text))


@dataclass
class Received:
    at: float
    messages: list[dict[str, Any]]
    max_tokens: int | None
    authorization: str
    status: int
    prompt_tokens: int
    completion_tokens: int = 0


@dataclass
class FakeLlmServer:
    context: int = 8192
    script: list[Any] = field(default_factory=list)
    respond: Callable[[list[dict[str, Any]]], str] | str | None = None
    received: list[Received] = field(default_factory=list)
    embeddings: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    # --- what a test reads back --------------------------------------------------------------------------------------

    def answered(self) -> list[Received]:
        """Requests answered with 200: the ones a client is billed for."""
        return [r for r in self.received if r.status == 200]

    def totals(self) -> dict[str, int]:
        ok = self.answered()
        return {
            "calls": len(ok),
            "input_tokens": sum(r.prompt_tokens for r in ok),
            "output_tokens": sum(r.completion_tokens for r in ok),
        }

    def received_totals(self) -> dict[str, int]:
        """What the server read: the prompt of every request that reached it (answered, refused with 429, 500 or 400,
        or timed out on the client's side), the answer of the answered ones."""
        return {
            "requests": len(self.received),
            "input_tokens": sum(r.prompt_tokens for r in self.received),
            "output_tokens": sum(r.completion_tokens for r in self.answered()),
        }

    def overflowed(self) -> list[Received]:
        return [r for r in self.received if r.status == 400]

    # --- serving -----------------------------------------------------------------------------------------------------

    def next_action(self, messages: list[dict[str, Any]]) -> Any:
        with self.lock:
            if self.script:
                return self.script.pop(0)
        if callable(self.respond):
            return self.respond(messages)
        if self.respond is not None:
            return self.respond
        return '{"error": "the fake server has no answer scripted"}'


def _handler(server: FakeLlmServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path.rstrip("/").endswith("/embeddings"):
                return self._embeddings(body)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._send(404, {"error": {"message": "not found"}})
            messages = body.get("messages") or []
            prompt = count_prompt(messages)
            max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
            entry = Received(
                time.monotonic(), messages, max_tokens, self.headers.get("Authorization", ""), 0, prompt
            )
            with server.lock:
                server.received.append(entry)
            if prompt + int(max_tokens or 0) > server.context:
                entry.status = 400
                return self._send(
                    400,
                    {
                        "error": {
                            "message": f"This model's maximum context length is {server.context} tokens. However, you "
                            f"requested {prompt + int(max_tokens or 0)} tokens ({prompt} in the messages, "
                            f"{max_tokens} in the completion).",
                            "type": "BadRequestError",
                            "code": 400,
                        }
                    },
                )
            action = server.next_action(messages)
            while isinstance(action, tuple) and action[0] == "sleep":
                time.sleep(float(action[1]))
                action = server.next_action(messages)
            if isinstance(action, tuple) and action[0] == "429":
                entry.status = 429
                return self._send(
                    429,
                    {"error": {"message": "rate limited", "type": "rate_limit"}},
                    {"Retry-After": str(action[1])},
                )
            if isinstance(action, tuple) and action[0] == "500":
                entry.status = 500
                return self._send(500, {"error": {"message": "internal error", "type": "server_error"}})
            text = action(messages) if callable(action) else str(action)
            entry.completion_tokens, entry.status = count_text(text), 200
            return self._send(
                200,
                {
                    "id": f"chatcmpl-{len(server.received)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "local"),
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text},
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": entry.completion_tokens,
                        "total_tokens": prompt + entry.completion_tokens,
                    },
                },
            )

        def _embeddings(self, body: dict[str, Any]) -> None:
            inputs = body.get("input") or []
            inputs = [inputs] if isinstance(inputs, str) else inputs
            with server.lock:
                server.embeddings.append(
                    {"input": inputs, "authorization": self.headers.get("Authorization", "")}
                )
            data = [
                {"object": "embedding", "index": i, "embedding": _vector(str(text))}
                for i, text in enumerate(inputs)
            ]
            self._send(
                200,
                {
                    "object": "list",
                    "data": data,
                    "model": body.get("model", "local"),
                    "usage": {"prompt_tokens": 0, "total_tokens": 0},
                },
            )

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def _vector(text: str, size: int = 16) -> list[float]:
    """A deterministic stand-in embedding: letter counts folded into ``size`` dimensions."""
    out = [0.0] * size
    for ch in text.lower():
        out[ord(ch) % size] += 1.0
    norm = sum(v * v for v in out) ** 0.5 or 1.0
    return [v / norm for v in out]


@contextmanager
def fake_llm_server(**options: Any) -> Iterator[FakeLlmServer]:
    state = FakeLlmServer(**options)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
