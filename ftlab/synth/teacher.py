"""Teachers: the models that write synthetic data, behind one small protocol.

Two implementations: `OpenAITeacher` calls any OpenAI-compatible server (OpenAI, vLLM, Ollama, ftlab's own) with
the official `openai` client, whose retries already back off exponentially on 429 and 5xx and honour
`Retry-After`; `LocalTeacher` runs a local model (the bundled SmolLM2 or a folder) through `ftlab.infer`.
The protocol's one method takes a list of conversations because a local model is ~6× faster on a batch of 8
than on one at a time; a remote teacher is called one conversation per request, `concurrency` at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None  # "length": cut at max_tokens, not finished


class TeacherError(RuntimeError):
    """The teacher could not be reached or kept failing after its retries."""


class Teacher(Protocol):
    name: str
    concurrency: int  # how many calls to `complete` may run at once
    batch_size: int  # how many conversations one call to `complete` should get

    def complete(
        self,
        conversations: list[list[dict[str, Any]]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        choices: list[str] | None = None,
    ) -> list[Reply]:
        """One reply per conversation. `choices`, when given, is the closed set the reply must come from:
        a local teacher constrains decoding to it; the caller validates every reply either way."""
        ...


class OpenAITeacher:
    """A model behind an OpenAI-compatible `/v1/chat/completions`."""

    batch_size = 1

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 6,
        timeout: float = 120.0,
        seed: int | None = 0,
    ) -> None:
        from openai import OpenAI

        self.name = model
        self.base_url = base_url
        self.concurrency = concurrency
        self.seed = seed
        # Local servers (vLLM, Ollama, ftlab serve) accept any key; the client refuses to start without one.
        key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        self.client = OpenAI(base_url=base_url, api_key=key, max_retries=max_retries, timeout=timeout)

    def complete(
        self,
        conversations: list[list[dict[str, Any]]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        choices: list[str] | None = None,
    ) -> list[Reply]:
        import openai

        replies = []
        for messages in conversations:
            try:
                response = self.client.chat.completions.create(
                    model=self.name,
                    messages=messages,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=self.seed,
                )
            except openai.APIStatusError as exc:
                raise TeacherError(
                    f"teacher {self.name} at {self.base_url} answered HTTP {exc.status_code} after "
                    f"{self.client.max_retries} retries: {exc.message}"
                ) from None
            except openai.APIConnectionError as exc:
                raise TeacherError(f"cannot reach the teacher at {self.base_url}: {exc}") from None
            usage = response.usage
            replies.append(
                Reply(
                    text=response.choices[0].message.content or "",
                    prompt_tokens=usage.prompt_tokens if usage else 0,
                    completion_tokens=usage.completion_tokens if usage else 0,
                    finish_reason=response.choices[0].finish_reason,
                )
            )
        return replies


class LocalTeacher:
    """A local chat model (bundled alias or Hugging Face folder), generating greedily in batches."""

    concurrency = 1  # one model, one batch at a time: the batch is where the speed comes from

    def __init__(self, model: str, batch_size: int = 8, device: Any = None) -> None:
        from ftlab.infer.generate import ChatModel

        self.name = model
        self.batch_size = batch_size
        self.model = ChatModel(model, device=device)

    def complete(
        self,
        conversations: list[list[dict[str, Any]]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        choices: list[str] | None = None,
    ) -> list[Reply]:
        constraint = None
        if choices:
            from ftlab.infer.constrained import label_constraint, max_label_tokens

            constraint = label_constraint(self.model.tokenizer, choices)
            max_tokens = max_label_tokens(self.model.tokenizer, choices)
        completions = self.model.generate(
            conversations,
            max_new_tokens=max_tokens,
            temperature=temperature,
            seed=0,
            constraint=constraint,
            batch_size=self.batch_size,
        )
        return [Reply(c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in completions]


def make_teacher(
    model: str,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int = 8,
    max_retries: int = 6,
    batch_size: int = 8,
) -> Teacher:
    """A remote teacher when `base_url` is given, else a local one."""
    if base_url:
        return OpenAITeacher(model, base_url, api_key=api_key, concurrency=concurrency, max_retries=max_retries)
    return LocalTeacher(model, batch_size=batch_size)
