"""Writing the records: every dataset (by sha256), training run and evaluation, into the service's database.

`RunRecorder` records a training run while it trains and completes it at the end (the CLI and the service's
worker both use it); `record_run`, `record_eval` and `record_dataset` record a piece of work once it is done.
Each is idempotent — a run is known by its folder, a dataset by its sha256 — so recording again (a resumed
run, a run recorded live) completes the record instead of duplicating it. Each opens its own transaction
(unless handed the caller's): on SQLite the engine's `BEGIN IMMEDIATE` queues concurrent writers on the busy
timeout; on PostgreSQL a lost race for a new dataset row is retried once.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
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
    from ftlab.train.recipe import TrainEvent, TrainResult

DataFile = tuple[Path, str, dict[str, Any], dict[str, Any] | None]  # path, sha256, summary, token stats
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


class RunRecorder:
    """Records one training run: live from the recipe's events while it trains, completed by `finish`.

    `ftlab train`, the service's worker and `record_run` all record through it. Pass `on_event` to `train()`:
    the run appears (status `running`) once the recipe has written the folder's config.json, then each metrics
    row and checkpoint as the recipe emits it; `finish(result)` adds what only the end knows — status, data
    files (by sha256, with token counts), artefacts, and any metrics or checkpoints not yet recorded.

    What is already recorded is known by identity, never by counting rows: the run by its folder (a resumed
    run, or one the service created before training, is continued rather than duplicated), a metric row by its
    step (rows at or past a resumed step are replaced, so the curve never doubles back), a checkpoint by its step.

    `also(db, event, checkpoint)` runs in the same transaction after each event is written, with the checkpoint's
    row for a checkpoint event (otherwise None): the service's worker writes its job events there. `warn` gets
    one message when the database cannot be written while training, and training goes on (the run is recorded
    at the end); without `warn`, that error stops training.
    """

    def __init__(
        self,
        output_dir: str | Path,
        source: str = "cli",
        *,
        url: str | None = None,
        warn: Callable[[str], None] | None = None,
        also: Callable[[Session, TrainEvent, Checkpoint | None], None] | None = None,
    ) -> None:
        self.folder = Path(output_dir)
        self.source = source
        self.url = url
        self.warn = warn
        self.also = also
        self.run_pk: int | None = None
        self.failed = False
        self.last_metrics: dict[str, Any] = {}

    def on_event(self, event: TrainEvent) -> None:
        """Record one of the recipe's events (pass this as `train(on_event=…)`)."""
        if event.type == "metrics":
            self.last_metrics = {k: v for k, v in event.data.items() if v is not None}
        self._guarded(lambda: self._write(event), "not recording this run live ({}); it is recorded at the end")

    def fail(self, status: str, error: str | None = None, db: Session | None = None) -> None:
        """Mark the run as ended without a result (`cancelled`, or `failed` with `error`), in `db` when given.
        A run not recorded yet (training stopped before its settings were written) is left unrecorded."""

        def mark() -> None:
            with self._session(db) as session:
                run = _run_for_folder(session, self.folder)
                if run is not None:
                    run.status, run.error, run.finished_at = status, error, now()

        self._guarded(mark, "could not record how this run ended ({})")

    def finish(self, result: TrainResult, db: Session | None = None) -> str:
        """Complete the run's record from the result and its folder and return the run's id. In `db` when given
        (the worker completes the run in the transaction that ends its job), else in a transaction of its own.

        Recorded: the resolved config, the sha256 of each data file (recorded as datasets too, with the run's
        token counts), code version, machine, start and end, status, metrics per step and checkpoints (those
        not recorded live), and artefact paths."""
        info = self._info()
        rows = read_metrics_csv(result.metrics_csv)
        live = self.run_pk is not None and not self.failed
        data_files = [] if live else _data_files(info)  # a run recorded live recorded its data when it started
        with self._session(db) as session:
            run = self._run(session, result.config.model)
            self._describe(session, run, info, data_files)
            run.status = result.status
            run.config = result.config.model_dump(mode="json")
            run.dataset_sha256 = dict(result.dataset_sha256)
            run.trained_tokens = result.trained_tokens
            run.finished_at = _timestamp(info.get("finished_at")) or now()
            artifacts = {
                "metrics_csv": result.metrics_csv,
                "loss_png": self.folder / "loss.png",
                "final_dir": result.final_dir,
                "best_checkpoint": result.best_checkpoint.path if result.best_checkpoint else None,
            }
            run.artifacts = {
                **run.artifacts,
                **{k: str(v) for k, v in artifacts.items() if v is not None and Path(v).exists()},
                "stopped_early": result.stopped_early,
            }
            _complete_metrics(session, run.pk, rows, info.get("total_steps"))
            for checkpoint in result.checkpoints:
                _checkpoint_row(session, run.pk, checkpoint.to_dict())
            return run.id

    def _guarded(self, write: Callable[[], None], message: str) -> None:
        if self.failed:
            return
        try:
            write()
        except Exception as exc:  # with `warn`, the records are a convenience: the run folder is the source of truth
            if self.warn is None:
                raise
            self.failed = True
            self.warn(message.format(f"{type(exc).__name__}: {exc}"))

    def _session(self, db: Session | None) -> AbstractContextManager[Session]:
        if db is not None:
            return nullcontext(db)
        self.url = _ready(self.url or database_url())
        return session_scope(self.url)

    def _info(self) -> dict[str, Any]:
        """The run folder's config.json: the recipe's resolved settings, data files, machine and times."""
        path = self.folder / "config.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _write(self, event: TrainEvent) -> None:
        started = self.run_pk is not None or (self.folder / "config.json").exists()
        if not started and self.also is None:
            return  # nothing to record before the recipe has resolved and written its settings
        info = self._info() if started and self.run_pk is None else None
        data_files = _data_files(info) if info else []  # read before the transaction: it holds the write lock
        with self._session(None) as db:
            checkpoint = None
            if info is not None:
                self._start(db, info, data_files)
            if started and event.type == "metrics":
                _add_metric_row(db, self.run_pk, self.last_metrics)
            elif started and event.type == "checkpoint":
                checkpoint = _checkpoint_row(db, self.run_pk, event.data, self.last_metrics)
            if self.also is not None:
                self.also(db, event, checkpoint)

    def _start(self, db: Session, info: dict[str, Any], data_files: list[DataFile]) -> None:
        run = self._run(db, info["config"]["model"])
        self._describe(db, run, info, data_files)
        run.status, run.finished_at, run.error = "running", None, None
        run.machine = {**run.machine, "pid": os.getpid()}
        db.flush()
        self.run_pk = run.pk

    def _run(self, db: Session, model: str) -> Run:
        """The run recorded for this folder, or a new one."""
        run = _run_for_folder(db, self.folder)
        if run is None:
            run = Run(id=new_id("run-"), source=self.source, base_model=model, config={}, artifacts={},
                      output_dir=str(self.folder.resolve()))  # fmt: skip
            db.add(run)
            db.flush()
        return run

    def _describe(self, db: Session, run: Run, info: dict[str, Any], data_files: list[DataFile]) -> None:
        """What config.json tells: settings, data files, machine, start, and the run's size."""
        for path, sha256, summary, stats in data_files:
            _upsert_dataset(db, path, sha256, summary, stats, keep_summary=True)
        if "config" in info:
            run.config = info["config"]
        run.dataset_sha256 = info.get("dataset_sha256") or run.dataset_sha256 or {}
        run.code_version = run.code_version or code_version()
        run.machine = {**(run.machine or {}), **info.get("machine", {}), "hostname": platform.node()}
        run.started_at = run.started_at or _timestamp(info.get("started_at")) or now()
        run.artifacts = {
            **(run.artifacts or {}), "total_steps": info.get("total_steps"), "learning_rate": info.get("learning_rate"),
            **({"config_json": str(self.folder / "config.json")} if info else {}),
        }  # fmt: skip


def record_run(result: TrainResult, source: str = "cli", *, url: str | None = None) -> str:
    """Record a finished (or cancelled) training run that was not watched while it trained, and return its id.
    A run already recorded for the same folder is completed rather than duplicated (see `RunRecorder`)."""
    return RunRecorder(result.output_dir, source, url=url).finish(result)


def _data_files(info: dict[str, Any]) -> list[DataFile]:
    """(path, sha256, quick summary, token stats) of each data file named in a run's config.json that is still
    there unchanged; the training file carries the run's token counts for its tokenizer."""
    found = []
    config, hashes = info.get("config", {}), info.get("dataset_sha256", {})
    for role, key in (("train", "train_file"), ("validation", "validation_file")):
        file = info.get(key)
        if file and Path(file).exists() and file_sha256(file) == hashes.get(role):
            stats = None
            if role == "train" and "train_tokens_per_epoch" in info:
                stats = {"tokenizer": config.get("model"), "max_length": config.get("max_length"),
                         "n_examples": info.get("n_train_examples"), "tokens": info["train_tokens_per_epoch"],
                         "trained_tokens": info.get("trained_tokens_per_epoch")}  # fmt: skip
            found.append((Path(file).resolve(), hashes[role], summarize_dataset(file), stats))
    return found


def _add_metric_row(db: Session, run_pk: int, data: dict[str, Any]) -> None:
    """One metrics row as the recipe emits it. Rows at or past its step are from an attempt that was cut
    short and resumed from an earlier checkpoint: they are replaced, so the curve never doubles back."""
    step = int(data["step"])
    db.execute(delete(RunMetric).where(RunMetric.run_pk == run_pk, RunMetric.step >= step))
    db.add(RunMetric(run_pk=run_pk, step=step, total_steps=data.get("total_steps"), epoch=data.get("epoch"),
                     data=data, **{k: data.get(k) for k in METRIC_FIELDS}))  # fmt: skip


def _complete_metrics(db: Session, run_pk: int, rows: list[dict[str, Any]], total_steps: int | None) -> None:
    """Add metrics.csv's rows for the steps not recorded yet; rows recorded live (with more detail) stay. The
    CSV holds every step of the finished run, so a recorded step it lacks is from a cut attempt and goes."""
    if not rows:
        return
    recorded = set(db.scalars(select(RunMetric.step).where(RunMetric.run_pk == run_pk)))
    stale = recorded - {r["step"] for r in rows}
    if stale:
        db.execute(delete(RunMetric).where(RunMetric.run_pk == run_pk, RunMetric.step.in_(stale)))
    db.add_all(RunMetric(run_pk=run_pk, step=r["step"], total_steps=total_steps, data={},
                         **{k: r[k] for k in METRIC_FIELDS})
               for r in rows if r["step"] not in recorded)  # fmt: skip


def _checkpoint_row(
    db: Session, run_pk: int, data: dict[str, Any], metrics: dict[str, Any] | None = None
) -> Checkpoint:
    """The row of a checkpoint event, added the first time its step is seen. `metrics`: the newest metrics
    row, kept with the checkpoint's own numbers."""
    step = int(data["step"])
    row = db.scalar(select(Checkpoint).where(Checkpoint.run_pk == run_pk, Checkpoint.step == step))
    if row is None:
        row = Checkpoint(id=new_id("ftckpt-"), run_pk=run_pk, step=step, epoch=data.get("epoch"),
                         path=str(data["path"]), metrics={**(metrics or {}), **data.get("metrics", {})})  # fmt: skip
        db.add(row)
    return row


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
    result: EvalResult, *, output_path: str | Path | None = None, source: str = "cli", url: str | None = None,
    kind: str = "eval", details: dict[str, Any] | None = None,
) -> str:
    """Record an evaluation — every model with its metrics and per-example outputs, the test set's sha256,
    the comparisons and judgements — and return its id. Models trained by a recorded run are linked to it.
    `ftlab compare` records its arms as the models, with `kind="compare"` and its costs etc. as `details`."""
    test_file = Path(result.test_file).resolve()
    test_sha256 = file_sha256(test_file)
    summary = summarize_dataset(test_file)
    data = result.to_dict()
    url = _ready(url or database_url())
    with session_scope(url) as db:
        _upsert_dataset(db, test_file, test_sha256, summary, None, keep_summary=True)
        evaluation = Evaluation(
            id=new_id("eval-"), source=source, kind=kind, details=details, test_file=str(test_file),
            test_sha256=test_sha256,
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
