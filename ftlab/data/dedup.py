"""Removing near-duplicate examples from one file, and finding examples shared between two files (leakage).

Two detectors, used together by default: character 3-gram MinHash (catches copies with small edits, in any
script — Japanese included) and embedding cosine with the bundled MiniLM or any sentence-transformers folder
(catches paraphrases in English; for Japanese it is weak, which is why MinHash runs beside it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ftlab.data.near_dup import (
    DEFAULT_COSINE,
    DEFAULT_JACCARD,
    Signatures,
    embedding_pairs,
    example_key,
    example_text,
    minhash_pairs,
)
from ftlab.data.schema import ChatExample, DataError, iter_lines, parse_example
from ftlab.embed import DEFAULT_EMBEDDER

Method = Literal["both", "minhash", "embedding"]


@dataclass
class Match:
    """Example `line` is a duplicate of example `of_line` (in the other file, for leakage)."""

    line: int
    of_line: int
    method: str  # exact | same_prompt | minhash | embedding
    similarity: float

    def to_dict(self) -> dict:
        return {"line": self.line, "of_line": self.of_line, "method": self.method,
                "similarity": round(self.similarity, 4)}


@dataclass
class Loaded:
    path: Path
    raw: list[str]
    examples: list[ChatExample]


def load(path: str | Path) -> Loaded:
    """Every example with its original line text; the first malformed line raises `DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    raw, examples = [], []
    for number, text in iter_lines(path):
        examples.append(parse_example(text, path=path, line=number))
        raw.append(text if text.endswith("\n") else text + "\n")
    if not examples:
        raise DataError("the file has no examples", path=path)
    return Loaded(path, raw, examples)


def _similar_pairs(
    texts: list[str], method: Method, threshold: float, cosine: float, embedder: str, split: int | None = None
) -> list[tuple[int, int, str, float]]:
    """(i, j, method, similarity) pairs, i < j. With `split`, only pairs with i < split <= j (across files)."""
    pairs: dict[tuple[int, int], tuple[str, float]] = {}
    if method in ("both", "minhash"):
        signatures = Signatures()
        signatures.add(texts)
        for i, j, s in minhash_pairs(signatures.matrix, threshold):
            pairs[(i, j)] = ("minhash", s)
    if method in ("both", "embedding"):
        from ftlab.embed import embed

        vectors = embed(texts, embedder)
        if split is None:
            found = embedding_pairs(vectors, cosine)
        else:
            found = [(i, split + j, s) for i, j, s in embedding_pairs(vectors[:split], cosine, vectors[split:])]
        for i, j, s in found:
            pairs.setdefault((i, j), ("embedding", s))
    out = [(i, j, m, s) for (i, j), (m, s) in pairs.items()]
    if split is not None:
        out = [p for p in out if p[0] < split <= p[1]]
    return sorted(out)


@dataclass
class DedupResult:
    kept: int
    dropped: list[Match] = field(default_factory=list)
    out: Path | None = None
    dropped_path: Path | None = None

    def to_dict(self) -> dict:
        return {"kept": self.kept, "dropped": len(self.dropped), "out": str(self.out),
                "dropped_file": str(self.dropped_path), "matches": [m.to_dict() for m in self.dropped]}


def dedup_file(
    path: str | Path,
    out: str | Path,
    *,
    threshold: float = DEFAULT_JACCARD,
    cosine: float = DEFAULT_COSINE,
    method: Method = "both",
    embedder: str = DEFAULT_EMBEDDER,
    dropped_path: str | Path | None = None,
) -> DedupResult:
    """Keep the first example of each group of (near-)duplicates; write the kept lines unchanged to `out`
    and what was dropped (with the line it duplicates, the method and the similarity) to `dropped_path`
    (default: OUT with `.dropped.jsonl`). An example is dropped when it is similar to an earlier kept one."""
    data = load(path)
    texts = [example_text(e) for e in data.examples]
    by_later: dict[int, list[tuple[int, str, float]]] = {}
    for i, j, m, s in _similar_pairs(texts, method, threshold, cosine, embedder):
        by_later.setdefault(j, []).append((i, m, s))
    seen: dict[int, int] = {}
    for j, example in enumerate(data.examples):
        digest = example_key(example)
        if digest in seen:
            by_later.setdefault(j, []).insert(0, (seen[digest], "exact", 1.0))
        else:
            seen[digest] = j
    kept_flags = [True] * len(texts)
    result = DedupResult(kept=0)
    for j in range(len(texts)):
        earlier = next(((i, m, s) for i, m, s in by_later.get(j, []) if kept_flags[i]), None)
        if earlier is not None:
            kept_flags[j] = False
            i, m, s = earlier
            result.dropped.append(Match(data.examples[j].line, data.examples[i].line, m, s))
    out = Path(out)
    result.out = out
    result.dropped_path = Path(dropped_path) if dropped_path else out.with_name(out.stem + ".dropped.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        for keep, text in zip(kept_flags, data.raw, strict=True):
            if keep:
                handle.write(text)
                result.kept += 1
    index_of_line = {e.line: k for k, e in enumerate(data.examples)}
    with open(result.dropped_path, "w", encoding="utf-8") as handle:
        for match in result.dropped:
            record = {**match.to_dict(), "example": json.loads(data.raw[index_of_line[match.line]])}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return result


@dataclass
class LeakageReport:
    file_a: str
    file_b: str
    n_a: int
    n_b: int
    matches: list[Match] = field(default_factory=list)  # line in B, of_line in A

    def to_dict(self) -> dict:
        return {"a": self.file_a, "b": self.file_b, "examples_a": self.n_a, "examples_b": self.n_b,
                "pairs": [{"line_a": m.of_line, "line_b": m.line, "method": m.method,
                           "similarity": round(m.similarity, 4)} for m in self.matches]}


def leakage(
    file_a: str | Path,
    file_b: str | Path,
    *,
    threshold: float = DEFAULT_JACCARD,
    cosine: float = DEFAULT_COSINE,
    method: Method = "both",
    embedder: str = DEFAULT_EMBEDDER,
) -> LeakageReport:
    """Pairs of examples across two files (e.g. train and test) that are identical, share the prompt exactly,
    or are near-duplicates; one row per pair, the strongest reason first."""
    a, b = load(file_a), load(file_b)
    report = LeakageReport(str(file_a), str(file_b), len(a.examples), len(b.examples))
    found: dict[tuple[int, int], Match] = {}
    for prompt_only, kind in ((False, "exact"), (True, "same_prompt")):
        index: dict[int, list[int]] = {}
        for ea in a.examples:
            index.setdefault(example_key(ea, prompt_only=prompt_only), []).append(ea.line)
        for eb in b.examples:
            for line_a in index.get(example_key(eb, prompt_only=prompt_only), []):
                found.setdefault((line_a, eb.line), Match(eb.line, line_a, kind, 1.0))
    texts = [example_text(e) for e in a.examples + b.examples]
    split = len(a.examples)
    for i, j, m, s in _similar_pairs(texts, method, threshold, cosine, embedder, split=split):
        line_a, line_b = a.examples[i].line, b.examples[j - split].line
        found.setdefault((line_a, line_b), Match(line_b, line_a, m, s))
    report.matches = sorted(found.values(), key=lambda m: (m.of_line, m.line))
    return report
