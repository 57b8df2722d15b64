"""The arms of `ftlab compare`: what an arm's spelling means, what it needs, and the prompts it sends.

An arm is a model and a way of prompting it, joined by `+`:

- models: `base` (or nothing: the base model, `--model`), `ft:MODEL` (a fine-tuned model, in any spelling
  `ftlab eval --model` takes: `ft:run:DIR@best`, `ft:BASE+ADAPTER_DIR`, `ft:ADAPTER_DIR`, `ft:openai:M@URL`, or an
  `ft:` model name itself, `ft:BASE:OWNER:SUFFIX:ID`), `openai:MODEL@URL` (a hosted model; fine-tuned when its
  name is an `ft:` name)
- prompting: `few-shot[:k=5,select=random|nearest,seed=0]` (k training examples as prior turns: one seeded
  random choice shared by every request, as a fixed prompt would be, or the k nearest to each question by
  embedding, the nearest last) and `rag[:k=3,source=docs|train]` (the k passages of `--docs`, or of the
  training set, nearest to the question, put into the question)

e.g. `base`, `few-shot:k=5`, `rag:k=3`, `ft:run:RUN@best`, `rag+ft:run:RUN@best`,
`openai:gpt-4o-mini@https://api.openai.com/v1+few-shot:k=5`. An arm's name is its spelling.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.data.prices import is_fine_tuned_name
from ftlab.data.schema import ChatExample, DataError, read_examples, template_messages
from ftlab.embed import DEFAULT_EMBEDDER
from ftlab.retrieve.index import Hit, SearchIndex, open_index
from ftlab.retrieve.passages import Passage, example_passages

TECHNIQUE = re.compile(r"(few-shot|rag)(?::(.*))?")
# Each option of a prompting technique with its default; k is the number of examples or passages.
OPTIONS: dict[str, dict[str, Any]] = {
    "few-shot": {"k": 5, "select": "random", "seed": 0},
    "rag": {"k": 3, "source": "docs"},
}
CHOICES = {"select": ("random", "nearest"), "source": ("docs", "train")}
RAG_TEMPLATE = "Answer using the context below.\n\nContext:\n{context}\n\nQuestion: {question}"


class ArmError(ValueError):
    """An arm that cannot be run as written (raised before any compute)."""


@dataclass(frozen=True)
class FewShot:
    k: int = 5
    select: str = "random"
    seed: int = 0


@dataclass(frozen=True)
class Rag:
    k: int = 3
    source: str = "docs"


@dataclass(frozen=True)
class Arm:
    """One way to answer: `model` (None: the base model) prompted as written."""

    name: str
    model: str | None = None
    fine_tuned: bool = False
    few_shot: FewShot | None = None
    rag: Rag | None = None

    def describe(self) -> dict[str, Any]:
        return {"model": self.model or "base", "fine_tuned": self.fine_tuned,
                "few_shot": vars(self.few_shot) if self.few_shot else None,
                "rag": vars(self.rag) if self.rag else None}  # fmt: skip


def _options(arm: str, kind: str, text: str | None) -> dict[str, Any]:
    values = dict(OPTIONS[kind])
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in values:
            raise ArmError(f"arm '{arm}': {kind} takes {', '.join(f'{k}=' for k in OPTIONS[kind])}, not '{item}'")
        if isinstance(values[key], int):
            if not value.isdigit() or (key == "k" and int(value) < 1):
                raise ArmError(f"arm '{arm}': {key} must be a whole number{' ≥ 1' if key == 'k' else ''}, "
                               f"not '{value}'")  # fmt: skip
            values[key] = int(value)
        elif value not in CHOICES[key]:
            raise ArmError(f"arm '{arm}': {key} is {' or '.join(CHOICES[key])}, not '{value}'")
        else:
            values[key] = value
    return values


def _fine_tuned_model(arm: str, text: str) -> str:
    """The model spelling of `ft:…`: what follows the prefix, or the whole text when it is an `ft:` name."""
    rest = text.removeprefix("ft:")
    if not rest:
        raise ArmError(f"arm '{arm}': write ft:MODEL, e.g. ft:run:RUN_DIR@best")
    if rest.startswith(("run:", "ft:", "openai:")) or ":" not in rest:
        return rest
    return text  # ft:BASE:OWNER:SUFFIX:ID, a fine-tuned model's own name


def parse_arm(text: str) -> Arm:
    """An arm from its spelling (see the module docstring); ArmError for anything else."""
    text = text.strip()
    parts = text.split("+")
    techniques: list[re.Match[str]] = []
    while parts and (match := TECHNIQUE.fullmatch(parts[0])):
        techniques.append(match)
        parts.pop(0)
    while parts and (match := TECHNIQUE.fullmatch(parts[-1])):
        techniques.append(match)
        parts.pop()
    model_text = "+".join(parts)
    kinds = [m.group(1) for m in techniques]
    if len(set(kinds)) < len(kinds):
        raise ArmError(f"arm '{text}' names {kinds[0]} twice")
    if model_text in ("", "base"):
        model, fine_tuned = None, False
    elif model_text.startswith("ft:"):
        model, fine_tuned = _fine_tuned_model(text, model_text), True
    elif model_text.startswith("openai:"):
        model, fine_tuned = model_text, is_fine_tuned_name(model_text)
    else:
        raise ArmError(f"unknown arm '{text}': an arm is base, few-shot[:k=N], rag[:k=N], ft:MODEL (a fine-tuned "
                       "model in any `ftlab eval --model` spelling), openai:MODEL@URL, or one of these models "
                       "joined to few-shot/rag by '+', e.g. rag+ft:run:RUN@best")  # fmt: skip
    options = {m.group(1): _options(text, m.group(1), m.group(2)) for m in techniques}
    return Arm(text, model, fine_tuned,
               FewShot(**options["few-shot"]) if "few-shot" in options else None,
               Rag(**options["rag"]) if "rag" in options else None)  # fmt: skip


def parse_arms(texts: Sequence[str]) -> list[Arm]:
    arms = [parse_arm(text) for text in texts]
    names = [arm.name for arm in arms]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ArmError(f"the same arm is named twice: {', '.join(twice)}")
    return arms


# --- what the arms need, checked before any compute -------------------------------------------------------------


def read_test_set(path: str | Path) -> list[ChatExample]:
    """The test examples, each ending with its reference answer (a non-empty assistant message)."""
    try:
        examples = read_examples(path)
    except DataError as exc:
        if "no assistant message" not in exc.detail:
            raise
        raise DataError("no assistant message: a test example ends with its reference answer, the assistant "
                        "message the arms' answers are scored against", path=exc.path, line=exc.line,
                        field="messages") from None  # fmt: skip
    for example in examples:
        index = len(example.messages) - 1
        last = example.messages[index]
        if last.role != "assistant":
            raise DataError(f"the last message is the {last.role}'s: a test example ends with its reference "
                            "answer (an assistant message)", path=path, line=example.line, message_index=index,
                            field="role")  # fmt: skip
        if not last.text.strip():
            raise DataError("the reference answer is empty", path=path, line=example.line, message_index=index,
                            field="content")  # fmt: skip
    return examples


def check_arms(arms: Sequence[Arm], tests: Sequence[ChatExample], train: Sequence[ChatExample] | None,
               docs: Sequence[Passage] | None, test_file: str | Path = "") -> None:  # fmt: skip
    """Refuse, before any compute, arms whose prompts cannot be built from the data given."""
    for arm in arms:
        if arm.few_shot:
            if train is None:
                raise ArmError(f"arm '{arm.name}' shows training examples: give --train TRAIN.jsonl")
            if arm.few_shot.k > len(train):
                raise ArmError(f"arm '{arm.name}': k={arm.few_shot.k} examples, but the training set has "
                               f"{len(train)}")  # fmt: skip
        if arm.rag:
            if arm.rag.source == "docs" and docs is None:
                raise ArmError(f"arm '{arm.name}' retrieves from documents: give --docs DOCS_DIR, or write "
                               f"rag:source=train to retrieve from the training set")  # fmt: skip
            if arm.rag.source == "train" and train is None:
                raise ArmError(f"arm '{arm.name}' retrieves from the training set: give --train TRAIN.jsonl")
            corpus = docs if arm.rag.source == "docs" else train
            if arm.rag.k > len(corpus):
                what = "passages in --docs" if arm.rag.source == "docs" else "examples in the training set"
                raise ArmError(f"arm '{arm.name}': k={arm.rag.k} passages, but there are {len(corpus)} {what}")
            no_question = next((t for t in tests if not t.question()), None)
            if no_question is not None:
                raise DataError(f"arm '{arm.name}' retrieves for the question, and this example has no user "
                                "message", path=test_file, line=no_question.line)  # fmt: skip


# --- prompts ----------------------------------------------------------------------------------------------------


@dataclass
class Prompt:
    """What one arm sends for one test example, and what it put there: the retrieved passages and the
    training examples shown (by position in the training set)."""

    messages: list[dict[str, Any]]
    context: list[Hit]
    shots: list[int]


def _turns(example: ChatExample) -> list[dict[str, Any]]:
    """An example as prior turns: its prompt without system messages, then its reference answer."""
    turns = [m for m in template_messages(example.prompt_messages()) if m["role"] != "system"]
    return [*turns, {"role": "assistant", "content": example.reference()}]


class Prompter:
    """Builds each arm's prompts; embeds and indexes the documents and the training set once, when an arm first
    needs them (found again by content hash on later runs)."""

    def __init__(self, train: Sequence[ChatExample] | None, docs: Sequence[Passage] | None,
                 embedder: str = DEFAULT_EMBEDDER) -> None:  # fmt: skip
        self.train, self.docs, self.embedder = list(train or []), list(docs or []), embedder
        self._indexes: dict[str, SearchIndex] = {}

    def index(self, source: str) -> SearchIndex:
        """The index of `docs` or of `train` (training examples, matched by their question)."""
        if source not in self._indexes:
            passages = self.docs if source == "docs" else example_passages(self.train)
            self._indexes[source] = open_index(passages, self.embedder)
        return self._indexes[source]

    def prompts(self, arm: Arm, tests: Sequence[ChatExample]) -> list[Prompt]:
        questions = [t.question() for t in tests]
        shots: list[list[int]] = [[] for _ in tests]
        if arm.few_shot and arm.few_shot.select == "random":
            fixed = random.Random(arm.few_shot.seed).sample(range(len(self.train)), arm.few_shot.k)
            shots = [fixed for _ in tests]
        elif arm.few_shot:
            found = self.index("train").search(questions, arm.few_shot.k)
            shots = [[hit.position for hit in reversed(hits)] for hits in found]  # the nearest next to the question
        context: list[list[Hit]] = [[] for _ in tests]
        if arm.rag:
            context = self.index(arm.rag.source).search(questions, arm.rag.k)
        return [self._prompt(test, shown, hits) for test, shown, hits in zip(tests, shots, context, strict=True)]

    def _prompt(self, test: ChatExample, shots: list[int], context: list[Hit]) -> Prompt:
        messages = template_messages(test.prompt_messages())
        system = [m for m in messages if m["role"] == "system"]
        rest = [m for m in messages if m["role"] != "system"]
        if context:
            last = max(i for i, m in enumerate(rest) if m["role"] == "user")
            passages = "\n\n".join(f"[{n}] {hit.passage.text}" for n, hit in enumerate(context, start=1))
            question = rest[last]["content"]
            rest[last] = {**rest[last], "content": RAG_TEMPLATE.format(context=passages, question=question)}
        examples = [turn for position in shots for turn in _turns(self.train[position])]
        return Prompt([*system, *examples, *rest], context, shots)
