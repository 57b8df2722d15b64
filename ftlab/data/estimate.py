"""What training on a file would cost: billed tokens and dollars for OpenAI's fine-tuning, time on this machine.

OpenAI bills every token of every example (up to the per-example training limit; longer examples are cut)
once per epoch — the rule of the OpenAI cookbook's data-prep notebook:
`billed = n_epochs × Σ min(tokens(example), limit)`, with n_epochs chosen by `ftlab.config.auto_epochs`
when "auto".
"""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.config import auto_epochs

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
