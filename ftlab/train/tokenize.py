"""Turning a chat example into token ids and a loss mask, using the model's own chat template.

The loss covers exactly the assistant messages that are trained (weight 1, the default) plus their
end-of-turn token. The mask is derived from the template itself, so it is right for any template: each
assistant message's span is what the template adds between "the conversation so far + assistant prompt" and
"the conversation including this message"; the full text is tokenised once with character offsets, and a
token is trained when it starts inside a span. (transformers' `return_assistant_tokens_mask` needs
`{% generation %}` markers that most templates, SmolLM2's included, do not have.)
"""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.data.schema import ChatExample, DataError, message_dicts
from ftlab.data.tools import apply_template

IGNORE_INDEX = -100


@dataclass
class Tokenized:
    """Token ids and labels (IGNORE_INDEX where the loss does not count) of one example."""

    input_ids: list[int]
    labels: list[int]
    line: int | None = None
    truncated_tokens: int = 0

    @property
    def n_trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def assistant_spans(tokenizer, example: ChatExample) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the loss covers (trained assistant replies)."""
    messages, tools = message_dicts(example.messages), example.tool_definitions()

    def render(upto: int, generation_prompt: bool) -> str:
        return apply_template(tokenizer, messages[:upto], tools, generation_prompt=generation_prompt)

    text = render(len(messages), generation_prompt=False)
    spans = []
    eos = tokenizer.eos_token or ""
    for index, message in enumerate(example.messages):
        if not message.trained:
            continue
        before = render(index, generation_prompt=True)
        upto = render(index + 1, generation_prompt=False)
        if not (upto.startswith(before) and text.startswith(upto)):
            raise DataError(
                "the model's chat template renders this conversation in a way that cannot be split into turns "
                "(does it rewrite earlier messages?)",
                line=example.line,
                message_index=index,
            )
        reply = upto[len(before) :]
        # Train through the end-of-turn token, not the whitespace the template puts after it.
        end = reply.rfind(eos) + len(eos) if eos and eos in reply else len(reply.rstrip())
        spans.append((len(before), len(before) + end))
    return text, spans


def tokenize_example(tokenizer, example: ChatExample, max_length: int | None = None) -> Tokenized:
    """Ids and labels for one example; longer than `max_length` is cut from the end (and counted)."""
    text, spans = assistant_spans(tokenizer, example)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoded["input_ids"]
    labels = [IGNORE_INDEX] * len(ids)
    for position, (start, _end) in enumerate(encoded["offset_mapping"]):
        if any(a <= start < b for a, b in spans):
            labels[position] = ids[position]
    truncated = 0
    if max_length is not None and len(ids) > max_length:
        truncated = len(ids) - max_length
        ids, labels = ids[:max_length], labels[:max_length]
    return Tokenized(input_ids=ids, labels=labels, line=example.line, truncated_tokens=truncated)


def render_mask(tokenizer, tokenized: Tokenized) -> str:
    """The example's text with trained tokens in green and the rest dimmed (rich markup), for --print-mask."""
    from rich.markup import escape

    pieces = []
    for token_id, label in zip(tokenized.input_ids, tokenized.labels, strict=True):
        piece = escape(tokenizer.decode([token_id]))
        pieces.append(f"[bold green]{piece}[/]" if label != IGNORE_INDEX else f"[dim]{piece}[/]")
    return "".join(pieces)
