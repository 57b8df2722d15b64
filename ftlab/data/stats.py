"""Token and message statistics of a chat or preference JSONL file, counted with the target model's tokenizer.

A preference pair counts its prompt once and both outputs (`tokens.count_pairs`); its "trained" tokens are
both outputs, and its roles include `preferred_output` and `non_preferred_output`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ftlab.data.schema import (
    ChatExample,
    DataError,
    DataKind,
    PreferenceExample,
    data_kind,
    iter_lines,
    parse_example,
    parse_preference,
)
from ftlab.data.tokens import count_pairs, token_counter

PERCENTILES = (5, 25, 50, 75, 95, 99)
CHUNK = 256


def iter_valid_examples(path: str | Path, skipped: list[int]) -> Iterator[ChatExample | PreferenceExample]:
    """The examples that parse (chat or preference, as the file's first line tells), streaming; line numbers of
    the others are appended to `skipped`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    parse = parse_preference if data_kind(path) == "preference" else parse_example
    for number, text in iter_lines(path):
        try:
            yield parse(text, path=path, line=number)
        except DataError:
            skipped.append(number)


def iter_valid_chunks(path: str | Path, skipped: list[int]) -> Iterator[list[ChatExample] | list[PreferenceExample]]:
    """`iter_valid_examples` in lists of up to CHUNK examples: tokenizers count a batch much faster than one."""
    chunk: list[ChatExample] = []
    for example in iter_valid_examples(path, skipped):
        chunk.append(example)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def describe(values: np.ndarray) -> dict:
    """Count, sum, mean, min, max and percentiles of a 1-D array."""
    if not len(values):
        return {"count": 0}
    out = {"count": int(len(values)), "sum": int(values.sum()), "mean": round(float(values.mean()), 1),
           "min": int(values.min()), "max": int(values.max())}
    out.update({f"p{p}": int(round(v)) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True)})
    return out


@dataclass
class DatasetStats:
    path: str
    counted_with: str
    total: np.ndarray  # tokens per example (whole rendered conversation)
    trained: np.ndarray  # tokens of the trained assistant replies per example
    messages: np.ndarray  # messages per example
    by_role: dict[str, np.ndarray] = field(default_factory=dict)  # role -> tokens per example (0 when absent)
    skipped_lines: list[int] = field(default_factory=list)
    kind: DataKind = "chat"

    def to_dict(self) -> dict:
        return {
            "file": self.path,
            "kind": self.kind,
            "counted_with": self.counted_with,
            "examples": int(len(self.total)),
            "skipped_invalid_lines": self.skipped_lines,
            "tokens_per_example": describe(self.total),
            "assistant_tokens_per_example": describe(self.trained),
            "messages_per_example": describe(self.messages),
            "tokens_per_role": {role: describe(values) for role, values in self.by_role.items()},
        }


def stats_file(
    path: str | Path, model: str, progress: Callable[[int], None] | None = None
) -> DatasetStats:
    """Per-example token counts (total, per role, trained) and message counts; invalid lines are skipped."""
    counter = token_counter(model)
    kind = data_kind(path) if Path(path).is_file() else "chat"
    skipped: list[int] = []
    totals: list[int] = []
    trained: list[int] = []
    messages: list[int] = []
    roles: dict[str, list[int]] = {}
    for chunk in iter_valid_chunks(path, skipped):
        counted = count_pairs(counter, chunk) if kind == "preference" else counter.count(chunk)
        for example, counts in zip(chunk, counted, strict=True):
            index = len(totals)
            totals.append(counts.total)
            trained.append(counts.trained)
            messages.append(len(example.prompt_messages()) + 2 if kind == "preference" else len(example.messages))
            for role, n in counts.by_role.items():
                column = roles.setdefault(role, [])
                column.extend([0] * (index - len(column)))
                column.append(n)
        if progress:
            progress(len(totals))
    if not totals:
        raise DataError("no valid examples to count (run `ftlab data validate` to see why)", path=path)
    for column in roles.values():
        column.extend([0] * (len(totals) - len(column)))
    return DatasetStats(
        path=str(path),
        counted_with=counter.description,
        total=np.array(totals),
        trained=np.array(trained),
        messages=np.array(messages),
        by_role={role: np.array(values) for role, values in sorted(roles.items())},
        skipped_lines=skipped,
        kind=kind,
    )


def histogram(values: np.ndarray, bins: int = 12) -> list[tuple[float, float, int]]:
    """(low, high, count) per bin."""
    counts, edges = np.histogram(values, bins=bins)
    return [(float(edges[i]), float(edges[i + 1]), int(counts[i])) for i in range(len(counts))]


def save_histogram_png(stats: DatasetStats, path: str | Path, max_length: int | None = None) -> Path:
    """Histograms of tokens per example and assistant tokens per example, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    trained = "assistant (trained) tokens per example"
    if stats.kind == "preference":
        trained = "output tokens (both) per pair"
    for ax, values, title in ((axes[0], stats.total, "tokens per example"), (axes[1], stats.trained, trained)):
        ax.hist(values, bins=30, color="#4c72b0")
        ax.set_title(title)
        ax.set_xlabel("tokens")
        ax.set_ylabel("examples")
        for p, style in ((50, "--"), (95, ":")):
            ax.axvline(np.percentile(values, p), color="black", linestyle=style, label=f"p{p}")
        ax.legend()
    if max_length:
        axes[0].axvline(max_length, color="red", label=f"max_length {max_length}")
        axes[0].legend()
    fig.suptitle(f"{Path(stats.path).name} — {len(stats.total)} examples, {stats.counted_with}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
