"""Label files (`read_labels`), and classification-style outputs: how many assistant replies are one of the
allowed labels, and what the others look like (Unicode emoji, `:shortcode:`, a label in another spelling, free
text)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ftlab.data.near_dup import normalise
from ftlab.data.schema import DataError, iter_lines

MAX_LABEL_CHARS = 60  # longer replies are free text, never a label
MAX_LINES_KEPT = 50

SHAPES = {
    "emoji": "Unicode emoji instead of a label name",
    "shortcode": "emoji shortcodes like :smile: instead of a label name",
    "variant": "a label in another spelling (case, spaces, punctuation, quotes)",
    "unknown_label": "a short label-like answer that is not in the label set",
    "text": "free text (several words or lines) instead of a label",
    "empty": "an empty reply",
}

_SHORTCODE = re.compile(r"^(:[a-z0-9_+\-]+:\s*)+$", re.IGNORECASE)


def read_labels(path: str | Path) -> list[str]:
    """The allowed outputs of a label file, one per line, in file order.

    UTF-8 (a byte order mark is tolerated); blank lines are skipped and surrounding whitespace is stripped. A
    label written twice is a mistake in the label set (a typo, or two classes merged), so it raises `DataError`
    naming the line of the repeat; so do a missing file, a line that is not UTF-8 and a file without labels.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    first_line: dict[str, int] = {}
    for number, text in iter_lines(path):
        label = text.strip()
        if label in first_line:
            raise DataError(f"the label {label!r} is already on line {first_line[label]}: write each label once",
                            path=path, line=number)  # fmt: skip
        first_line[label] = number
    if not first_line:
        raise DataError("no labels in the file (expected one allowed output per line)", path=path)
    return list(first_line)


def _is_emoji_char(char: str) -> bool:
    return unicodedata.category(char) == "So" or char in "\u200d\ufe0f" or 0x1F3FB <= ord(char) <= 0x1F3FF


_WRAPPERS = str.maketrans("", "", "`<>")  # symbols, not punctuation, that models wrap a label in


def _canonical(text: str) -> str:
    """A label's spelling without case, width, punctuation, quotes or spaces: 'Positive.' is 'positive'."""
    return "".join(normalise(text).translate(_WRAPPERS).split())


def shape_of(output: str, labels: set[str], canonical_labels: set[str]) -> str:
    """'label' when `output` is exactly an allowed label, else the shape it has (see SHAPES)."""
    text = output.strip()
    if text in labels:
        return "label"
    if not text:
        return "empty"
    if all(_is_emoji_char(c) or c.isspace() for c in text):
        return "emoji"
    if _SHORTCODE.match(text):
        return "shortcode"
    if _canonical(text) in canonical_labels:
        return "variant"
    if "\n" in text or len(text) > MAX_LABEL_CHARS or len(text.split()) > 4:
        return "text"
    return "unknown_label"


@dataclass
class LabelReport:
    """Where the assistant outputs fall relative to a label set."""

    labels: list[str]
    inferred: bool
    n_outputs: int = 0
    distribution: Counter = field(default_factory=Counter)
    outside: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # shape -> (line, output) samples
    outside_counts: Counter = field(default_factory=Counter)

    @property
    def share_inside(self) -> float:
        return sum(self.distribution.values()) / self.n_outputs if self.n_outputs else 0.0

    def rare_labels(self) -> list[str]:
        """Labels seen in fewer than 1% of the outputs (at most 2 times in small sets), unused ones included."""
        cutoff = max(2, 0.01 * self.n_outputs)
        return [label for label in self.labels if self.distribution[label] < cutoff]

    def to_dict(self) -> dict:
        return {
            "labels": self.labels,
            "inferred": self.inferred,
            "outputs": self.n_outputs,
            "share_inside": round(self.share_inside, 4),
            "distribution": {label: self.distribution[label] for label in self.labels},
            "rare_labels": self.rare_labels(),
            "outside": {
                shape: {"count": self.outside_counts[shape], "examples": [{"line": n, "output": o} for n, o in rows]}
                for shape, rows in self.outside.items()
            },
        }


class LabelTally:
    """Collects (line, output) pairs while a file streams, then reports against given or inferred labels."""

    def __init__(self, labels: list[str] | None) -> None:
        self.labels = labels
        self.outputs: Counter = Counter()  # output -> count (label-length outputs only)
        self.first_lines: dict[str, list[int]] = {}
        self.long_outputs: list[tuple[int, str]] = []
        self.n_long = 0
        self.n = 0

    def add(self, line: int, output: str) -> None:
        self.n += 1
        text = output.strip()
        if len(text) > MAX_LABEL_CHARS:
            self.n_long += 1
            if len(self.long_outputs) < MAX_LINES_KEPT:
                self.long_outputs.append((line, text[:MAX_LABEL_CHARS] + "…"))
            return
        self.outputs[text] += 1
        lines = self.first_lines.setdefault(text, [])
        if len(lines) < MAX_LINES_KEPT:
            lines.append(line)

    def infer(self) -> list[str]:
        """Outputs that look like label names (short, with letters, not emoji) and occur at least twice."""
        candidates = [text for text, count in self.outputs.items() if count >= 2]
        words = [text for text in candidates if shape_of(text, set(), set()) == "unknown_label"]
        return sorted(words, key=lambda text: (-self.outputs[text], text))

    def report(self) -> LabelReport:
        inferred = self.labels is None
        labels = self.infer() if inferred else list(self.labels)
        label_set = set(labels)
        canonical = {_canonical(label) for label in labels}
        report = LabelReport(labels=labels, inferred=inferred, n_outputs=self.n)
        for text, count in self.outputs.items():
            shape = shape_of(text, label_set, canonical)
            if shape == "label":
                report.distribution[text] += count
                continue
            report.outside_counts[shape] += count
            samples = report.outside.setdefault(shape, [])
            for line in self.first_lines[text]:
                if len(samples) < MAX_LINES_KEPT:
                    samples.append((line, text))
        if self.n_long:
            report.outside_counts["text"] += self.n_long
            samples = report.outside.setdefault("text", [])
            samples.extend(self.long_outputs[: MAX_LINES_KEPT - len(samples)])
        for samples in report.outside.values():
            samples.sort()
        return report
