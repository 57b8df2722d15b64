"""The supervised fine-tuning recipe: chat JSONL in, LoRA/DoRA/full checkpoints, metrics and plots out.

Read it top to bottom — `train()` is the whole recipe: load data → resolve "auto" → load model and adapter →
loop over epochs of length-grouped batches → validate (loss, and with `select_by` a task metric scored on replies
generated for the validation set) → checkpoint → metrics and plot. No trainer class and no callbacks beyond one
`on_event` function (and `score_validation`, a plain function for a metric only a front door can compute).
What makes it fast on a CPU (measured, see shared/MEASUREMENTS.md): fp32 weights with bf16 autocast, eager
attention, batches grouped by length (little padding), and the output layer computed only at positions whose
next token is trained. Several processes (GPUs, or CPU processes over gloo) work through `accelerate launch` or
`torchrun`: `batch_size` stays the examples per optimizer step, each process trains its share of every batch,
the loss is weighted by trained tokens across all of them, and only the first process writes and reports — so a
run's curve does not depend on how many processes trained it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import random
import resource
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, broadcast, broadcast_object_list, gather_object, reduce
from torch import nn

import ftlab
from ftlab.config import SELECT_AUTO, VALIDATION_LOSS, TrainConfig, runs_dir
from ftlab.data.reply_format import REPLY_SCHEMA_FILE, learned_reply_schema, write_reply_schema
from ftlab.data.schema import ChatExample, DataError, file_sha256, read_examples, template_messages
from ftlab.data.scoring import applies_to, auto_selection_metric, auto_selection_size, mean_score
from ftlab.models import Precision, best_precision, load_model, load_tokenizer, set_threads
from ftlab.train.tokenize import IGNORE_INDEX, Tokenized, tokenize_example

if TYPE_CHECKING:
    from ftlab.infer.generate import ChatModel

METRIC_COLUMNS = ["step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy"]
RESUME_DIR = "resume"  # accelerate's state to resume from, inside the newest checkpoint folder
# Validation replies are generated this many at a time: fewer, wider batches mean fewer sequential decode steps
# (20 recipe replies: 61 s in batches of 8, 41 s in one, 1.5x, the same replies; `benchmarks/validation_replies.py`).
VALIDATION_REPLY_BATCH = 32


@dataclass
class TrainEvent:
    """Something worth telling the user or the service: type is message, metrics, checkpoint or warning."""

    type: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Checkpoint:
    step: int
    epoch: int
    path: Path
    metrics: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "path": str(self.path), "metrics": self.metrics}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(data["step"], data["epoch"], Path(data["path"]), data["metrics"])


@dataclass
class TrainResult:
    output_dir: Path
    config: TrainConfig
    dataset_sha256: dict[str, str]
    checkpoints: list[Checkpoint]
    final_dir: Path
    metrics_csv: Path
    trained_tokens: int
    status: str  # "succeeded" or "cancelled"
    best_checkpoint: Checkpoint | None
    stopped_early: bool = False
    peak_memory_mib: dict[str, list[float]] = field(default_factory=dict)  # per process: "rss", and "gpu" on CUDA


@dataclass
class LoopState:
    """Where the loop stands. accelerate saves it with the optimizer, scheduler and RNG states
    (`register_for_checkpointing`), so a resumed run goes on exactly as the uninterrupted one would."""

    epoch: int = 0  # epochs completed
    step: int = 0
    trained_tokens: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    evals: list[tuple[float, float]] = field(default_factory=list)  # (train loss, validation loss)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    best: float | None = None  # the best value of select_by so far
    patience_left: int | None = None  # evaluations without a better value of select_by before early stopping
    stopped_early: bool = False

    def state_dict(self) -> dict[str, Any]:
        return {**vars(self), "checkpoints": [c.to_dict() for c in self.checkpoints]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "best_valid" in state:  # saved before select_by, when the best value was always a validation loss
            best = state.pop("best_valid")
            state["best"] = None if best == math.inf else best
        for key, value in state.items():
            setattr(self, key, value)
        self.checkpoints = [Checkpoint.from_dict(c) for c in state["checkpoints"]]


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the run has diverged and stops instead of writing a model."""


class LabelledLMLoss(nn.Module):
    """Cross-entropy over the trained tokens only, computing the output layer just at those positions.

    A full LM head over every position costs vocab × hidden per token (49k × 576 here, more than a layer);
    selecting the positions first saves most of it (measured 2.9× on a 262k-vocabulary model). Wrapping it
    as a module keeps the forward pass inside DDP when accelerate runs several processes.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        causal = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.decoder = causal.get_decoder()
        self.lm_head = causal.get_output_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
        hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        targets = labels[:, 1:]
        selected = targets != IGNORE_INDEX
        logits = self.lm_head(hidden[:, :-1][selected]).float()
        wanted = targets[selected]
        loss = nn.functional.cross_entropy(logits, wanted, reduction="sum")
        correct = (logits.argmax(-1) == wanted).sum()
        return loss, correct, selected.sum()


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------


def tokenize_file(tokenizer, path: Path, max_length: int) -> tuple[list[ChatExample], list[Tokenized]]:
    """Read and tokenise a chat JSONL file; examples that end up with no trained token are an error."""
    examples = read_examples(path)
    tokenized = []
    for example in examples:
        item = tokenize_example(tokenizer, example, max_length)
        if item.n_trained == 0:
            raise DataError(
                "no trained tokens: every assistant message has weight 0 or was cut by max_length",
                path=path,
                line=example.line,
            )
        tokenized.append(item)
    return examples, tokenized


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of similar length (so little compute goes to padding), in a seeded random order.

    Shuffle, sort within windows of 50 batches, cut into batches, shuffle the batches: randomness across
    the epoch, near-uniform lengths within a batch. Deterministic for a given seed and epoch.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    grouped = []
    for start in range(0, len(order), window):
        grouped.extend(sorted(order[start : start + window], key=lambda i: lengths[i], reverse=True))
    batches = [grouped[i : i + batch_size] for i in range(0, len(grouped), batch_size)]
    rng.shuffle(batches)
    return batches


def local_share(items: list[Tokenized], batch: list[int], process: int, n_processes: int) -> list[Tokenized]:
    """This process's share of a step's batch: every n-th example of it. A process left without one (a batch
    smaller than the number of processes) gets the batch's first example with nothing trained, so that every
    process runs every step: DDP's gradient averaging waits for all of them, and adds nothing from this one."""
    share = [items[i] for i in batch[process::n_processes]]
    if share:
        return share
    first = items[batch[0]]
    return [replace(first, labels=[IGNORE_INDEX] * len(first.labels))]


def collate(items: list[Tokenized], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example."""
    width = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        labels[row, :n] = torch.tensor(item.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


# ---------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------


def prepare_model(config: TrainConfig, device: torch.device, precision: Precision) -> nn.Module:
    """The base model with a fresh LoRA/DoRA adapter (peft), or all weights trainable for `full`."""
    model = load_model(config.model, device, precision)
    model.config.use_cache = False
    if config.adapter == "full":
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    from ftlab.models import portable_base

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        use_dora=config.adapter == "dora",
        task_type="CAUSAL_LM",
    )
    # The adapter records its base by the name `load_model` gave it and, for a hub model, the commit it was.
    return get_peft_model(model, lora, revision=portable_base(config.model)[1])


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable weights; with a `loraplus_lr_ratio` other than 1, peft's LoRA+ optimizer (B learns
    that many times faster than A)."""
    if config.loraplus_lr_ratio not in (None, 1.0) and config.adapter != "full":
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(
            model,
            optimizer_cls=torch.optim.AdamW,
            lr=config.learning_rate,
            loraplus_lr_ratio=config.loraplus_lr_ratio,
            weight_decay=config.weight_decay,
        )
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def process_state() -> PartialState:
    """accelerate's view of the processes: one, or several under `accelerate launch` or `torchrun` (gloo between
    CPU processes on a machine without a GPU). The device choice is the `Accelerator`'s, so whichever comes
    first sets the processes up the same way."""
    return PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    """Whether this process reports and writes: the only one, or the first of several."""
    return process_state().is_main_process


def accelerator_and_precision(config: TrainConfig) -> tuple[Accelerator, Precision]:
    """accelerate (one process here, several under `accelerate launch`) and the fastest precision for its device."""
    process_state()
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
    precision = best_precision(accelerator.device, config.precision, config.attention,
                               frozen_base=config.adapter != "full")
    return accelerator, precision


def prepare_training(
    config: TrainConfig, accelerator: Accelerator, precision: Precision, total_steps: int,
    loss: Callable[[nn.Module], nn.Module] = LabelledLMLoss, model: nn.Module | None = None,
) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:  # fmt: skip
    """The loss module (`loss(model)`, default `LabelledLMLoss`) around the model and its adapter (`model`, default
    a fresh one from `prepare_model`), AdamW and the linear warm-up schedule, for `train_step`.

    The schedule stays out of `accelerator.prepare`: over N processes accelerate would step it N times a step,
    and `total_steps` already counts steps per process.
    """
    from transformers import get_linear_schedule_with_warmup

    model = model if model is not None else prepare_model(config, accelerator.device, precision)
    optimizer = make_optimizer(model, config)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=int(config.warmup_ratio * total_steps), num_training_steps=total_steps
    )
    loss_module, optimizer = accelerator.prepare(loss(model), optimizer)
    return loss_module, optimizer, scheduler


# ---------------------------------------------------------------------------------------------------------
# One training step, evaluation
# ---------------------------------------------------------------------------------------------------------


def train_step(
    accelerator: Accelerator,
    loss_module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch: dict[str, torch.Tensor],
    precision: Precision,
    max_grad_norm: float,
) -> tuple[torch.Tensor, ...]:
    """One optimisation step on a batch (this process's share of it): forward under autocast, backward through
    accelerate (which averages the gradients of several processes), clip, step the optimizer and the schedule,
    clear the gradients.

    The loss module returns (loss sum, right, count, *more): per trained token for `LabelledLMLoss`, per pair for
    DPO's. Returns, over every process's share, the mean loss, how many were right, how many there were, and the
    module's further sums.
    """
    with autocast(accelerator.device, precision, loss_module):
        loss_sum, correct, count, *more = loss_module(**batch)
    # The sums over all processes. DDP averages their gradients, so each divides its loss sum by the mean count
    # per process: the gradient is that of the whole batch's mean loss, however it was shared.
    sums = [loss_sum.detach(), correct.to(loss_sum), count.to(loss_sum), *(m.detach().to(loss_sum) for m in more)]
    totals = accelerator.reduce(torch.stack(sums), "sum")
    accelerator.backward(loss_sum / (totals[2] / accelerator.num_processes))
    accelerator.clip_grad_norm_(loss_module.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return totals[0] / totals[2], totals[1], totals[2], *totals[3:]


def stop_requested(accelerator: Accelerator, should_stop: Callable[[], bool] | None) -> bool:
    """`should_stop`, asked on the first process only and its answer shared, so every process stops at one step."""
    asked = accelerator.is_main_process and should_stop is not None and should_stop()
    if accelerator.num_processes == 1:
        return asked
    return bool(broadcast(torch.tensor([int(asked)], device=accelerator.device)).item())


@torch.no_grad()
def evaluate_loss(
    loss_module: LabelledLMLoss, items: list[Tokenized], batch_size: int, pad_id: int, device, precision: Precision
) -> tuple[float, float]:
    """Mean loss and token accuracy over the trained tokens of `items`; several processes share each batch."""
    state = process_state()
    loss_module.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    for start in range(0, len(order), batch_size):
        share = local_share(items, order[start : start + batch_size], state.process_index, state.num_processes)
        with autocast(device, precision, loss_module):
            loss, correct, count = loss_module(**collate(share, pad_id, device))
        totals += torch.stack([loss.double(), correct.double(), count.double()])
    loss_module.train()
    total_loss, total_correct, total_tokens = reduce(totals, "sum").tolist()
    return total_loss / total_tokens, total_correct / total_tokens


@contextmanager
def autocast(device: torch.device, precision: Precision, model: nn.Module) -> Iterator[None]:
    """bf16 autocast where the precision asks for it. peft casts each adapter's input to the adapter's fp32,
    which autocast then casts straight back to bf16 for the matmul: under autocast that first cast is skipped
    (peft's own switch; 1.09x measured, the same losses to the last digit)."""
    if precision.autocast is None:
        with torch.autocast(device.type, enabled=False):
            yield
        return
    from peft.helpers import disable_input_dtype_casting

    with torch.autocast(device.type, dtype=precision.autocast), disable_input_dtype_casting(model):
        yield


# ---------------------------------------------------------------------------------------------------------
# Validation by the task's own metric (select_by)
# ---------------------------------------------------------------------------------------------------------

ScoreReplies = Callable[[list[ChatExample], list[str]], float]  # (validation examples, replies) → higher is better


def choose_select_by(
    config: TrainConfig, valid_examples: list[ChatExample], n_train: int, processes: int
) -> tuple[str, list[ChatExample]]:
    """What `select_by` stands for in this run, and the validation examples whose replies each evaluation scores.
    `auto` is `auto_selection_metric` of the validation references (JSON replies are judged by set_f1 or
    field_acc) on a sample of `auto_selection_size` examples drawn with the run's seed, kept in file order; it is
    valid_loss otherwise and when several processes train (replies are generated in one process only). Any other
    `select_by` is kept and scores every validation example."""
    if config.select_by != SELECT_AUTO:
        return config.select_by, valid_examples
    metric = auto_selection_metric([e.reference() for e in valid_examples]) if processes == 1 else None
    if metric is None:
        return VALIDATION_LOSS, valid_examples
    size = auto_selection_size(len(valid_examples), n_train)
    kept = sorted(random.Random(config.seed).sample(range(len(valid_examples)), size))
    return metric, [valid_examples[i] for i in kept]


def reply_scorer(
    config: TrainConfig, examples: list[ChatExample], path: Path | None, score_validation: ScoreReplies | None
) -> ScoreReplies | None:
    """How each evaluation scores the replies generated for the validation set, or None when `select_by` is
    the validation loss: `ftlab eval`'s metric (`ftlab.data.scoring`), or `score_validation` for a judge, which
    only a front door can provide. Everything that makes the metric unusable is an error here, before any compute."""
    if not config.selects_by_task_metric:
        return None
    if not examples:
        raise DataError(f"select_by {config.select_by} scores replies to the validation set: give one (--validation)")
    if score_validation is not None:
        return score_validation
    if config.selection_metric == "judge":
        raise ValueError(f"select_by {config.select_by} needs the judge's scoring function (score_validation=…)")
    metric = config.select_by
    if not any(applies_to(metric, example.reference()) for example in examples):
        kind = "a JSON list of strings" if metric == "set_f1" else "a JSON object"
        raise DataError(f"select_by {metric} needs validation replies that are {kind}; none is", path=path,
                        line=examples[0].line)  # fmt: skip
    labels = set(config.labels or ())
    return lambda scored, replies: mean_score(metric, replies, [e.reference() for e in scored], labels)


def generate_replies(
    chat: ChatModel, loss_module: nn.Module, examples: list[ChatExample], max_new_tokens: int, device,
    precision: Precision,
) -> list[str]:
    """The greedy replies of the model being trained to each validation conversation, through `ftlab.infer`'s
    batched generation (`chat` wraps the model in memory: nothing is reloaded), in eval mode (no dropout) and
    under the training's autocast."""
    loss_module.eval()
    try:
        with autocast(device, precision, loss_module):
            completions = chat.generate([template_messages(e.prompt_messages()) for e in examples],
                                        max_new_tokens=max_new_tokens)  # fmt: skip
    finally:
        loss_module.train()
    return [c.text for c in completions]


# ---------------------------------------------------------------------------------------------------------
# Bookkeeping
# ---------------------------------------------------------------------------------------------------------


def metric_columns(config: TrainConfig) -> list[str]:
    """metrics.csv's columns: OpenAI's, and the task metric `select_by` names (e.g. `set_f1`) when there is one."""
    return METRIC_COLUMNS + ([config.selection_metric] if config.selects_by_task_metric else [])


def write_metrics(path: Path, rows: list[dict[str, Any]], columns: list[str] = METRIC_COLUMNS) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})


def is_better(value: float, best: float | None, config: TrainConfig) -> bool:
    """Whether an evaluation's `select_by` value beats the best so far: a lower loss, a higher task metric."""
    if best is None:
        return True
    return value > best if config.selects_by_task_metric else value < best


def best_checkpoint(checkpoints: list[Checkpoint], config: TrainConfig) -> Checkpoint | None:
    """The checkpoint with the best `select_by` value (the earliest of equals), None when none was evaluated."""
    key = config.selection_metric
    scored = [c for c in checkpoints if c.metrics.get(key) is not None]
    pick = max if config.selects_by_task_metric else min
    return pick(scored, key=lambda c: c.metrics[key], default=None)


def plot_losses(rows: list[dict[str, Any]], path: Path, title: str, metric: str | None = None,
                ylabel: str = "loss (per trained token)") -> None:
    """Train and validation loss against step, as a PNG; a task metric (`metric`) on a second y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    train = [(r["step"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    valid = [(r["step"], r["valid_loss"]) for r in rows if r.get("valid_loss") is not None]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="#1f77b4", linewidth=1.2, alpha=0.85)
    if valid:
        ax.plot(*zip(*valid, strict=True), label="validation loss", color="#d62728", marker="o", linewidth=2)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    scored = [(r["step"], r[metric]) for r in rows if metric and r.get(metric) is not None]
    if scored:
        right = ax.twinx()
        right.plot(*zip(*scored, strict=True), label=f"validation {metric}", color="#2ca02c", marker="s", linewidth=2)
        right.set_ylabel(metric)
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def overfitting(evals: list[tuple[float, float]]) -> bool:
    """Validation loss rose at each of the last two evaluations while the training loss fell."""
    if len(evals) < 3:
        return False
    (t0, v0), (t1, v1), (t2, v2) = evals[-3:]
    return v2 > v1 > v0 and t2 < t1 < t0


def scoring_cost(seconds: float, evaluations: int, replies: int, run_seconds: float) -> dict[str, float]:
    """What generating and scoring the validation replies cost this run (this attempt, when resumed): `replies` at
    each of `evaluations`."""
    return {"seconds": round(seconds, 2), "evaluations": evaluations, "replies": replies,
            "run_seconds": round(run_seconds, 2),
            "share_of_run": round(seconds / run_seconds, 4) if run_seconds > 0 else 0.0}  # fmt: skip


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def processes_info(accelerator: Accelerator) -> dict[str, Any]:
    """Who trained: how many processes, how they talked, and each one's rank, host, pid and device."""
    mine = {"rank": accelerator.process_index, "host": socket.gethostname(), "pid": os.getpid(),
            "device": str(accelerator.device)}  # fmt: skip
    return {"num_processes": accelerator.num_processes, "distributed_type": accelerator.distributed_type.value,
            "backend": accelerator.state.backend, "processes": gather_object([mine])}  # fmt: skip


def peak_memory_mib(accelerator: Accelerator) -> dict[str, list[float]]:
    """Each process's peak resident memory ("rss", Linux's ru_maxrss is in KiB) and on CUDA the peak GPU memory
    torch allocated ("gpu"), in MiB, listed by rank."""
    mine = {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if accelerator.device.type == "cuda":
        mine["gpu"] = torch.cuda.max_memory_allocated(accelerator.device) / 2**20
    every = gather_object([mine])
    return {key: [round(process[key], 1) for process in every] for key in mine}


def save_checkpoint(
    accelerator: Accelerator, model: nn.Module, tokenizer, folder: Path, resumable: bool,
    prepared: nn.Module | None = None, reply_schema: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Write the adapter (or full model), the tokenizer, the reply schema the training replies share (see
    `ftlab.data.reply_format`) and, if `resumable`, accelerate's state in resume/: optimizer, schedule, every
    process's RNG and the loop's state. Atomically: a crash leaves no half folder.

    Under FSDP each process holds a shard of the weights: every process helps gather them from `prepared` (the
    loss module `accelerator.prepare` returned) first. Untested here: accelerate runs FSDP on GPUs only.
    """
    tmp = folder.with_name(folder.name + ".partial")
    extra = {}
    if accelerator.distributed_type == DistributedType.FSDP and prepared is not None:
        gathered = accelerator.get_state_dict(prepared)
        extra["state_dict"] = {k.removeprefix("model."): v for k, v in gathered.items() if k.startswith("model.")}
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        from peft import PeftModel

        # peft's "auto" check for a resized vocabulary looks the base's config up on the hub, by the portable name
        # the adapter records (an alias there is none of): ftlab never resizes embeddings, so it is not asked.
        if isinstance(model, PeftModel):
            extra["save_embedding_layers"] = False
        model.save_pretrained(tmp, **extra)
        tokenizer.save_pretrained(tmp)
        write_reply_schema(tmp, reply_schema)
    accelerator.wait_for_everyone()
    if resumable:
        accelerator.save_state(tmp / RESUME_DIR)  # every process writes its own RNG state
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete per-epoch checkpoint that can be resumed from."""
    found = sorted(
        (p for p in output_dir.glob("checkpoint-epoch-*") if (p / RESUME_DIR).is_dir()),
        key=lambda p: int(p.name.rsplit("-", 1)[1]),
    )
    return found[-1] if found else None


def load_trainable_weights(model: nn.Module, folder: Path, config: TrainConfig) -> None:
    """Put a checkpoint's weights back into the model being trained (adapter weights, or all for full)."""
    from safetensors.torch import load_file

    if config.adapter == "full":
        state = {}
        for shard in folder.glob("*.safetensors"):
            state.update(load_file(shard))
        model.load_state_dict(state, strict=False)
        return
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))


def new_run_dir() -> Path:
    """A new folder under FTLAB_HOME/runs: the first process's name, the same on every process of a run."""
    process_state()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return runs_dir() / broadcast_object_list([f"run-{stamp}-{os.getpid() % 10000:04d}"])[0]


# ---------------------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    train_file: str | Path,
    validation_file: str | Path | None = None,
    output_dir: str | Path | None = None,
    *,
    on_event: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
    progress: bool = True,
    score_validation: ScoreReplies | None = None,
) -> TrainResult:
    """Fine-tune `config.model` on a chat JSONL file and write a run folder; see the module docstring. Method
    dpo (preference pairs) runs `ftlab.train.dpo.train_dpo`, built from this module's pieces.

    `score_validation(examples, replies)` scores the validation replies for `select_by judge:…` (the judge lives
    in a front door); the other task metrics are scored here, with `ftlab eval`'s code."""
    if config.method == "dpo":
        from ftlab.train.dpo import train_dpo

        return train_dpo(config, train_file, validation_file, output_dir, on_event=on_event, should_stop=should_stop,
                         resume=resume, progress=progress)  # fmt: skip
    run_started = time.perf_counter()
    train_file = Path(train_file)
    validation_file = Path(validation_file) if validation_file else None
    output_dir = Path(output_dir) if output_dir else new_run_dir()
    output_dir.mkdir(parents=True, exist_ok=True)
    set_threads()
    accelerator, precision = accelerator_and_precision(config)
    device = accelerator.device
    # The first process tells and writes; the others train their share of each batch and say nothing.
    emit = on_event if on_event is not None and accelerator.is_main_process else (lambda event: None)
    if accelerator.num_processes > 1 and config.selects_by_task_metric:  # replies are generated in one process only
        raise ValueError(f"select_by {config.select_by} trains in one process for now: select by valid_loss, or run "
                         "without accelerate launch/torchrun")  # fmt: skip

    # 1. Data: tokenise with the model's chat template and the assistant-only mask.
    with accelerator.main_process_first():  # the bundled model is converted once, by the first process
        tokenizer = load_tokenizer(config.model)
    train_examples, train_items = tokenize_file(tokenizer, train_file, config.max_length)
    valid_examples, valid_items = (tokenize_file(tokenizer, validation_file, config.max_length) if validation_file
                                   else ([], []))  # fmt: skip
    select_by, scored = choose_select_by(config, valid_examples, len(train_examples), accelerator.num_processes)
    if select_by != config.select_by:
        config = config.model_copy(update={"select_by": select_by})
        if config.selects_by_task_metric:
            which = (f"the {len(scored)}" if len(scored) == len(valid_examples)
                     else f"{len(scored)} of the {len(valid_examples)} (a sample drawn with the run's seed)")
            emit(TrainEvent("message", f"select_by auto: {select_by}, scored on replies generated for {which} "
                            "validation examples at each evaluation (their replies are JSON)"))
    scorer = reply_scorer(config, scored, validation_file, score_validation)
    reply_schema = learned_reply_schema([e.reference() for e in train_examples])
    if reply_schema is not None:
        emit(TrainEvent("message", f"The training replies are JSON: each checkpoint keeps their shape "
                        f"({REPLY_SCHEMA_FILE}), and ftlab eval and serve hold the model's replies to it"))
    truncated = [item.line for item in train_items if item.truncated_tokens]
    if truncated:
        emit(TrainEvent("warning", f"{len(truncated)} training examples exceed max_length={config.max_length} "
                        f"tokens and were cut (lines {truncated[:10]})"))

    # 2. Resolve "auto" and write down every setting before any compute is spent.
    config = config.resolve(len(train_examples))
    steps_per_epoch = math.ceil(len(train_items) / config.batch_size)  # batch_size is per step, over all processes
    total_steps = steps_per_epoch * int(config.n_epochs)
    dataset_sha256 = {"train": file_sha256(train_file)}
    if validation_file:
        dataset_sha256["validation"] = file_sha256(validation_file)
    record = {
        "config": config.model_dump(),
        "learning_rate": config.learning_rate,
        "train_file": str(train_file),
        "validation_file": str(validation_file) if validation_file else None,
        "dataset_sha256": dataset_sha256,
        "n_train_examples": len(train_items),
        "n_validation_examples": len(valid_items),
        "train_tokens_per_epoch": sum(len(i.input_ids) for i in train_items),
        "trained_tokens_per_epoch": sum(i.n_trained for i in train_items),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "precision": {"weights": str(precision.weights), "autocast": str(precision.autocast),
                      "attention": precision.attention},
        "machine": {**machine_info(device), **processes_info(accelerator)},
        "ftlab_version": ftlab.__version__,
        "started_at": datetime.now(UTC).isoformat(),
    }
    if accelerator.is_main_process:
        (output_dir / "config.json").write_text(json.dumps(record, indent=2))
    processes = f" over {accelerator.num_processes} processes" if accelerator.num_processes > 1 else ""
    emit(TrainEvent("message", f"Training {config.adapter} on {len(train_items)} examples for "
                    f"{config.n_epochs} epochs ({total_steps} steps, batch size {config.batch_size}{processes}, "
                    f"learning rate {config.learning_rate:.2e})", {"total_steps": total_steps}))
    if config.batch_size < accelerator.num_processes:
        emit(TrainEvent("warning", f"batch_size {config.batch_size} is smaller than the number of processes "
                        f"({accelerator.num_processes}): some of them have nothing to train at each step"))

    # 3. Model, adapter, optimizer, schedule, and what a checkpoint keeps to resume from: accelerate saves the
    #    optimizer and every process's RNG; the schedule and the loop's own state are registered with it. The
    #    weights accelerate would add are the checkpoint's own adapter (or full model) beside its state, so its
    #    hooks leave them out: a LoRA checkpoint stays adapter-sized instead of carrying the frozen base.
    seed_everything(config.seed)
    loss_module, optimizer, scheduler = prepare_training(config, accelerator, precision, total_steps)
    model = accelerator.unwrap_model(loss_module).model
    loop = LoopState(patience_left=config.early_stopping_patience)
    accelerator.register_for_checkpointing(scheduler, loop)
    accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, input_dir: models.clear())
    pad_id = tokenizer.pad_token_id
    metric, columns = config.selection_metric, metric_columns(config)
    if scorer is not None:  # the model in training replies through ftlab.infer's generation, reloading nothing
        from ftlab.infer.backend import default_max_new_tokens
        from ftlab.infer.generate import ChatModel

        reply_batch = max(VALIDATION_REPLY_BATCH, int(config.batch_size))
        chat = ChatModel.around(model, tokenizer, device, batch_size=reply_batch)
        reply_budget = default_max_new_tokens(chat, [e.reference() for e in scored])
    scoring_seconds, n_scored = 0.0, 0

    # 4. Resume from the last complete epoch, if asked and there is one.
    resumed_from = last_checkpoint(output_dir) if resume else None
    if resumed_from is not None:
        if accelerator.distributed_type != DistributedType.FSDP:  # FSDP's state holds its own weight shards
            load_trainable_weights(model, resumed_from, config)
        accelerator.load_state(resumed_from / RESUME_DIR)
        emit(TrainEvent("message", f"Resumed from {resumed_from.name} at step {loop.step}/{total_steps}"))

    # 5. The loop.
    lengths = [len(item.input_ids) for item in train_items]
    status = "succeeded"
    bar = None
    if progress and accelerator.is_main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=loop.step, desc="training", unit="step", dynamic_ncols=True)
    loss_module.train()
    started, tokens_seen = time.perf_counter(), 0
    eval_every = None if config.eval_every == "epoch" else int(config.eval_every)
    last_epoch = loop.epoch if loop.stopped_early else int(config.n_epochs)  # a run that stopped early stays so
    for epoch in range(loop.epoch, last_epoch):
        batches = length_grouped_batches(lengths, int(config.batch_size), config.seed, epoch)
        for batch_indices in batches:
            if stop_requested(accelerator, should_stop):
                status = "cancelled"
                break
            share = local_share(train_items, batch_indices, accelerator.process_index, accelerator.num_processes)
            loss, correct, count = train_step(
                accelerator, loss_module, optimizer, scheduler, collate(share, pad_id, device), precision,
                config.max_grad_norm,
            )
            loop.step += 1
            loop.trained_tokens += int(count.item())
            tokens_seen += sum(lengths[i] for i in batch_indices)
            row = {"step": loop.step, "train_loss": round(loss.item(), 6),
                   "train_mean_token_accuracy": round((correct / count).item(), 6),
                   "valid_loss": None, "valid_mean_token_accuracy": None}
            if not math.isfinite(row["train_loss"]):
                raise NonFiniteLoss(f"step {loop.step}: the training loss is {row['train_loss']}, not a finite "
                                    "number; training stopped (lower learning_rate_multiplier, or check the base "
                                    "model's weights)")
            end_of_epoch = batch_indices is batches[-1]
            if valid_items and (end_of_epoch if eval_every is None else loop.step % eval_every == 0 or end_of_epoch):
                valid_loss, valid_acc = evaluate_loss(
                    loss_module, valid_items, int(config.batch_size), pad_id, device, precision
                )
                row["valid_loss"], row["valid_mean_token_accuracy"] = round(valid_loss, 6), round(valid_acc, 6)
                value = valid_loss
                if scorer is not None:
                    scoring_started = time.perf_counter()
                    replies = generate_replies(chat, loss_module, scored, reply_budget, device, precision)
                    value = scorer(scored, replies)
                    row[metric] = round(value, 6)
                    scoring_seconds += time.perf_counter() - scoring_started
                    n_scored += 1
                loop.evals.append((row["train_loss"], valid_loss))
                if overfitting(loop.evals):
                    emit(TrainEvent("warning", f"Step {loop.step}: validation loss rose for two evaluations in a "
                                    "row while training loss fell — the model may be overfitting"))
                if is_better(value, loop.best, config):
                    loop.best, loop.patience_left = value, config.early_stopping_patience
                elif loop.patience_left is not None:
                    loop.patience_left -= 1
            loop.rows.append(row)
            message = f"Step {loop.step}/{total_steps}: training loss={row['train_loss']:.4f}"
            if row["valid_loss"] is not None:
                message += f", validation loss={row['valid_loss']:.4f}"
            if row.get(metric) is not None and metric != "valid_loss":
                message += f", validation {metric}={row[metric]:.4f}"
            emit(TrainEvent("metrics", message, {**row, "total_steps": total_steps, "epoch": epoch + 1}))
            if bar is not None:
                elapsed = time.perf_counter() - started
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", tok_s=f"{tokens_seen / elapsed:.0f}")
                bar.update(1)
            if loop.patience_left is not None and loop.patience_left <= 0:
                loop.stopped_early = True
                break
        if status == "cancelled":
            break

        # 6. A checkpoint per epoch: the adapter, and in resume/ the state to go on from (the newest one only).
        folder = output_dir / f"checkpoint-epoch-{epoch + 1}"
        last_eval = next((r for r in reversed(loop.rows) if r["valid_loss"] is not None), None)
        evaluated = columns[METRIC_COLUMNS.index("valid_loss"):]  # the validation columns, a task metric's too
        metrics = {"step": loop.step, "train_loss": loop.rows[-1]["train_loss"],
                   **{k: last_eval.get(k) if last_eval else None for k in evaluated}}
        loop.epoch = epoch + 1
        loop.checkpoints.append(Checkpoint(loop.step, epoch + 1, folder, metrics))
        save_checkpoint(accelerator, model, tokenizer, folder, resumable=True, prepared=loss_module,
                        reply_schema=reply_schema)
        if accelerator.is_main_process:
            for older in loop.checkpoints[:-1]:
                shutil.rmtree(older.path / RESUME_DIR, ignore_errors=True)
            write_metrics(output_dir / "metrics.csv", loop.rows, columns)
            emit(TrainEvent("checkpoint", f"Checkpoint saved at step {loop.step} (epoch {epoch + 1})",
                            {"step": loop.step, "epoch": epoch + 1, "path": str(folder), "metrics": metrics}))
        if loop.stopped_early:
            watched = "validation loss" if metric == "valid_loss" else f"validation {metric}"
            emit(TrainEvent("message", f"Early stopping at step {loop.step}: {watched} has not improved "
                            f"for {config.early_stopping_patience} evaluations"))
            break
    if bar is not None:
        bar.close()

    # 7. Final weights, metrics, plot, summary.
    final_dir = output_dir / "final"
    metrics_csv = output_dir / "metrics.csv"
    checkpoints = loop.checkpoints
    best = best_checkpoint(checkpoints, config)
    cost = scoring_cost(scoring_seconds, n_scored, len(scored), time.perf_counter() - run_started) if n_scored else None
    save_checkpoint(accelerator, model, tokenizer, final_dir, resumable=False, prepared=loss_module,
                    reply_schema=reply_schema)
    peak_memory = peak_memory_mib(accelerator)
    if accelerator.is_main_process:
        write_metrics(metrics_csv, loop.rows, columns)
        if loop.rows:
            plot_losses(loop.rows, output_dir / "loss.png", f"{config.model} · {config.adapter} · {output_dir.name}",
                        metric if scorer is not None else None)  # fmt: skip
        record.update({
            "status": status, "finished_at": datetime.now(UTC).isoformat(), "trained_tokens": loop.trained_tokens,
            "steps_done": loop.step, "stopped_early": loop.stopped_early, "selected_by": config.select_by,
            "best_checkpoint": str(best.path) if best else None,
            "checkpoints": [c.to_dict() for c in checkpoints], "peak_memory_mib": peak_memory,
        })
        if cost:
            record["validation_replies"] = cost
        (output_dir / "config.json").write_text(json.dumps(record, indent=2))
    if cost:
        emit(TrainEvent("message", f"Validation replies for {metric}: {n_scored} evaluations of "
                        f"{len(scored)} replies (at most {reply_budget} tokens each) took "
                        f"{cost['seconds']:.1f} s, {cost['share_of_run']:.0%} of this run's "
                        f"{cost['run_seconds']:.0f} s", cost))  # fmt: skip
    emit(TrainEvent("message", "The job has successfully completed" if status == "succeeded"
                    else "The job was cancelled", {"status": status}))
    return TrainResult(
        output_dir=output_dir, config=config, dataset_sha256=dataset_sha256, checkpoints=checkpoints,
        final_dir=final_dir, metrics_csv=metrics_csv, trained_tokens=loop.trained_tokens, status=status,
        best_checkpoint=best, stopped_early=loop.stopped_early, peak_memory_mib=peak_memory,
    )


# ---------------------------------------------------------------------------------------------------------
# Calibration: the recipe's speed on this machine
# ---------------------------------------------------------------------------------------------------------


def measure_throughput(model: str, examples: list[ChatExample], batch_size: int = 8, steps: int = 4,
                       adapter: str = "lora", precision: str = "auto") -> float:
    """Training tokens per second of this recipe on this machine: `train_step` on batches of `examples` as the
    recipe makes them, the first step (warm-up) unmeasured."""
    config = TrainConfig(model=model, adapter=adapter, batch_size=batch_size, precision=precision)
    config = config.resolve(len(examples))
    set_threads()
    tokenizer = load_tokenizer(model)
    items = [tokenize_example(tokenizer, e, config.max_length) for e in examples]
    accelerator, settings = accelerator_and_precision(config)
    seed_everything(0)
    loss_module, optimizer, scheduler = prepare_training(config, accelerator, settings, total_steps=steps + 1)
    loss_module.train()
    batches = length_grouped_batches([len(i.input_ids) for i in items], batch_size, 0, 0)
    tokens, elapsed = 0, 0.0
    for n in range(steps + 1):
        batch = collate([items[i] for i in batches[n % len(batches)]], tokenizer.pad_token_id, accelerator.device)
        start = time.perf_counter()
        loss, _, _ = train_step(accelerator, loss_module, optimizer, scheduler, batch, settings, config.max_grad_norm)
        loss.item()  # wait for the step to finish, as the recipe does when it logs the loss
        if n > 0:
            elapsed += time.perf_counter() - start
            tokens += int(batch["attention_mask"].sum())
    return tokens / elapsed
