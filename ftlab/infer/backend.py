"""One protocol for every chat model ftlab generates with: a local model (`ftlab.infer.generate.ChatModel`) or
a model behind an OpenAI-compatible endpoint (`ftlab.infer.remote.RemoteChatModel`).

Evaluation, judges, synthetic-data teachers and `ftlab generate` all call `generate`. What only a model in this
process can do — read its logits to rank labels, hold decoding to a label trie or a JSON schema with a logits
processor — is asked through `local`: an endpoint gets the constraint as a request field instead
(`labels`, ftlab serve's extension, or OpenAI's `response_format`) or cannot do it at all (ranking).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ftlab.infer.refs import ModelRef


@dataclass
class Completion:
    """One generated reply with OpenAI's usage counts and finish reason ("stop" or "length")."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class ChatBackend(Protocol):
    name: str
    local: bool  # the model runs in this process: `ChatModel`'s tokenizer, logits and label ranking are at hand
    concurrency: int  # how many calls to `generate` may run at once
    batch_size: int  # how many conversations one call to `generate` should get

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
        """One completion per conversation, in the input order (greedy unless temperature > 0). `labels`: the
        reply is exactly one of them; `json_schema`: the reply is JSON valid under it; `tools`: the functions
        the model may call (OpenAI's `tools`), its calls written in the reply's text as ftlab writes them
        (`ftlab.data.tools`), so a local and a remote reply read alike. `on_done(n)`: told as each n replies
        are finished (a progress bar's `update`)."""
        ...


def default_max_new_tokens(model: ChatBackend, references: Sequence[str]) -> int:
    """Room for the longest reference and then some (a quarter more, plus 16 tokens), at most 1,024: what an
    evaluation lets a model write, so a reply that repeats itself stops soon after a good one would have."""
    if model.local:
        longest = max(len(model.tokenizer.encode(ref, add_special_tokens=False)) for ref in references)
    else:
        longest = max(len(ref) for ref in references) // 2  # an endpoint: ~2 characters per token at worst
    return min(1024, int(longest * 1.25) + 16)


def open_backend(
    ref: ModelRef,
    *,
    batch_size: int = 8,
    concurrency: int = 8,
    max_retries: int = 6,
    api_key: str | None = None,
) -> ChatBackend:
    """Load the local model `ref` names (base + adapter merged in), or open a client to its endpoint.

    `batch_size` applies to a local model, `concurrency`, `max_retries` and `api_key` to an endpoint.
    """
    if ref.local:
        from ftlab.infer.generate import ChatModel

        return ChatModel.from_ref(ref, batch_size=batch_size)
    from ftlab.infer.remote import RemoteChatModel

    return RemoteChatModel(ref.model, ref.base_url or "", name=ref.name, api_key=api_key, concurrency=concurrency,
                           max_retries=max_retries)  # fmt: skip
