"""How long training would take on this machine, before any is spent: a short calibration run of the recipe
(tokens per second, cached per machine, model and adapter under FTLAB_HOME) times the tokens a run would train.
`ftlab data estimate` puts this next to OpenAI's price for the same file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ftlab.config import TrainConfig, home
from ftlab.data.schema import ChatExample
from ftlab.models import best_precision, default_device
from ftlab.train.recipe import machine_info, measure_throughput

CALIBRATION_EXAMPLES = 48  # the first examples of the file, so the sequence lengths are the user's
CALIBRATION_BATCH = 8
CALIBRATION_STEPS = 4


def machine_key() -> str:
    """What the throughput depends on: CPU model, cores, threads, torch version and accelerator."""
    info = machine_info(default_device())
    info.pop("python", None)
    try:
        cpu = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
        info["cpu"] = cpu.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        info["cpu"] = "unknown"
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]


def calibrated_throughput(
    model: str, examples: list[ChatExample], adapter: str = "lora", refresh: bool = False
) -> tuple[float, bool]:
    """(training tokens per second, whether it came from the cache) for `model` on this machine.

    Measured once with a short run of the trainer (`measure_throughput`) and cached in
    FTLAB_HOME/calibration.json per machine, model, adapter and weight precision.
    """
    path = home() / "calibration.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    settings = best_precision(default_device(), frozen_base=adapter != "full")  # the recipe's speed depends on it
    key = f"{machine_key()}|{model}|{adapter}|{str(settings.weights).removeprefix('torch.')}"
    if key in cache and not refresh:
        return float(cache[key]["tokens_per_second"]), True
    sample = examples[:CALIBRATION_EXAMPLES]
    tokens_per_second = measure_throughput(
        model, sample, batch_size=min(CALIBRATION_BATCH, len(sample)), steps=CALIBRATION_STEPS, adapter=adapter
    )
    cache[key] = {"tokens_per_second": tokens_per_second, "examples": len(sample), "model": model, "adapter": adapter}
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(cache, indent=2, sort_keys=True))
    tmp.replace(path)
    return tokens_per_second, False


@dataclass
class LocalTime:
    model: str
    adapter: str
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
            "adapter": self.adapter,
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
    adapter: str = "lora",
    refresh: bool = False,
) -> LocalTime:
    """How long ftlab's trainer would take on this machine: epochs × tokens ÷ calibrated tokens per second."""
    limits = {"max_length": max_length} if max_length else {}
    config = TrainConfig(model=model, n_epochs=n_epochs, adapter=adapter, **limits).resolve(len(example_tokens))
    tokens_per_second, cached = calibrated_throughput(model, examples, adapter=adapter, refresh=refresh)
    return LocalTime(
        model=model,
        adapter=adapter,
        n_examples=len(example_tokens),
        n_epochs=int(config.n_epochs),
        max_length=config.max_length,
        tokens_per_epoch=sum(min(config.max_length, n) for n in example_tokens),
        tokens_per_second=tokens_per_second,
        from_cache=cached,
    )
