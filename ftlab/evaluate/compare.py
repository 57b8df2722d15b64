"""Is model B better than model A on this test set? Paired bootstrap over the same examples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class PairedDifference:
    """mean(B) − mean(A) over examples scored for both, with a paired-bootstrap confidence interval."""

    metric: str
    a: str
    b: str
    n: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    confidence: float
    p_b_not_better: float  # share of resamples where B's mean is not above A's (one-sided bootstrap p-value)

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def bootstrap_means(values: Sequence[float], *, n_resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """The means of `n_resamples` resamples of `values` drawn with replacement (in bounded memory)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError("bootstrapping needs a non-empty list of scores")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // len(values))  # bounded memory for large test sets
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        means[start : start + size] = values[rng.integers(0, len(values), size=(size, len(values)))].mean(axis=1)
    return means


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float, float]:
    """(difference, ci_low, ci_high, p) for mean(b − a): resample examples with replacement, keeping pairs
    together, and take the percentile interval of the resampled mean differences."""
    if len(a) != len(b):
        raise ValueError("paired_bootstrap needs two equally long, non-empty score lists")
    diffs = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    means = bootstrap_means(diffs, n_resamples=n_resamples, seed=seed)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(diffs.mean()), float(low), float(high), float((means <= 0).mean())


def mean_interval(
    values: Sequence[float | None], *, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float] | None:
    """(mean, ci_low, ci_high): the percentile bootstrap interval of one model's mean score over the examples
    it has a score for (None where a metric did not apply); None when it has none."""
    scored = [v for v in values if v is not None]
    if not scored:
        return None
    means = bootstrap_means(scored, n_resamples=n_resamples, seed=seed)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(np.mean(scored)), float(low), float(high)


def compare_scores(
    metric: str, name_a: str, scores_a: Sequence[float | None], name_b: str, scores_b: Sequence[float | None],
    *, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0,
) -> PairedDifference | None:
    """Paired difference on the examples both models have a score for (None where a metric did not apply)."""
    pairs = [(x, y) for x, y in zip(scores_a, scores_b, strict=True) if x is not None and y is not None]
    if not pairs:
        return None
    a, b = zip(*pairs, strict=True)
    difference, low, high, p = paired_bootstrap(a, b, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return PairedDifference(metric, name_a, name_b, len(pairs), float(np.mean(a)), float(np.mean(b)), difference,
                            low, high, confidence, p)
