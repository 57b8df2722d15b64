"""`ftlab serve --engine vllm`: chat completions answered by vLLM's OpenAI server, files and jobs by ftlab.

vLLM serves one base model with LoRA enabled; ftlab registers each fine-tuned model of that base under its
`ft:` name through vLLM's dynamic LoRA endpoints as jobs succeed (`POST /v1/load_lora_adapter {"lora_name",
"lora_path"}`, which needs `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` on the vLLM side), unloads deleted ones
(`POST /v1/unload_lora_adapter`), and forwards `POST /v1/chat/completions` there unchanged but for the model
name of base requests (vLLM's own). Either ftlab starts vLLM (`vllm_command`) or `--vllm-url` names one you run:

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve BASE_FOLDER --enable-lora --max-lora-rank 64

vLLM serves LoRA only: a DoRA model is refused with the way out (`ftlab export --format merged`), and so is a
model fine-tuned from another base. `labels` (ftlab's extension) has no vLLM counterpart here: use
`response_format` with an enum. Tool calling is refused too: vLLM renders the prompt with the model's own template,
without the tools as ftlab renders them for training (`ftlab.data.tools`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from ftlab.infer.refs import ModelRef
from ftlab.models import portable_base
from ftlab.serve.errors import APIError, bad_request
from ftlab.serve.schemas import ChatCompletionCreate

log = logging.getLogger("ftlab.serve.vllm")

SYNC_INTERVAL_S = 5.0  # how often succeeded and deleted fine-tuned models are registered and unloaded
MAX_LORA_RANK = 64  # vLLM refuses adapters of a higher rank than it was started with (ftlab's lora_r range ≤ 64)


def vllm_command(base_folder: str, served_name: str, port: int) -> list[str]:
    """The command that starts vLLM's OpenAI server for `base_folder` with runtime LoRA loading."""
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", base_folder, "--served-model-name",
            served_name, "--enable-lora", "--max-lora-rank", str(MAX_LORA_RANK), "--host", "127.0.0.1",
            "--port", str(port)]  # fmt: skip


def vllm_env() -> dict[str, str]:
    return {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


def adapter_problem(served: ModelRef, base: str) -> str | None:
    """Why vLLM serving `base` cannot serve the fine-tuned model `served`, or None."""
    if served.adapter is None:
        return f"'{served.name}' is a full fine-tune; vLLM serves LoRA adapters of {base}"
    if portable_base(served.model)[0] != portable_base(base)[0]:
        return f"'{served.name}' was fine-tuned from {served.model}; this server's vLLM serves {base}"
    config = json.loads((Path(served.adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("use_dora"):
        return f"'{served.name}' is a DoRA adapter and vLLM serves LoRA only: `ftlab export --format merged` it"
    if int(config.get("r", 0)) > MAX_LORA_RANK:
        return f"'{served.name}' has LoRA rank {config['r']}; vLLM was started with --max-lora-rank {MAX_LORA_RANK}"
    return None


class VLLMEngine:
    """Forwards chat completions to a vLLM server and keeps its LoRA adapters in step with the fine-tuned models."""

    def __init__(self, url: str, base: str) -> None:
        self.url, self.base = url.rstrip("/"), base
        self.client = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(None, connect=10))
        self.registered: dict[str, str] = {}  # ft: name -> the adapter folder vLLM loaded
        self.served_name: str | None = None  # vLLM's name for the base model
        self._lock = asyncio.Lock()

    def status(self) -> dict:
        return {"engine": "vllm", "url": self.url, "adapters": sorted(self.registered)}

    async def _base_name(self) -> str:
        if self.served_name is None:
            models = (await self.client.get("/v1/models")).raise_for_status().json()["data"]
            self.served_name = next(m["id"] for m in models if m.get("parent") is None)
        return self.served_name

    async def register(self, served: ModelRef) -> None:
        """Load `served`'s adapter into vLLM under its ft: name (once)."""
        async with self._lock:
            if served.name in self.registered:
                return
            problem = adapter_problem(served, self.base)
            if problem:
                raise bad_request(problem, param="model", code="model_not_supported")
            reply = await self.client.post("/v1/load_lora_adapter",
                                           json={"lora_name": served.name, "lora_path": str(served.adapter)})
            if reply.status_code != 200 and "already" not in reply.text:
                raise APIError(502, f"vLLM did not load the adapter of {served.name}: {reply.text}", param="model")
            self.registered[served.name] = str(served.adapter)
            log.info("registered %s with vLLM (%s)", served.name, served.adapter)

    async def unregister(self, name: str) -> None:
        async with self._lock:
            reply = await self.client.post("/v1/unload_lora_adapter", json={"lora_name": name})
            if reply.status_code == 200 or "not found" in reply.text.lower():
                self.registered.pop(name, None)

    async def sync(self, models: dict[str, ModelRef]) -> None:
        """Register every fine-tuned model of the base that vLLM lacks; unload those no longer listed."""
        for name, ref in models.items():
            if name not in self.registered and adapter_problem(ref, self.base) is None:
                await self.register(ref)
        for name in set(self.registered) - set(models):
            await self.unregister(name)

    async def respond(self, served: ModelRef, body: ChatCompletionCreate, request: Request) -> Response:
        try:
            return await self._forward(served, body)
        except httpx.TransportError as exc:
            raise APIError(503, f"vLLM at {self.url} is not answering ({type(exc).__name__}); it may still be "
                           "starting", headers={"Retry-After": "5"}) from None  # fmt: skip

    async def _forward(self, served: ModelRef, body: ChatCompletionCreate) -> Response:
        if body.labels is not None:
            raise bad_request("'labels' is not available with --engine vllm: use response_format with an enum",
                              param="labels")  # fmt: skip
        if body.tools or body.functions:  # vLLM's template would not show the tools as ftlab trained them
            param = "tools" if body.tools else "functions"
            raise bad_request(f"'{param}' is not available with --engine vllm: ftlab renders tools in its own format "
                              "(ftlab.data.tools), which vLLM's prompt would lack; serve tool calls with the default "
                              "engine", param=param)  # fmt: skip
        payload = body.model_dump(exclude_none=True)
        learned = served.reply_schema if body.response_format is None else None  # as the default engine holds it
        if learned is not None:
            payload["response_format"] = {"type": "json_schema", "json_schema": {"name": "reply", "schema": learned}}
        if served.kind == "ft":
            await self.register(served)
        elif portable_base(served.model)[0] != portable_base(self.base)[0]:
            raise bad_request(f"this server's vLLM serves {self.base} and its fine-tuned models, not {body.model}",
                              param="model", code="model_not_supported")  # fmt: skip
        else:
            payload["model"] = await self._base_name()
        if not body.stream:
            reply = await self.client.post("/v1/chat/completions", json=payload)
            return Response(reply.content, status_code=reply.status_code, media_type="application/json")
        reply = await self.client.send(self.client.build_request("POST", "/v1/chat/completions", json=payload),
                                       stream=True)  # fmt: skip
        if reply.status_code != 200:
            content = await reply.aread()
            await reply.aclose()
            return Response(content, status_code=reply.status_code, media_type="application/json")
        return StreamingResponse(reply.aiter_raw(), media_type="text/event-stream",
                                 background=BackgroundTask(reply.aclose))


async def keep_in_sync(engine: VLLMEngine, fine_tuned: Callable[[], dict[str, ModelRef]]) -> None:
    """Every few seconds, `engine.sync` with the fine-tuned models `fine_tuned()` lists (run off the event loop)."""
    while True:
        try:
            await engine.sync(await run_in_threadpool(fine_tuned))
        except Exception:  # vLLM still starting, or a model that cannot load: said in the log, tried again
            log.warning("could not sync adapters with vLLM at %s", engine.url, exc_info=True)
        await asyncio.sleep(SYNC_INTERVAL_S)
