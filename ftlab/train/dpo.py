"""Direct Preference Optimization, OpenAI's `method: dpo`: preference pairs in, an adapter that prefers the
preferred replies out.

The loss is DPO's (Rafailov et al., 2023), the sigmoid form TRL's `DPOTrainer` uses by default: for a prompt x
with preferred reply y_w and non-preferred y_l,

    margin = β · ([log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]),   loss = −log σ(margin)

where log π(y|x) sums the log-probabilities of the reply's tokens (its end-of-turn token included) as the chat
template renders it: the same assistant mask as supervised training (`tokenize.tokenize_example`). The reward
margin is `margin`; accuracy is the share of pairs with a positive margin (TRL's `rewards/accuracies`).

Why a short loss over ftlab's recipe rather than TRL's `DPOTrainer` (TRL 1.16 is installed): the loss is the
dozen lines below and everything around it (chat template and reply mask, bf16 autocast, length-grouped batches,
the output layer only at the reply's positions, resumable checkpoints, metrics and events) is the supervised
recipe's, where `DPOTrainer` brings a second data pipeline, collator, Trainer loop and checkpoint format beside
it. `benchmarks/dpo_throughput.py` times both on the same pairs and LoRA; no figure is claimed here until it is
measured on a quiet machine.

The reference log-probabilities are computed once, before the first step, and kept in the run folder
(`reference_logps.pt`) so that a resumed run scores against the same ones. With a fresh adapter the reference is
the base model, read with the adapter switched off (peft's `disable_adapter()`); with `init_adapter` (say the
adapter of an SFT run) it is that adapter as loaded, before any step. Either way there is no second copy of the
model: full fine-tuning is refused by `TrainConfig` for this reason.

Everything else is the supervised recipe's (`ftlab.train.recipe`): `prepare_training`, `train_step`,
`LoopState`, per-epoch checkpoints resumable through accelerate, `metrics.csv`, events and the loss plot.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

import ftlab
from ftlab.config import TrainConfig
from ftlab.data.reply_format import learned_reply_schema
from ftlab.data.schema import DataError, file_sha256, read_preferences
from ftlab.infer.refs import resolve_init_adapter
from ftlab.models import Precision, load_model, load_tokenizer, set_threads
from ftlab.train.recipe import (
    RESUME_DIR,
    Checkpoint,
    LabelledLMLoss,
    LoopState,
    NonFiniteLoss,
    TrainEvent,
    TrainResult,
    accelerator_and_precision,
    autocast,
    collate,
    is_better,
    last_checkpoint,
    length_grouped_batches,
    load_trainable_weights,
    machine_info,
    new_run_dir,
    overfitting,
    plot_losses,
    prepare_model,
    prepare_training,
    save_checkpoint,
    seed_everything,
    train_step,
    write_metrics,
)
from ftlab.train.tokenize import IGNORE_INDEX, Tokenized, tokenize_example

METRIC_COLUMNS = ["step", "train_loss", "train_reward_margin", "train_reward_accuracy",
                  "valid_loss", "valid_reward_margin", "valid_reward_accuracy"]  # fmt: skip
REFERENCE_FILE = "reference_logps.pt"
OUTPUTS = ("preferred_output", "non_preferred_output")


@dataclass
class Pair:
    """A tokenised preference pair: the prompt continued by each reply, the reply's tokens labelled, and the
    preferred reply's text (what the run's reply schema is learned from)."""

    preferred: Tokenized
    non_preferred: Tokenized
    line: int | None
    preferred_text: str

    @property
    def length(self) -> int:
        return max(len(self.preferred.input_ids), len(self.non_preferred.input_ids))


def tokenize_pairs(tokenizer, path: Path, max_length: int) -> list[Pair]:
    """Read and tokenise a preference JSONL file; a reply cut away entirely by `max_length` is an error."""
    pairs = []
    for example in read_preferences(path):
        both = [tokenize_example(tokenizer, conversation, max_length) for conversation in example.conversations()]
        for item, key in zip(both, OUTPUTS, strict=True):
            if item.n_trained == 0:
                raise DataError(f"the prompt fills max_length={max_length} tokens: nothing of the reply is left to "
                                "score", path=path, line=example.line, field=key)  # fmt: skip
        pairs.append(Pair(both[0], both[1], example.line, example.outputs()[0].text))
    return pairs


def collate_pairs(pairs: list[Pair], pad_id: int, device: torch.device,
                  reference: torch.Tensor | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """The preferred sequences, then the non-preferred ones, right-padded to the longest; with the pairs'
    reference log-probabilities (one row per pair: preferred, non-preferred) when given."""
    batch = collate([p.preferred for p in pairs] + [p.non_preferred for p in pairs], pad_id, device)
    if reference is not None:
        batch["reference"] = reference.to(device)
    return batch


class PreferenceLoss(LabelledLMLoss):
    """DPO's loss over a batch of pairs (see the module docstring), with `LabelledLMLoss`'s trick: the output layer
    is computed only at the replies' positions. Returns what `train_step` expects: the loss summed over pairs, the
    pairs with a positive margin, the number of pairs, and the margins summed."""

    def __init__(self, model: nn.Module, beta: float) -> None:
        super().__init__(model)
        self.beta = beta

    def logps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each sequence's summed log-probability of its labelled tokens."""
        hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        targets = labels[:, 1:]
        selected = targets != IGNORE_INDEX
        logits = self.lm_head(hidden[:, :-1][selected]).float()
        token_logps = -nn.functional.cross_entropy(logits, targets[selected], reduction="none")
        rows = selected.nonzero()[:, 0]
        return torch.zeros(len(input_ids), device=logits.device).index_add(0, rows, token_logps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                reference: torch.Tensor) -> tuple[torch.Tensor, ...]:  # fmt: skip
        preferred, non_preferred = self.logps(input_ids, attention_mask, labels).chunk(2)
        margins = self.beta * ((preferred - reference[:, 0]) - (non_preferred - reference[:, 1]))
        losses = -nn.functional.logsigmoid(margins)
        count = torch.tensor(len(margins), device=margins.device)
        return losses.sum(), (margins > 0).sum(), count, margins.detach().sum()


@torch.no_grad()
def reference_logps(loss_module: PreferenceLoss, pairs: list[Pair], batch_size: int, pad_id: int,
                    device: torch.device, precision: Precision, adapter_off: bool) -> torch.Tensor:  # fmt: skip
    """log π_ref of both replies of every pair, shape (pairs, 2): the model as it starts, with its adapter
    switched off (`adapter_off`, a fresh adapter) or as loaded (an `init_adapter`)."""
    reference = torch.empty(len(pairs), 2)
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
    loss_module.eval()
    with loss_module.model.disable_adapter() if adapter_off else nullcontext():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collate_pairs([pairs[i] for i in chunk], pad_id, device)
            with autocast(device, precision, loss_module):
                reference[chunk] = loss_module.logps(**batch).float().cpu().view(2, -1).T
    loss_module.train()
    return reference


@torch.no_grad()
def evaluate_pairs(loss_module: nn.Module, pairs: list[Pair], reference: torch.Tensor, batch_size: int, pad_id: int,
                   device: torch.device, precision: Precision) -> tuple[float, float, float]:  # fmt: skip
    """Mean DPO loss, reward margin and accuracy over `pairs`."""
    loss_module.eval()
    totals = torch.zeros(3)
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate_pairs([pairs[i] for i in chunk], pad_id, device, reference[chunk])
        with autocast(device, precision, loss_module):
            loss, correct, _, margins = loss_module(**batch)
        totals += torch.tensor([loss.item(), margins.item(), correct.item()])
    loss_module.train()
    loss, margin, accuracy = (totals / len(pairs)).tolist()
    return loss, margin, accuracy


def prepare_policy(config: TrainConfig, device: torch.device, precision: Precision) -> nn.Module:
    """The model being tuned: a fresh adapter on the base (`recipe.prepare_model`), or `init_adapter` loaded
    trainable on it, with this run's dropout (not the one it was trained with)."""
    if not config.init_adapter:
        return prepare_model(config, device, precision)
    from peft import PeftConfig, PeftModel

    model = load_model(config.model, device, precision)
    model.config.use_cache = False
    saved = PeftConfig.from_pretrained(config.init_adapter)
    saved.lora_dropout = config.lora_dropout
    return PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True, config=saved)


def train_dpo(
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
    """Tune `config.model` (or `config.init_adapter`) on a preference JSONL file and write a run folder, as
    `recipe.train` does for chat data; see the module docstring."""
    emit = on_event or (lambda event: None)
    train_file = Path(train_file)
    validation_file = Path(validation_file) if validation_file else None
    output_dir = Path(output_dir) if output_dir else new_run_dir()
    output_dir.mkdir(parents=True, exist_ok=True)
    set_threads()

    # 1. Data: both replies of every pair tokenised with the chat template and the reply-only mask.
    config = resolve_init_adapter(config)
    tokenizer = load_tokenizer(config.model)
    train_pairs = tokenize_pairs(tokenizer, train_file, config.max_length)
    valid_pairs = tokenize_pairs(tokenizer, validation_file, config.max_length) if validation_file else []
    reply_schema = learned_reply_schema([p.preferred_text for p in train_pairs])
    cut = [p.line for p in train_pairs if p.preferred.truncated_tokens or p.non_preferred.truncated_tokens]
    if cut:
        emit(TrainEvent("warning", f"{len(cut)} training pairs exceed max_length={config.max_length} tokens and "
                        f"were cut (lines {cut[:10]})"))  # fmt: skip

    # 2. Resolve "auto" and write down every setting before any compute is spent.
    config = config.resolve(len(train_pairs))
    accelerator, precision = accelerator_and_precision(config)
    if accelerator.num_processes > 1:  # its loop has not the supervised loop's per-example split yet
        raise ValueError("DPO trains in one process for now: run it without accelerate launch/torchrun "
                         "(or --processes 1)")
    device = accelerator.device
    steps_per_epoch = math.ceil(len(train_pairs) / config.batch_size / accelerator.num_processes)
    total_steps = steps_per_epoch * int(config.n_epochs)
    dataset_sha256 = {"train": file_sha256(train_file)}
    if validation_file:
        dataset_sha256["validation"] = file_sha256(validation_file)
    sequences = [item for p in train_pairs for item in (p.preferred, p.non_preferred)]
    record = {
        "config": config.model_dump(),
        "learning_rate": config.learning_rate,
        "train_file": str(train_file),
        "validation_file": str(validation_file) if validation_file else None,
        "dataset_sha256": dataset_sha256,
        "n_train_examples": len(train_pairs),
        "n_validation_examples": len(valid_pairs),
        "train_tokens_per_epoch": sum(len(item.input_ids) for item in sequences),
        "trained_tokens_per_epoch": sum(item.n_trained for item in sequences),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "precision": {"weights": str(precision.weights), "autocast": str(precision.autocast),
                      "attention": precision.attention},
        "machine": machine_info(device),
        "ftlab_version": ftlab.__version__,
        "started_at": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    if accelerator.is_main_process:
        (output_dir / "config.json").write_text(json.dumps(record, indent=2))
    start = f"from {config.init_adapter}" if config.init_adapter else f"a fresh {config.adapter} adapter"
    emit(TrainEvent("message", f"Training {start} with DPO (beta {config.beta}) on {len(train_pairs)} preference "
                    f"pairs for {config.n_epochs} epochs ({total_steps} steps, batch size {config.batch_size}, "
                    f"learning rate {config.learning_rate:.2e})", {"total_steps": total_steps}))  # fmt: skip

    # 3. Model, adapter, optimizer, schedule and what a checkpoint keeps, as in the supervised recipe.
    seed_everything(config.seed)
    policy = prepare_policy(config, device, precision)
    loss_module, optimizer, scheduler = prepare_training(
        config, accelerator, precision, total_steps, lambda model: PreferenceLoss(model, float(config.beta)), policy
    )
    preference_loss: PreferenceLoss = accelerator.unwrap_model(loss_module)
    model = preference_loss.model
    loop = LoopState(patience_left=config.early_stopping_patience)
    accelerator.register_for_checkpointing(scheduler, loop)
    accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, input_dir: models.clear())
    pad_id, batch_size = tokenizer.pad_token_id, int(config.batch_size)

    # 4. The reference: computed once from the model as it starts (before a resumed run's weights are loaded
    #    back), kept in the run folder and read back when resuming.
    reference_file = output_dir / REFERENCE_FILE
    resumed_from = last_checkpoint(output_dir) if resume else None
    if resumed_from is not None and reference_file.exists():
        reference = torch.load(reference_file)
    else:
        started = time.perf_counter()
        reference = {name: reference_logps(preference_loss, pairs, batch_size, pad_id, device, precision,
                                           adapter_off=not config.init_adapter)
                     for name, pairs in (("train", train_pairs), ("validation", valid_pairs)) if pairs}  # fmt: skip
        if accelerator.is_main_process:
            torch.save(reference, reference_file)
        emit(TrainEvent("message", f"Reference log-probabilities of {len(train_pairs) + len(valid_pairs)} pairs "
                        f"computed in {time.perf_counter() - started:.1f} s"))  # fmt: skip
    if resumed_from is not None:
        load_trainable_weights(model, resumed_from, config)
        accelerator.load_state(resumed_from / RESUME_DIR)
        emit(TrainEvent("message", f"Resumed from {resumed_from.name} at step {loop.step}/{total_steps}"))

    # 5. The loop: the supervised recipe's, over pairs.
    status, bar = "succeeded", None
    if progress and accelerator.is_main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=loop.step, desc="training (dpo)", unit="step", dynamic_ncols=True)
    loss_module.train()
    eval_every = None if config.eval_every == "epoch" else int(config.eval_every)
    last_epoch = loop.epoch if loop.stopped_early else int(config.n_epochs)
    for epoch in range(loop.epoch, last_epoch):
        batches = length_grouped_batches([p.length for p in train_pairs], batch_size, config.seed, epoch)
        batches = batches[accelerator.process_index :: accelerator.num_processes]
        for indices in batches:
            if should_stop is not None and should_stop():
                status = "cancelled"
                break
            batch = collate_pairs([train_pairs[i] for i in indices], pad_id, device, reference["train"][indices])
            loss, correct, count, margins = train_step(accelerator, loss_module, optimizer, scheduler, batch,
                                                       precision, config.max_grad_norm)  # fmt: skip
            loop.step += 1
            loop.trained_tokens += int((batch["labels"] != IGNORE_INDEX).sum())
            row = {"step": loop.step, "train_loss": round(loss.item(), 6),
                   "train_reward_margin": round((margins / count).item(), 6),
                   "train_reward_accuracy": round((correct / count).item(), 6),
                   "valid_loss": None, "valid_reward_margin": None, "valid_reward_accuracy": None}  # fmt: skip
            if not math.isfinite(row["train_loss"]):
                raise NonFiniteLoss(f"step {loop.step}: the DPO loss is {row['train_loss']}, not a finite number; "
                                    "training stopped (lower learning_rate_multiplier or beta)")  # fmt: skip
            end_of_epoch = indices is batches[-1]
            if valid_pairs and (end_of_epoch if eval_every is None else loop.step % eval_every == 0 or end_of_epoch):
                valid = evaluate_pairs(loss_module, valid_pairs, reference["validation"], batch_size, pad_id, device,
                                       precision)  # fmt: skip
                row["valid_loss"], row["valid_reward_margin"], row["valid_reward_accuracy"] = map(_round, valid)
                _after_validation(loop, row, config, emit)
            loop.rows.append(row)
            message = (f"Step {loop.step}/{total_steps}: training loss={row['train_loss']:.4f}, reward margin="
                       f"{row['train_reward_margin']:.4f}")  # fmt: skip
            if row["valid_loss"] is not None:
                message += (f", validation loss={row['valid_loss']:.4f}, validation reward accuracy="
                            f"{row['valid_reward_accuracy']:.2f}")  # fmt: skip
            emit(TrainEvent("metrics", message, {**row, "total_steps": total_steps, "epoch": epoch + 1}))
            if bar is not None:
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", margin=f"{row['train_reward_margin']:.3f}")
                bar.update(1)
            if loop.patience_left is not None and loop.patience_left <= 0:
                loop.stopped_early = True
                break
        if status == "cancelled":
            break
        _epoch_checkpoint(accelerator, model, tokenizer, output_dir, loop, epoch, emit, reply_schema)
        if loop.stopped_early:
            emit(TrainEvent("message", f"Early stopping at step {loop.step}: validation loss has not improved "
                            f"for {config.early_stopping_patience} evaluations"))  # fmt: skip
            break
    if bar is not None:
        bar.close()

    # 6. Final adapter, metrics, plot, summary.
    final_dir, metrics_csv = output_dir / "final", output_dir / "metrics.csv"
    best = min((c for c in loop.checkpoints if c.metrics.get("valid_loss") is not None),
               key=lambda c: c.metrics["valid_loss"], default=None)  # fmt: skip
    save_checkpoint(accelerator, model, tokenizer, final_dir, resumable=False, reply_schema=reply_schema)
    if accelerator.is_main_process:
        write_metrics(metrics_csv, loop.rows, METRIC_COLUMNS)
        if loop.rows:
            plot_losses(loop.rows, output_dir / "loss.png", f"{config.model} · dpo · {output_dir.name}",
                        ylabel="DPO loss (per pair)")  # fmt: skip
        record.update({
            "status": status, "finished_at": datetime.now(UTC).isoformat(), "trained_tokens": loop.trained_tokens,
            "steps_done": loop.step, "stopped_early": loop.stopped_early,
            "best_checkpoint": str(best.path) if best else None,
            "checkpoints": [c.to_dict() for c in loop.checkpoints],
        })  # fmt: skip
        (output_dir / "config.json").write_text(json.dumps(record, indent=2))
    emit(TrainEvent("message", "The job has successfully completed" if status == "succeeded"
                    else "The job was cancelled", {"status": status}))  # fmt: skip
    return TrainResult(
        output_dir=output_dir, config=config, dataset_sha256=dataset_sha256, checkpoints=loop.checkpoints,
        final_dir=final_dir, metrics_csv=metrics_csv, trained_tokens=loop.trained_tokens, status=status,
        best_checkpoint=best, stopped_early=loop.stopped_early,
    )


def _round(value: float) -> float:
    return round(value, 6)


def _after_validation(loop: LoopState, row: dict, config: TrainConfig, emit: Callable[[TrainEvent], None]) -> None:
    """The supervised recipe's bookkeeping after an evaluation: the overfitting warning and early stopping."""
    loop.evals.append((row["train_loss"], row["valid_loss"]))
    if overfitting(loop.evals):
        emit(TrainEvent("warning", f"Step {loop.step}: validation loss rose for two evaluations in a row while "
                        "training loss fell — the model may be overfitting"))  # fmt: skip
    if is_better(row["valid_loss"], loop.best, config):  # DPO selects by valid_loss (the config refuses others)
        loop.best, loop.patience_left = row["valid_loss"], config.early_stopping_patience
    elif loop.patience_left is not None:
        loop.patience_left -= 1


def _epoch_checkpoint(accelerator, model: nn.Module, tokenizer, output_dir: Path, loop: LoopState, epoch: int,
                      emit: Callable[[TrainEvent], None], reply_schema: dict | None) -> None:  # fmt: skip
    """The adapter of an epoch, with the state to resume from in resume/ (the newest checkpoint's only) and the
    schema of the preferred replies when they are JSON (`ftlab.data.reply_format`)."""
    folder = output_dir / f"checkpoint-epoch-{epoch + 1}"
    last_eval = next((r for r in reversed(loop.rows) if r["valid_loss"] is not None), None)
    metrics = {"step": loop.step, "train_loss": loop.rows[-1]["train_loss"],
               **{k: last_eval[k] if last_eval else None for k in METRIC_COLUMNS if k.startswith("valid_")}}
    loop.epoch = epoch + 1
    loop.checkpoints.append(Checkpoint(loop.step, epoch + 1, folder, metrics))
    save_checkpoint(accelerator, model, tokenizer, folder, resumable=True, reply_schema=reply_schema)
    if accelerator.is_main_process:
        for older in loop.checkpoints[:-1]:
            shutil.rmtree(older.path / RESUME_DIR, ignore_errors=True)
        write_metrics(output_dir / "metrics.csv", loop.rows, METRIC_COLUMNS)
        emit(TrainEvent("checkpoint", f"Checkpoint saved at step {loop.step} (epoch {epoch + 1})",
                        {"step": loop.step, "epoch": epoch + 1, "path": str(folder), "metrics": metrics}))
