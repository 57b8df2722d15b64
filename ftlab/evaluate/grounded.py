"""Groundedness for knowledge tasks: the identifiers, numbers and names in an answer that appear in neither the
question, the passages retrieved for it nor the reference answer are counted as invented.

This measures the failure people meet when they fine-tune on facts: a model that cites a ticket id, a version
or a setting nobody gave it. What counts as a claim:
- numbers: `2.4.1`, `89,478,485`, `64` (thousands separators ignored when matching)
- identifiers: words with a digit (`KES-1131`, `s3`, `E-M10`), an underscore (`KESTREL_LOG_LEVEL`), an inner dot
  or slash (`storage.s3.config`), inner capitals (`MinIO`, `SameSite`) or all capitals (`HEIC`)
- names: capitalised words that do not start a sentence, a line, a quotation or a list item (`Olympus`)
Matching is case-insensitive and by substring, so `KES-1131` is grounded by a passage that says `KES-1131.md`.
Few-shot examples shown in the prompt are not sources: an id copied from another question's answer is not
grounded in this one. A heuristic, on purpose simple: it names what it counted, per example, to be checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"\w(?:[\w.,/:'-]*\w)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE_END = re.compile(r"(?:^|[.!?:;\n\[\]({\"'`*>•-])\s*$")


def _is_identifier(word: str) -> bool:
    has_letter = any(c.isalpha() for c in word)
    if not has_letter:
        return False
    return (any(c.isdigit() for c in word) or "_" in word or bool(re.search(r"\w[./]\w", word))
            or any(c.isupper() for c in word[1:]) and any(c.islower() for c in word)
            or (len(word) >= 2 and word.isupper()))  # fmt: skip


def _starts_sentence(text: str, match: re.Match[str]) -> bool:
    return bool(_SENTENCE_END.search(text[: match.start()]))


def claims(text: str) -> list[str]:
    """The numbers, identifiers and names an answer states, in order, each once."""
    found: dict[str, None] = {}
    for match in _WORD.finditer(text):
        word = match.group().rstrip(".,:/'-")
        name = len(word) >= 2 and word[0].isupper() and word[1:].islower() and not _starts_sentence(text, match)
        if _NUMBER.fullmatch(word) or _is_identifier(word) or name:
            found[word] = None
    return list(found)


def _plain(text: str) -> str:
    return text.casefold()


def invented(answer: str, sources: Sequence[str]) -> list[str]:
    """The claims of `answer` found in none of `sources` (numbers also match without thousands separators)."""
    corpus = _plain("\n".join(sources))
    bare = corpus.replace(",", "")
    missing = []
    for claim in claims(answer):
        plain = _plain(claim)
        if plain in corpus or (_NUMBER.fullmatch(claim) and plain.replace(",", "") in bare):
            continue
        missing.append(claim)
    return missing
