"""Asking a teacher for an answer that must pass a check, retrying with a correction when it does not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ftlab.infer.backend import ChatBackend
from ftlab.synth.runner import Progress, ask


@dataclass
class Validated:
    value: Any = None  # what `parse` returned for the first valid reply; None when every try failed
    replies: list[str] = field(default_factory=list)  # every raw reply, in order
    tokens: list[int] = field(default_factory=lambda: [0, 0])


def ask_validated(
    teacher: ChatBackend,
    conversations: list[list[dict[str, Any]]],
    progress: Progress,
    parse: Callable[[str], Any],
    correction: Callable[[str], str],
    retries: int = 2,
    **options: Any,
) -> list[Validated]:
    """For each conversation, the first reply that `parse` accepts (returns non-None).

    An invalid reply is answered with `correction(reply)` as a new user turn and the teacher asked again, up to
    `retries` more times; conversations still invalid after that come back with `value=None`.
    """
    results = [Validated() for _ in conversations]
    pending = [(i, list(c)) for i, c in enumerate(conversations)]
    for _attempt in range(retries + 1):
        if not pending:
            break
        replies = ask(teacher, [c for _, c in pending], progress, **options)
        still = []
        for (i, conversation), reply in zip(pending, replies, strict=True):
            result = results[i]
            result.replies.append(reply.text)
            result.tokens[0] += reply.prompt_tokens
            result.tokens[1] += reply.completion_tokens
            value = parse(reply.text)
            if value is not None:
                result.value = value
            else:
                follow_up = conversation + [
                    {"role": "assistant", "content": reply.text},
                    {"role": "user", "content": correction(reply.text)},
                ]
                still.append((i, follow_up))
        pending = still
        if pending:
            progress.grow(len(pending))
    return results
