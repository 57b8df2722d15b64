"""The training recipe on a tiny random Llama: mask, determinism, resume, methods, cancel, run folder, and the
checkpoint picked by a task metric scored on generated validation replies (`select_by`)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ftlab.config
from ftlab.config import AUTO_RULES, PLAIN_LORA, TrainConfig, auto_batch_size, auto_by_steps, auto_epochs, auto_wide
from ftlab.data.schema import parse_example
from ftlab.models import load_tokenizer
from ftlab.train.recipe import (
    choose_select_by,
    last_checkpoint,
    length_grouped_batches,
    overfitting,
    plot_losses,
    train,
)
from ftlab.train.tokenize import IGNORE_INDEX, tokenize_example

MULTI_TURN = {
    "messages": [
        {"role": "system", "content": "You list ingredients."},
        {"role": "user", "content": "Title: Toast"},
        {"role": "assistant", "content": '["bread", "butter"]'},
        {"role": "user", "content": "And for tea?"},
        {"role": "assistant", "content": "Just ask again.", "weight": 0},
        {"role": "user", "content": "Tea, please."},
        {"role": "assistant", "content": '["tea", "water"]'},
    ]
}


def write_dataset(path: Path, n: int, offset: int = 0) -> Path:
    with open(path, "w") as handle:
        for i in range(offset, offset + n):
            example = {"messages": [
                {"role": "system", "content": "Answer with a JSON list."},
                {"role": "user", "content": f"Ingredients of dish number {i}?"},
                {"role": "assistant", "content": json.dumps([f"item{i % 7}", "salt", "water"][: 1 + i % 3])},
            ]}
            handle.write(json.dumps(example) + "\n")
    return path


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return write_dataset(tmp_path / "train.jsonl", 24), write_dataset(tmp_path / "val.jsonl", 6, offset=100)


def tiny_config(model: Path, **overrides) -> TrainConfig:
    """The tiny model's runs: the scenarios below were built (and their numbers measured) on a plain rank-16 LoRA."""
    values = {"model": str(model), "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 20.0, "seed": 7,
              **PLAIN_LORA}
    return TrainConfig(**{**values, **overrides})


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_mask_decodes_to_exactly_the_trained_assistant_replies(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    item = tokenize_example(tokenizer, parse_example(MULTI_TURN))
    # Group consecutive trained tokens into spans and decode each span.
    spans, current = [], []
    for token, label in zip(item.input_ids, item.labels, strict=True):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    decoded = [tokenizer.decode(span) for span in spans]
    assert decoded == ['["bread", "butter"]<|im_end|>', '["tea", "water"]<|im_end|>']
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(item.input_ids, item.labels, strict=True))


def test_truncation_is_counted(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    item = tokenize_example(tokenizer, parse_example(MULTI_TURN), max_length=20)
    assert len(item.input_ids) == 20 and item.truncated_tokens > 0


def test_auto_rules_follow_the_cookbook() -> None:
    assert auto_epochs(10) == 10 and auto_epochs(3) == 25 and auto_epochs(100) == 3 and auto_epochs(20_000) == 1
    # 5,000 × 3 epochs = 15,000 examples seen lies within [100, 25,000], so the target of 3 stands; the cap
    # starts where 3 epochs would pass 25,000 (8,334 × 3 = 25,002 → 25,000 // 8,334 = 2).
    assert auto_epochs(5_000) == 3 and auto_epochs(8_333) == 3 and auto_epochs(8_334) == 2
    assert auto_batch_size(100) == 8 and auto_batch_size(20) == 2 and auto_batch_size(100_000) == 200
    resolved = TrainConfig().resolve(40, rule="cookbook")
    assert (resolved.n_epochs, resolved.batch_size, resolved.learning_rate_multiplier) == (3, 4, 1.0)


def test_the_steps_rule_gives_small_sets_steps_and_a_larger_learning_rate() -> None:
    assert auto_by_steps(80, 8) == (6, 2.5) and auto_by_steps(240, 8) == (3, 2.5)  # 60 steps, or the cookbook's
    assert auto_by_steps(3_000, 8)[1] == pytest.approx(1.784, abs=1e-3) and auto_by_steps(20_000, 40) == (1, 1.0)
    assert auto_by_steps(80, 8, "full") == (6, 1.0)
    stepped = TrainConfig().resolve(80, rule="steps")
    assert (stepped.n_epochs, stepped.batch_size, stepped.learning_rate_multiplier) == (6, 8, 2.5)
    assert TrainConfig(n_epochs=2).resolve(80, rule="steps").n_epochs == 2  # a value given stays
    assert (stepped.lora_r, stepped.lora_alpha, stepped.lora_dropout, stepped.loraplus_lr_ratio) == (16, 32, 0.0, None)


def test_the_wide_rule_gives_a_rank_64_lora_plus_adapter_90_steps() -> None:
    assert auto_wide(100, 8)["n_epochs"] == 7 and auto_wide(80, 8)["n_epochs"] == 9  # 13 and 10 steps an epoch
    assert auto_wide(240, 8)["n_epochs"] == 3 and auto_wide(20, 2)["n_epochs"] == 9  # the cookbook's 3; 90 / 10
    wide = TrainConfig().resolve(100, rule="wide")
    assert (wide.n_epochs, wide.learning_rate_multiplier, wide.lora_r, wide.lora_alpha, wide.lora_dropout,
            wide.loraplus_lr_ratio) == (7, 0.37, 64, 128, 0.08, 4.0)  # fmt: skip
    # A rank given keeps the adapter's scale (alpha twice the rank); LoRA+ turned off stays off.
    assert TrainConfig(lora_r=8).resolve(100, rule="wide").lora_alpha == 16
    assert TrainConfig(loraplus_lr_ratio=None).resolve(100, rule="wide").loraplus_lr_ratio is None
    # Measured on supervised adapters only: full fine-tuning and DPO resolve as under "steps".
    for other in (TrainConfig(adapter="full"), TrainConfig(method="dpo")):
        assert other.resolve(100, rule="wide") == other.resolve(100, rule="steps")


@pytest.mark.parametrize("rule", AUTO_RULES)
def test_auto_rule_is_the_one_line_that_switches_the_default(rule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every front door resolves "auto" through `TrainConfig.resolve` without naming a rule, so AUTO_RULE alone
    decides; the tests of each rule above name theirs and hold whichever is the default."""
    monkeypatch.setattr(ftlab.config, "AUTO_RULE", rule)
    resolved = TrainConfig().resolve(80)
    assert resolved == TrainConfig().resolve(80, rule=rule)
    assert (resolved.n_epochs, resolved.learning_rate_multiplier) == {"cookbook": (3, 1.0), "steps": (6, 2.5),
                                                                       "wide": (9, 0.37)}[rule]  # fmt: skip
    assert TrainConfig(learning_rate_multiplier=1.5).resolve(80).learning_rate_multiplier == 1.5


def test_unknown_setting_fails_loudly() -> None:
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(n_epoch=3)
    with pytest.raises(ValueError):
        TrainConfig(n_epochs=0)


def test_old_method_spelling_means_adapter() -> None:
    assert TrainConfig(method="dora").adapter == "dora" and TrainConfig(method="dora").method == "supervised"
    assert TrainConfig.model_validate({"method": "full", "adapter": "full"}).adapter == "full"
    assert TrainConfig(method="full").resolve(10).learning_rate == 2e-5
    with pytest.raises(ValueError, match="contradicts adapter 'lora'"):
        TrainConfig(method="dora", adapter="lora")
    with pytest.raises(ValueError, match="supervised"):
        TrainConfig(method="qlora")


def test_length_grouped_batches_cover_everything_once_and_group_lengths() -> None:
    lengths = [((i * 37) % 100) + 1 for i in range(200)]
    batches = length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(200))
    padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    assert padding / sum(lengths) < 0.1
    assert batches == length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert batches != length_grouped_batches(lengths, 8, seed=1, epoch=1)


def test_overfitting_needs_two_rises_while_training_falls() -> None:
    assert overfitting([(2.0, 1.0), (1.5, 1.1), (1.0, 1.2)])
    assert not overfitting([(2.0, 1.0), (1.5, 1.1), (1.6, 1.2)])
    assert not overfitting([(2.0, 1.0), (1.5, 0.9), (1.0, 1.2)])


def test_run_folder_and_loss_falls(tiny_model_dir: Path, data, tmp_path: Path) -> None:
    # select_by is left "auto": the validation replies are JSON lists, so set_f1 joins the columns.
    events = []
    result = train(tiny_config(tiny_model_dir, n_epochs=3), *data, tmp_path / "run", on_event=events.append,
                   progress=False)
    run = tmp_path / "run"
    assert result.status == "succeeded"
    for name in ["config.json", "metrics.csv", "loss.png", "final/adapter_model.safetensors",
                 "checkpoint-epoch-1/adapter_model.safetensors", "checkpoint-epoch-3/adapter_model.safetensors"]:
        assert (run / name).exists(), name
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["n_epochs"] == 3 and record["dataset_sha256"]["train"] == result.dataset_sha256["train"]
    assert len(record["dataset_sha256"]["train"]) == 64
    rows = read_rows(run / "metrics.csv")
    assert list(rows[0]) == ["step", "train_loss", "train_mean_token_accuracy", "valid_loss",
                             "valid_mean_token_accuracy", "set_f1"]
    assert record["config"]["select_by"] == "set_f1" and result.config.select_by == "set_f1"
    assert any(e.message.startswith("select_by auto: set_f1, scored on replies generated for the 6 validation")
               for e in events)
    assert len(rows) == 18
    valid = [float(r["valid_loss"]) for r in rows if r["valid_loss"]]
    assert len(valid) == 3 and valid[-1] < valid[0]
    assert [e.message for e in events if e.type == "metrics"][-1].startswith("Step 18/18: training loss=")
    assert [c.epoch for c in result.checkpoints] == [1, 2, 3]
    assert result.best_checkpoint is not None and result.trained_tokens > 0


def test_same_seed_same_loss_curve(tiny_model_dir: Path, data, tmp_path: Path) -> None:
    config = tiny_config(tiny_model_dir, n_epochs=3)
    first = train(config, *data, tmp_path / "a", progress=False)
    second = train(config, *data, tmp_path / "b", progress=False)
    assert read_rows(first.metrics_csv) == read_rows(second.metrics_csv)


def cancel_after(n_steps: int):
    """A should_stop that lets `n_steps` steps run, then cancels."""
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > n_steps

    return should_stop


# plain: 3 epochs of 6 steps, cancelled at the start of epoch 2, resumed from checkpoint-epoch-1.
# early stopping: validation every 2 steps with patience 2 and dropout (so the RNG state matters). Uninterrupted,
# the best validation loss comes at step 4, steps 6 and 8 are worse and the run stops at step 8, in epoch 2.
# Cancelled at step 7 and resumed from checkpoint-epoch-1 (step 6, one evaluation of patience used), the resumed
# run must remember the best value and the patience left to stop at step 8 too: forgetting the best value would
# count step 8 as an improvement, forgetting the patience would allow two more evaluations.
# early stopping by a task metric: the same run watching the chrF of its generated validation replies (higher is
# better), which also peaks at step 4 (measured 0.115, then 0.101 and 0.110): the same story, a metric's way up.
EARLY_STOPPING = {"n_epochs": 6, "learning_rate_multiplier": 50.0, "lora_alpha": 128, "eval_every": 2,
                  "early_stopping_patience": 2, "lora_dropout": 0.1, "select_by": "valid_loss"}
RESUME_CASES = {
    "plain": ({"n_epochs": 3}, 6, "checkpoint-epoch-1"),
    "early stopping": (EARLY_STOPPING, 7, "checkpoint-epoch-1"),
    "early stopping by a task metric": ({**EARLY_STOPPING, "select_by": "chrf"}, 7, "checkpoint-epoch-1"),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_equals_uninterrupted(tiny_model_dir: Path, data, tmp_path: Path, case: str) -> None:
    overrides, cancel_at, resume_from = RESUME_CASES[case]
    config = tiny_config(tiny_model_dir, **overrides)
    whole = train(config, *data, tmp_path / "whole", progress=False)

    cancelled = train(config, *data, tmp_path / "cut", should_stop=cancel_after(cancel_at), progress=False)
    assert cancelled.status == "cancelled" and len(read_rows(cancelled.metrics_csv)) == cancel_at
    # Only the newest checkpoint keeps the state to resume from, and it holds no model weights: the adapter
    # beside it is what it resumes, so it stays adapter-sized (Adam's two moments, the schedule, RNG, the loop).
    run = tmp_path / "cut"
    assert last_checkpoint(run) == run / resume_from
    assert [p.name for p in run.glob("checkpoint-epoch-*/resume")] == ["resume"]
    resume_files = list((run / resume_from / "resume").iterdir())
    assert not [f.name for f in resume_files if f.suffix == ".safetensors"]
    adapter_bytes = (run / resume_from / "adapter_model.safetensors").stat().st_size
    assert sum(f.stat().st_size for f in resume_files) < 2.5 * adapter_bytes  # the tiny base: 95× the adapter

    events = []
    resumed = train(config, *data, run, resume=True, progress=False, on_event=events.append)
    assert f"Resumed from {resume_from} at step" in " ".join(e.message for e in events)
    assert resumed.status == "succeeded" and resumed.stopped_early == whole.stopped_early
    assert read_rows(resumed.metrics_csv) == read_rows(whole.metrics_csv)
    assert [(c.epoch, c.step) for c in resumed.checkpoints] == [(c.epoch, c.step) for c in whole.checkpoints]
    a = load_file(whole.final_dir / "adapter_model.safetensors")
    c = load_file(resumed.final_dir / "adapter_model.safetensors")
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)

    if case.startswith("early stopping"):
        rows = read_rows(whole.metrics_csv)
        metric = whole.config.selection_metric
        sign = 1 if metric == "valid_loss" else -1  # lower loss, higher task metric
        watched = {int(r["step"]): sign * float(r[metric]) for r in rows if r[metric]}
        assert whole.stopped_early and int(rows[-1]["step"]) == 8 < whole.config.n_epochs * 6
        # At the resume point (step 6) patience is half used, and step 8 is still worse than step 4.
        assert list(watched) == [2, 4, 6, 8] and watched[4] < min(watched[6], watched[8])
        # The run stopped early stays stopped: resuming it again trains no further step.
        again = train(config, *data, run, resume=True, progress=False)
        assert again.stopped_early and read_rows(again.metrics_csv) == read_rows(whole.metrics_csv)


@pytest.mark.parametrize("adapter", ["dora", "full"])
def test_other_adapters_train(tiny_model_dir: Path, data, tmp_path: Path, adapter: str) -> None:
    result = train(tiny_config(tiny_model_dir, adapter=adapter, n_epochs=1), *data, tmp_path / adapter, progress=False)
    rows = read_rows(result.metrics_csv)
    assert result.status == "succeeded" and len(rows) == 6
    assert (result.final_dir / ("model.safetensors" if adapter == "full" else "adapter_config.json")).exists()


def test_early_stopping_stops_at_the_first_evaluation_without_improvement(tiny_model_dir, data, tmp_path):
    # The largest learning rate allowed (x100, B matrices 16x faster) soon worsens validation loss: with patience 1
    # the run stops at the end of epoch 3 (step 18), whose validation loss is worse than epoch 2's, and saves that
    # epoch's checkpoint.
    config = tiny_config(tiny_model_dir, n_epochs=6, learning_rate_multiplier=100.0, loraplus_lr_ratio=16,
                         early_stopping_patience=1, select_by="valid_loss")
    result = train(config, *data, tmp_path / "es", progress=False)
    assert result.stopped_early and [c.step for c in result.checkpoints] == [6, 12, 18]
    losses = [c.metrics["valid_loss"] for c in result.checkpoints]
    assert losses[0] > losses[1] < losses[2]
    assert json.loads((tmp_path / "es" / "config.json").read_text())["stopped_early"] is True


def test_loraplus_makes_the_b_matrices_learn_faster(tiny_model_dir: Path, data, tmp_path: Path) -> None:
    # Same seed, same data: only B's learning rate differs (×16). B starts at zero and Adam moves each weight by
    # about its learning rate per step, so B ends ~16× larger (measured 14.9×); A, at the same rate, barely differs.
    def adapter_norms(ratio: float | None) -> dict[str, float]:
        config = tiny_config(tiny_model_dir, n_epochs=1, learning_rate_multiplier=1.0, loraplus_lr_ratio=ratio)
        weights = load_file(train(config, data[0], None, tmp_path / str(ratio), progress=False).final_dir
                            / "adapter_model.safetensors")
        return {part: float(torch.stack([w.float().norm() for k, w in weights.items() if part in k]).norm())
                for part in ("lora_A", "lora_B")}

    plain, plus = adapter_norms(None), adapter_norms(16.0)
    assert plus["lora_B"] / plain["lora_B"] > 10
    assert plus["lora_A"] == pytest.approx(plain["lora_A"], rel=0.01)
    assert adapter_norms(1.0) == plain  # a ratio of 1 is plain LoRA, how a user turns off a rule's LoRA+


def test_bad_training_file_is_refused_before_any_compute(tiny_model_dir: Path, tmp_path: Path) -> None:
    from ftlab.data.schema import DataError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "x"}]}\n'
                   '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}\n')
    with pytest.raises(DataError, match="line 1"):
        train(tiny_config(tiny_model_dir), bad, None, tmp_path / "never", progress=False)
    assert not (tmp_path / "never" / "checkpoint-epoch-1").exists()


# ---------------------------------------------------------------------------------------------------------
def test_select_by_auto_scores_a_seeded_sample_of_a_large_validation_set_and_an_explicit_metric_all_of_it():
    # The cookbook's split (100 to train, 100 to validate): auto scores 25 replies, not all 100, and not the loss.
    examples = [parse_example({"messages": [{"role": "user", "content": f"recipe {i}"},
                                            {"role": "assistant", "content": f'["item {i}"]'}]}, line=i + 1)
                for i in range(100)]  # fmt: skip
    auto = TrainConfig(seed=3)
    metric, scored = choose_select_by(auto, examples, n_train=100, processes=1)
    assert metric == "set_f1" and len(scored) == 25
    assert [e.line for e in scored] == sorted(e.line for e in scored)  # kept in file order
    assert choose_select_by(auto, examples, 100, 1)[1] == scored  # the same sample on a resume
    assert choose_select_by(TrainConfig(seed=4), examples, 100, 1)[1] != scored
    assert choose_select_by(TrainConfig(select_by="set_f1"), examples, 100, 1) == ("set_f1", examples)
    assert choose_select_by(auto, examples, 100, processes=2) == ("valid_loss", examples)


# The checkpoint picked by a task metric (select_by)
# ---------------------------------------------------------------------------------------------------------


def test_a_task_metric_picks_the_checkpoint_and_is_recorded_with_its_cost(tiny_model_dir: Path, data, tmp_path):
    # With this seed the chrF of the replies peaks at epoch 1 while the validation loss falls to epoch 4 (measured:
    # chrF .056 .009 .009 .015, loss 10.53 .. 10.40): the metric, not the loss, names the best checkpoint.
    events = []
    config = tiny_config(tiny_model_dir, n_epochs=4, learning_rate_multiplier=50.0, lora_alpha=128, select_by="chrf")
    result = train(config, *data, tmp_path / "run", on_event=events.append, progress=False)
    rows = read_rows(result.metrics_csv)
    assert list(rows[0])[-1] == "chrf" and [r["step"] for r in rows if r["chrf"]] == ["6", "12", "18", "24"]
    assert all(bool(r["chrf"]) == bool(r["valid_loss"]) for r in rows)
    by_metric = [c.metrics["chrf"] for c in result.checkpoints]
    by_loss = [c.metrics["valid_loss"] for c in result.checkpoints]
    assert result.best_checkpoint.epoch == 1 + by_metric.index(max(by_metric)) == 1
    assert 1 + by_loss.index(min(by_loss)) == 4  # what selecting by validation loss would have picked
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["selected_by"] == "chrf" and record["best_checkpoint"] == str(result.best_checkpoint.path)
    cost = record["validation_replies"]
    assert cost["evaluations"] == 4 and cost["replies"] == 6 and 0 < cost["seconds"] < cost["run_seconds"]
    assert cost["share_of_run"] == pytest.approx(cost["seconds"] / cost["run_seconds"], rel=0.01)  # rounded s
    metrics = [e for e in events if e.type == "metrics" and e.data.get("chrf") is not None]
    assert len(metrics) == 4 and ", validation chrf=" in metrics[0].message
    assert any(e.message.startswith("Validation replies for chrf: 4 evaluations of 6 replies") for e in events)


def test_the_loss_plot_draws_the_task_metric_on_a_second_axis(tmp_path: Path) -> None:
    rows = [{"step": 1, "train_loss": 2.0, "valid_loss": None},
            {"step": 2, "train_loss": 1.5, "valid_loss": 1.7, "set_f1": 0.4},
            {"step": 4, "train_loss": 1.2, "valid_loss": 1.6, "set_f1": 0.6}]  # fmt: skip
    plot_losses(rows, tmp_path / "metric.svg", "run", "set_f1")  # SVG: matplotlib keeps each text as a comment
    plot_losses(rows, tmp_path / "loss.svg", "run")
    texts = [re.findall(r"<!-- (.*?) -->", (tmp_path / name).read_text()) for name in ("metric.svg", "loss.svg")]
    assert {"validation set_f1", "0.600"} <= set(texts[0]) and texts[0][-1] == "set_f1"  # legend, right axis
    assert "loss (per trained token)" in texts[1] and not any("set_f1" in text for text in texts[1])


def test_selection_by_valid_label_scores_the_rate_of_allowed_replies(tiny_model_dir: Path, data, tmp_path) -> None:
    from ftlab.data.scoring import mean_score

    labels = ["item1", "salt"]
    assert mean_score("valid_label", [" salt ", "pepper", "item1", "x"], ["?"] * 4, labels) == 0.5
    config = tiny_config(tiny_model_dir, n_epochs=1, select_by="valid_label_rate", labels=labels)
    assert config.select_by == "valid_label"  # the spelling, stored as `ftlab eval` names it
    result = train(config, *data, tmp_path / "run", progress=False)
    assert result.best_checkpoint.metrics["valid_label"] == 0.0  # a random model writes no label
    with pytest.raises(ValueError, match="select_by valid_label needs the label set"):
        tiny_config(tiny_model_dir, select_by="valid_label")


@pytest.mark.parametrize(("select_by", "validation", "error"), [
    ("field_acc", True, r"val\.jsonl, line 1: select_by field_acc needs validation replies that are a JSON object"),
    ("set_f1", False, r"select_by set_f1 scores replies to the validation set: give one"),
    ("judge:smollm2-135m-instruct", True, r"needs the judge's scoring function"),
])  # fmt: skip
def test_a_metric_that_cannot_score_the_validation_set_is_refused_before_any_compute(
    tiny_model_dir: Path, data, tmp_path: Path, select_by: str, validation: bool, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        train(tiny_config(tiny_model_dir, select_by=select_by), data[0], data[1] if validation else None,
              tmp_path / "never", progress=False)  # fmt: skip
    assert not (tmp_path / "never" / "config.json").exists()


@pytest.mark.bundled
def test_selection_by_the_task_metric_picks_another_checkpoint_than_the_loss(tmp_path: Path) -> None:
    """Built so the two must disagree: every training reply is the JSON list ["salt"], every validation reference
    is prose. Learning the JSON raises the loss of the prose references at each epoch, so the loss picks epoch 1,
    while JSON validity (of the reply the model writes, whatever the reference) is 0 before the model has learnt
    the format and 1 after (measured: epoch 1 loss 2.71, "Huggley-Lemon-Lemon"; epoch 2 loss 3.20, ["salt"])."""

    def chats(path: Path, n: int, reply: str) -> Path:
        path.write_text("".join(json.dumps({"messages": [
            {"role": "user", "content": f"Ingredients of dish number {i}?"},
            {"role": "assistant", "content": reply}]}) + "\n" for i in range(n)))  # fmt: skip
        return path

    train_file = chats(tmp_path / "train.jsonl", 8, '["salt"]')
    validation = chats(tmp_path / "val.jsonl", 3, "Salt and pepper, to taste.")
    config = TrainConfig(n_epochs=3, batch_size=4, learning_rate_multiplier=4.0, select_by="json_valid")
    result = train(config, train_file, validation, tmp_path / "run", progress=False)
    losses = [c.metrics["valid_loss"] for c in result.checkpoints]
    valid_json = [c.metrics["json_valid"] for c in result.checkpoints]
    assert losses == sorted(losses) and losses[0] < losses[-1]  # the loss only rises: it would pick epoch 1
    assert valid_json[0] < 1.0 == max(valid_json)
    assert result.best_checkpoint.epoch == 1 + valid_json.index(1.0) > 1
