"""The supervised fine-tuning recipe: chat JSONL in, LoRA/DoRA/full checkpoints, metrics and plots out.

Read it top to bottom — `train()` is the whole recipe: load data → resolve "auto" → load model and adapter →
loop over epochs of length-grouped batches → validate → checkpoint → metrics and plot. No trainer class and no
callbacks beyond one `on_event` function. What makes it fast on a CPU (measured, see shared/MEASUREMENTS.md):
fp32 weights with bf16 autocast, eager attention, batches grouped by length (little padding), and the output
layer computed only at positions whose next token is trained. Several GPUs work through `accelerate launch`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

import ftlab
from ftlab.config import TrainConfig, runs_dir
from ftlab.data.schema import ChatExample, DataError, file_sha256, read_examples
from ftlab.models import Precision, best_precision, load_model, load_tokenizer, set_threads
from ftlab.train.tokenize import IGNORE_INDEX, Tokenized, tokenize_example

METRIC_COLUMNS = ["step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy"]
RESUME_DIR = "resume"  # accelerate's state to resume from, inside the newest checkpoint folder


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
    best_valid: float = math.inf
    patience_left: int | None = None  # evaluations without a better validation loss before early stopping
    stopped_early: bool = False

    def state_dict(self) -> dict[str, Any]:
        return {**vars(self), "checkpoints": [c.to_dict() for c in self.checkpoints]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
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
    """AdamW over the trainable weights; with `loraplus_lr_ratio`, peft's LoRA+ optimizer (B learns faster)."""
    if config.loraplus_lr_ratio and config.adapter != "full":
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


def accelerator_and_precision(config: TrainConfig) -> tuple[Accelerator, Precision]:
    """accelerate (one process here, several under `accelerate launch`) and the fastest precision for its device."""
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
    precision = best_precision(accelerator.device, config.precision, config.attention,
                               frozen_base=config.adapter != "full")
    return accelerator, precision


def prepare_training(
    config: TrainConfig, accelerator: Accelerator, precision: Precision, total_steps: int
) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The loss module around the model and its adapter, AdamW and the linear warm-up schedule, for `train_step`.

    The schedule stays out of `accelerator.prepare`: over N processes accelerate would step it N times a step,
    and `total_steps` already counts steps per process.
    """
    from transformers import get_linear_schedule_with_warmup

    model = prepare_model(config, accelerator.device, precision)
    optimizer = make_optimizer(model, config)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=int(config.warmup_ratio * total_steps), num_training_steps=total_steps
    )
    loss_module, optimizer = accelerator.prepare(LabelledLMLoss(model), optimizer)
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimisation step on a batch: forward under autocast, backward through accelerate (which averages
    the gradients of several processes), clip, step the optimizer and the schedule, clear the gradients.

    Returns the mean loss per trained token, how many trained tokens were predicted right, and how many there were.
    """
    with autocast(accelerator.device, precision, loss_module):
        loss_sum, correct, count = loss_module(**batch)
    loss = loss_sum / count
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(loss_module.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach(), correct, count


@torch.no_grad()
def evaluate_loss(
    loss_module: LabelledLMLoss, items: list[Tokenized], batch_size: int, pad_id: int, device, precision: Precision
) -> tuple[float, float]:
    """Mean loss and token accuracy over the trained tokens of `items`."""
    loss_module.eval()
    total_loss = total_correct = total_tokens = 0.0
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    for start in range(0, len(order), batch_size):
        batch = collate([items[i] for i in order[start : start + batch_size]], pad_id, device)
        with autocast(device, precision, loss_module):
            loss, correct, count = loss_module(**batch)
        total_loss += loss.item()
        total_correct += correct.item()
        total_tokens += count.item()
    loss_module.train()
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
# Bookkeeping
# ---------------------------------------------------------------------------------------------------------


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})


def plot_losses(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Train and validation loss against step, as a PNG."""
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
    ax.set_ylabel("loss (per trained token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def overfitting(evals: list[tuple[float, float]]) -> bool:
    """Validation loss rose at each of the last two evaluations while the training loss fell."""
    if len(evals) < 3:
        return False
    (t0, v0), (t1, v1), (t2, v2) = evals[-3:]
    return v2 > v1 > v0 and t2 < t1 < t0


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


def save_checkpoint(
    accelerator: Accelerator, model: nn.Module, tokenizer, folder: Path, resumable: bool
) -> None:
    """Write the adapter (or full model) and the tokenizer and, if `resumable`, accelerate's state in resume/:
    optimizer, schedule, every process's RNG and the loop's state. Atomically: a crash leaves no half folder."""
    tmp = folder.with_name(folder.name + ".partial")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        from peft import PeftModel

        # peft's "auto" check for a resized vocabulary looks the base's config up on the hub, by the portable name
        # the adapter records (an alias there is none of): ftlab never resizes embeddings, so it is not asked.
        extra = {"save_embedding_layers": False} if isinstance(model, PeftModel) else {}
        model.save_pretrained(tmp, **extra)
        tokenizer.save_pretrained(tmp)
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
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return runs_dir() / f"run-{stamp}-{os.getpid() % 10000:04d}"


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
) -> TrainResult:
    """Fine-tune `config.model` on a chat JSONL file and write a run folder; see the module docstring."""
    emit = on_event or (lambda event: None)
    train_file = Path(train_file)
    validation_file = Path(validation_file) if validation_file else None
    output_dir = Path(output_dir) if output_dir else new_run_dir()
    output_dir.mkdir(parents=True, exist_ok=True)
    set_threads()

    # 1. Data: tokenise with the model's chat template and the assistant-only mask.
    tokenizer = load_tokenizer(config.model)
    train_examples, train_items = tokenize_file(tokenizer, train_file, config.max_length)
    valid_items = tokenize_file(tokenizer, validation_file, config.max_length)[1] if validation_file else []
    truncated = [item.line for item in train_items if item.truncated_tokens]
    if truncated:
        emit(TrainEvent("warning", f"{len(truncated)} training examples exceed max_length={config.max_length} "
                        f"tokens and were cut (lines {truncated[:10]})"))

    # 2. Resolve "auto" and write down every setting before any compute is spent.
    config = config.resolve(len(train_examples))
    accelerator, precision = accelerator_and_precision(config)
    device = accelerator.device
    steps_per_epoch = math.ceil(len(train_items) / config.batch_size / accelerator.num_processes)
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
        "machine": machine_info(device),
        "ftlab_version": ftlab.__version__,
        "started_at": datetime.now(UTC).isoformat(),
    }
    if accelerator.is_main_process:
        (output_dir / "config.json").write_text(json.dumps(record, indent=2))
    emit(TrainEvent("message", f"Training {config.adapter} on {len(train_items)} examples for "
                    f"{config.n_epochs} epochs ({total_steps} steps, batch size {config.batch_size}, "
                    f"learning rate {config.learning_rate:.2e})", {"total_steps": total_steps}))

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

    # 4. Resume from the last complete epoch, if asked and there is one.
    resumed_from = last_checkpoint(output_dir) if resume else None
    if resumed_from is not None:
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
        batches = batches[accelerator.process_index :: accelerator.num_processes]
        for batch_indices in batches:
            if should_stop is not None and should_stop():
                status = "cancelled"
                break
            batch = collate([train_items[i] for i in batch_indices], pad_id, device)
            loss, correct, count = train_step(
                accelerator, loss_module, optimizer, scheduler, batch, precision, config.max_grad_norm
            )
            loop.step += 1
            loop.trained_tokens += int(count.item())
            tokens_seen += int(batch["attention_mask"].sum().item())
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
                loop.evals.append((row["train_loss"], valid_loss))
                if overfitting(loop.evals):
                    emit(TrainEvent("warning", f"Step {loop.step}: validation loss rose for two evaluations in a "
                                    "row while training loss fell — the model may be overfitting"))
                if valid_loss < loop.best_valid:
                    loop.best_valid, loop.patience_left = valid_loss, config.early_stopping_patience
                elif loop.patience_left is not None:
                    loop.patience_left -= 1
            loop.rows.append(row)
            message = f"Step {loop.step}/{total_steps}: training loss={row['train_loss']:.4f}"
            if row["valid_loss"] is not None:
                message += f", validation loss={row['valid_loss']:.4f}"
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
        metrics = {"step": loop.step, "train_loss": loop.rows[-1]["train_loss"],
                   "valid_loss": last_eval["valid_loss"] if last_eval else None,
                   "valid_mean_token_accuracy": last_eval["valid_mean_token_accuracy"] if last_eval else None}
        loop.epoch = epoch + 1
        loop.checkpoints.append(Checkpoint(loop.step, epoch + 1, folder, metrics))
        save_checkpoint(accelerator, model, tokenizer, folder, resumable=True)
        if accelerator.is_main_process:
            for older in loop.checkpoints[:-1]:
                shutil.rmtree(older.path / RESUME_DIR, ignore_errors=True)
            write_metrics(output_dir / "metrics.csv", loop.rows)
            emit(TrainEvent("checkpoint", f"Checkpoint saved at step {loop.step} (epoch {epoch + 1})",
                            {"step": loop.step, "epoch": epoch + 1, "path": str(folder), "metrics": metrics}))
        if loop.stopped_early:
            emit(TrainEvent("message", f"Early stopping at step {loop.step}: validation loss has not improved "
                            f"for {config.early_stopping_patience} evaluations"))
            break
    if bar is not None:
        bar.close()

    # 7. Final weights, metrics, plot, summary.
    final_dir = output_dir / "final"
    metrics_csv = output_dir / "metrics.csv"
    checkpoints = loop.checkpoints
    best = min((c for c in checkpoints if c.metrics.get("valid_loss") is not None),
               key=lambda c: c.metrics["valid_loss"], default=None)
    save_checkpoint(accelerator, model, tokenizer, final_dir, resumable=False)
    if accelerator.is_main_process:
        write_metrics(metrics_csv, loop.rows)
        if loop.rows:
            plot_losses(loop.rows, output_dir / "loss.png", f"{config.model} · {config.adapter} · {output_dir.name}")
        record.update({
            "status": status, "finished_at": datetime.now(UTC).isoformat(), "trained_tokens": loop.trained_tokens,
            "steps_done": loop.step, "stopped_early": loop.stopped_early,
            "best_checkpoint": str(best.path) if best else None,
            "checkpoints": [c.to_dict() for c in checkpoints],
        })
        (output_dir / "config.json").write_text(json.dumps(record, indent=2))
    emit(TrainEvent("message", "The job has successfully completed" if status == "succeeded"
                    else "The job was cancelled", {"status": status}))
    return TrainResult(
        output_dir=output_dir, config=config, dataset_sha256=dataset_sha256, checkpoints=checkpoints,
        final_dir=final_dir, metrics_csv=metrics_csv, trained_tokens=loop.trained_tokens, status=status,
        best_checkpoint=best, stopped_early=loop.stopped_early,
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
