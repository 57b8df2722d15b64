"""Better "auto": today's defaults vs the candidate auto rule vs a sweep that selects by the task metric.

For each dataset folder (train.jsonl, test.jsonl, val.jsonl — or a seeded fifth of train.jsonl when there is none —
and labels.txt for a classification set) it trains
  (a) today's defaults: `ftlab train TRAIN --validation VAL`, the checkpoint validation loss names;
  (b) the candidate rule, `ftlab.config.auto_by_steps` (enough optimizer steps, a larger adapter learning rate on
      small sets: `TrainConfig.resolve(n, rule="steps")`), the checkpoint the task metric names;
  (c) an N-trial sweep, `ftlab sweep TRAIN --validation VAL --metric M --trials N`: its best trial's checkpoint;
and evaluates the three on the test split with `ftlab eval`'s code (`ftlab.evaluate.run.evaluate`), printing one
table per dataset. The metric: set_f1 when the references are JSON lists, exact (accuracy) with a label set (and
the valid-label rate beside it), chrf otherwise. Every run is recorded as usual (FTLAB_HOME).

    python benchmarks/auto_defaults.py benchmarks/data/recipes_real [more folders] [--trials 20] [--model M] \\
        [--limit N] [--json results.json]

The measurement behind `auto` (minutes to hours on a CPU): the bundled model, 20 trials, on recipes_real,
support_intents and bug_tickets. `--limit 24 --trials 2 --model TINY_MODEL_DIR` checks the script end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ftlab.config import BUNDLED_MODEL, TrainConfig, runs_dir  # noqa: E402
from ftlab.data.labels import read_labels  # noqa: E402
from ftlab.data.schema import read_examples  # noqa: E402
from ftlab.data.scoring import parse_json  # noqa: E402
from ftlab.data.split import split_file  # noqa: E402
from ftlab.evaluate.run import EvalOptions, evaluate  # noqa: E402
from ftlab.infer.refs import resolve_ref  # noqa: E402
from ftlab.records.db import database_url  # noqa: E402
from ftlab.records.store import RunRecorder  # noqa: E402
from ftlab.train.recipe import train  # noqa: E402
from ftlab.train.sweep import DEFAULT_SPACE, Sweep, best_trial, check_space, create_sweep, optimize  # noqa: E402

SHOWN = ("set_f1", "json_valid", "exact", "valid_label", "accuracy", "chrf", "chrf_corpus")
SETTINGS = ("n_epochs", "learning_rate_multiplier", "batch_size", "adapter", "lora_r", "lora_alpha",
            "loraplus_lr_ratio")  # fmt: skip


@dataclass
class Arm:
    name: str
    checkpoint: Path
    settings: dict[str, Any]
    minutes: float
    test: dict[str, Any] = field(default_factory=dict)


def prepared(folder: Path, work: Path, limit: int | None) -> tuple[Path, Path, Path]:
    """(train, val, test) files: the folder's, cut to `limit` examples each, with val split off train if absent."""
    work.mkdir(parents=True, exist_ok=True)
    train_file, val_file = folder / "train.jsonl", folder / "val.jsonl"
    if not val_file.exists():
        split = split_file(train_file, work / "split", val=0.2, test=0.0, seed=7)
        train_file, val_file = split.paths()["train"], split.paths()["val"]
    files = []
    for name, path in (("train", train_file), ("val", val_file), ("test", folder / "test.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = work / f"{name}.jsonl"
        kept.write_text("".join(lines[:limit] if limit else lines), encoding="utf-8")
        files.append(kept)
    return files[0], files[1], files[2]


def task_metric(val_file: Path, labels: list[str] | None) -> str:
    references = [example.reference() for example in read_examples(val_file)]
    if labels:
        return "exact"
    if all(isinstance(parse_json(reference), list) for reference in references):
        return "set_f1"
    return "chrf"


def trained(name: str, config: TrainConfig, train_file: Path, val_file: Path) -> Arm:
    """One recorded training run; its checkpoint named by the run's own `select_by` (the final one if none)."""
    output = runs_dir() / f"auto-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    recorder = RunRecorder(output, source="benchmark")
    started = time.perf_counter()
    result = train(config, train_file, val_file, output, on_event=recorder.on_event, progress=False)
    recorder.finish(result)
    checkpoint = result.best_checkpoint.path if result.best_checkpoint else result.final_dir
    settings = {key: getattr(result.config, key) for key in SETTINGS}
    return Arm(name, checkpoint, settings, (time.perf_counter() - started) / 60)


def swept(dataset: str, base: TrainConfig, train_file: Path, val_file: Path, trials: int) -> Arm:
    sweep = Sweep(f"auto-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}", train_file, val_file, base,
                  check_space(DEFAULT_SPACE), trials, database_url())  # fmt: skip
    started = time.perf_counter()
    study = create_sweep(sweep)
    optimize(sweep)
    best = best_trial(study)
    if best is None:
        raise RuntimeError(f"no trial of {sweep.name} completed")
    settings = {key: best.params.get(key, getattr(base, key)) for key in SETTINGS}
    return Arm(f"sweep ({trials} trials)", Path(best.user_attrs["best_checkpoint"]), settings,
               (time.perf_counter() - started) / 60)  # fmt: skip


def measure(folder: Path, model: str, trials: int, limit: int | None, work: Path) -> dict[str, Any]:
    dataset = folder.name
    train_file, val_file, test_file = prepared(folder, work / dataset, limit)
    labels = read_labels(folder / "labels.txt") if (folder / "labels.txt").exists() else None
    metric = task_metric(val_file, labels)
    n_train = len(read_examples(train_file))
    arms = [
        trained("defaults", TrainConfig(model=model), train_file, val_file),
        trained("candidate", TrainConfig(model=model, select_by=metric, labels=labels).resolve(n_train, rule="steps"),
                train_file, val_file),
        swept(dataset, TrainConfig(model=model, select_by=metric, labels=labels), train_file, val_file, trials),
    ]  # fmt: skip
    specs = [resolve_ref(str(arm.checkpoint)) for arm in arms]
    result = evaluate(test_file, specs, EvalOptions(labels=labels))
    for arm, scored in zip(arms, result.models, strict=True):
        arm.test = {key: scored.summary[key] for key in SHOWN if scored.summary.get(key) is not None}
    return {"dataset": dataset, "metric": metric, "n_train": n_train, "n_test": len(read_examples(test_file)),
            "arms": [vars(arm) | {"checkpoint": str(arm.checkpoint)} for arm in arms]}  # fmt: skip


def print_table(measured: dict[str, Any]) -> None:
    print(f"\n{measured['dataset']}: {measured['n_train']} training examples, {measured['n_test']} test, "
          f"selected by {measured['metric']}")
    columns = [key for key in SHOWN if any(key in arm["test"] for arm in measured["arms"])]
    print(f"{'arm':<20} {'epochs':>6} {'lr x':>6} {'other settings':<52} "
          + " ".join(f"{c:>11}" for c in columns) + f" {'minutes':>8}")
    for arm in measured["arms"]:
        s = arm["settings"]
        other = ", ".join(f"{k}={s[k]}" for k in SETTINGS[2:] if s.get(k) is not None)
        print(f"{arm['name']:<20} {s['n_epochs']!s:>6} {s['learning_rate_multiplier']:>6.3g} {other:<52} "
              + " ".join(f"{arm['test'][c]:>11.3f}" if c in arm["test"] else f"{'–':>11}" for c in columns)
              + f" {arm['minutes']:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="dataset folders (benchmarks/data/…)")
    parser.add_argument("--model", default=BUNDLED_MODEL)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--limit", type=int, help="keep the first N examples of each split (a quick check)")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="auto-defaults-"))
    try:
        results = []
        for folder in args.folders:
            results.append(measure(folder, args.model, args.trials, args.limit, work))
            print_table(results[-1])
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
