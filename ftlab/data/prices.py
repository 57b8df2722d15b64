"""The one price table: what a hosted model costs per token to call, to call once fine-tuned, and to fine-tune.

The prices are data, not code: `prices.json` beside this file (dated, with its source), or any file of the same
shape a user names (`ftlab compare --prices FILE`). `ftlab data estimate` reads the training prices from it,
`ftlab compare` the per-token prices of base and fine-tuned models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ftlab.data.schema import DataError

DEFAULT_PRICES = Path(__file__).with_name("prices.json")
PRICE_FIELDS = ("input", "output", "training", "fine_tuned_input", "fine_tuned_output")


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens for one hosted model, and its training context (longer examples are cut to it)."""

    name: str
    input: float
    output: float
    training: float
    fine_tuned_input: float
    fine_tuned_output: float
    max_tokens_per_example: int
    aliases: tuple[str, ...] = ()

    def per_token(self, fine_tuned: bool) -> tuple[float, float]:
        """(USD per prompt token, USD per completion token) of the base model or of a model fine-tuned from it."""
        if fine_tuned:
            return self.fine_tuned_input / 1e6, self.fine_tuned_output / 1e6
        return self.input / 1e6, self.output / 1e6


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    source: str
    models: dict[str, ModelPrice] = field(default_factory=dict)
    path: str = ""

    def find(self, name: str) -> ModelPrice | None:
        """The entry for a model name, alias or dated name; `openai:` is ignored and a fine-tuned model's name
        (`ft:BASE:ORG:SUFFIX:ID`) finds its base's entry."""
        name = name.removeprefix("openai:")
        if name.startswith("ft:"):
            name = name.split(":")[1] if name.count(":") >= 2 else ""
        if name in self.models:
            return self.models[name]
        return next((m for m in self.models.values() if name in m.aliases), None)

    def names(self) -> list[str]:
        return sorted({alias for m in self.models.values() for alias in m.aliases} | set(self.models))

    def describe(self) -> dict:
        return {"as_of": self.as_of, "source": self.source, "path": self.path}


def is_fine_tuned_name(model: str) -> bool:
    """Whether a hosted model's name is a fine-tuned model's (OpenAI writes them `ft:BASE:ORG:SUFFIX:ID`)."""
    return model.removeprefix("openai:").startswith("ft:")


def read_prices(path: str | Path | None = None) -> PriceTable:
    """The price table in `path` (default: the one shipped with ftlab). A missing or malformed entry is a
    DataError naming the file and the field."""
    path = Path(path) if path else DEFAULT_PRICES
    return _read(str(path.resolve()))


@cache
def _read(path: str) -> PriceTable:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read the price table ({exc.strerror})", path=path) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"not JSON: {exc.msg}", path=path, line=exc.lineno) from None
    for key in ("as_of", "source", "models"):
        if key not in raw:
            raise DataError("a price table needs as_of (its date), source and models", path=path, field=key)
    models = {}
    for name, entry in raw["models"].items():
        missing = [key for key in (*PRICE_FIELDS, "max_tokens_per_example") if key not in entry]
        if missing:
            raise DataError(f"model '{name}' has no {', '.join(missing)}", path=path, field=f"models.{name}")
        values = {key: float(entry[key]) for key in PRICE_FIELDS}
        models[name] = ModelPrice(name, **values, max_tokens_per_example=int(entry["max_tokens_per_example"]),
                                  aliases=tuple(entry.get("aliases", ())))  # fmt: skip
    return PriceTable(as_of=str(raw["as_of"]), source=str(raw["source"]), models=models, path=path)
