"""The learning curve: how quality grows with the number of training examples.

The same recipe is trained on nested, seeded subsets of the training set (the 10 examples of the first point are
among the 25 of the second, and so on: a point differs from the one before only by the examples added) and each
model is evaluated on the same test set, with a bootstrap 95% interval of its mean score. Whether more data still
helps shows as a curve that still rises beyond its intervals.

Training is not done here (`evaluate/` does not import `train/`): the caller passes `fit(subset_file, folder)`,
which trains on the subset and returns the model to evaluate.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.data.schema import ChatExample, write_examples
from ftlab.evaluate.compare import mean_interval
from ftlab.evaluate.run import EvalOptions, evaluate_model
from ftlab.infer.refs import ModelRef

Fit = Callable[[Path, Path], ModelRef]


def parse_sizes(text: str | None) -> list[int] | None:
    """`"10,25,50"` → `[10, 25, 50]` (increasing, each ≥ 1); None for no curve."""
    if not text:
        return None
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--sizes takes whole numbers separated by commas, e.g. 10,25,50 (not '{text}')") from None
    if not sizes or any(n < 1 for n in sizes) or sizes != sorted(set(sizes)):
        raise ValueError(f"--sizes must increase and be ≥ 1, e.g. 10,25,50 (not '{text}')")
    return sizes


def check_sizes(sizes: Sequence[int], n_train: int | None) -> None:
    if n_train is None:
        raise ValueError("--sizes trains on subsets of the training set: give --train TRAIN.jsonl")
    if sizes[-1] > n_train:
        raise ValueError(f"--sizes asks for {sizes[-1]} examples, but the training set has {n_train}")


def nested_subsets(n_examples: int, sizes: Sequence[int], seed: int = 0) -> list[list[int]]:
    """For each size, that many example positions: the first `size` of one seeded shuffle, so every subset
    holds the ones before it (returned in file order)."""
    order = list(range(n_examples))
    random.Random(seed).shuffle(order)
    return [sorted(order[:size]) for size in sizes]


@dataclass
class CurvePoint:
    n: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    train_seconds: float | None = None
    model: str | None = None  # the run folder (or name) of the model trained on this subset
    lines: list[int] | None = None  # the training file's lines it trained on
    summary: dict[str, Any] | None = None


def learning_curve(train: Sequence[ChatExample], tests: Sequence[ChatExample], sizes: Sequence[int], *, fit: Fit,
                   folder: Path, metric: str, metrics: Sequence[str], options: EvalOptions, seed: int = 0,
                   start: Sequence[float | None] | None = None,
                   on_size: Callable[[int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Train on each nested subset, evaluate on `tests`, and return the points of `metric` with intervals.
    `start`: the base model's scores, drawn at 0 examples."""
    points = []
    if start is not None:
        interval = mean_interval(start, n_resamples=options.n_resamples)
        points.append(CurvePoint(0, *(interval or (None, None, None)), model="base"))
    for size, subset in zip(sizes, nested_subsets(len(train), sizes, seed), strict=True):
        if on_size is not None:
            on_size(size)
        where = folder / f"n{size}"
        where.mkdir(parents=True, exist_ok=True)
        write_examples([train[i] for i in subset], where / "train.jsonl")
        started = time.perf_counter()
        ref = fit(where / "train.jsonl", where / "run")
        seconds = time.perf_counter() - started
        result = evaluate_model(ref, tests, metrics, options)
        interval = mean_interval(result.scores(metric), n_resamples=options.n_resamples)
        points.append(CurvePoint(size, *(interval or (None, None, None)), train_seconds=seconds,
                                 model=str(ref.run_dir or ref.adapter or ref.model),
                                 lines=[train[i].line for i in subset], summary=result.summary))
    return {"metric": metric, "seed": seed, "folder": str(folder), "points": [vars(p) for p in points]}
