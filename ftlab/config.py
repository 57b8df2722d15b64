"""Where ftlab keeps its state, and the one typed training config shared by the CLI, the HTTP API and Python.

`TrainConfig` uses OpenAI's hyperparameter names where OpenAI has one (`n_epochs`, `batch_size`,
`learning_rate_multiplier`, each accepting "auto"; `beta` for method dpo) and ftlab's own beside them.
`resolve()` turns every "auto" into a number; the resolved config is what a run records.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic_core import ErrorDetails

BUNDLED_MODEL = "smollm2-135m-instruct"

# Base learning rates that a learning_rate_multiplier of 1.0 stands for. Adapters tolerate (and need) far
# larger steps than full fine-tuning.
BASE_LEARNING_RATE = {"lora": 2e-4, "dora": 2e-4, "full": 2e-5}
ADAPTERS = tuple(BASE_LEARNING_RATE)
SUFFIX_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"

# The OpenAI cookbook's epoch rule (chat fine-tuning data-prep notebook).
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25
DEFAULT_BETA = 0.1  # DPO's beta when "auto": the DPO paper's and TRL's default

# How "auto" resolves the settings a rule sets (`AUTO_SETTINGS`): "wide" (`auto_wide`, the default: a rank-64
# adapter with LoRA+, the best trial of a recipes sweep turned into a rule), "steps" (`auto_by_steps`, the default
# before) or "cookbook" (OpenAI's epochs, x1). `benchmarks/auto_defaults.py` measured them on three small sets of
# real shape, scored on their test splits: "steps" beat "cookbook" on each (recipes set-F1 0.68 -> 0.78, 60 intents
# accuracy 0.12 -> 0.33, tickets chrF 0.11 -> 0.19); "wide" beat "steps" on recipes (200 held-out: set-F1 0.825 ->
# 0.866, JSON valid 0.950 -> 0.980) and tickets (chrF 0.193 -> 0.254) and tied on intents (0.333, valid label
# 0.475 -> 0.492). AUTO_RULE is the one line that switches every front door (CLI, HTTP, Python) to another rule.
AutoRule = Literal["cookbook", "steps", "wide"]
AUTO_RULES: tuple[AutoRule, ...] = ("cookbook", "steps", "wide")
AUTO_RULE: AutoRule = "wide"
AUTO_SETTINGS = ("n_epochs", "learning_rate_multiplier", "lora_r", "lora_alpha", "lora_dropout", "loraplus_lr_ratio")
TARGET_STEPS = 60  # optimizer steps a small set needs to learn its reply format (and to stop at the end of it)
MAX_STEPS_EPOCHS = 10
SMALL_SET, LARGE_SET = 1_000, 10_000  # adapters get x2.5 the base learning rate up to SMALL_SET, x1 from LARGE_SET
SMALL_SET_LR_MULTIPLIER = 2.5
LORA_R, ALPHA_PER_RANK = 16, 2  # "auto" alpha is twice the rank (scale 2) whichever rank is given
# The adapter of "steps" and "cookbook": rank 16, no dropout, plain LoRA. Runs measured with it name it in full.
PLAIN_LORA = {"lora_r": LORA_R, "lora_alpha": ALPHA_PER_RANK * LORA_R, "lora_dropout": 0.0, "loraplus_lr_ratio": None}
# "wide": trial 2 of the 20-trial recipes study (lr x0.37, r 64, LoRA+ 4, dropout 0.08, 7 epochs = 91 steps).
WIDE_TARGET_STEPS, WIDE_LORA_R, WIDE_LR_MULTIPLIER, WIDE_LORAPLUS_RATIO, WIDE_DROPOUT = 90, 64, 0.37, 4.0, 0.08

# What a run can pick its best checkpoint by (`select_by`) besides validation loss: the per-example scores of
# `ftlab eval` (`ftlab.data.scoring`), averaged over replies generated for the validation set (higher is better),
# or `judge:MODEL`, a score judge's verdict. `valid_label_rate` is another spelling of `valid_label`. The default,
# "auto", is the JSON metric when the validation replies are JSON (`ftlab.data.scoring.auto_selection_metric`; the
# recipe chooses, having read them, and scores a seeded sample sized by the training set) and validation loss
# otherwise: on 100 real recipes it named epoch 5 where the loss named epoch 3 (set-F1 0.811 -> 0.825 on 200
# held-out recipes: within the noise, a 95% interval of -0.011 to +0.038).
VALIDATION_LOSS = "valid_loss"
SELECT_AUTO = "auto"
TASK_METRICS = ("exact", "contains", "json_valid", "set_f1", "field_acc", "chrf", "valid_label")
METRIC_SPELLINGS = {"valid_label_rate": "valid_label"}
JUDGE_PREFIX = "judge:"


def selection_column(select_by: str) -> str:
    """The metrics.csv column a `select_by` value is read from: valid_loss, a task metric's name, or `judge`."""
    if select_by == SELECT_AUTO:  # not chosen yet (or a DPO run's): validation loss
        return VALIDATION_LOSS
    return "judge" if select_by.startswith(JUDGE_PREFIX) else select_by


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


def epochs_for_steps(n_examples: int, batch_size: int, target_steps: int) -> int:
    """At least the cookbook's epochs, more until the run takes `target_steps` optimizer steps (at most
    MAX_STEPS_EPOCHS): the epoch count of both the "steps" and the "wide" rule."""
    steps_per_epoch = math.ceil(n_examples / batch_size)
    return max(auto_epochs(n_examples), min(MAX_STEPS_EPOCHS, math.ceil(target_steps / steps_per_epoch)))


def auto_by_steps(n_examples: int, batch_size: int, adapter: str = "lora") -> tuple[int, float]:
    """The "auto" rule (AUTO_RULE "steps"): (n_epochs, learning_rate_multiplier) from the number of optimizer steps.

    The cookbook's epochs leave a small set few steps (80 examples in batches of 8: 30), too few for an adapter to
    learn where a reply ends — measured on real recipes, a quarter of the replies then repeat an ingredient until
    the length cap (set-F1 0.52) while 5 epochs at x2.5 reach 0.80. So: at least the cookbook's epochs, more until
    the run has TARGET_STEPS steps (at most MAX_STEPS_EPOCHS), and an adapter's learning rate x2.5 on sets up to
    SMALL_SET examples, easing (log-linearly) to x1 at LARGE_SET. Full fine-tuning keeps x1."""
    n_epochs = epochs_for_steps(n_examples, batch_size, TARGET_STEPS)
    if adapter == "full" or n_examples >= LARGE_SET:
        return n_epochs, 1.0
    if n_examples <= SMALL_SET:
        return n_epochs, SMALL_SET_LR_MULTIPLIER
    eased = math.log(LARGE_SET / n_examples) / math.log(LARGE_SET / SMALL_SET)  # 1 at SMALL_SET, 0 at LARGE_SET
    return n_epochs, round(1.0 + (SMALL_SET_LR_MULTIPLIER - 1.0) * eased, 3)


def auto_wide(n_examples: int, batch_size: int) -> dict[str, Any]:
    """The "wide" rule's settings: an adapter of rank WIDE_LORA_R (alpha twice that) whose B matrices learn
    WIDE_LORAPLUS_RATIO times faster than A (LoRA+), at a base rate of x0.37 and dropout 0.08, for at least the
    cookbook's epochs and more until WIDE_TARGET_STEPS optimizer steps (at most MAX_STEPS_EPOCHS). On 100 real
    recipes (7 epochs) it scored set-F1 0.866 with 0.980 valid JSON on 200 held-out recipes, against "steps'"
    0.825 / 0.950; measured on sets of 80 to 240 examples only."""
    n_epochs = epochs_for_steps(n_examples, batch_size, WIDE_TARGET_STEPS)
    return {"n_epochs": n_epochs, "learning_rate_multiplier": WIDE_LR_MULTIPLIER, "lora_r": WIDE_LORA_R,
            "lora_dropout": WIDE_DROPOUT, "loraplus_lr_ratio": WIDE_LORAPLUS_RATIO}  # fmt: skip


def auto_settings(
    n_examples: int, batch_size: int, adapter: str = "lora", method: str = "supervised", rule: AutoRule | None = None
) -> dict[str, Any]:
    """What "auto" stands for under `rule` (default AUTO_RULE), for AUTO_SETTINGS; `TrainConfig.resolve` makes an
    "auto" lora_alpha ALPHA_PER_RANK times whichever rank the run gets. "wide" was measured on supervised adapters
    only: full fine-tuning and DPO get "steps" under it."""
    rule = rule or AUTO_RULE
    if rule == "wide" and adapter != "full" and method == "supervised":
        return auto_wide(n_examples, batch_size)
    n_epochs, multiplier = (auto_epochs(n_examples), 1.0) if rule == "cookbook" else auto_by_steps(
        n_examples, batch_size, adapter)
    return {"n_epochs": n_epochs, "learning_rate_multiplier": multiplier, **PLAIN_LORA}


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


def _or_word(word: str, kind: Any, **constraints: Any) -> Any:
    """`kind` within `constraints`, or the word (`"auto"`, `"epoch"`, `"all-linear"`). Only the branch the value
    is meant for is validated, so a bad value gets one message ("less than or equal to 50"), not one per branch."""
    return Annotated[
        Annotated[kind, Field(**constraints), Tag(kind.__name__)] | Annotated[Literal[word], Tag(word)],
        Discriminator(lambda value: word if value == word else kind.__name__),
    ]


class TrainConfig(BaseModel):
    """Every training setting, each with its one default, range and description: the `ftlab train` flags and
    the HTTP `hyperparameters` are derived from these fields. Unknown keys and non-finite numbers fail loudly;
    the limits on epochs and batch size are OpenAI's."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str = Field(BUNDLED_MODEL, min_length=1, description="Base model: bundled name, local folder or hub id.")
    n_epochs: _or_word("auto", int, ge=1, le=50) = Field(
        "auto",
        description="Passes over the training data; 'auto': OpenAI's cookbook rule, more until a small set takes "
        f"{WIDE_TARGET_STEPS} optimizer steps (at most {MAX_STEPS_EPOCHS}; DPO and full fine-tuning: {TARGET_STEPS}).",
    )
    batch_size: _or_word("auto", int, ge=1, le=256) = Field(
        "auto", description="Examples per optimizer step; 'auto' is ~0.2% of the examples, up to 8 on small sets."
    )
    learning_rate_multiplier: _or_word("auto", float, gt=0, le=100) = Field(
        "auto",
        description="Multiplies the adapter's base learning rate (LoRA/DoRA 2e-4, full 2e-5); 'auto' is "
        f"{WIDE_LR_MULTIPLIER} for a supervised adapter (with LoRA+), for DPO {SMALL_SET_LR_MULTIPLIER} on up to "
        "1,000 examples easing to 1 at 10,000, for full fine-tuning 1.",
    )
    method: Literal["supervised", "dpo"] = Field(
        "supervised", description="OpenAI's fine-tuning method: supervised (chat data) or dpo (preference pairs); "
        "'lora', 'dora' or 'full' here are the old spelling of adapter."
    )  # fmt: skip
    beta: _or_word("auto", float, gt=0, le=10) = Field(
        "auto", description="DPO: how strongly the tuned model is held to its starting point (higher: closer); "
        f"'auto' is {DEFAULT_BETA}. Method dpo only."
    )  # fmt: skip
    init_adapter: str | None = Field(
        None, min_length=1, description="DPO: start from this fine-tuned model's adapter (an adapter folder, "
        "run:DIR@best|final|epoch-N or an ft: name) instead of a fresh one; it is also the reference the pairs "
        "are scored against. Method dpo only."
    )  # fmt: skip
    adapter: Literal["lora", "dora", "full"] = Field(
        "lora", description="What is trained: a LoRA or DoRA adapter on the frozen base, or every weight (full)."
    )
    lora_r: _or_word("auto", int, ge=1, le=1024) = Field(
        "auto", description=f"LoRA rank; 'auto' is {WIDE_LORA_R} for supervised runs, {LORA_R} for DPO."
    )
    lora_alpha: _or_word("auto", int, ge=1, le=4096) = Field(
        "auto", description=f"LoRA alpha; the adapter's scale is alpha / r. 'auto' is {ALPHA_PER_RANK} × r."
    )
    lora_dropout: _or_word("auto", float, ge=0, lt=1) = Field(
        "auto", description=f"Dropout on the adapter's input; 'auto' is {WIDE_DROPOUT} for supervised runs, 0 for DPO."
    )
    lora_target_modules: _or_word("all-linear", list[str], min_length=1) = Field(
        "all-linear", description="Modules that get an adapter: all-linear, or a list of names such as q_proj."
    )
    loraplus_lr_ratio: _or_word("auto", float, gt=0, le=1000) | None = Field(
        "auto", description="LoRA+: the B matrices learn this many times faster than A (peft); 1 or null: plain "
        f"LoRA. 'auto' is {WIDE_LORAPLUS_RATIO:g} for supervised runs, plain LoRA for DPO."
    )
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Seed of the adapter's initialisation and the batch order.")
    max_length: int = Field(
        2048, ge=16, le=131_072, description="Examples longer than this many tokens are cut (and reported)."
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of the steps the learning rate warms up over.")
    weight_decay: float = Field(0.0, ge=0, le=10, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradients are clipped to this norm.")
    eval_every: _or_word("epoch", int, ge=1) = Field(
        "epoch", description="Validation loss every N steps, or once per epoch."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without a better value of select_by."
    )
    select_by: str = Field(
        SELECT_AUTO, description="What names the best checkpoint and what early stopping watches: valid_loss, or a "
        "task metric scored at each evaluation on replies generated for the validation set: "
        f"{', '.join(TASK_METRICS)} (valid_label_rate; needs labels) or judge:MODEL (a 0-10 score judge). 'auto': "
        "set_f1 when the validation replies are JSON lists, field_acc when they are JSON objects (scored on a seeded "
        "sample: a quarter as many as the training examples, 20 to 200), valid_loss otherwise."
    )
    labels: list[str] | None = Field(
        None, min_length=1, description="The allowed replies (a label set), for select_by valid_label; on the "
        "command line a LABELS.txt file, one label per line."
    )
    precision: Literal["auto", "fp32", "bf16-autocast", "bf16"] = Field(
        "auto", description="Weight and compute precision; 'auto' picks the fastest measured for the device."
    )
    attention: Literal["auto", "eager", "sdpa"] = Field(
        "auto", description="Attention kernel; 'auto' is eager on a CPU and sdpa on a GPU."
    )
    suffix: str | None = Field(
        None, pattern=SUFFIX_PATTERN, description="Up to 64 letters, digits, '.', '_' or '-' naming the fine-tuned "
        "model (ft:BASE:ftlab:SUFFIX:ID)."
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        return upgrade_settings(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _method_settings(self) -> TrainConfig:
        if self.method != "dpo":
            dpo_only = [name for name in ("beta", "init_adapter") if getattr(self, name) not in ("auto", None)]
            if dpo_only:
                raise ValueError(f"{' and '.join(dpo_only)} {'is a setting' if len(dpo_only) == 1 else 'are settings'}"
                                 " of method dpo, not of method supervised")  # fmt: skip
        elif self.select_by not in (VALIDATION_LOSS, SELECT_AUTO):
            raise ValueError(f"select_by {self.select_by} scores replies of supervised runs; method dpo selects by "
                             "valid_loss (its preference loss)")
        elif self.adapter == "full":
            raise ValueError("method dpo trains an adapter (lora or dora): its reference, the model the pairs are "
                             "scored against, is the model with the adapter as it started, where full fine-tuning "
                             "would need a second copy of the whole model")  # fmt: skip
        return self

    @field_validator("select_by")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        value = METRIC_SPELLINGS.get(value.strip(), value.strip())
        judge = value.startswith(JUDGE_PREFIX) and value.removeprefix(JUDGE_PREFIX).strip()
        if value in (SELECT_AUTO, VALIDATION_LOSS) or value in TASK_METRICS or judge:
            return value
        names = [SELECT_AUTO, VALIDATION_LOSS, *TASK_METRICS, *METRIC_SPELLINGS]
        close = difflib.get_close_matches(value, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown metric{hint}: choose {', '.join(names)} or judge:MODEL")

    @model_validator(mode="after")
    def _labels_for_label_metrics(self) -> TrainConfig:
        if self.select_by == "valid_label" and not self.labels:
            raise ValueError("select_by valid_label needs the label set: labels (--labels LABELS.txt)")
        return self

    @property
    def selection_metric(self) -> str:
        """The metrics.csv column `select_by` is read from (see `selection_column`)."""
        return selection_column(self.select_by)

    @property
    def selects_by_task_metric(self) -> bool:
        """Whether each evaluation generates replies for the validation set and scores them (higher is better);
        not for "auto" until the recipe has chosen what it stands for."""
        return self.selection_metric != VALIDATION_LOSS

    def resolve(self, n_train_examples: int, rule: AutoRule | None = None) -> TrainConfig:
        """A copy with every "auto" replaced by the value it stands for under `rule` (default AUTO_RULE; see
        `auto_settings`): the batch size by `auto_batch_size`, lora_alpha twice the rank, beta DEFAULT_BETA."""
        batch_size = auto_batch_size(n_train_examples) if self.batch_size == "auto" else self.batch_size
        chosen = auto_settings(n_train_examples, int(batch_size), self.adapter, self.method, rule)
        update = {name: value for name, value in chosen.items() if getattr(self, name) == "auto"}
        lora_r = update.get("lora_r", self.lora_r)
        if self.lora_alpha == "auto":
            update["lora_alpha"] = ALPHA_PER_RANK * lora_r
        if self.beta == "auto" and self.method == "dpo":
            update["beta"] = DEFAULT_BETA
        return self.model_copy(update={**update, "batch_size": batch_size})

    @property
    def learning_rate(self) -> float:
        if self.learning_rate_multiplier == "auto":
            raise ValueError("resolve() the config before asking for its learning rate")
        return BASE_LEARNING_RATE[self.adapter] * float(self.learning_rate_multiplier)


class ConfigFileError(ValueError):
    """A config file that cannot be read as settings; the message names the file."""


def read_settings(path: Path) -> dict[str, Any]:
    """The settings in a YAML, TOML or JSON file (by its extension), not yet validated: `TrainConfig` checks
    the names and values. A run folder's own config.json holds its resolved settings under `config`, so
    `--config RUN/config.json` repeats that run."""
    readers = {".yaml": yaml.safe_load, ".yml": yaml.safe_load, ".toml": tomllib.loads, ".json": json.loads}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise ConfigFileError(f"{path}: a config file is YAML (.yaml, .yml), TOML (.toml) or JSON (.json)")
    try:
        data = reader(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: cannot read it: {exc}") from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigFileError(f"{path}: not valid {path.suffix.lstrip('.').upper()}: {exc}") from None
    if data is None:  # an empty YAML file
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected setting names and values, got a {type(data).__name__}")
    if isinstance(data.get("config"), dict):  # a run record: {"config": {...}, "machine": {...}, ...}
        return data["config"]
    return data


def explain(error: ErrorDetails) -> tuple[str, str]:
    """(setting, message) for one validation error of `TrainConfig`: what is wrong, quoting the value."""
    if not error["loc"]:  # a check across settings
        return "", error["msg"].removeprefix("Value error, ")
    setting = str(error["loc"][0])
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(setting, TrainConfig.model_fields, n=1)
        return setting, "unknown setting" + (f" (did you mean '{close[0]}'?)" if close else "")
    return setting, f"{error['msg'].removeprefix('Value error, ')} (got {error['input']!r})"
