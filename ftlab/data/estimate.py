"""What training on a file would cost: billed tokens and dollars for OpenAI's fine-tuning, time on this machine.

The local time comes from a short calibration run of ftlab's own trainer (`ftlab.train.recipe`, imported
only when a local estimate is asked for), cached per machine and model under FTLAB_HOME.

OpenAI bills every token of every example (up to the per-example training limit; longer examples are cut)
once per epoch — the rule of the OpenAI cookbook's data-prep notebook:
`billed = n_epochs × Σ min(tokens(example), limit)`, with n_epochs chosen by `ftlab.config.auto_epochs`
when "auto".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ftlab.config import BUNDLED_MODEL, TrainConfig, auto_epochs, home
from ftlab.data.schema import ChatExample, DataError

PRICES_AS_OF = "2025-06-01"
PRICES_SOURCE = "OpenAI's published fine-tuning prices (training, per 1M tokens); check before spending"


@dataclass(frozen=True)
class OpenAIModel:
    name: str
    usd_per_1m_training_tokens: float
    max_tokens_per_example: int  # the training context: longer examples are cut to this


# Prices as of PRICES_AS_OF. The per-example limits are OpenAI's training context lengths; 16,385 is the
# cookbook's MAX_TOKENS_PER_EXAMPLE (gpt-3.5-turbo), the gpt-4o and gpt-4.1 families train on 65,536.
OPENAI_MODELS = {
    m.name: m
    for m in [
        OpenAIModel("gpt-4o-mini-2024-07-18", 3.00, 65_536),
        OpenAIModel("gpt-4o-2024-08-06", 25.00, 65_536),
        OpenAIModel("gpt-4.1-2025-04-14", 25.00, 65_536),
        OpenAIModel("gpt-4.1-mini-2025-04-14", 5.00, 65_536),
        OpenAIModel("gpt-4.1-nano-2025-04-14", 1.50, 65_536),
        OpenAIModel("gpt-3.5-turbo-0125", 8.00, 16_385),
    ]
}
OPENAI_ALIASES = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
}
COOKBOOK_MAX_TOKENS_PER_EXAMPLE = 16_385


def openai_model(name: str) -> OpenAIModel | None:
    """The price-table entry for an OpenAI model name or alias (`openai:` prefix allowed), else None."""
    name = name.removeprefix("openai:")
    return OPENAI_MODELS.get(OPENAI_ALIASES.get(name, name))


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


def openai_cost(model: str, example_tokens: list[int], n_epochs: int | str = "auto") -> OpenAICost:
    """Billed tokens and dollars to fine-tune `model` on examples of these token counts."""
    entry = openai_model(model)
    if entry is None:
        known = ", ".join(sorted(OPENAI_ALIASES) + sorted(OPENAI_MODELS))
        raise ValueError(f"no price for '{model}' in ftlab's table (as of {PRICES_AS_OF}): known are {known}")
    epochs = auto_epochs(len(example_tokens)) if n_epochs == "auto" else int(n_epochs)
    limit = entry.max_tokens_per_example
    return OpenAICost(
        model=entry.name,
        n_examples=len(example_tokens),
        n_epochs=epochs,
        tokens_in_dataset=sum(example_tokens),
        billed_tokens_per_epoch=sum(min(limit, n) for n in example_tokens),
        n_cut=sum(1 for n in example_tokens if n > limit),
        usd_per_1m=entry.usd_per_1m_training_tokens,
    )


# ---------------------------------------------------------------------------------------------------------
# Local training time: tokens to train / this machine's measured training throughput.
# ---------------------------------------------------------------------------------------------------------

CALIBRATION_EXAMPLES = 48  # the first examples of the file, so the sequence lengths are the user's
CALIBRATION_BATCH = 8
CALIBRATION_STEPS = 4


def machine_key() -> str:
    """What the throughput depends on: CPU model, cores, threads, torch version and accelerator."""
    from ftlab.models import default_device
    from ftlab.train.recipe import machine_info

    info = machine_info(default_device())
    info.pop("python", None)
    try:
        cpu = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
        info["cpu"] = cpu.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        info["cpu"] = "unknown"
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]


def calibrated_throughput(
    model: str, examples: list[ChatExample], method: str = "lora", refresh: bool = False
) -> tuple[float, bool]:
    """(training tokens per second, whether it came from the cache) for `model` on this machine.

    Measured once with a short run of the local trainer (`ftlab.train.recipe.measure_throughput`) and cached
    in FTLAB_HOME/calibration.json per machine, model and method.
    """
    from ftlab.train.recipe import measure_throughput

    path = home() / "calibration.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    key = f"{machine_key()}|{model}|{method}"
    if key in cache and not refresh:
        return float(cache[key]["tokens_per_second"]), True
    sample = examples[:CALIBRATION_EXAMPLES]
    tokens_per_second = measure_throughput(
        model, sample, batch_size=min(CALIBRATION_BATCH, len(sample)), steps=CALIBRATION_STEPS, method=method
    )
    cache[key] = {"tokens_per_second": tokens_per_second, "examples": len(sample), "model": model, "method": method}
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(cache, indent=2, sort_keys=True))
    tmp.replace(path)
    return tokens_per_second, False


@dataclass
class LocalTime:
    model: str
    method: str
    n_examples: int
    n_epochs: int
    max_length: int
    tokens_per_epoch: int  # after cutting each example to max_length, as the trainer does
    tokens_per_second: float
    from_cache: bool

    @property
    def tokens(self) -> int:
        return self.n_epochs * self.tokens_per_epoch

    @property
    def seconds(self) -> float:
        return self.tokens / self.tokens_per_second

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "method": self.method,
            "examples": self.n_examples,
            "n_epochs": self.n_epochs,
            "max_length": self.max_length,
            "tokens_per_epoch": self.tokens_per_epoch,
            "tokens": self.tokens,
            "tokens_per_second": round(self.tokens_per_second, 1),
            "calibration_cached": self.from_cache,
            "seconds": round(self.seconds, 1),
        }


def local_time(
    model: str,
    examples: list[ChatExample],
    example_tokens: list[int],
    n_epochs: int | str = "auto",
    max_length: int | None = None,
    method: str = "lora",
    refresh: bool = False,
) -> LocalTime:
    """How long ftlab's trainer would take on this machine: epochs × tokens ÷ calibrated tokens per second."""
    max_length = max_length or TrainConfig.model_fields["max_length"].default
    epochs = auto_epochs(len(example_tokens)) if n_epochs == "auto" else int(n_epochs)
    tokens_per_second, cached = calibrated_throughput(model, examples, method=method, refresh=refresh)
    return LocalTime(
        model=model,
        method=method,
        n_examples=len(example_tokens),
        n_epochs=epochs,
        max_length=max_length,
        tokens_per_epoch=sum(min(max_length, n) for n in example_tokens),
        tokens_per_second=tokens_per_second,
        from_cache=cached,
    )


# ---------------------------------------------------------------------------------------------------------
# The whole estimate for a file
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Estimate:
    path: str
    n_examples: int
    skipped_lines: list[int] = field(default_factory=list)
    openai: list[OpenAICost] = field(default_factory=list)
    local: LocalTime | None = None

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
    method: str = "lora",
    max_length: int | None = None,
    refresh: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Estimate:
    """OpenAI cost for each model in `models` (default: every priced model) and, unless `local_model` is None,
    the local training time. Invalid lines are skipped (and listed); run `ftlab data validate` first."""
    from ftlab.data.stats import CHUNK, iter_valid_examples
    from ftlab.data.tokens import token_counter

    models = list(OPENAI_ALIASES) if models is None else models
    for model in models:
        if openai_model(model) is None:
            raise ValueError(f"no price for '{model}' in ftlab's table (as of {PRICES_AS_OF}): known are "
                             f"{', '.join(OPENAI_ALIASES)} and their dated names")
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
    chunk: list[ChatExample] = []
    n = 0

    def flush() -> None:
        for model in tokens:
            tokens[model] += [c.total for c in counters[model].count(chunk, detail=False)]
        if progress:
            progress(n)
        chunk.clear()

    for example in iter_valid_examples(path, skipped):
        n += 1
        if len(sample) < CALIBRATION_EXAMPLES:
            sample.append(example)
        chunk.append(example)
        if len(chunk) >= CHUNK:
            flush()
    flush()
    if not n:
        raise DataError("no valid examples (run `ftlab data validate` to see why)", path=path)
    estimate = Estimate(path=str(path), n_examples=n, skipped_lines=skipped)
    estimate.openai = [openai_cost(model, tokens[shared[model]], n_epochs) for model in models]
    if local_model:
        estimate.local = local_time(local_model, sample, tokens[shared[local_model]], n_epochs, max_length,
                                    method, refresh)
    return estimate
