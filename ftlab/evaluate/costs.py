"""What an arm costs per request, what fine-tuning cost once, and after how many requests it pays for itself.

Measured per arm: prompt and completion tokens per request (few-shot and RAG prompts are longer), seconds per
request and completion tokens per second. Priced in two currencies:
- dollars, for a hosted model the price table knows (`ftlab/data/prices.json` or `--prices`): prompt and
  completion tokens at the base model's prices, or at the fine-tuned prices for a fine-tuned model; and for a
  local model when the machine's price per hour is given (`--usd-per-hour`);
- machine seconds, for a local model: the seconds this machine spent generating (loading not included).
Fine-tuning's one-off cost: a local run's measured training seconds (its config.json), or OpenAI's training
price on the billed tokens of the training file. The break-even volume against a prompting arm is
`training cost / (its cost per request − the fine-tuned arm's)`, or never when fine-tuned requests cost more.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ftlab.data.prices import PriceTable

CURRENCIES = ("usd", "machine_seconds")


@dataclass
class Usage:
    """What an arm's requests measured, per request (means over the test set)."""

    requests: int
    prompt_tokens: float
    completion_tokens: float
    seconds: float

    @property
    def tokens_per_second(self) -> float | None:
        return self.completion_tokens / self.seconds if self.seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.prompt_tokens + self.completion_tokens,
                "tokens_per_second": self.tokens_per_second}  # fmt: skip


@dataclass
class Cost:
    """An arm's cost per request and, for a fine-tuned arm, its one-off training cost, in each currency it has."""

    per_request: dict[str, float]
    training: dict[str, float]
    priced_as: str | None = None  # the price-table entry used, e.g. "gpt-4o-mini-2024-07-18 (fine-tuned)"
    note: str | None = None  # why a currency is missing

    def per_1000(self) -> dict[str, float]:
        return {currency: 1000 * value for currency, value in self.per_request.items()}

    def total(self, requests: int) -> dict[str, float]:
        """The cost of `requests` requests, training included."""
        return {c: requests * v + self.training.get(c, 0.0) for c, v in self.per_request.items()}

    def to_dict(self, volume: int | None = None) -> dict[str, Any]:
        data = {"per_1000_requests": self.per_1000(), "training": self.training, "priced_as": self.priced_as,
                "note": self.note}  # fmt: skip
        if volume is not None:
            data["total_for_volume"] = self.total(volume)
        return data


def request_cost(usage: Usage, *, hosted_model: str | None, fine_tuned: bool, prices: PriceTable,
                 usd_per_hour: float | None = None) -> Cost:  # fmt: skip
    """The cost of one request of an arm: a hosted model's tokens at the table's prices, a local model's
    measured seconds (and dollars at `usd_per_hour`)."""
    if hosted_model is not None:
        entry = prices.find(hosted_model)
        if entry is None:
            return Cost({}, {}, note=f"no price for '{hosted_model}' in the price table ({prices.as_of})")
        prompt_usd, completion_usd = entry.per_token(fine_tuned)
        usd = usage.prompt_tokens * prompt_usd + usage.completion_tokens * completion_usd
        return Cost({"usd": usd}, {}, priced_as=entry.name + (" (fine-tuned)" if fine_tuned else ""))
    per_request = {"machine_seconds": usage.seconds}
    if usd_per_hour is not None:
        per_request["usd"] = usage.seconds * usd_per_hour / 3600
    return Cost(per_request, {}, priced_as="local" + (f" at ${usd_per_hour}/hour" if usd_per_hour else ""))


def run_training_seconds(run_dir: Path) -> float | None:
    """How long a local training run took, from its config.json (None when it did not record both times)."""
    path = run_dir / "config.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if not record.get("started_at") or not record.get("finished_at"):
        return None
    started, finished = datetime.fromisoformat(record["started_at"]), datetime.fromisoformat(record["finished_at"])
    return (finished - started).total_seconds()


def break_even(training: float, per_request: float, other_per_request: float) -> float | None:
    """Requests after which a one-off `training` cost is repaid by a cheaper request; None: never."""
    saving = other_per_request - per_request
    return training / saving if saving > 0 else None


def break_even_table(costs: dict[str, Cost], fine_tuned: Sequence[str],
                     prompted: Sequence[str]) -> list[dict[str, Any]]:  # fmt: skip
    """For every fine-tuned arm with a known training cost and every prompted arm (few-shot or RAG on a model
    not fine-tuned) priced in the same currency: the requests after which fine-tuning is the cheaper of the two
    (None: never)."""
    rows = []
    for name in fine_tuned:
        for other in prompted:
            mine, theirs = costs[name], costs[other]
            currency = next((c for c in CURRENCIES if c in mine.training and c in mine.per_request
                             and c in theirs.per_request), None)  # fmt: skip
            if currency is None:
                continue
            saving = theirs.per_request[currency] - mine.per_request[currency]
            rows.append({"arm": name, "against": other, "currency": currency, "training": mine.training[currency],
                         "saving_per_request": saving, "requests": break_even(mine.training[currency],
                         mine.per_request[currency], theirs.per_request[currency])})  # fmt: skip
    return rows
