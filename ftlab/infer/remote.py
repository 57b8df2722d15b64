"""Generation through any OpenAI-compatible chat endpoint, with the same `generate` shape as `ChatModel`."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ftlab.infer.generate import Completion


class RemoteChatModel:
    """Chat completions from `base_url` (the key comes from OPENAI_API_KEY; local servers accept any)."""

    def __init__(self, model: str, base_url: str, api_key: str | None = None, concurrency: int = 8,
                 http_client: Any = None, extra_body: dict[str, Any] | None = None) -> None:
        from openai import OpenAI

        self.name = f"openai:{model}@{base_url}"
        self.model = model
        self.concurrency = concurrency
        self.extra_body = extra_body
        key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        self.client = OpenAI(base_url=base_url, api_key=key, http_client=http_client, max_retries=3)

    def complete(self, messages: list[dict[str, Any]], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, stop: list[str] | None = None, seed: int | None = None,
                 extra_body: dict[str, Any] | None = None, logprobs: int | None = None) -> Any:
        """One raw chat completion response (for callers that need logprobs)."""
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                                  "temperature": temperature, "top_p": top_p}
        if stop:
            kwargs["stop"] = stop
        if seed is not None:
            kwargs["seed"] = seed
        if logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = logprobs
        body = {**(self.extra_body or {}), **(extra_body or {})}
        if body:
            kwargs["extra_body"] = body
        return self.client.chat.completions.create(**kwargs)

    def generate(self, conversations: list[list[dict[str, Any]]], *, max_new_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 1.0, stop: list[str] | None = None,
                 seed: int | None = None, extra_body: dict[str, Any] | None = None) -> list[Completion]:
        """One completion per conversation, requested `concurrency` at a time, in the input order."""

        def one(messages: list[dict[str, Any]]) -> Completion:
            response = self.complete(messages, max_new_tokens=max_new_tokens, temperature=temperature,
                                     top_p=top_p, stop=stop, seed=seed, extra_body=extra_body)
            choice = response.choices[0]
            usage = response.usage
            return Completion(
                text=choice.message.content or "",
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                finish_reason=choice.finish_reason or "stop",
            )

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, conversations))
