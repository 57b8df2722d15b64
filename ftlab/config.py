"""Where ftlab keeps its state, and the one typed training config shared by the CLI, the HTTP API and Python.

`TrainConfig` uses OpenAI's hyperparameter names where OpenAI has one (`n_epochs`, `batch_size`,
`learning_rate_multiplier`, each accepting "auto") and ftlab's own beside them. `resolve()` turns every
"auto" into a number; the resolved config is what a run records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BUNDLED_MODEL = "smollm2-135m-instruct"

# Base learning rates that a learning_rate_multiplier of 1.0 stands for. Adapters tolerate (and need) far
# larger steps than full fine-tuning.
BASE_LEARNING_RATE = {"lora": 2e-4, "dora": 2e-4, "full": 2e-5}
ADAPTERS = tuple(BASE_LEARNING_RATE)

# The OpenAI cookbook's epoch rule (chat fine-tuning data-prep notebook).
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def home() -> Path:
    """The folder all of ftlab's state lives under: `$FTLAB_HOME`, default `~/.ftlab`."""
    path = Path(os.environ.get("FTLAB_HOME", Path.home() / ".ftlab")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    return home() / "runs"


def models_dir() -> Path:
    """Where converted model weights are cached: `$FTLAB_MODELS_DIR`, default `FTLAB_HOME/models`."""
    override = os.environ.get("FTLAB_MODELS_DIR")
    return Path(override).expanduser() if override else home() / "models"


def auto_epochs(n_examples: int) -> int:
    """The cookbook rule: 3 epochs, raised so small sets see ~100 examples (max 25), lowered past 25,000."""
    if n_examples <= 0:
        raise ValueError("cannot choose epochs for an empty dataset")
    n_epochs = TARGET_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        n_epochs = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    elif n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        n_epochs = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return n_epochs


def auto_batch_size(n_examples: int) -> int:
    """OpenAI picks ~0.2% of the examples (capped at 256); on a CPU a batch of 8 uses the cores far better
    than 1, so small sets get up to 8 while still taking at least ~10 steps per epoch."""
    openai_rule = min(256, max(1, round(0.002 * n_examples)))
    return max(openai_rule, min(8, max(1, n_examples // 10)))


def upgrade_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Today's spelling of settings written before a rename: `method: lora|dora|full` (ftlab's adapter choice
    before `method` became OpenAI's method type) is `adapter`. Old run records, CLI flags and HTTP requests
    all pass through here."""
    if values.get("method") not in ADAPTERS:
        return values
    upgraded = {k: v for k, v in values.items() if k != "method"}
    adapter = upgraded.setdefault("adapter", values["method"])
    if adapter != values["method"]:
        raise ValueError(f"method '{values['method']}' (the old spelling of adapter) contradicts adapter '{adapter}'")
    return upgraded


class TrainConfig(BaseModel):
    """Every training setting. Unknown keys fail loudly."""

    model_config = ConfigDict(extra="forbid")

    model: str = BUNDLED_MODEL
    n_epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    learning_rate_multiplier: float | Literal["auto"] = "auto"
    method: Literal["supervised"] = "supervised"
    adapter: Literal["lora", "dora", "full"] = "lora"
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora_target_modules: list[str] | Literal["all-linear"] = "all-linear"
    loraplus_lr_ratio: float | None = Field(
        None, gt=0, description="LoRA+: the B matrices learn this many times faster than A (peft)."
    )
    seed: int = 42
    max_length: int = Field(2048, ge=16, description="examples longer than this are cut (and reported)")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int | Literal["epoch"] = Field(
        "epoch", description="validation loss every N steps, or once per epoch"
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after this many evaluations without a better validation loss"
    )
    precision: Literal["auto", "fp32", "bf16-autocast", "bf16"] = "auto"
    attention: Literal["auto", "eager", "sdpa"] = "auto"
    suffix: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        return upgrade_settings(data) if isinstance(data, dict) else data

    @field_validator("n_epochs", "batch_size")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1 or 'auto'")
        return value

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _positive_float(cls, value: float | str) -> float | str:
        if isinstance(value, float | int) and value <= 0:
            raise ValueError("must be greater than 0 or 'auto'")
        return value

    def resolve(self, n_train_examples: int) -> TrainConfig:
        """A copy with every "auto" replaced by the number it stands for."""
        return self.model_copy(
            update={
                "n_epochs": auto_epochs(n_train_examples) if self.n_epochs == "auto" else self.n_epochs,
                "batch_size": (
                    auto_batch_size(n_train_examples) if self.batch_size == "auto" else self.batch_size
                ),
                "learning_rate_multiplier": (
                    1.0 if self.learning_rate_multiplier == "auto" else self.learning_rate_multiplier
                ),
            }
        )

    @property
    def learning_rate(self) -> float:
        if self.learning_rate_multiplier == "auto":
            raise ValueError("resolve() the config before asking for its learning rate")
        return BASE_LEARNING_RATE[self.adapter] * float(self.learning_rate_multiplier)
