"""Writing the records: every dataset (by sha256), training run and evaluation, into the service's database.

`record_run`, `record_eval` and `record_dataset` are what the CLI, the service's worker and Python callers
call once a piece of work is done. Each is idempotent — a run is known by its folder, a dataset by its sha256 —
so recording again (a resumed run, the worker after its live updates) completes the record instead of
duplicating it. Each opens its own transaction: on SQLite the engine's `BEGIN IMMEDIATE` queues concurrent
writers on the busy timeout; on PostgreSQL a lost race for a new dataset row is retried once.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import ftlab
from ftlab.data.schema import DataError, file_sha256, read_examples
from ftlab.records.db import database_url, init_db, session_scope
from ftlab.records.tables import (
    Checkpoint,
    Dataset,
    Evaluation,
    EvaluationModel,
    FileRecord,
    Run,
    RunMetric,
    new_id,
    now,
)

if TYPE_CHECKING:
    from ftlab.evaluate.run import EvalResult
    from ftlab.train.recipe import TrainResult

MAX_FINDINGS_KEPT = 50  # a dataset's record keeps the first findings; `ftlab data validate --json` lists all
METRIC_FIELDS = ("train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy")


@cache
def code_version() -> str:
    """`ftlab.__version__`, plus `git describe --always --dirty` when ftlab runs from a git checkout."""
    root = Path(ftlab.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return ftlab.__version__
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ftlab.__version__
    if described.returncode != 0 or not described.stdout.strip():
        return ftlab.__version__
    return f"{ftlab.__version__}+git.{described.stdout.strip()}"[:64]


@cache
def _ready(url: str) -> str:
    """Migrate the database once per process before the first record is written."""
    init_db(url)
    return url


def _timestamp(iso: str | None) -> int | None:
    return int(datetime.fromisoformat(iso).timestamp()) if iso else None


# ---------------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------------


def summarize_dataset(path: str | Path) -> dict[str, Any]:
    """What reading the file as chat JSONL finds: example and message counts, or the first error (with its line)."""
    try:
        examples = read_examples(path)
    except DataError as exc:
        return {"valid": False, "error": str(exc), "line": exc.line, "field": exc.field}
    roles = Counter(m.role for e in examples for m in e.messages)
    turns = [sum(m.role == "assistant" for m in e.messages) for e in examples]
    return {
        "valid": True,
        "n_examples": len(examples),
        "messages_by_role": dict(roles),
        "with_system_prompt": sum(e.messages[0].role == "system" for e in examples),
        "with_tools": sum(bool(e.tools or e.functions) for e in examples),
        "multi_turn": sum(t > 1 for t in turns),
        "untrained_assistant_messages": sum(
            m.role == "assistant" and not m.trained for e in examples for m in e.messages
        ),
    }


def _upsert_dataset(
    db: Session,
    path: Path,
    sha256: str,
    summary: dict[str, Any] | None,
    token_stats: dict[str, Any] | None,
    *,
    keep_summary: bool = False,
) -> Dataset:
    """Insert or refresh a dataset row. `keep_summary`: a summary already recorded (e.g. by `ftlab data
    validate`, which checks far more) is not replaced by the quick one runs and evaluations compute."""
    upload = db.scalar(select(FileRecord.filename).where(FileRecord.id == path.name, FileRecord.sha256 == sha256))
    filename = (upload or path.name)[:255]  # a service upload is stored as FILES/<file id>: show its own name
    dataset = db.scalar(select(Dataset).where(Dataset.sha256 == sha256))
    if dataset is None:
        dataset = Dataset(sha256=sha256, filename=filename, path=str(path), bytes=path.stat().st_size)
        try:
            with db.begin_nested():
                db.add(dataset)
        except IntegrityError:  # another process recorded the same file a moment ago (PostgreSQL)
            dataset = db.scalar(select(Dataset).where(Dataset.sha256 == sha256))
    dataset.path, dataset.filename, dataset.last_seen_at = str(path), filename, now()
    if summary is not None and not (keep_summary and dataset.summary):
        dataset.summary = summary
        dataset.n_examples = summary.get("n_examples", summary.get("examples", dataset.n_examples))
    if token_stats:
        # Token counts depend on the tokenizer: keep one entry per tokenizer.
        stats = dict(dataset.token_stats or {})
        stats[token_stats.get("tokenizer", "unknown")] = token_stats
        dataset.token_stats = stats
    return dataset


def record_dataset(
    path: str | Path,
    summary: dict[str, Any] | None = None,
    *,
    token_stats: dict[str, Any] | None = None,
    url: str | None = None,
) -> str:
    """Record a data file by its sha256 and return the hash. `summary` is a validation summary (e.g.
    `ValidationReport.to_dict()`); without one, what `summarize_dataset` finds is kept unless a summary is
    already recorded. `token_stats` (with a `tokenizer` key) adds token counts for one tokenizer."""
    path = Path(path).resolve()
    sha256 = file_sha256(path)
    quick = summary is None
    if summary is not None and summary.get("findings"):
        summary = {**summary, "findings": summary["findings"][:MAX_FINDINGS_KEPT]}
    tokens = (summary or {}).get("tokens") or {}
    if token_stats is None and "total" in tokens:  # a ValidationReport's token summary
        extra = {k: tokens[k] for k in ("median", "p95", "max", "over_max_length") if k in tokens}
        tokenizer = summary.get("model") or tokens.get("counted_with")
        token_stats = {"tokenizer": tokenizer, "tokens": tokens["total"], "max_length": summary.get("max_length"),
                       "n_examples": summary.get("examples"), **extra}  # fmt: skip
    url = _ready(url or database_url())
    with session_scope(url) as db:
        _upsert_dataset(
            db, path, sha256, summarize_dataset(path) if quick else summary, token_stats, keep_summary=quick
        )
    return sha256


# ---------------------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------------------


def read_metrics_csv(path: str | Path) -> list[dict[str, Any]]:
    """The recipe's metrics.csv as dicts (empty cells become None)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [
            {"step": int(row["step"]), **{k: float(row[k]) if row.get(k) else None for k in METRIC_FIELDS}}
            for row in csv.DictReader(handle)
        ]


def _run_for_folder(db: Session, folder: Path) -> Run | None:
    return db.scalar(select(Run).where(Run.output_dir.in_({str(folder), str(folder.resolve())})))


def add_metric_row(db: Session, run_pk: int, data: dict[str, Any]) -> None:
    """One metrics row as the recipe emits it. Rows at or past its step are from an attempt that was cut
    short and resumed from an earlier checkpoint: they are replaced, so the curve never doubles back."""
    step = int(data["step"])
    db.execute(delete(RunMetric).where(RunMetric.run_pk == run_pk, RunMetric.step >= step))
    db.add(RunMetric(run_pk=run_pk, step=step, total_steps=data.get("total_steps"), epoch=data.get("epoch"),
                     data=data, **{k: data.get(k) for k in METRIC_FIELDS}))  # fmt: skip


def add_checkpoint_row(
    db: Session, run_pk: int, data: dict[str, Any], *, job_pk: int | None = None, model_name: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> bool:
    """A checkpoint event's row (once per step); False when that step's checkpoint was already recorded."""
    step = int(data["step"])
    if db.scalar(select(Checkpoint.pk).where(Checkpoint.run_pk == run_pk, Checkpoint.step == step)) is not None:
        return False
    db.add(Checkpoint(id=new_id("ftckpt-"), run_pk=run_pk, job_pk=job_pk, step=step, epoch=data.get("epoch"),
                      path=str(data["path"]), metrics={**(metrics or {}), **data.get("metrics", {})},
                      model_name=model_name))  # fmt: skip
    return True


class RunRecorder:
    """Records a training run while it trains, so `ftlab serve`'s dashboard draws its loss curve live.

    Pass `on_event` to `train()`: the run appears (status `running`) once the recipe has written the folder's
    config.json, then each metrics row and checkpoint as the recipe emits it; `record_run` completes the record
    at the end. A database that cannot be written is reported once through `warn` and never stops training.
    """

    def __init__(self, output_dir: str | Path, source: str = "cli", *, url: str | None = None,
                 warn: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.folder = Path(output_dir).resolve()
        self.source = source
        self.url = url
        self.warn = warn or (lambda message: None)
        self.run_pk: int | None = None
        self.failed = False

    def on_event(self, event: Any) -> None:
        if self.failed:
            return
        try:
            self._write(event)
        except Exception as exc:  # the records are a convenience; the run folder is the source of truth
            self.failed = True
            self.warn(f"not recording this run live ({type(exc).__name__}: {exc}); it is recorded at the end")

    def _write(self, event: Any) -> None:
        if self.run_pk is None and not (self.folder / "config.json").exists():
            return  # nothing to record before the recipe has resolved and written its settings
        self.url = _ready(self.url or database_url())
        with session_scope(self.url) as db:
            if self.run_pk is None:
                self.run_pk = self._start(db)
            if event.type == "metrics":
                add_metric_row(db, self.run_pk, {k: v for k, v in event.data.items() if v is not None})
            elif event.type == "checkpoint":
                add_checkpoint_row(db, self.run_pk, event.data)

    def _start(self, db: Session) -> int:
        info = json.loads((self.folder / "config.json").read_text())
        config = info["config"]
        run = _run_for_folder(db, self.folder)  # a resumed run continues its record
        if run is None:
            run = Run(id=new_id("run-"), source=self.source, base_model=config["model"], config=config,
                      output_dir=str(self.folder))  # fmt: skip
            db.add(run)
        run.status, run.finished_at, run.error = "running", None, None
        run.config, run.dataset_sha256 = config, info.get("dataset_sha256", {})
        run.code_version = code_version()
        run.machine = {**info.get("machine", {}), "hostname": platform.node(), "pid": os.getpid()}
        run.started_at = run.started_at or _timestamp(info.get("started_at")) or now()
        run.artifacts = {
            **(run.artifacts or {}), "config_json": str(self.folder / "config.json"),
            "total_steps": info.get("total_steps"), "learning_rate": info.get("learning_rate"),
        }  # fmt: skip
        db.flush()
        return run.pk

    def fail(self, status: str, error: str | None = None) -> None:
        """Mark the run as ended without a result (interrupted, or failed with `error`)."""
        if self.run_pk is None or self.failed:
            return
        with session_scope(self.url) as db:
            run = db.get(Run, self.run_pk)
            run.status, run.error, run.finished_at = status, error, now()


def record_run(result: TrainResult, source: str = "cli", *, url: str | None = None) -> str:
    """Record a finished (or cancelled) training run and return its id.

    Everything comes from the result and its run folder: the resolved config, the sha256 of each data file
    (recorded as datasets too, with the run's token counts), code version, machine, start and end, status,
    metrics per step (from metrics.csv, unless the service already recorded them live), checkpoints and
    artefact paths. A run the service created (same folder) is completed rather than duplicated.
    """
    folder = Path(result.output_dir)
    info_path = folder / "config.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    rows = read_metrics_csv(result.metrics_csv)
    datasets = []
    for role, key in (("train", "train_file"), ("validation", "validation_file")):
        file = info.get(key)
        if file and Path(file).exists() and file_sha256(file) == result.dataset_sha256.get(role):
            stats = None
            if role == "train" and "train_tokens_per_epoch" in info:
                stats = {"tokenizer": result.config.model, "max_length": result.config.max_length,
                         "n_examples": info.get("n_train_examples"), "tokens": info["train_tokens_per_epoch"],
                         "trained_tokens": info.get("trained_tokens_per_epoch")}  # fmt: skip
            datasets.append((Path(file).resolve(), result.dataset_sha256[role], summarize_dataset(file), stats))

    url = _ready(url or database_url())
    with session_scope(url) as db:
        for path, sha256, summary, stats in datasets:
            _upsert_dataset(db, path, sha256, summary, stats, keep_summary=True)
        run = _run_for_folder(db, folder)
        if run is None:
            run = Run(id=new_id("run-"), source=source, base_model=result.config.model, config={},
                      output_dir=str(folder.resolve()))  # fmt: skip
            db.add(run)
            db.flush()
        run.status = result.status
        run.config = result.config.model_dump(mode="json")
        run.dataset_sha256 = dict(result.dataset_sha256)
        run.trained_tokens = result.trained_tokens
        run.code_version = run.code_version or code_version()
        run.machine = {**(run.machine or {}), **info.get("machine", {}), "hostname": platform.node()}
        run.started_at = run.started_at or _timestamp(info.get("started_at")) or now()
        run.finished_at = _timestamp(info.get("finished_at")) or now()
        artifacts = {
            "config_json": info_path,
            "metrics_csv": result.metrics_csv,
            "loss_png": folder / "loss.png",
            "final_dir": result.final_dir,
            "best_checkpoint": result.best_checkpoint.path if result.best_checkpoint else None,
        }
        run.artifacts = {
            **(run.artifacts or {}),
            **{k: str(v) for k, v in artifacts.items() if v is not None and Path(v).exists()},
            "stopped_early": result.stopped_early,
            "learning_rate": info.get("learning_rate"),
            "total_steps": info.get("total_steps"),
        }
        _record_metrics(db, run, rows)
        for checkpoint in result.checkpoints:
            add_checkpoint_row(db, run.pk, checkpoint.to_dict())
        return run.id


def _record_metrics(db: Session, run: Run, rows: list[dict[str, Any]]) -> None:
    """Keep the rows already recorded when they cover the same steps (the worker writes them live, with more
    detail); otherwise replace them with the CSV's."""
    recorded = db.scalar(select(func.count()).select_from(RunMetric).where(RunMetric.run_pk == run.pk))
    if recorded == len(rows):
        return
    db.execute(delete(RunMetric).where(RunMetric.run_pk == run.pk))
    total = max((r["step"] for r in rows), default=None)
    db.add_all(RunMetric(run_pk=run.pk, step=r["step"], total_steps=total, data={}, **{k: r[k] for k in METRIC_FIELDS})
               for r in rows)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Evaluations
# ---------------------------------------------------------------------------------------------------------


def _run_for_model(db: Session, spec: dict[str, Any]) -> Run | None:
    """The recorded run a model came from: `run:DIR`, or an adapter inside a run folder."""
    candidates = []
    if spec.get("run_dir"):
        candidates.append(Path(spec["run_dir"]))
    if spec.get("adapter"):
        adapter = Path(spec["adapter"])
        candidates += [adapter, adapter.parent]
    for folder in candidates:
        run = _run_for_folder(db, folder)
        if run is not None:
            return run
    return None


def record_eval(
    result: EvalResult, *, output_path: str | Path | None = None, source: str = "cli", url: str | None = None
) -> str:
    """Record an evaluation — every model with its metrics and per-example outputs, the test set's sha256,
    the comparisons and judgements — and return its id. Models trained by a recorded run are linked to it."""
    test_file = Path(result.test_file).resolve()
    test_sha256 = file_sha256(test_file)
    summary = summarize_dataset(test_file)
    data = result.to_dict()
    url = _ready(url or database_url())
    with session_scope(url) as db:
        _upsert_dataset(db, test_file, test_sha256, summary, None, keep_summary=True)
        evaluation = Evaluation(
            id=new_id("eval-"), source=source, test_file=str(test_file), test_sha256=test_sha256,
            n_examples=len(result.models[0].examples) if result.models else 0, metrics=data["metrics"],
            headline=data["headline"], options=data["options"], comparisons=data["comparisons"],
            judgements=data["judgements"], human_agreement=data["human_agreement"],
            output_path=str(output_path) if output_path else None, code_version=code_version(),
        )  # fmt: skip
        for position, model in enumerate(data["models"]):
            run = _run_for_model(db, model["spec"])
            evaluation.models.append(
                EvaluationModel(
                    position=position,
                    name=model["name"],
                    spec=model["spec"],
                    run_pk=run.pk if run else None,
                    summary=model["summary"],
                    seconds=model["seconds"],
                    load_seconds=model["load_seconds"],
                    examples=model["examples"],
                )  # fmt: skip
            )
        db.add(evaluation)
        return evaluation.id
