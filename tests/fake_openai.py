"""A tiny OpenAI-compatible HTTP server on 127.0.0.1 for tests: the one stand-in allowed, for a hosted vendor.

It speaks real HTTP (the official `openai` client talks to it unchanged) and answers deterministically: a
`responder(messages) -> str` chosen by the test writes every reply (cut at `max_tokens`, 4 characters a
token). It can fail on purpose (`faults`: request number → HTTP status, e.g. 429 or 503, sent with
`retry-after-ms: 1` so retries stay fast) and can stop answering after a number of replies (`hold_after`) so
a test can kill a client mid-job.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[list[dict[str, Any]]], str]


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: one token per 4 characters, at least one."""
    return max(1, len(text) // 4)


class FakeOpenAI:
    def __init__(
        self,
        responder: Responder,
        faults: dict[int, int] | None = None,
        hold_after: int | None = None,
    ) -> None:
        self.responder = responder
        self.faults = dict(faults or {})
        self.hold_after = hold_after
        self.requests: list[dict[str, Any]] = []  # every chat request body, in arrival order
        self.statuses: list[int] = []
        self.answered = 0
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests the server was handling at once
        self.holding = threading.Event()  # set once a request is being held
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "me"}]})
                else:
                    self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    self._chat(body)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def _chat(self, body: dict[str, Any]) -> None:
                with fake.lock:
                    number = len(fake.requests)
                    fake.requests.append(body)
                    fault = fake.faults.pop(number, None)
                    hold = fake.hold_after is not None and fake.answered >= fake.hold_after and fault is None
                    if not hold and fault is None:
                        fake.answered += 1
                if fault is not None:
                    fake.statuses.append(fault)
                    error = {"message": f"injected {fault}", "type": "server_error", "param": None, "code": None}
                    self._send(fault, {"error": error}, {"retry-after-ms": "1"})
                    return
                if hold:
                    fake.holding.set()
                    fake.release.wait(timeout=60)
                    self._send(503, {"error": {"message": "released", "type": "server_error"}})
                    return
                text = fake.responder(body["messages"])
                finish = "stop"
                limit = body.get("max_completion_tokens") or body.get("max_tokens")
                if limit and count_tokens(text) > limit:  # cut at the limit, as a real server does
                    text, finish = text[: 4 * limit], "length"
                prompt = "".join(str(m.get("content", "")) for m in body["messages"])
                fake.statuses.append(200)
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{number}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "fake"),
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                        ],
                        "usage": {
                            "prompt_tokens": count_tokens(prompt),
                            "completion_tokens": count_tokens(text),
                            "total_tokens": count_tokens(prompt) + count_tokens(text),
                        },
                    },
                )

        return Handler
