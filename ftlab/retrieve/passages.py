"""What retrieval searches: passages of documents or of a training set, each with where it came from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ftlab.data.documents import MAX_CHUNK_CHARS, load_chunks
from ftlab.data.schema import ChatExample


@dataclass(frozen=True)
class Passage:
    """A piece of text a prompt can carry: `text` goes into the prompt, `key` (default `text`) is what is
    embedded and matched against a query, `source` says where it came from."""

    text: str
    source: str
    key: str | None = None

    @property
    def embedded(self) -> str:
        return self.key if self.key is not None else self.text


def document_passages(folder: str | Path, max_chars: int = MAX_CHUNK_CHARS) -> list[Passage]:
    """Every document under `folder` cut along its headings (the chunker `ftlab synth qa` uses); each passage
    starts with its document's title and heading path, so a chunk like "## Workaround" still names its ticket."""
    passages = []
    for chunk in load_chunks(folder, max_chars):
        where = f"{chunk.title} › {chunk.section}" if chunk.section else chunk.title
        source = f"{chunk.document} › {chunk.section}" if chunk.section else chunk.document
        passages.append(Passage(f"{where}\n{chunk.text}", source))
    return passages


def example_passages(examples: Sequence[ChatExample], name: str = "train") -> list[Passage]:
    """One passage per example, `Q: prompt / A: answer`, matched by its prompt alone."""
    return [Passage(f"Q: {e.question()}\nA: {e.reference()}", f"{name} line {e.line}", key=e.question())
            for e in examples]  # fmt: skip
