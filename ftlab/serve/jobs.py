"""Fine-tuning jobs: creation (validating the files and the settings before anything is queued), the OpenAI
view of a job, its events and checkpoints, and cancellation. Training itself happens in `ftlab.serve.worker`.

A job belongs to the project of the key that created it, and may only train on that project's files; other
projects' keys get a 404 for it, its events, checkpoints and model."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ftlab.config import TrainConfig, explain, runs_dir
from ftlab.data.validate import example_count_finding, server_min_examples
from ftlab.infer.refs import organization
from ftlab.models import base_problem
from ftlab.records.tables import Checkpoint, Job, JobEvent, Run, new_id, now
from ftlab.serve.auth import Caller
from ftlab.serve.errors import APIError, bad_request, not_found
from ftlab.serve.files import get_file, stored_path
from ftlab.serve.schemas import JobCreate

TERMINAL = ("succeeded", "failed", "cancelled")
OPENAI_HYPERPARAMETERS = ("batch_size", "learning_rate_multiplier", "n_epochs")
CHECKPOINT_METRICS = (
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)
METADATA_MAX_KEYS, METADATA_MAX_KEY, METADATA_MAX_VALUE = 16, 64, 512


def add_event(
    db: Session, job: Job, message: str, *, level: str = "info", type: str = "message", data: dict | None = None
) -> JobEvent:
    event = JobEvent(id=new_id("ftevent-"), job_pk=job.pk, level=level, type=type, message=message, data=data)
    db.add(event)
    return event


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if not metadata:
        return
    if len(metadata) > METADATA_MAX_KEYS:
        raise bad_request(f"metadata has {len(metadata)} keys; at most {METADATA_MAX_KEYS} are allowed", "metadata")
    for key, value in metadata.items():
        if len(key) > METADATA_MAX_KEY:
            raise bad_request(f"metadata key '{key[:20]}…' is longer than {METADATA_MAX_KEY} characters", "metadata")
        if len(value) > METADATA_MAX_VALUE:
            raise bad_request(f"metadata['{key}'] is longer than {METADATA_MAX_VALUE} characters", "metadata")


def _integrations(integrations: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Check a job's `integrations` (OpenAI's shape, `{"type": …, "<type>": {…}}`) and fill in defaults.

    ftlab exports to MLflow: `{"type": "mlflow", "mlflow": {"tracking_uri": …, "experiment_name": …}}`. The
    tracking URI must be an http(s) server or the one this server is configured with (`MLFLOW_TRACKING_URI`,
    also the default): a caller may not have the server write files at a path of its choosing.
    """
    if not integrations:
        return None
    checked = []
    for i, item in enumerate(integrations):
        param = f"integrations[{i}]"
        kind = item.get("type")
        if kind != "mlflow":
            raise bad_request(f"{param}.type '{kind}' is not supported: this server exports runs to MLflow "
                              "(type 'mlflow'); Weights & Biases is not reachable from it",
                              f"{param}.type")  # fmt: skip
        options = item.get("mlflow") or {}
        unknown = set(options) - {"tracking_uri", "experiment_name"}
        if not isinstance(options, dict) or unknown:
            raise bad_request(f"{param}.mlflow takes tracking_uri and experiment_name (got {sorted(unknown)})",
                              f"{param}.mlflow")  # fmt: skip
        configured = os.environ.get("MLFLOW_TRACKING_URI")
        uri = options.get("tracking_uri") or configured
        if not uri:
            raise bad_request(f"{param}.mlflow.tracking_uri is required (this server has no MLFLOW_TRACKING_URI)",
                              f"{param}.mlflow.tracking_uri")  # fmt: skip
        if uri != configured and not uri.startswith(("http://", "https://")):
            raise bad_request(f"{param}.mlflow.tracking_uri must be an http(s) MLflow server (or this server's "
                              "own MLFLOW_TRACKING_URI)", f"{param}.mlflow.tracking_uri")  # fmt: skip
        if importlib.util.find_spec("mlflow") is None:
            raise bad_request("this server has no MLflow client: install 'ftlab[mlflow]' where the workers run",
                              f"{param}.type")  # fmt: skip
        experiment = options.get("experiment_name") or "ftlab"
        checked.append({"type": "mlflow", "mlflow": {"tracking_uri": uri, "experiment_name": experiment}})
    return checked


def _train_config(request: JobCreate) -> TrainConfig:
    """The job's `TrainConfig`: its own fields (model, seed, suffix, method.type), then `hyperparameters`, then
    `method.supervised.hyperparameters`. A bad value is a 400 naming the parameter it came from."""
    given = {"model": ("model", request.model)}  # setting -> (request parameter, value)
    given |= {name: (name, value) for name in ("seed", "suffix") if (value := getattr(request, name)) is not None}
    sources = [("hyperparameters", request.hyperparameters)]
    if request.method is not None:
        given["method"] = ("method.type", request.method.type)
        supervised = request.method.supervised
        sources.append(("method.supervised.hyperparameters", supervised and supervised.hyperparameters))
    for prefix, hyperparameters in sources:
        values = hyperparameters.model_dump(exclude_none=True) if hyperparameters else {}
        given |= {name: (f"{prefix}.{name}", value) for name, value in values.items()}
    try:
        return TrainConfig(**{name: value for name, (_, value) in given.items()})
    except ValidationError as exc:
        setting, message = explain(exc.errors()[0])
        param = given[setting][0] if setting in given else None
        code = "unsupported_method" if setting == "method" else "invalid_value"
        raise bad_request(f"Invalid value for '{param or setting}': {message}", param=param, code=code) from None


def _examples_of(db: Session, file_id: str, param: str, caller: Caller) -> tuple[int, str]:
    """Check that a file exists (for the caller) and is a fine-tune file; return (examples, sha256). Its lines
    were validated at upload, which stored the count: nothing is read again here."""
    try:
        record = get_file(db, file_id, caller, param=param, lock=True)
    except APIError:
        raise bad_request(f"invalid {param}: {file_id} (no such file)", param=param, code="invalid_file") from None
    if record.purpose != "fine-tune":
        raise bad_request(
            f"File {file_id} has purpose '{record.purpose}'; {param} must be a file uploaded with purpose 'fine-tune'",
            param=param,
            code="invalid_file_purpose",
        )
    if not stored_path(record).is_file():
        raise APIError(500, f"the bytes of {file_id} are missing from the server's file store", param=param)
    return record.n_examples, record.sha256


def create_job(db: Session, request: JobCreate, caller: Caller) -> Job:
    """Validate everything a job needs, then record it as queued (with its run) in the caller's project for a
    worker to pick up."""
    problem = base_problem(request.model, download=False)
    if problem:
        raise bad_request(
            f"Model {request.model} is not available for fine-tuning or does not exist: {problem}",
            param="model",
            code="model_not_available",
        )
    integrations = _integrations(request.integrations)
    _check_metadata(request.metadata)
    config = _train_config(request)

    n_train, train_sha = _examples_of(db, request.training_file, "training_file", caller)
    too_few = example_count_finding(n_train, server_min_examples())
    if too_few:
        raise bad_request(f"Training file {request.training_file}: {too_few.message}", param="training_file",
                          code="invalid_n_examples")  # fmt: skip
    datasets = {"train": train_sha}
    if request.validation_file:
        if request.validation_file == request.training_file:
            raise bad_request(
                "validation_file must differ from training_file", param="validation_file", code="invalid_value"
            )
        _, datasets["validation"] = _examples_of(db, request.validation_file, "validation_file", caller)
    resolved = config.resolve(n_train)
    hyperparameters = {key: getattr(resolved, key) for key in OPENAI_HYPERPARAMETERS}

    run = Run(
        id=new_id("run-"),
        source="service",
        base_model=request.model,
        config=resolved.model_dump(mode="json"),
        dataset_sha256=datasets,
        status="created",
    )
    db.add(run)
    db.flush()
    run.output_dir = str(runs_dir() / run.id)
    job = Job(
        id=new_id("ftjob-"),
        model=request.model,
        training_file=request.training_file,
        validation_file=request.validation_file,
        hyperparameters=hyperparameters,
        method={"type": resolved.method, resolved.method: {"hyperparameters": hyperparameters}},
        seed=resolved.seed,
        suffix=request.suffix,
        metadata_=request.metadata,
        integrations=integrations,
        organization_id=f"org-{organization()}",
        status="validating_files",
        run_pk=run.pk,
        result_files=[],
        project=caller.project,
    )
    db.add(job)
    db.flush()
    add_event(db, job, f"Validating training file: {request.training_file}")
    if request.validation_file:
        add_event(db, job, f"Validating validation file: {request.validation_file}")
    job.status = "queued"
    add_event(db, job, "Files validated, moving job to queued state")
    return job


def to_openai(job: Job) -> dict[str, Any]:
    """The job in OpenAI's shape: checked by the openai package's own model, sent as OpenAI sends it (`method`
    holds its own type's settings only, no null `dpo` or `reinforcement`)."""
    model = FineTuningJob.model_validate(
        {
            "id": job.id,
            "created_at": job.created_at,
            "error": job.error,
            "fine_tuned_model": job.fine_tuned_model if job.status == "succeeded" else None,
            "finished_at": job.finished_at,
            "hyperparameters": job.hyperparameters,
            "model": job.model,
            "object": "fine_tuning.job",
            "organization_id": job.organization_id,
            "result_files": job.result_files,
            "seed": job.seed,
            "status": job.status,
            "trained_tokens": job.trained_tokens,
            "training_file": job.training_file,
            "validation_file": job.validation_file,
            "estimated_finish": job.estimated_finish if job.status == "running" else None,
            "metadata": job.metadata_,
            "method": job.method,
            "suffix": job.suffix,  # not in openai's model, but OpenAI's API returns it
        }
    )
    data = model.model_dump(mode="json")
    data["method"] = {key: value for key, value in data["method"].items() if value is not None}
    # openai's model knows only wandb integrations; ftlab's are the same shape with type "mlflow".
    data["integrations"] = job.integrations
    return data


def get_job(db: Session, job_id: str, caller: Caller) -> Job:
    job = db.scalar(select(Job).where(Job.id == job_id))
    if job is None or not caller.sees(job.project):
        raise not_found("fine-tuning job", job_id, param="fine_tuning_job_id")
    return job


def list_jobs(
    db: Session, caller: Caller, *, after: str | None, limit: int, metadata: dict[str, str] | None = None
) -> tuple[list[Job], bool]:
    """The caller's jobs, newest first; `after` is the id of the last job of the previous page."""
    query = select(Job) if caller.admin else select(Job).where(Job.project == caller.project)
    if after:
        query = query.where(Job.pk < get_job(db, after, caller).pk)
    rows: list[Job] = []
    has_more = False
    # Metadata is JSON, so it is filtered here rather than in SQL (portable across SQLite and PostgreSQL).
    for job in db.scalars(query.order_by(Job.pk.desc()).execution_options(yield_per=200)):
        if metadata and any((job.metadata_ or {}).get(k) != v for k, v in metadata.items()):
            continue
        if len(rows) == limit:
            has_more = True
            break
        rows.append(job)
    return rows, has_more


def cancel_job(db: Session, job_id: str, caller: Caller) -> Job:
    """Cancel a queued job at once; ask the worker running one to stop at its next step."""
    job = get_job(db, job_id, caller)
    if job.status in TERMINAL:
        verb = "completed" if job.status == "succeeded" else job.status
        raise bad_request(f"Job has already {verb}: {job_id}", param="fine_tuning_job_id", code="job_finished")
    job.cancel_requested = True
    if job.status in ("validating_files", "queued"):
        job.status = "cancelled"
        job.finished_at = now()
        job.run.status = "cancelled"
        add_event(db, job, "Fine-tuning job cancelled")
    return job


def event_to_openai(event: JobEvent) -> FineTuningJobEvent:
    return FineTuningJobEvent(
        id=event.id,
        created_at=event.created_at,
        level=event.level,
        message=event.message,
        object="fine_tuning.job.event",
        data=event.data or {},
        type=event.type,
    )


def _job_page(db: Session, model: type[JobEvent] | type[Checkpoint], job_id: str, caller: Caller, kind: str,
              after: str | None, limit: int) -> tuple[list, bool]:  # fmt: skip
    """A job's events or checkpoints, newest first; `after` is the id of the last row of the previous page."""
    job = get_job(db, job_id, caller)
    query = select(model).where(model.job_pk == job.pk)
    if after:
        anchor = db.scalar(select(model.pk).where(model.id == after, model.job_pk == job.pk))
        if anchor is None:
            raise not_found(kind, after, param="after")
        query = query.where(model.pk < anchor)
    rows = list(db.scalars(query.order_by(model.pk.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_events(
    db: Session, job_id: str, caller: Caller, *, after: str | None, limit: int
) -> tuple[list[JobEvent], bool]:
    """Newest first, like OpenAI; `after` is the id of the last event of the previous page."""
    return _job_page(db, JobEvent, job_id, caller, "fine-tuning job event", after, limit)


def checkpoint_to_openai(job: Job, checkpoint: Checkpoint) -> FineTuningJobCheckpoint:
    metrics = {k: v for k, v in checkpoint.metrics.items() if k in CHECKPOINT_METRICS and v is not None}
    return FineTuningJobCheckpoint(
        id=checkpoint.id,
        created_at=checkpoint.created_at,
        fine_tuned_model_checkpoint=checkpoint.model_name or "",
        fine_tuning_job_id=job.id,
        metrics={"step": float(checkpoint.step), **metrics},
        object="fine_tuning.job.checkpoint",
        step_number=checkpoint.step,
    )


def list_checkpoints(
    db: Session, job_id: str, caller: Caller, *, after: str | None, limit: int
) -> tuple[list[Checkpoint], bool]:
    """Newest first; `after` is the id of the last checkpoint of the previous page."""
    return _job_page(db, Checkpoint, job_id, caller, "fine-tuning job checkpoint", after, limit)


def count_jobs(db: Session, status: str) -> int:
    return db.scalar(select(func.count()).select_from(Job).where(Job.status == status)) or 0
