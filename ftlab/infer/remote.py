"""The `ChatBackend` of a model behind any OpenAI-compatible `/v1/chat/completions` (OpenAI, vLLM, Ollama,
`ftlab serve`), through the official `openai` client, whose retries back off exponentially on 429 and 5xx and
honour `Retry-After`. One request per conversation, `concurrency` at once."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ftlab.data.tools import assistant_text
from ftlab.infer.backend import Completion


class EndpointError(RuntimeError):
    """The endpoint could not be reached, or kept failing after the client's retries."""


class RemoteChatModel:
    """Chat completions of `model` at `base_url` (the key comes from OPENAI_API_KEY; local servers accept any)."""

    local = False
    batch_size = 1  # one conversation per request; `concurrency` requests in flight

    def __init__(self, model: str, base_url: str, *, name: str | None = None, api_key: str | None = None,
                 concurrency: int = 8, max_retries: int = 6, timeout: float = 120.0,
                 http_client: Any = None) -> None:  # fmt: skip
        from openai import OpenAI

        self.name = name or model
        self.model = model
        self.base_url = base_url
        self.concurrency = concurrency
        # Local servers (vLLM, Ollama, ftlab serve) accept any key; the client refuses to start without one.
        key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        self.client = OpenAI(base_url=base_url, api_key=key, http_client=http_client, max_retries=max_retries,
                             timeout=timeout)  # fmt: skip

    def _complete(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> Completion:
        import openai

        try:
            response = self.client.chat.completions.create(model=self.model, messages=messages, **options)
        except openai.APIStatusError as exc:
            raise EndpointError(
                f"{self.model} at {self.base_url} answered HTTP {exc.status_code} after {self.client.max_retries} "
                f"retries: {exc.message}"
            ) from None
        except openai.APIConnectionError as exc:
            raise EndpointError(f"cannot reach {self.base_url} (model {self.model}): {exc}") from None
        choice, usage = response.choices[0], response.usage
        calls = [call.model_dump() for call in choice.message.tool_calls or []]
        return Completion(
            text=assistant_text(choice.message.content or "", calls),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason or "stop",
        )

    def generate(
        self,
        conversations: list[list[dict[str, Any]]],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
        labels: list[str] | None = None,
        json_schema: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        on_done: Callable[[int], object] | None = None,
    ) -> list[Completion]:
        """One completion per conversation, requested `concurrency` at a time, in the input order. `labels` is
        sent as ftlab serve's label-set extension, `json_schema` as OpenAI's `response_format`; the reply's
        `tool_calls` are written into its text as ftlab writes them."""
        options: dict[str, Any] = {"max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        if stop:
            options["stop"] = stop
        if seed is not None:
            options["seed"] = seed
        if json_schema is not None:
            options["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": json_schema, "strict": True}}  # fmt: skip
        if labels:
            options["extra_body"] = {"labels": list(labels)}
        if tools:
            options["tools"] = tools

        def complete(messages: list[dict[str, Any]]) -> Completion:
            completion = self._complete(messages, options)
            if on_done is not None:
                on_done(1)
            return completion

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(complete, conversations))
