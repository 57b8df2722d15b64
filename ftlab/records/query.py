"""Reading the records back: find a run by any name a user has for it, list runs with their latest numbers,
compare or diff runs field by field, and what each dashboard page shows of datasets and evaluations. The CLI
(`ftlab runs`) and the dashboard only render what these return; no query is written anywhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Row, func, or_, select
from sqlalchemy.orm import Session

from ftlab.records.tables import Checkpoint, Dataset, Evaluation, EvaluationModel, Job, JobEvent, Run, RunMetric

ACTIVE = ("created", "queued", "running", "validating_files")


def find_run(db: Session, ref: str) -> Run:
    """A run by id, unique id prefix, fine-tuning job id, fine-tuned model name, or run folder (path or name)."""
    run = db.scalar(select(Run).where(Run.id == ref))
    if run is None:
        run = db.scalar(
            select(Run).join(Job, Job.run_pk == Run.pk).where(or_(Job.id == ref, Job.fine_tuned_model == ref))
        )
    if run is None:
        path = Path(ref).expanduser()
        folders = {str(path), str(path.resolve())}
        run = db.scalar(select(Run).where(Run.output_dir.in_(folders)))
    if run is not None:
        return run
    matches = list(db.scalars(select(Run).where(Run.id.startswith(ref)).limit(2))) if len(ref) >= 5 else []
    if not matches:  # the folder's name alone, e.g. run-20261121-101500-0042
        matches = [
            r for r in db.scalars(select(Run).where(Run.output_dir.endswith(ref))) if Path(r.output_dir).name == ref
        ]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise LookupError(f"'{ref}' matches several runs ({', '.join(r.id for r in matches[:5])}); give more of the id")
    raise LookupError(f"no recorded run '{ref}' (ids: `ftlab runs list`; a job id or a run folder works too)")


@dataclass
class RunRow:
    """One line of a runs table: the run, its job (if the service ran it) and its newest numbers."""

    run: Run
    job_id: str | None = None
    job_status: str | None = None
    fine_tuned_model: str | None = None
    steps: int = 0
    total_steps: int | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    best_valid_loss: float | None = None
    n_checkpoints: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """The job's status when the service runs it (queued, running, …), else the run's."""
        return self.job_status or self.run.status

    @property
    def progress(self) -> str:
        return f"{self.steps}/{self.total_steps}" if self.total_steps else str(self.steps)

    def to_dict(self) -> dict[str, Any]:
        run = self.run
        return {
            "id": run.id, "status": self.status, "source": run.source, "base_model": run.base_model,
            "adapter": run.adapter, "job_id": self.job_id, "fine_tuned_model": self.fine_tuned_model,
            "created_at": run.created_at, "started_at": run.started_at, "finished_at": run.finished_at,
            "train_sha256": run.dataset_sha256.get("train"), "validation_sha256": run.dataset_sha256.get("validation"),
            "steps": self.steps, "total_steps": self.total_steps, "train_loss": self.train_loss,
            "valid_loss": self.valid_loss, "best_valid_loss": self.best_valid_loss,
            "n_checkpoints": self.n_checkpoints, "code_version": run.code_version, "output_dir": run.output_dir,
        }  # fmt: skip


def list_runs(
    db: Session, *, limit: int = 50, offset: int = 0, status: str | None = None, ids: list[str] | None = None
) -> list[RunRow]:
    """The newest runs (those with `status`, or the given `ids`) with their latest metrics, in a fixed number
    of queries however many metric rows exist."""
    query = select(Run).order_by(Run.pk.desc()).limit(limit).offset(offset)
    if status:
        query = query.where(Run.status == status)
    if ids is not None:
        query = query.where(Run.id.in_(ids))
    runs = list(db.scalars(query))
    return run_rows(db, runs)


def count_runs(db: Session, status: str | None = None) -> int:
    query = select(func.count()).select_from(Run)
    return db.scalar(query.where(Run.status == status) if status else query)


def count(db: Session, table: type[Dataset] | type[Evaluation]) -> int:
    """How many rows a table holds (the dashboard's page count)."""
    return db.scalar(select(func.count()).select_from(table))


def status_counts(db: Session) -> dict[str, int]:
    """How many runs have each status."""
    return dict(db.execute(select(Run.status, func.count()).group_by(Run.status)).all())


def run_rows(db: Session, runs: list[Run]) -> list[RunRow]:
    pks = [r.pk for r in runs]
    if not pks:
        return []
    stats = {
        pk: (steps, best, last_pk)
        for pk, steps, best, last_pk in db.execute(
            select(RunMetric.run_pk, func.max(RunMetric.step), func.min(RunMetric.valid_loss), func.max(RunMetric.pk))
            .where(RunMetric.run_pk.in_(pks))
            .group_by(RunMetric.run_pk)
        )
    }
    last_valid = dict(
        db.execute(
            select(RunMetric.run_pk, func.max(RunMetric.pk))
            .where(RunMetric.run_pk.in_(pks), RunMetric.valid_loss.is_not(None))
            .group_by(RunMetric.run_pk)
        ).all()
    )
    wanted = [s[2] for s in stats.values()] + list(last_valid.values())
    latest = {m.pk: m for m in db.scalars(select(RunMetric).where(RunMetric.pk.in_(wanted)))} if wanted else {}
    jobs = {
        run_pk: (job_id, status, model)
        for run_pk, job_id, status, model in db.execute(
            select(Job.run_pk, Job.id, Job.status, Job.fine_tuned_model).where(Job.run_pk.in_(pks))
        )
    }
    checkpoints = dict(
        db.execute(
            select(Checkpoint.run_pk, func.count()).where(Checkpoint.run_pk.in_(pks)).group_by(Checkpoint.run_pk)
        ).all()
    )
    rows = []
    for run in runs:
        row = RunRow(run, n_checkpoints=checkpoints.get(run.pk, 0))
        row.job_id, row.job_status, row.fine_tuned_model = jobs.get(run.pk, (None, None, None))
        if run.pk in stats:
            steps, best, last_pk = stats[run.pk]
            last = latest[last_pk]
            row.steps, row.best_valid_loss, row.train_loss = steps, best, last.train_loss
            row.total_steps = last.total_steps or (run.artifacts or {}).get("total_steps")
        if run.pk in last_valid:
            row.valid_loss = latest[last_valid[run.pk]].valid_loss
        rows.append(row)
    return rows


def run_row(db: Session, run: Run) -> RunRow:
    return run_rows(db, [run])[0]


def run_metrics(db: Session, run: Run, after_step: int = 0) -> list[dict[str, Any]]:
    """Metric rows of a run after a step (the dashboard polls with the last step it has)."""
    rows = db.execute(
        select(RunMetric.step, RunMetric.train_loss, RunMetric.valid_loss, RunMetric.train_mean_token_accuracy,
               RunMetric.valid_mean_token_accuracy)
        .where(RunMetric.run_pk == run.pk, RunMetric.step > after_step)
        .order_by(RunMetric.step)
    )  # fmt: skip
    keys = ("step", "train_loss", "valid_loss", "train_mean_token_accuracy", "valid_mean_token_accuracy")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def live_metrics(db: Session, run: Run, after_step: int = 0) -> dict[str, Any]:
    """What a run's page polls for: its status (the job's when the service runs it), total steps, and the metric
    rows after step `after_step` (the last one the page has)."""
    status = db.scalar(select(Job.status).where(Job.run_pk == run.pk)) or run.status
    total = (run.artifacts or {}).get("total_steps") or db.scalar(
        select(func.max(RunMetric.total_steps)).where(RunMetric.run_pk == run.pk)
    )
    return {"id": run.id, "status": status, "total_steps": total, "metrics": run_metrics(db, run, after_step)}


def run_datasets(db: Session, run: Run) -> list[tuple[str, str, Dataset | None]]:
    """(role, sha256, recorded dataset or None) for each data file of a run."""
    hashes = run.dataset_sha256 or {}
    known = {d.sha256: d for d in db.scalars(select(Dataset).where(Dataset.sha256.in_(list(hashes.values()))))}
    return [(role, sha, known.get(sha)) for role, sha in hashes.items()]


def run_job(db: Session, run: Run) -> Job | None:
    """The fine-tuning job that owns a run, when the service ran it."""
    return db.scalar(select(Job).where(Job.run_pk == run.pk))


def job_events(db: Session, job: Job | None, limit: int = 30) -> list[JobEvent]:
    """A job's newest events, newest first."""
    if job is None:
        return []
    return list(db.scalars(select(JobEvent).where(JobEvent.job_pk == job.pk).order_by(JobEvent.pk.desc()).limit(limit)))


def run_evaluations(db: Session, run: Run, limit: int = 20) -> list[Row[tuple[str, int, str, dict, str | None]]]:
    """(evaluation id, created at, model name, model summary, headline metric) for each evaluation of a model
    this run trained, newest first."""
    return list(
        db.execute(
            select(Evaluation.id, Evaluation.created_at, EvaluationModel.name, EvaluationModel.summary,
                   Evaluation.headline)
            .join(EvaluationModel, EvaluationModel.evaluation_pk == Evaluation.pk)
            .where(EvaluationModel.run_pk == run.pk)
            .order_by(Evaluation.pk.desc())
            .limit(limit)
        ).all()
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Datasets and evaluations
# ---------------------------------------------------------------------------------------------------------


def list_datasets(db: Session, *, limit: int = 50, offset: int = 0) -> list[Dataset]:
    """Datasets, the most recently seen first."""
    return list(db.scalars(select(Dataset).order_by(Dataset.last_seen_at.desc()).limit(limit).offset(offset)))


def find_dataset(db: Session, prefix: str) -> Dataset:
    """A dataset by its sha256 or a prefix of at least 8 hex digits."""
    found = db.scalar(select(Dataset).where(Dataset.sha256.startswith(prefix)).limit(1)) if len(prefix) >= 8 else None
    if found is None:
        raise LookupError(f"no dataset {prefix}")
    return found


def dataset_usage(db: Session) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Which runs used each dataset hash (oldest first), and how many evaluations tested on it."""
    used: dict[str, list[str]] = {}
    for run_id, hashes in db.execute(select(Run.id, Run.dataset_sha256).order_by(Run.pk)):
        for sha in (hashes or {}).values():
            used.setdefault(sha, []).append(run_id)
    tested = dict(db.execute(select(Evaluation.test_sha256, func.count()).group_by(Evaluation.test_sha256)).all())
    return used, tested


def dataset_runs(db: Session, dataset: Dataset, limit: int = 50) -> tuple[list[Run], int]:
    """The newest runs that trained or validated on a dataset (newest first), and how many did in all."""
    ids = dataset_usage(db)[0].get(dataset.sha256, [])
    return list(db.scalars(select(Run).where(Run.id.in_(ids[-limit:])).order_by(Run.pk.desc()))), len(ids)


def dataset_evaluations(db: Session, dataset: Dataset) -> list[Evaluation]:
    """Evaluations that tested on a dataset, newest first."""
    return list(
        db.scalars(select(Evaluation).where(Evaluation.test_sha256 == dataset.sha256).order_by(Evaluation.pk.desc()))
    )


def list_evaluations(db: Session, *, limit: int = 50, offset: int = 0, kind: str | None = None) -> list[Evaluation]:
    """Evaluations (only those of `kind`, eval or compare, when given), newest first."""
    query = select(Evaluation).order_by(Evaluation.pk.desc()).limit(limit).offset(offset)
    return list(db.scalars(query.where(Evaluation.kind == kind) if kind else query))


def count_evaluations(db: Session, kind: str | None = None) -> int:
    query = select(func.count()).select_from(Evaluation)
    return db.scalar(query.where(Evaluation.kind == kind) if kind else query)


def evaluation_models(db: Session, evaluations: list[Evaluation]) -> dict[int, list[tuple[str, dict[str, Any]]]]:
    """(model name, summary) of each evaluation's models in order, by evaluation pk, without loading the
    per-example outputs."""
    models: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    if not evaluations:
        return models
    for eval_pk, name, summary in db.execute(
        select(EvaluationModel.evaluation_pk, EvaluationModel.name, EvaluationModel.summary)
        .where(EvaluationModel.evaluation_pk.in_([e.pk for e in evaluations]))
        .order_by(EvaluationModel.position)
    ):
        models.setdefault(eval_pk, []).append((name, summary))
    return models


def find_evaluation(db: Session, eval_id: str) -> Evaluation:
    evaluation = db.scalar(select(Evaluation).where(Evaluation.id == eval_id))
    if evaluation is None:
        raise LookupError(f"no evaluation {eval_id}")
    return evaluation


def run_ids(db: Session, pks: list[int]) -> dict[int, str]:
    """The public id of each run primary key (an evaluated model links to the run that trained it)."""
    return dict(db.execute(select(Run.pk, Run.id).where(Run.pk.in_(pks))).all()) if pks else {}


# ---------------------------------------------------------------------------------------------------------
# Compare and diff
# ---------------------------------------------------------------------------------------------------------

SECTIONS = ("data", "model", "hyperparameters", "code", "machine", "results")
MACHINE_KEYS = ("hostname", "device", "gpu", "torch", "python", "cpu_count", "threads")


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def _duration(run: Run) -> int | None:
    return run.finished_at - run.started_at if run.finished_at and run.started_at else None


def comparison(db: Session, runs: list[Run]) -> list[tuple[str, str, list[Any]]]:
    """(section, field, one value per run) for everything that identifies a run and what it achieved:
    data hashes, base model and adapter, every hyperparameter, code version, machine and the results."""
    rows_by_run = {r.run.pk: r for r in run_rows(db, runs)}
    table: list[tuple[str, str, list[Any]]] = []
    roles = sorted({role for run in runs for role in run.dataset_sha256}, key=lambda r: (r != "train", r))
    for role in roles:
        table.append(("data", f"{role} sha256", [run.dataset_sha256.get(role) for run in runs]))
    table.append(("model", "base_model", [run.base_model for run in runs]))
    table.append(("model", "adapter", [run.adapter for run in runs]))
    configs = [run.settings for run in runs]
    keys = [k for k in dict.fromkeys(k for config in configs for k in config) if k not in ("model", "adapter")]
    for key in keys:
        table.append(("hyperparameters", key, [_cell(config.get(key)) for config in configs]))
    table.append(("hyperparameters", "learning_rate", [(run.artifacts or {}).get("learning_rate") for run in runs]))
    table.append(("code", "code_version", [run.code_version for run in runs]))
    for key in MACHINE_KEYS:
        values = [(run.machine or {}).get(key) for run in runs]
        if any(v is not None for v in values):
            table.append(("machine", key, values))
    results = {
        "status": lambda r, row: row.status,
        "steps": lambda r, row: row.steps,
        "final train loss": lambda r, row: row.train_loss,
        "final validation loss": lambda r, row: row.valid_loss,
        "best validation loss": lambda r, row: row.best_valid_loss,
        "trained tokens": lambda r, row: r.trained_tokens,
        "checkpoints": lambda r, row: row.n_checkpoints,
        "duration (s)": lambda r, row: _duration(r),
    }
    for name, get in results.items():
        table.append(("results", name, [get(run, rows_by_run[run.pk]) for run in runs]))
    return table


def differs(values: list[Any]) -> bool:
    return len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1


def diff(db: Session, a: Run, b: Run) -> list[tuple[str, str, Any, Any]]:
    """(section, field, value in a, value in b) for every field that differs between two runs."""
    return [
        (section, name, values[0], values[1]) for section, name, values in comparison(db, [a, b]) if differs(values)
    ]
