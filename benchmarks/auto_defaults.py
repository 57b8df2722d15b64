"""Better "auto": each `auto` rule with no flag set vs the best of a sweep that selects by the task metric.

For each dataset (a folder with train.jsonl, test.jsonl, val.jsonl — or a seeded fifth of train.jsonl when there is
none — and labels.txt for a classification set) it trains
  (a) each rule of `ftlab.config.AUTO_RULES` as `ftlab train TRAIN --validation VAL` gets it with no flag set
      (`TrainConfig.resolve(n, rule=…)`: "cookbook", "steps" and "wide", today's `ftlab.config.auto_wide`),
      the checkpoint `select_by auto` names (set_f1 where the validation replies are JSON lists, validation loss
      on the others);
  (b) an N-trial sweep, `ftlab sweep TRAIN --validation VAL --metric M --trials N` (default space, epochs capped by
      --max-epochs): its best trial's checkpoint;
and scores them on the test split with `ftlab eval`'s code — and on test_more.jsonl, a larger test file, where the
folder has one (recipes_real) — printing one table (dataset, rule, settings, the task metric, JSON validity or the
valid-label rate, minutes) and writing every number as JSON. The metric: set_f1 when the references are JSON
lists, exact (accuracy) with a label set, chrf otherwise. Every run is recorded as usual (FTLAB_HOME), so the trials
are on the dashboard too.

The measurement behind `auto` (hours on a 2-core CPU; the lead's, on a quiet machine):
    python benchmarks/auto_defaults.py --trials 20 --json auto.json
A budgeted one (each sweep trial at most 4 epochs; no sweep at all with --trials 0):
    python benchmarks/auto_defaults.py --trials 8 --max-epochs 4 --datasets recipes_real,support_intents
A smoke run of the script end to end (seconds; the numbers mean nothing):
    python benchmarks/auto_defaults.py --model TINY_MODEL_DIR --limit 24 --trials 2 --max-epochs 2
Switching the default is one line: `AUTO_RULE` in ftlab/config.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ftlab.config import AUTO_RULES, AUTO_SETTINGS, BUNDLED_MODEL, TrainConfig, runs_dir  # noqa: E402
from ftlab.data.labels import read_labels  # noqa: E402
from ftlab.data.schema import read_examples  # noqa: E402
from ftlab.data.scoring import parse_json  # noqa: E402
from ftlab.data.split import split_file  # noqa: E402
from ftlab.evaluate.run import EvalOptions, evaluate  # noqa: E402
from ftlab.infer.refs import resolve_ref  # noqa: E402
from ftlab.records.db import database_url  # noqa: E402
from ftlab.records.store import RunRecorder  # noqa: E402
from ftlab.train.recipe import train  # noqa: E402
from ftlab.train.sweep import (  # noqa: E402
    DEFAULT_SPACE,
    Sweep,
    best_trial,
    check_space,
    create_sweep,
    optimize,
)

DATA = Path(__file__).resolve().parent / "data"
DATASETS = ("recipes_real", "support_intents", "bug_tickets")  # JSON lists, 60 labels, short answers citing ids
SETTINGS = ("batch_size", "adapter", *AUTO_SETTINGS)
TEST_METRIC = {"set_f1": "set_f1", "exact": "accuracy", "chrf": "chrf"}  # select_by → the eval summary's key


@dataclass
class Arm:
    dataset: str
    rule: str  # an AUTO_RULES name, or "sweep (N trials)"
    settings: dict[str, Any]
    checkpoint: str
    minutes: float
    test: dict[str, float] = field(default_factory=dict)
    test_more: dict[str, float] = field(default_factory=dict)  # the same, on the folder's test_more.jsonl if any
    validation_replies_share: float | None = None  # a sweep's: generating the validation replies, of run time


def prepared(folder: Path, work: Path, limit: int | None) -> dict[str, Path]:
    """The folder's train, val and test files — and test_more, a second test file, where there is one — cut to
    `limit` examples each, with val split off train if absent."""
    work.mkdir(parents=True, exist_ok=True)
    files = {"train": folder / "train.jsonl", "val": folder / "val.jsonl", "test": folder / "test.jsonl"}
    if not files["val"].exists():
        split = split_file(files["train"], work / "split", val=0.2, test=0.0, seed=7)
        files["train"], files["val"] = split.paths()["train"], split.paths()["val"]
    if (folder / "test_more.jsonl").exists():
        files["test_more"] = folder / "test_more.jsonl"
    kept = {}
    for name, path in files.items():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept[name] = work / f"{name}.jsonl"
        kept[name].write_text("".join(lines[:limit] if limit else lines), encoding="utf-8")
    return kept


def task_metric(val_file: Path, labels: list[str] | None) -> str:
    if labels:
        return "exact"
    references = [example.reference() for example in read_examples(val_file)]
    return "set_f1" if all(isinstance(parse_json(r), list) for r in references) else "chrf"


def by_rule(dataset: str, rule: str, model: str, train_file: Path, val_file: Path) -> Arm:
    """`ftlab train TRAIN --validation VAL` with no flag set, `auto` resolved by `rule`: one recorded run."""
    config = TrainConfig(model=model).resolve(len(read_examples(train_file)), rule=rule)
    output = runs_dir() / f"auto-{dataset}-{rule}-{time.strftime('%Y%m%d-%H%M%S')}"
    recorder = RunRecorder(output, source="benchmark")
    started = time.perf_counter()
    result = train(config, train_file, val_file, output, on_event=recorder.on_event, progress=False)
    recorder.finish(result)
    checkpoint = result.best_checkpoint.path if result.best_checkpoint else result.final_dir
    return Arm(dataset, rule, {key: getattr(config, key) for key in SETTINGS}, str(checkpoint),
               (time.perf_counter() - started) / 60)  # fmt: skip


def sweep_space(max_epochs: int) -> dict[str, dict[str, Any]]:
    """The default space with n_epochs at most `max_epochs` (the budget)."""
    epochs = DEFAULT_SPACE["n_epochs"]
    high = min(epochs["high"], max_epochs)
    return check_space({**DEFAULT_SPACE, "n_epochs": {"low": min(epochs["low"], high), "high": high}})


def by_sweep(dataset: str, base: TrainConfig, train_file: Path, val_file: Path, trials: int, max_epochs: int) -> Arm:
    """An N-trial sweep selecting by the task metric; the arm is its best trial (settings and checkpoint)."""
    sweep = Sweep(f"auto-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}", train_file, val_file, base,
                  sweep_space(max_epochs), trials, database_url())  # fmt: skip
    started = time.perf_counter()
    create_sweep(sweep)
    optimize(sweep)
    study = sweep.study()
    best = best_trial(study)
    if best is None:
        raise RuntimeError(f"no trial of {sweep.name} completed")
    resolved = TrainConfig(**{**base.model_dump(), **best.params}).resolve(len(read_examples(train_file)))
    shares = []
    for trial in study.get_trials(deepcopy=False):
        record = Path(trial.user_attrs.get("run_dir", "-")) / "config.json"
        if record.is_file() and "validation_replies" in (data := json.loads(record.read_text())):
            shares.append(data["validation_replies"]["share_of_run"])
    return Arm(dataset, f"sweep ({trials} trials)", {key: getattr(resolved, key) for key in SETTINGS},
               best.user_attrs["best_checkpoint"], (time.perf_counter() - started) / 60,
               validation_replies_share=statistics.fmean(shares) if shares else None)  # fmt: skip


def measure(folder: Path, args: argparse.Namespace, work: Path) -> list[Arm]:
    dataset = folder.name
    files = prepared(folder, work / dataset, args.limit)
    train_file, val_file = files["train"], files["val"]
    labels = read_labels(folder / "labels.txt") if (folder / "labels.txt").exists() else None
    metric = task_metric(val_file, labels)
    arms = [by_rule(dataset, rule, args.model, train_file, val_file) for rule in args.rules]
    if args.trials:
        base = TrainConfig(model=args.model, select_by=metric, labels=labels)
        arms.append(by_sweep(dataset, base, train_file, val_file, args.trials, args.max_epochs))
    shown = (TEST_METRIC[metric], "valid_label" if labels else "json_valid")
    for split in ("test", "test_more"):
        if split not in files:
            continue
        result = evaluate(files[split], [resolve_ref(arm.checkpoint) for arm in arms], EvalOptions(labels=labels))
        for arm, scored in zip(arms, result.models, strict=True):
            setattr(arm, split, {key: scored.summary[key] for key in shown if scored.summary.get(key) is not None})
    return arms


def print_table(arms: list[Arm]) -> None:
    more = any(arm.test_more for arm in arms)
    rows = [("dataset", "rule", "settings", "metric", "json_valid / valid_label", *(("test_more",) if more else ()),
             "minutes")]  # fmt: skip
    for arm in arms:
        s = arm.settings
        settings = (f"{s['n_epochs']} ep, lr x{s['learning_rate_multiplier']:.3g}, batch {s['batch_size']}, "
                    f"{s['adapter']} r{s['lora_r']}/a{s['lora_alpha']}"
                    + (f", lora+ {s['loraplus_lr_ratio']:g}" if s.get("loraplus_lr_ratio") else ""))  # fmt: skip
        (metric, value), *valid = arm.test.items()
        second = " / ".join(f"{value:.3f}" for value in arm.test_more.values()) or "–"
        rows.append((arm.dataset, arm.rule, settings, f"{metric} {value:.3f}",
                     f"{valid[0][0]} {valid[0][1]:.3f}" if valid else "–", *((second,) if more else ()),
                     f"{arm.minutes:.1f}"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    for arm in arms:
        if arm.validation_replies_share is not None:
            print(f"{arm.dataset}: generating the validation replies took {arm.validation_replies_share:.0%} of a "
                  "sweep trial's run time (mean over its trials)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="comma-separated folder names under benchmarks/data, or folder paths")
    parser.add_argument("--rules", default=",".join(AUTO_RULES), help="the auto rules to measure (no flag set)")
    parser.add_argument("--trials", type=int, default=20, help="trials of each dataset's sweep (0: no sweep)")
    parser.add_argument("--max-epochs", type=int, default=10, help="at most this many epochs per sweep trial")
    parser.add_argument("--model", default=BUNDLED_MODEL)
    parser.add_argument("--limit", type=int, help="keep the first N examples of each split (a smoke run)")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    args = parser.parse_args()
    args.rules = [rule.strip() for rule in args.rules.split(",") if rule.strip()]
    unknown = [rule for rule in args.rules if rule not in AUTO_RULES]
    if unknown or args.max_epochs < 1 or args.trials < 0:
        parser.error(f"rules are {', '.join(AUTO_RULES)}; --max-epochs ≥ 1; --trials ≥ 0")
    folders = [Path(name) if "/" in name else DATA / name for name in args.datasets.split(",") if name.strip()]
    missing = [str(folder) for folder in folders if not (folder / "train.jsonl").is_file()]
    if missing:
        parser.error(f"no train.jsonl in {', '.join(missing)}")
    work = Path(tempfile.mkdtemp(prefix="auto-defaults-"))
    arms: list[Arm] = []
    try:
        for folder in folders:
            arms += measure(folder, args, work)
            if args.json:  # after each dataset, so a long measurement keeps what it has
                args.json.write_text(json.dumps([asdict(arm) for arm in arms], indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(arms)


if __name__ == "__main__":
    main()
