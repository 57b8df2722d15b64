"""Chat completions for base and fine-tuned models, plain or streamed as server-sent events, batched.

A request is checked, tokenised and given its constraint on the engine's own small thread pool (every 4xx —
context length, `n`, `seed`, an adapter folder gone — is answered before a model loads or a token is
generated), then queued on `ftlab.infer.batching.Scheduler`, whose one generation thread batches it with the
requests that wait beside it; events come back to the event loop through an `asyncio.Queue`. Nothing here
runs on FastAPI's shared thread pool or holds a lock while a client reads, so `GET /v1/models`, files and jobs
never wait behind generation, and a client that goes away stops its rows at the next step.

Loaded base models are kept in a small LRU (`max_loaded`); fine-tuned adapters are loaded onto their base (see
`ftlab.infer.batching`), so the bound counts bases, not fine-tuned models. A full queue answers 429 with
`Retry-After`.

Outputs can be constrained: `response_format` `json_schema` / `json_object` (OpenAI's structured outputs,
through `ftlab.infer.constrained`'s grammar processor) and ftlab's extension `labels: [...]`, which makes the
reply exactly one of the given labels (a label-trie logits processor). A fine-tuned model whose training replies
were JSON answers a request without `response_format` in their shape (`ftlab.data.reply_format`);
`response_format: {"type": "text"}` lets it write freely.

Tools (`tools`, `tool_choice`, `parallel_tool_calls`, the legacy `functions`/`function_call`) are rendered into
the prompt as training renders them and read back from the reply by `ftlab.data.tools`; their calls are held to
the tools' JSON schemas by a grammar (a required or named call is forced), and streamed as OpenAI streams them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage

from ftlab.data.tools import ToolRequestError, ToolUse, apply_template, content_text, tool_use
from ftlab.infer.refs import ModelRef
from ftlab.serve.catalog import model_not_found
from ftlab.serve.errors import APIError, bad_request
from ftlab.serve.schemas import ChatCompletionCreate

if TYPE_CHECKING:
    from ftlab.infer.backend import Completion
    from ftlab.infer.batching import Event, Job, Scheduler, SharedBase

DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 4096
DISCONNECT_POLL_S = 0.5  # how often a plain (non-streamed) request checks that its client is still there


def _messages(body: ChatCompletionCreate) -> list[dict]:
    """The conversation as OpenAI's message dicts: tool calls and tool results kept for the chat template."""
    return [m.model_dump(exclude_none=True) for m in body.messages]


def _tools(body: ChatCompletionCreate) -> ToolUse | None:
    """The tools the request offers and how they may be called (None without tools)."""
    try:
        return tool_use(body.tools, body.tool_choice, body.functions, body.function_call, body.parallel_tool_calls)
    except ToolRequestError as exc:
        raise bad_request(str(exc), param=exc.param) from None


def _schema(body: ChatCompletionCreate) -> dict | None:
    """The JSON schema `response_format` asks for (None for plain text)."""
    response_format = body.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {"type": "object"}
    schema = (response_format.json_schema or {}).get("schema")
    if not isinstance(schema, dict):
        raise bad_request(
            "response_format json_schema needs a 'schema' object: {'type': 'json_schema', 'json_schema': "
            "{'name': ..., 'schema': {...}}}",
            param="response_format.json_schema.schema",
        )
    return schema


def _requested_tokens(body: ChatCompletionCreate) -> tuple[int | None, str]:
    if body.max_completion_tokens:
        return body.max_completion_tokens, "max_completion_tokens"
    return body.max_tokens, "max_tokens"


def check_request(body: ChatCompletionCreate) -> None:
    """Problems a request has on its own, before any tokenizer or model is touched."""
    if body.logprobs:
        raise bad_request("logprobs are not supported by this server", param="logprobs")
    if body.labels is not None:
        if body.response_format is not None and body.response_format.type != "text":
            raise bad_request("use either 'labels' or 'response_format', not both", param="labels")
        if not body.labels or not all(label.strip() for label in body.labels):
            raise bad_request("'labels' must be a non-empty list of non-empty strings", param="labels")
    _schema(body)
    tools = _tools(body)
    if tools is not None and tools.calls:
        other = "labels" if body.labels else "response_format" if _schema(body) is not None else None
        if other:
            raise bad_request(f"this server cannot hold a reply to both '{other}' and tool calls: send one of "
                              f"them, or tool_choice 'none'", param=other)  # fmt: skip
    max_tokens, param = _requested_tokens(body)
    if max_tokens is not None and max_tokens > MAX_TOKENS_LIMIT:
        raise bad_request(f"{param} is {max_tokens}; this server allows at most {MAX_TOKENS_LIMIT}", param=param)
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    if stop and len(stop) > 4:
        raise bad_request("stop accepts at most 4 sequences", param="stop")


def context_exceeded(message: str) -> APIError:
    return APIError(400, message, param="messages", code="context_length_exceeded")


@dataclass
class Vocabulary:
    """What limits need before any model loads: the tokenizer, the context length, the longest token."""

    tokenizer: Any
    context: int
    vocab_size: int  # the model's output width (JSON-schema grammars mask that many logits)
    longest_token: int  # characters: a text of C characters is at least C / longest_token tokens

    @classmethod
    def load(cls, served: ModelRef) -> Vocabulary:
        from transformers import AutoConfig

        from ftlab.models import load_tokenizer, resolve_model

        tokenizer = load_tokenizer(served.model, served.revision)
        config = AutoConfig.from_pretrained(resolve_model(served.model), revision=served.revision)
        context = getattr(config, "max_position_embeddings", None) or tokenizer.model_max_length
        longest = max(len(token) for token in tokenizer.get_vocab())  # raw spelling: never shorter than its text
        return cls(tokenizer, int(context), config.vocab_size, max(1, longest))

    def prompt_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """The prompt's token ids (the tools rendered as training renders them); an obviously too long prompt is
        refused before it is tokenised."""
        characters = sum(len(content_text(m.get("content"))) for m in messages)
        characters += len(json.dumps(tools, ensure_ascii=False)) if tools else 0
        if characters / self.longest_token > self.context:
            raise context_exceeded(f"This model's maximum context length is {self.context} tokens; the messages "
                                   f"({characters} characters) are longer than that.")  # fmt: skip
        return apply_template(self.tokenizer, messages, tools, generation_prompt=True, tokenize=True)


def _choice(index: int, completion: Completion, tools: ToolUse | None) -> dict[str, Any]:
    """One choice of a completion: the reply's text, and its tool calls when the request offered tools."""
    message: dict[str, Any] = {"role": "assistant", "content": completion.text}
    finish_reason = completion.finish_reason
    reply = tools.reply(completion.text) if tools else None
    if reply and reply.tool_calls:
        message["content"] = reply.content
        if tools.legacy:
            message["function_call"] = reply.tool_calls[0]["function"]
        else:
            message["tool_calls"] = reply.tool_calls
        if finish_reason == "stop":
            finish_reason = "function_call" if tools.legacy else "tool_calls"
    return {"index": index, "message": message, "finish_reason": finish_reason, "logprobs": None}


class ChatEngine:
    """Answers chat completion requests: checks, tokenises and queues them, and renders what generation sends."""

    def __init__(self, *, max_loaded: int = 2, max_adapters: int = 16, max_batch: int = 32, max_queued: int = 256,
                 wait_ms: float = 10.0) -> None:  # fmt: skip
        from ftlab.infer.batching import Scheduler

        self.max_loaded, self.max_adapters = max(1, max_loaded), max_adapters
        self.scheduler: Scheduler = Scheduler(max_batch=max_batch, max_queued=max_queued, wait_ms=wait_ms)
        self._vocabularies: OrderedDict[tuple, Vocabulary] = OrderedDict()
        self._bases: OrderedDict[tuple, SharedBase] = OrderedDict()
        self._lock = threading.Lock()  # guards the two caches; never held while a model loads or generates
        self._loading: dict[tuple, threading.Lock] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ftlab-chat-prepare")

    def status(self) -> dict:
        with self._lock:
            loaded = [{"model": key[0], "adapters": len(base.adapters)} for key, base in self._bases.items()]
        return {**self.scheduler.stats, "queued": self.scheduler.queued_rows(), "loaded": loaded}

    # --- preparing a request (on the engine's pool) ------------------------------------------------------------
    def _cached(self, cache: OrderedDict, key: tuple, load, limit: int):
        with self._lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
            loading = self._loading.setdefault(key + (id(cache),), threading.Lock())
        with loading:  # one load per key, other keys load meanwhile
            with self._lock:
                if key in cache:
                    return cache[key]
            value = load()
            with self._lock:
                cache[key] = value
                while len(cache) > limit:
                    cache.popitem(last=False)
            return value

    def _prepare(self, served: ModelRef, body: ChatCompletionCreate, tools: ToolUse | None) -> Job:
        """Everything that can fail with a 4xx, in order of cost; the model loads only for a valid request."""
        from ftlab.infer.batching import Job, SharedBase, mixable
        from ftlab.infer.constrained import (
            json_schema_constraint,
            label_constraint,
            max_label_tokens,
            tool_call_constraint,
        )

        key = (served.model, served.revision)
        if served.adapter is not None and not (served.adapter / "adapter_config.json").is_file():
            raise model_not_found(body.model, f"its adapter folder {served.adapter} is gone")
        vocabulary = self._cached(self._vocabularies, key, lambda: Vocabulary.load(served), 8)
        prompt = vocabulary.prompt_ids(_messages(body), tools.tools if tools else None)
        room = vocabulary.context - len(prompt)
        max_tokens, param = _requested_tokens(body)
        if room <= 0 or (max_tokens is not None and max_tokens > room):
            asked = f" plus {max_tokens} in {param}" if max_tokens is not None else ""
            raise context_exceeded(f"This model's maximum context length is {vocabulary.context} tokens; the "
                                   f"messages have {len(prompt)} tokens{asked}. Shorten the messages"
                                   f"{' or lower ' + param if max_tokens is not None else ''}.")  # fmt: skip
        max_new_tokens = max_tokens or min(DEFAULT_MAX_TOKENS, room)
        constraint, schema = None, _schema(body)
        if body.response_format is None and not body.labels and not (tools is not None and tools.calls):
            schema = served.reply_schema  # a model trained on JSON replies answers in their shape
        tokenizer = vocabulary.tokenizer
        if tools is not None and tools.calls:
            try:
                constraint = tool_call_constraint(tokenizer, tools.schema(), required=tools.forced,
                                                  parallel=tools.parallel, vocab_size=vocabulary.vocab_size)
            except ValueError as exc:
                raise bad_request(str(exc), param="functions" if tools.legacy else "tools") from None
            except ImportError as exc:  # without xgrammar the model still calls tools; it cannot be made to
                if tools.forced:
                    param = "function_call" if tools.legacy else "tool_choice"
                    raise APIError(501, str(exc), param=param, code="unsupported") from None
        elif body.labels:
            constraint = label_constraint(tokenizer, body.labels)
            max_new_tokens = min(max_label_tokens(tokenizer, body.labels), room)
        elif schema is not None:
            try:
                constraint = json_schema_constraint(tokenizer, schema, vocab_size=vocabulary.vocab_size)
            except ValueError as exc:
                raise bad_request(str(exc), param="response_format.json_schema.schema") from None
            except ImportError as exc:
                raise APIError(501, str(exc), param="response_format", code="unsupported") from None
        self.scheduler.check_capacity(body.n or 1)  # refuse before loading a model for a request that must wait

        def load() -> SharedBase:
            try:
                return SharedBase(served.model, served.revision, tokenizer=tokenizer, max_adapters=self.max_adapters)
            except Exception as exc:
                raise APIError(500, f"Could not load model {served.name}: {exc}", param="model") from exc

        stop = [body.stop] if isinstance(body.stop, str) else body.stop
        return Job(
            base=self._cached(self._bases, key, load, self.max_loaded), prompt=prompt, max_new_tokens=max_new_tokens,
            n=body.n or 1, adapter=served.adapter, temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p, stop=stop or None, seed=body.seed, constraint=constraint,
            mixable=mixable(served.adapter),
        )  # fmt: skip

    # --- answering -----------------------------------------------------------------------------------------------
    async def respond(self, served: ModelRef, body: ChatCompletionCreate, request: Request):
        """The response to one request (already through `check_request`): JSON, or server-sent events."""
        from ftlab.infer.batching import Overloaded

        loop, tools = asyncio.get_running_loop(), _tools(body)
        try:
            self.scheduler.check_capacity(body.n or 1)
            job = await loop.run_in_executor(self._pool, self._prepare, served, body, tools)
            events: asyncio.Queue[Event] = asyncio.Queue()
            job.on_event = lambda event: loop.call_soon_threadsafe(events.put_nowait, event)
            self.scheduler.submit(job)
        except Overloaded as exc:
            raise APIError(429, f"This server is busy: {exc}. Retry after {exc.retry_after} s.",
                           code="rate_limit_exceeded", headers={"Retry-After": str(exc.retry_after)}) from None
        if body.stream:
            return StreamingResponse(self._stream(job, events, body, tools), media_type="text/event-stream")
        return JSONResponse(await self._complete(job, events, body, tools, request))

    async def _complete(self, job: Job, events: asyncio.Queue, body: ChatCompletionCreate, tools: ToolUse | None,
                        request: Request) -> dict:  # fmt: skip
        results = [None] * job.n
        try:
            while any(r is None for r in results):
                try:
                    event = await asyncio.wait_for(events.get(), DISCONNECT_POLL_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        raise APIError(499, "The client closed the request.") from None
                    continue
                if event.error:
                    raise APIError(500, f"Generation failed: {event.error}")
                if event.completion is not None:
                    results[event.index] = event.completion
        finally:
            job.cancel()  # a no-op once every row is done; stops the rows of a client that left
        choices = [_choice(i, c, tools) for i, c in enumerate(results)]
        completion_tokens = sum(c.completion_tokens for c in results)
        completion = ChatCompletion(
            id="chatcmpl-" + secrets.token_hex(12), object="chat.completion", created=int(time.time()),
            model=body.model, choices=choices, system_fingerprint="ftlab",
            usage=CompletionUsage(prompt_tokens=len(job.prompt), completion_tokens=completion_tokens,
                                  total_tokens=len(job.prompt) + completion_tokens),
        )  # fmt: skip
        return completion.model_dump(mode="json", exclude_none=True)

    async def _stream(self, job: Job, events: asyncio.Queue, body: ChatCompletionCreate,
                      tools: ToolUse | None) -> AsyncIterator[str]:  # fmt: skip
        """`data: {chunk}` lines ending with `data: [DONE]`, as OpenAI streams them, choices interleaved by index;
        with tools, each choice's text goes through its own `StreamParser` (content and tool-call deltas).

        Starlette cancels this generator when the client disconnects; `finally` then stops the job's rows.
        """
        chunk_id, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())

        def chunk(choices: list[dict], usage: CompletionUsage | None = None) -> str:
            payload = ChatCompletionChunk(id=chunk_id, object="chat.completion.chunk", created=created,
                                          model=body.model, choices=choices, system_fingerprint="ftlab", usage=usage)
            return f"data: {payload.model_dump_json(exclude_none=True)}\n\n"  # fmt: skip

        usage = CompletionUsage(prompt_tokens=len(job.prompt), completion_tokens=0, total_tokens=0)
        parsers = [tools.stream_parser() if tools else None for _ in range(job.n)]

        def deltas(index: int, text: str | None) -> list[str]:
            """The chunks one piece of a choice's text makes (None: the choice has ended)."""
            parser = parsers[index]
            if parser is None:
                pieces = [{"content": text}] if text else []
            else:
                pieces = parser.finish() if text is None else parser.feed(text)
            return [chunk([{"index": index, "delta": piece}]) for piece in pieces]

        try:
            for index in range(job.n):
                yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}}])
            finished = 0
            while finished < job.n:
                event = await events.get()
                if event.error:  # the status line is already sent: report the failure in the stream, then end it
                    yield f"data: {json.dumps(APIError(500, f'Generation failed: {event.error}').body())}\n\n"
                    break
                for line in deltas(event.index, event.text) if event.text else []:
                    yield line
                if event.completion is not None:
                    finished += 1
                    usage.completion_tokens += event.completion.completion_tokens
                    for line in deltas(event.index, None):
                        yield line
                    finish, parser = event.completion.finish_reason, parsers[event.index]
                    if parser is not None and parser.called and finish == "stop":
                        finish = "function_call" if tools.legacy else "tool_calls"
                    yield chunk([{"index": event.index, "delta": {}, "finish_reason": finish}])
            else:
                if body.stream_options and body.stream_options.include_usage:
                    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
                    yield chunk([], usage)
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()
