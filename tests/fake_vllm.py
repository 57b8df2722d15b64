"""A stand-in for vLLM's OpenAI server on 127.0.0.1 (vLLM needs a GPU): the endpoints `ftlab serve --engine vllm`
uses, as vLLM documents them — `GET /v1/models` (the base, then each LoRA with its `parent`), `POST
/v1/load_lora_adapter` and `/v1/unload_lora_adapter` (400 when already loaded / not found), and `POST
/v1/chat/completions`, plain or streamed, whose reply names the model and the adapter folder that answered."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeVLLM:
    def __init__(self, base: str = "served-base") -> None:
        self.base = base
        self.adapters: dict[str, str] = {}  # lora_name -> lora_path
        self.requests: list[dict] = []  # chat request bodies, in arrival order
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeVLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reply(self, model: str) -> str:
        return f"{model} answers" + (f" with {Path(self.adapters[model]).name}" if model in self.adapters else "")

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def send(self, status: int, body: dict | str, content_type: str = "application/json") -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                models = [{"id": fake.base, "object": "model", "parent": None}]
                models += [{"id": n, "object": "model", "parent": fake.base} for n in fake.adapters]
                self.send(200, {"object": "list", "data": models})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/v1/load_lora_adapter":
                    if body["lora_name"] in fake.adapters:
                        return self.send(400, {"message": f"The lora adapter '{body['lora_name']}' has already "
                                                          "been loaded."})  # fmt: skip
                    if not (Path(body["lora_path"]) / "adapter_config.json").is_file():
                        return self.send(400, {"message": f"No adapter found for {body['lora_path']}"})
                    fake.adapters[body["lora_name"]] = body["lora_path"]
                    return self.send(200, f"Success: LoRA adapter '{body['lora_name']}' added successfully.",
                                     "text/plain")  # fmt: skip
                if self.path == "/v1/unload_lora_adapter":
                    if fake.adapters.pop(body["lora_name"], None) is None:
                        return self.send(404, {"message": f"The lora adapter '{body['lora_name']}' cannot be found."})
                    return self.send(200, "Success", "text/plain")
                fake.requests.append(body)
                model = body["model"]
                if model != fake.base and model not in fake.adapters:
                    return self.send(404, {"error": {"message": f"The model `{model}` does not exist.",
                                                     "type": "NotFoundError", "code": 404}})  # fmt: skip
                text, common = fake.reply(model), {"id": "chatcmpl-fake", "created": 0, "model": model}
                if not body.get("stream"):
                    return self.send(200, {**common, "object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}})  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for word in text.split(" "):
                    chunk = {**common, "object": "chat.completion.chunk",
                             "choices": [{"index": 0, "delta": {"content": word + " "}}]}  # fmt: skip
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

        return Handler
