"""Chat completions for base and fine-tuned models, plain or streamed as server-sent events.

Loaded models are kept in a small LRU cache keyed by (base, revision, adapter), so switching between a few fine-tuned
models does not reload them every request, while memory stays bounded. Generation runs one request at a time:
on a CPU the cores are the bottleneck, and interleaving requests would only slow each one down.

Outputs can be constrained: `response_format` `json_schema` / `json_object` (OpenAI's structured outputs,
through `ftlab.infer.constrained`'s grammar processor) and ftlab's extension `labels: [...]`, which makes the
reply exactly one of the given labels (a label-trie logits processor).

Tools (`tools`, `tool_choice`, `parallel_tool_calls`, the legacy `functions`/`function_call`) are rendered into
the prompt as training renders them and read back from the reply by `ftlab.data.tools`; their calls are held to
the tools' JSON schemas (a required or named call is forced), and streamed as OpenAI streams them.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage

from ftlab.data.tools import ToolRequestError, ToolUse, tool_use
from ftlab.infer.generate import ChatModel
from ftlab.infer.refs import ModelRef
from ftlab.serve.errors import APIError, bad_request
from ftlab.serve.schemas import ChatCompletionCreate

DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 4096


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


def _options(body: ChatCompletionCreate) -> dict:
    """Generation settings from the request; every problem is reported before any model work starts."""
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
    max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS
    if max_tokens > MAX_TOKENS_LIMIT:
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise bad_request(f"{param} is {max_tokens}; this server allows at most {MAX_TOKENS_LIMIT}", param=param)
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    if stop and len(stop) > 4:
        raise bad_request("stop accepts at most 4 sequences", param="stop")
    return {
        "max_new_tokens": max_tokens,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "stop": stop or None,
        "seed": body.seed,
        "tools": tools.tools if tools else None,
    }


@dataclass
class Prepared:
    """A loaded model with the options and (optional) constraint of one request."""

    model: ChatModel
    messages: list[dict]
    options: dict[str, Any]
    tools: ToolUse | None = None


def _constrain(model: ChatModel, body: ChatCompletionCreate, options: dict, tools: ToolUse | None = None) -> dict:
    """Add the constraint that `labels`, `response_format` or the tools ask for."""
    from ftlab.infer.constrained import max_label_tokens

    if tools is not None and tools.calls:
        try:
            options["constraint"] = model.tool_constraint(tools)
        except ValueError as exc:
            raise bad_request(str(exc), param="tools") from None
        except ImportError as exc:  # without xgrammar the model still calls tools; it cannot be made to
            if tools.mode in ("required", "named"):
                param = "function_call" if tools.legacy else "tool_choice"
                raise APIError(501, str(exc), param=param, code="unsupported") from None
        return options
    if body.labels:
        options["constraint"] = model.constraint(body.labels, None)
        options["max_new_tokens"] = max_label_tokens(model.tokenizer, body.labels)
        return options
    schema = _schema(body)
    if schema is not None:
        try:
            options["constraint"] = model.constraint(None, schema)
        except ValueError as exc:
            raise bad_request(str(exc), param="response_format.json_schema.schema") from None
        except ImportError as exc:
            raise APIError(501, str(exc), param="response_format", code="unsupported") from None
    return options


def _choice(index: int, text: str, finish_reason: str, tools: ToolUse | None) -> dict[str, Any]:
    """One choice of a completion: the reply's text, and its tool calls when the request offered tools."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    reply = tools.reply(text) if tools else None
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
    """Loads models on demand (bounded LRU cache) and answers chat completion requests."""

    def __init__(self, max_loaded: int = 2) -> None:
        self.max_loaded = max(1, max_loaded)
        self._models: OrderedDict[tuple[str, str | None, Path | None], ChatModel] = OrderedDict()
        self._lock = threading.Lock()

    def _model(self, served: ModelRef) -> ChatModel:
        """The loaded model for `served` (call with the lock held)."""
        key = (served.model, served.revision, served.adapter)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        while len(self._models) >= self.max_loaded:
            self._models.popitem(last=False)
        try:
            model = ChatModel.from_ref(served)
        except Exception as exc:
            raise APIError(500, f"Could not load model {served.name}: {exc}", param="model") from exc
        self._models[key] = model
        return model

    def loaded(self) -> list[tuple[str, str | None, Path | None]]:
        return list(self._models)

    def prepare(self, served: ModelRef, body: ChatCompletionCreate) -> Prepared:
        """Check the request, load the model, build the constraint: everything that can fail with a 4xx."""
        options, tools = _options(body), _tools(body)
        with self._lock:
            model = self._model(served)
        return Prepared(model, _messages(body), _constrain(model, body, options, tools), tools)

    def complete(self, served: ModelRef, body: ChatCompletionCreate) -> ChatCompletion:
        job = self.prepare(served, body)
        n = body.n or 1
        with self._lock:
            completions = job.model.generate([job.messages] * n, **job.options)
        choices = [_choice(i, c.text, c.finish_reason, job.tools) for i, c in enumerate(completions)]
        prompt_tokens = completions[0].prompt_tokens
        completion_tokens = sum(c.completion_tokens for c in completions)
        return ChatCompletion(
            id="chatcmpl-" + secrets.token_hex(12),
            object="chat.completion",
            created=int(time.time()),
            model=body.model,
            choices=choices,
            system_fingerprint="ftlab",
            usage=CompletionUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )

    def stream_sse(self, job: Prepared, body: ChatCompletionCreate) -> Iterator[str]:
        """`data: {chunk}` lines ending with `data: [DONE]`, as OpenAI streams them (`job` from `prepare`)."""
        chunk_id, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())

        def chunk(choices: list[dict], usage: CompletionUsage | None = None) -> str:
            payload = ChatCompletionChunk(
                id=chunk_id,
                object="chat.completion.chunk",
                created=created,
                model=body.model,
                choices=choices,
                system_fingerprint="ftlab",
                usage=usage,
            )
            return f"data: {payload.model_dump_json(exclude_none=True)}\n\n"

        usage = CompletionUsage(
            prompt_tokens=len(job.model.prompt_ids(job.messages, job.options["tools"])), completion_tokens=0,
            total_tokens=0,
        )
        try:
            with self._lock:
                for index in range(body.n or 1):
                    yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}}])
                    text, deltas, final = "", job.model.stream(job.messages, **job.options), None
                    parser = job.tools.stream_parser() if job.tools else None
                    while True:
                        try:
                            delta = next(deltas)
                        except StopIteration as end:
                            final = end.value  # a Completion, when the generator returns one
                            break
                        text += delta
                        for piece in parser.feed(delta) if parser else [{"content": delta}]:
                            yield chunk([{"index": index, "delta": piece}])
                    for piece in parser.finish() if parser else []:
                        yield chunk([{"index": index, "delta": piece}])
                    if final is None:  # only text came back: count the reply by re-tokenising it
                        n_tokens = len(job.model.tokenizer.encode(text, add_special_tokens=False))
                        finish = "length" if n_tokens >= job.options["max_new_tokens"] else "stop"
                    else:
                        n_tokens, finish = final.completion_tokens, final.finish_reason
                    usage.completion_tokens += n_tokens
                    if parser and parser.called and finish == "stop":
                        finish = "function_call" if job.tools.legacy else "tool_calls"
                    yield chunk([{"index": index, "delta": {}, "finish_reason": finish}])
        except Exception as exc:  # the status line is already sent: report the failure in the stream
            yield f"data: {json.dumps(APIError(500, f'Generation failed: {exc}').body())}\n\n"
            return
        if body.stream_options and body.stream_options.include_usage:
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
            yield chunk([], usage)
        yield "data: [DONE]\n\n"
