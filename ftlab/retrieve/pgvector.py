"""The retrieval index inside the records' PostgreSQL database, searched by pgvector's cosine distance.

Needs the `vector` extension in the server (`CREATE EXTENSION vector`, which this module runs when allowed) and
the `pgvector` Python package (`pip install "ftlab[postgres]"`). One table holds every index's passages, keyed
by the index's content hash; it is created on first use rather than by the records' migrations, because
SQLite databases (the default) have no vector type. Search is exact (no approximate index): a sequential scan
of one index's rows, which is what a few thousand passages need.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, func, insert, select, text

from ftlab.embed import embed
from ftlab.records.db import get_engine
from ftlab.retrieve.index import Hit, content_hash
from ftlab.retrieve.passages import Passage

metadata = MetaData()


def _table():
    try:
        from pgvector.sqlalchemy import Vector
    except ImportError:
        raise ImportError("retrieval in PostgreSQL needs the pgvector package: pip install pgvector") from None
    if "retrieval_passages" not in metadata.tables:
        Table(
            "retrieval_passages", metadata,
            Column("pk", Integer, primary_key=True),
            Column("index_hash", String(64), index=True, nullable=False),
            Column("position", Integer, nullable=False),
            Column("source", Text, nullable=False),
            Column("text", Text, nullable=False),
            Column("key", Text, nullable=True),
            Column("embedding", Vector(), nullable=False),  # any embedder's dimension; one index has one
        )  # fmt: skip
    return metadata.tables["retrieval_passages"]


class PgVectorIndex:
    """Passages and their embeddings as rows of `retrieval_passages`, written once per content hash."""

    def __init__(self, passages: list[Passage], embedder: str, url: str) -> None:
        self.passages, self.embedder = passages, embedder
        self.hash = content_hash(passages, embedder)
        self.table = _table()
        self.engine = get_engine(url)
        with self.engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(7306)"))  # one process creates and fills at once
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            self.table.create(connection, checkfirst=True)
            count = select(func.count()).select_from(self.table).where(self.table.c.index_hash == self.hash)
            self.reused = connection.scalar(count) > 0
            if not self.reused:
                vectors = embed([p.embedded for p in passages], embedder)
                connection.execute(insert(self.table), [
                    {"index_hash": self.hash, "position": i, "source": p.source, "text": p.text, "key": p.key,
                     "embedding": vector} for i, (p, vector) in enumerate(zip(passages, vectors, strict=True))
                ])  # fmt: skip

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        distance = self.table.c.embedding.cosine_distance
        found = []
        with self.engine.connect() as connection:
            for vector in embed(list(queries), self.embedder):
                rows = connection.execute(
                    select(self.table.c.position, distance(vector).label("distance"))
                    .where(self.table.c.index_hash == self.hash)
                    .order_by(distance(vector))
                    .limit(k)
                )
                found.append([Hit(p, 1.0 - float(d), self.passages[p]) for p, d in rows])
        return found
