"""When two texts or examples are the same, and finding near-duplicates: character n-gram MinHash and embedding
cosine similarity.

`normalise` is ftlab's one text normalisation for comparing texts, and `example_key` its one definition of an
exact duplicate: the data checks, `ftlab data dedup`, `ftlab data leakage` and synth's duplicate filter all use
them.

Character n-grams rather than words, so Japanese (written without spaces) is compared piece by piece instead
of as one giant "word". MinHash signatures come from datasketch; candidate pairs are found by LSH banding done
on numpy arrays (datasketch's `MinHashLSH` keeps Python dicts per band, over 1 KB per text, which does not fit
the bounded memory that validating 200,000 lines needs), then kept when the estimated Jaccard similarity
(the share of equal signature values) reaches the threshold. Shingles are hashed with CRC-32 rather than
datasketch's default SHA-1: the same quality for this purpose at a fraction of the time.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
import zlib
from collections.abc import Iterable

import numpy as np
import regex

from ftlab.data.schema import ChatExample, Message, PreferenceExample

NUM_PERM = 64
BANDS = 16  # 16 bands of 4 rows: pairs at Jaccard 0.8 become candidates with probability > 0.999
SHINGLE = 3
DEFAULT_JACCARD = 0.8
DEFAULT_COSINE = 0.95

_PUNCTUATION = regex.compile(r"\p{P}+")  # Unicode punctuation, 。「」、 included: `re` has no \p{P}


def normalise(text: str) -> str:
    """The form in which two texts count as the same: NFKC (full-width to half-width, etc.), case-folded,
    punctuation removed, runs of whitespace as one space. Symbols (emoji, +, =) are kept: they carry meaning."""
    text = _PUNCTUATION.sub("", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(text.split())


def all_messages(example: ChatExample | PreferenceExample) -> list[Message]:
    """Every message of an example: a preference pair's prompt, then its preferred and non-preferred output."""
    if isinstance(example, PreferenceExample):
        return [*example.input.messages, *example.preferred_output, *example.non_preferred_output]
    return example.messages


def example_key(example: ChatExample | PreferenceExample, *, prompt_only: bool = False) -> int:
    """The exact-duplicate fingerprint of an example: the same roles with the same normalised text in every
    message (system prompt included), or, with `prompt_only`, in every message before the final assistant reply
    (a preference pair's input). A 64-bit int, the smallest thing a dict can hold per example (collisions ~1e-9
    at 200k examples)."""
    messages = example.prompt_messages() if prompt_only else all_messages(example)
    data = json.dumps([[m.role, normalise(m.text)] for m in messages], ensure_ascii=False).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def example_text(example: ChatExample | PreferenceExample) -> str:
    """The text compared for duplicates: every message but the system prompt (shared by design)."""
    return "\n".join(m.text for m in all_messages(example) if m.role not in ("system", "developer"))


def shingles(text: str, size: int = SHINGLE) -> list[bytes]:
    """The distinct character n-grams of the normalised text (the whole text when shorter)."""
    text = normalise(text)
    if len(text) <= size:
        return [text.encode("utf-8")]
    return list({text[i : i + size].encode("utf-8") for i in range(len(text) - size + 1)})


class Signatures:
    """MinHash signatures (uint32, one row per text) accumulated chunk by chunk."""

    def __init__(self, num_perm: int = NUM_PERM) -> None:
        self.num_perm = num_perm
        self._chunks: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None

    def add(self, texts: Iterable[str]) -> None:
        from datasketch import MinHash

        rows = [
            m.hashvalues
            for m in MinHash.generator((shingles(t) for t in texts), num_perm=self.num_perm, hashfunc=zlib.crc32)
        ]
        if rows:
            self._chunks.append(np.asarray(rows, dtype=np.uint32))
            self._matrix = None

    @property
    def matrix(self) -> np.ndarray:
        if self._matrix is None:
            self._matrix = (
                np.concatenate(self._chunks) if self._chunks else np.zeros((0, self.num_perm), dtype=np.uint32)
            )
            self._chunks = [self._matrix]
        return self._matrix

    def __len__(self) -> int:
        return sum(len(chunk) for chunk in self._chunks)


def _band_hash(matrix: np.ndarray, band: int, bands: int) -> np.ndarray:
    """One uint64 per text for one band: a multiplicative mix of the band's rows (collisions are re-checked)."""
    rows = matrix.shape[1] // bands
    values = matrix[:, band * rows : (band + 1) * rows].astype(np.uint64)
    multipliers = np.random.default_rng(band).integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        return (values * multipliers).sum(axis=1, dtype=np.uint64)


def candidate_pairs(matrix: np.ndarray, bands: int = BANDS) -> np.ndarray:
    """Pairs (i, j), i < j, that share a band; each text is paired with the first text of its bucket."""
    n = len(matrix)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    found = []
    for band in range(bands):
        keys = _band_hash(matrix, band, bands)
        order = np.argsort(keys, kind="stable")  # stable: the first of a bucket is its smallest index
        sorted_keys = keys[order]
        new_bucket = np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]])
        bucket_start = np.maximum.accumulate(np.where(new_bucket, np.arange(n), 0))
        first = order[bucket_start][~new_bucket].astype(np.int64)
        found.append(first * n + order[~new_bucket])
    codes = np.unique(np.concatenate(found))
    return np.stack([codes // n, codes % n], axis=1)


def minhash_pairs(
    matrix: np.ndarray, threshold: float = DEFAULT_JACCARD, block: int = 65_536
) -> list[tuple[int, int, float]]:
    """Near-duplicate pairs (i, j, estimated Jaccard) with i < j, sorted. Candidates are checked in blocks."""
    pairs = candidate_pairs(matrix)
    out = []
    for start in range(0, len(pairs), block):
        part = pairs[start : start + block]
        similarity = (matrix[part[:, 0]] == matrix[part[:, 1]]).mean(axis=1)
        keep = similarity >= threshold
        out += [(int(i), int(j), float(s)) for (i, j), s in zip(part[keep], similarity[keep], strict=True)]
    return out


def embedding_pairs(
    vectors: np.ndarray, threshold: float = DEFAULT_COSINE, others: np.ndarray | None = None, block: int = 1024
) -> list[tuple[int, int, float]]:
    """Pairs whose cosine similarity reaches `threshold` (unit vectors): within `vectors` (i < j), or
    between `vectors` and `others` (i indexes vectors, j indexes others). Computed block by block."""
    out = []
    targets = vectors if others is None else others
    for start in range(0, len(vectors), block):
        sims = vectors[start : start + block] @ targets.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows, cols, strict=True):
            i = start + int(r)
            if others is None and int(c) <= i:
                continue
            out.append((i, int(c), float(sims[r, c])))
    return sorted(out)


def clusters(n: int, pairs: Iterable[tuple[int, int]]) -> list[int]:
    """For each of n items, the smallest index of its cluster (connected components of the pairs)."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [root(i) for i in range(n)]
