"""What training on a file would cost: billed tokens and dollars for OpenAI's fine-tuning, and the tokens a
local model would train on (which `ftlab.train.calibrate.local_time` turns into minutes on this machine).

OpenAI bills every token of every example (up to the per-example training limit; longer examples are cut)
once per epoch — the rule of the OpenAI cookbook's data-prep notebook:
`billed = n_epochs × Σ min(tokens(example), limit)`, with n_epochs chosen by `ftlab.config.auto_epochs`
when "auto".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ftlab.config import BUNDLED_MODEL, auto_epochs
from ftlab.data.prices import ModelPrice, PriceTable, read_prices
from ftlab.data.schema import ChatExample, DataError

if TYPE_CHECKING:
    from ftlab.train.calibrate import LocalTime

# The training prices and per-example limits come from the one price table (ftlab/data/prices.json, dated, with
# its source): the gpt-4o and gpt-4.1 families train on 65,536 tokens per example, gpt-3.5-turbo on 16,385 (the
# cookbook's MAX_TOKENS_PER_EXAMPLE).
PRICES = read_prices()
PRICES_AS_OF = PRICES.as_of
PRICES_SOURCE = PRICES.source
COOKBOOK_MAX_TOKENS_PER_EXAMPLE = 16_385
SAMPLE_EXAMPLES = 48  # the first examples, kept for a local calibration run so its lengths are the user's


def openai_model(name: str) -> ModelPrice | None:
    """The price-table entry for an OpenAI model name or alias (`openai:` prefix allowed), else None."""
    return PRICES.find(name)


@dataclass
class OpenAICost:
    model: str
    n_examples: int
    n_epochs: int
    tokens_in_dataset: int
    billed_tokens_per_epoch: int
    n_cut: int  # examples over the per-example limit
    usd_per_1m: float

    @property
    def billed_tokens(self) -> int:
        return self.n_epochs * self.billed_tokens_per_epoch

    @property
    def usd(self) -> float:
        return self.billed_tokens * self.usd_per_1m / 1_000_000

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "examples": self.n_examples,
            "n_epochs": self.n_epochs,
            "tokens_in_dataset": self.tokens_in_dataset,
            "billed_tokens_per_epoch": self.billed_tokens_per_epoch,
            "billed_tokens": self.billed_tokens,
            "examples_cut": self.n_cut,
            "usd_per_1m_training_tokens": self.usd_per_1m,
            "usd": round(self.usd, 4),
            "prices_as_of": PRICES_AS_OF,
        }


def openai_cost(model: str, example_tokens: list[int], n_epochs: int | str = "auto",
                prices: PriceTable | None = None) -> OpenAICost:
    """Billed tokens and dollars to fine-tune `model` on examples of these token counts (prices from `prices`,
    default the shipped table)."""
    prices = prices or PRICES
    entry = prices.find(model)
    if entry is None:
        raise ValueError(f"no price for '{model}' in the price table (as of {prices.as_of}): known are "
                         f"{', '.join(prices.names())}")
    epochs = auto_epochs(len(example_tokens)) if n_epochs == "auto" else int(n_epochs)
    limit = entry.max_tokens_per_example
    return OpenAICost(
        model=entry.name,
        n_examples=len(example_tokens),
        n_epochs=epochs,
        tokens_in_dataset=sum(example_tokens),
        billed_tokens_per_epoch=sum(min(limit, n) for n in example_tokens),
        n_cut=sum(1 for n in example_tokens if n > limit),
        usd_per_1m=entry.training,
    )


# ---------------------------------------------------------------------------------------------------------
# Local training time: tokens to train / this machine's measured training throughput.
# ---------------------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------------------
# The whole estimate for a file
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Estimate:
    path: str
    n_examples: int
    skipped_lines: list[int] = field(default_factory=list)
    openai: list[OpenAICost] = field(default_factory=list)
    local_tokens: list[int] | None = None  # per example, by the local model's tokenizer and chat template
    sample: list[ChatExample] = field(default_factory=list)  # the first examples, to calibrate a local run on
    local: LocalTime | None = None  # set by the caller from `local_tokens` (ftlab.train.calibrate.local_time)

    def to_dict(self) -> dict:
        return {
            "file": self.path,
            "examples": self.n_examples,
            "skipped_invalid_lines": self.skipped_lines,
            "prices_as_of": PRICES_AS_OF,
            "openai": [cost.to_dict() for cost in self.openai],
            "local": self.local.to_dict() if self.local else None,
        }


def estimate_file(
    path: str | Path,
    models: list[str] | None = None,
    n_epochs: int | str = "auto",
    *,
    local_model: str | None = BUNDLED_MODEL,
    progress: Callable[[int], None] | None = None,
) -> Estimate:
    """OpenAI cost for each model in `models` (default: every priced model) and, unless `local_model` is None,
    the tokens of each example for the local model. Invalid lines are skipped (and listed); run `ftlab data
    validate` first."""
    from ftlab.data.stats import iter_valid_chunks
    from ftlab.data.tokens import token_counter

    models = [m.aliases[0] if m.aliases else m.name for m in PRICES.models.values()] if models is None else models
    for model in models:
        if openai_model(model) is None:
            raise ValueError(f"no price for '{model}' in ftlab's table (as of {PRICES_AS_OF}): known are "
                             f"{', '.join(PRICES.names())}")
    counters = {model: token_counter(model) for model in models}
    if local_model:
        counters[local_model] = token_counter(local_model)
    # Models sharing an encoding share one count.
    shared: dict[str, str] = {}
    for model, counter in counters.items():
        shared[model] = next((m for m in shared.values() if counters[m].description == counter.description), model)
    tokens: dict[str, list[int]] = {model: [] for model in set(shared.values())}
    skipped: list[int] = []
    sample: list[ChatExample] = []
    n = 0
    for chunk in iter_valid_chunks(path, skipped):
        n += len(chunk)
        sample += chunk[: SAMPLE_EXAMPLES - len(sample)]
        for model in tokens:
            tokens[model] += [c.total for c in counters[model].count(chunk, detail=False)]
        if progress:
            progress(n)
    if not n:
        raise DataError("no valid examples (run `ftlab data validate` to see why)", path=path)
    estimate = Estimate(path=str(path), n_examples=n, skipped_lines=skipped)
    estimate.openai = [openai_cost(model, tokens[shared[model]], n_epochs) for model in models]
    if local_model:
        estimate.local_tokens, estimate.sample = tokens[shared[local_model]], sample
    return estimate
