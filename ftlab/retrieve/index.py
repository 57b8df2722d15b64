"""A vector index over passages, built once and found again by the hash of what it holds.

The default store is FAISS (`faiss-cpu`): an exact inner-product index over unit-length embeddings (so the score
is the cosine), written as a file under `FTLAB_HOME/indexes/<hash>/` beside the passages it indexes. It needs no
server and no SQLite extension loading (which many Python builds, this project's included, leave out, and which
sqlite-vec needs). Where the records live in PostgreSQL (`FTLAB_DATABASE_URL`), the passages and their vectors go
into that database instead, searched by pgvector (`ftlab.retrieve.pgvector`).

The hash covers the embedding model's name and every passage's text, key and source: the same documents with
the same embedder are embedded once, and any edit makes a new index.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ftlab.config import home
from ftlab.embed import DEFAULT_EMBEDDER, embed
from ftlab.retrieve.passages import Passage


@dataclass(frozen=True)
class Hit:
    """One passage found for a query: its position in the indexed list and its cosine similarity."""

    position: int
    score: float
    passage: Passage


class SearchIndex(Protocol):
    passages: list[Passage]
    reused: bool  # the index was found by its hash, not built now

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """The `k` passages most similar to each query, the most similar first."""
        ...


def content_hash(passages: Sequence[Passage], embedder: str) -> str:
    digest = hashlib.sha256(json.dumps(embedder).encode())
    for passage in passages:
        digest.update(json.dumps([passage.text, passage.key, passage.source], ensure_ascii=False).encode())
    return digest.hexdigest()


def open_index(passages: Sequence[Passage], embedder: str = DEFAULT_EMBEDDER,
               database_url: str | None = None) -> SearchIndex:  # fmt: skip
    """The index of `passages` (built now, or found by its content hash): in PostgreSQL with pgvector when
    `database_url` (default: the records' database) is PostgreSQL, else a FAISS file under FTLAB_HOME."""
    from ftlab.records.db import database_url as records_url

    if not passages:
        raise ValueError("nothing to index: no passages")
    url = database_url or records_url()
    if url.startswith("postgresql"):
        from ftlab.retrieve.pgvector import PgVectorIndex

        return PgVectorIndex(list(passages), embedder, url)
    return FaissIndex(list(passages), embedder)


class FaissIndex:
    """Passages in an exact FAISS inner-product index, kept under `FTLAB_HOME/indexes/<content hash>/`."""

    def __init__(self, passages: list[Passage], embedder: str, folder: Path | None = None) -> None:
        import faiss

        self.passages, self.embedder = passages, embedder
        self.folder = folder or home() / "indexes" / content_hash(passages, embedder)
        file = self.folder / "index.faiss"
        self.reused = file.exists()
        if self.reused:
            self.index = faiss.read_index(str(file))
            return
        vectors = embed([p.embedded for p in passages], embedder)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "passages.json").write_text(
            json.dumps({"embedder": embedder, "passages": [asdict(p) for p in passages]}, ensure_ascii=False),
            encoding="utf-8",
        )
        partial = self.folder / f"index.faiss.{os.getpid()}.tmp"  # renamed into place whole: never half-written
        faiss.write_index(self.index, str(partial))
        os.replace(partial, file)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        k = min(k, len(self.passages))
        scores, positions = self.index.search(np.ascontiguousarray(embed(list(queries), self.embedder)), k)
        return [[Hit(int(i), float(s), self.passages[int(i)]) for s, i in zip(row_s, row_i, strict=True) if i >= 0]
                for row_s, row_i in zip(scores, positions, strict=True)]  # fmt: skip
