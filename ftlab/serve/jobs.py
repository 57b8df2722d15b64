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

from ftlab.config import JUDGE_PREFIX, TrainConfig, explain, runs_dir
from ftlab.data.schema import data_kind
from ftlab.data.validate import example_count_finding, server_min_examples
from ftlab.infer.refs import organization, resolve_init_adapter, resolve_ref
from ftlab.models import ModelNotFound, base_problem
from ftlab.records.tables import Checkpoint, Job, JobEvent, Run, new_id, now
from ftlab.serve import catalog
from ftlab.serve.auth import Caller
from ftlab.serve.errors import APIError, bad_request, not_found
from ftlab.serve.files import get_file, stored_path
from ftlab.serve.schemas import JobCreate

TERMINAL = ("succeeded", "failed", "cancelled")
OPENAI_HYPERPARAMETERS = ("batch_size", "learning_rate_multiplier", "n_epochs")
KIND_WORDS = {"chat": "chat examples (messages)",
              "preference": "preference pairs (input, preferred_output, non_preferred_output)"}
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


def _starting_point(db: Session, request: JobCreate, caller: Caller) -> tuple[str, str | None]:
    """The base model to load and, when `model` is a fine-tuned model of the caller's project (`ft:…`: OpenAI's
    way to go on from one), the adapter to start from (method dpo). A model that cannot be had is a 400."""
    unavailable = f"Model {request.model} is not available for fine-tuning or does not exist"
    if not request.model.startswith("ft:"):
        problem = base_problem(request.model, download=False)
        if problem:
            raise bad_request(f"{unavailable}: {problem}", param="model", code="model_not_available")
        return request.model, None
    try:
        start = catalog.resolve(db, request.model, caller)  # another project's model is as absent as a typo
    except APIError as exc:
        raise bad_request(f"{unavailable}: {exc.message}", param="model", code="model_not_available") from None
    if start.adapter is None:  # a full fine-tune: a base model of its own
        return start.model, None
    if request.method is None or request.method.type != "dpo":
        raise bad_request(f"Model {request.model} is an adapter on {start.model}: going on from one is supported "
                          f"for method 'dpo' (the adapter is where it starts and what it is held to); for "
                          f"supervised tuning name its base, {start.model}", param="model",
                          code="model_not_available")  # fmt: skip
    return start.model, str(start.adapter)


def _train_config(request: JobCreate, model: str, init_adapter: str | None) -> TrainConfig:
    """The job's `TrainConfig`: its own fields (model, seed, suffix, method.type), then `hyperparameters`, then
    `method.<type>.hyperparameters` (`supervised` or `dpo`). A bad value is a 400 naming the parameter it came
    from."""
    given = {"model": ("model", model)}  # setting -> (request parameter, value)
    if init_adapter:
        given["init_adapter"] = ("model", init_adapter)
    given |= {name: (name, value) for name in ("seed", "suffix") if (value := getattr(request, name)) is not None}
    sources = [("hyperparameters", request.hyperparameters)]
    if request.method is not None:
        kind = request.method.type
        given["method"] = ("method.type", kind)
        for other in ("supervised", "dpo", "reinforcement"):
            if other != kind and getattr(request.method, other) is not None:
                raise bad_request(f"method.{other} is given but method.type is '{kind}'", param=f"method.{other}",
                                  code="invalid_value")  # fmt: skip
        settings = getattr(request.method, kind, None)
        if settings is not None and kind != "reinforcement":
            sources.append((f"method.{kind}.hyperparameters", settings.hyperparameters))
    for prefix, hyperparameters in sources:
        values = hyperparameters.model_dump(exclude_none=True) if hyperparameters else {}
        given |= {name: (f"{prefix}.{name}", value) for name, value in values.items()}
    try:
        return TrainConfig(**{name: value for name, (_, value) in given.items()})
    except ValidationError as exc:
        setting, message = explain(exc.errors()[0])
        if not setting:  # a check across settings (select_by valid_label without labels)
            raise bad_request(f"Invalid hyperparameters: {message}", param=None, code="invalid_value") from None
        param = given[setting][0] if setting in given else None
        code = "unsupported_method" if setting == "method" else "invalid_value"
        text = f"Invalid value for '{param or setting}': {message}" if setting else f"Invalid settings: {message}"
        raise bad_request(text, param=param, code=code) from None


def _examples_of(db: Session, file_id: str, param: str, caller: Caller, method: str) -> tuple[int, str]:
    """Check that a file exists (for the caller), is a fine-tune file and holds the data `method` trains on (dpo:
    preference pairs, supervised: chat examples); return (examples, sha256). Its lines were validated at upload,
    which stored the count: only its first line is read here, for its kind."""
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
    kind, wanted = data_kind(stored_path(record)), "preference" if method == "dpo" else "chat"
    if kind != wanted:
        raise bad_request(f"File {file_id} holds {KIND_WORDS[kind]}; method '{method}' trains on {KIND_WORDS[wanted]}",
                          param=param, code="invalid_file_format")  # fmt: skip
    return record.n_examples, record.sha256


def create_job(db: Session, request: JobCreate, caller: Caller) -> Job:
    """Validate everything a job needs, then record it as queued (with its run) in the caller's project for a
    worker to pick up."""
    base, init_adapter = _starting_point(db, request, caller)
    integrations = _integrations(request.integrations)
    _check_metadata(request.metadata)
    config = _train_config(request, base, init_adapter)
    try:  # the run goes on with the starting adapter's own shape (r, alpha, …)
        config = resolve_init_adapter(config, db=db, download=False)
    except ModelNotFound as exc:
        raise bad_request(str(exc), param="model", code="model_not_available") from None

    n_train, train_sha = _examples_of(db, request.training_file, "training_file", caller, config.method)
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
        _, datasets["validation"] = _examples_of(db, request.validation_file, "validation_file", caller,
                                                 config.method)  # fmt: skip
    elif config.selects_by_task_metric:
        raise bad_request(f"select_by {config.select_by} scores replies to the validation set: give a "
                          "validation_file", param="validation_file", code="invalid_value")  # fmt: skip
    if config.selection_metric == "judge":
        try:  # the judge is loaded by the worker; its name is checked now
            resolve_ref(config.select_by.removeprefix(JUDGE_PREFIX).strip(), download=False)
        except (ModelNotFound, ValueError) as exc:
            raise bad_request(f"Invalid select_by judge: {exc}", param="hyperparameters.select_by",
                              code="invalid_value") from None  # fmt: skip
    resolved = config.resolve(n_train)
    hyperparameters = {key: getattr(resolved, key) for key in OPENAI_HYPERPARAMETERS}
    method_hyperparameters = hyperparameters | ({"beta": resolved.beta} if resolved.method == "dpo" else {})

    run = Run(
        id=new_id("run-"),
        source="service",
        base_model=config.model,
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
        method={"type": resolved.method, resolved.method: {"hyperparameters": method_hyperparameters}},
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
