"""The records ftlab keeps, as SQLAlchemy tables.

- `files`: uploaded bytes (stored under FTLAB_HOME/files, named by id) and what validation found.
- `runs`: one training run — resolved config, dataset sha256s, status, artefact paths — with its
  `run_metrics` rows (one per logged step) and `checkpoints`.
- `fine_tuning_jobs`: the service's view of a run in OpenAI's job shape; a job owns exactly one run.
- `job_events`: the job's event log (newest first in the API).
- `api_keys`: sha256 digests of the keys the service accepts, each for one project (or every one: admin).

Files, jobs and their checkpoints and models belong to a `project`: a key sees its own project's objects only,
an admin key sees them all. Without keys everything is in the project `default`.

Every table has an integer primary key `pk` (stable order, cheap joins) and, where the API shows one, a
public string `id` such as `file-…` or `ftjob-…`. Times are Unix seconds.
"""

from __future__ import annotations

import secrets
import string
import time
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ftlab.config import upgrade_settings

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A random public id such as `file-3kT…` (24 base62 characters: ~143 bits)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def now() -> int:
    return int(time.time())


DEFAULT_PROJECT = "default"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class FileRecord(Base):
    __tablename__ = "files"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32), index=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    status: Mapped[str] = mapped_column(String(16), default="processed")
    status_details: Mapped[str | None] = mapped_column(Text, default=None)
    n_examples: Mapped[int | None] = mapped_column(Integer, default=None)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    project: Mapped[str] = mapped_column(String(64), index=True, default=DEFAULT_PROJECT)


class Run(Base):
    __tablename__ = "runs"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    started_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    status: Mapped[str] = mapped_column(String(16), default="created", index=True)
    source: Mapped[str] = mapped_column(String(16), default="cli")
    base_model: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset_sha256: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    output_dir: Mapped[str | None] = mapped_column(Text, default=None)
    artifacts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    code_version: Mapped[str | None] = mapped_column(String(64), default=None)
    machine: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)

    metrics: Mapped[list[RunMetric]] = relationship(back_populates="run", order_by="RunMetric.pk")
    checkpoints: Mapped[list[Checkpoint]] = relationship(back_populates="run", order_by="Checkpoint.step")

    @property
    def settings(self) -> dict[str, Any]:
        """The recorded config in today's spelling (runs recorded before a rename keep their old keys)."""
        return upgrade_settings(self.config or {})

    @property
    def adapter(self) -> str:
        return self.settings.get("adapter", "–")


class RunMetric(Base):
    __tablename__ = "run_metrics"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.pk", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    step: Mapped[int] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer, default=None)
    epoch: Mapped[float | None] = mapped_column(Float, default=None)
    train_loss: Mapped[float | None] = mapped_column(Float, default=None)
    train_mean_token_accuracy: Mapped[float | None] = mapped_column(Float, default=None)
    valid_loss: Mapped[float | None] = mapped_column(Float, default=None)
    valid_mean_token_accuracy: Mapped[float | None] = mapped_column(Float, default=None)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    run: Mapped[Run] = relationship(back_populates="metrics")


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.pk", ondelete="CASCADE"), index=True)
    job_pk: Mapped[int | None] = mapped_column(ForeignKey("fine_tuning_jobs.pk", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int | None] = mapped_column(Integer, default=None)
    path: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_name: Mapped[str | None] = mapped_column(String(512), unique=True, default=None)

    run: Mapped[Run] = relationship(back_populates="checkpoints")


class Job(Base):
    __tablename__ = "fine_tuning_jobs"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    model: Mapped[str] = mapped_column(Text)
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), default=None)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    method: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(BigInteger)
    suffix: Mapped[str | None] = mapped_column(String(64), default=None)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, default=None)
    integrations: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    organization_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(24), index=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512), unique=True, default=None)
    model_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    result_files: Mapped[list[Any]] = mapped_column(JSON, default=list)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # Queue bookkeeping (not part of OpenAI's shape).
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.pk"), unique=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker_id: Mapped[str | None] = mapped_column(String(255), default=None)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    project: Mapped[str] = mapped_column(String(64), index=True, default=DEFAULT_PROJECT)

    run: Mapped[Run] = relationship()
    events: Mapped[list[JobEvent]] = relationship(back_populates="job", order_by="JobEvent.pk")


class JobEvent(Base):
    __tablename__ = "job_events"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("fine_tuning_jobs.pk", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    level: Mapped[str] = mapped_column(String(8), default="info")
    type: Mapped[str] = mapped_column(String(16), default="message")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)

    job: Mapped[Job] = relationship(back_populates="events")


class ApiKey(Base):
    __tablename__ = "api_keys"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    project: Mapped[str] = mapped_column(String(64), default=DEFAULT_PROJECT)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)


# Records of datasets and evaluations (issue 7). Runs, their metrics and checkpoints are the tables above.


class Dataset(Base):
    """A data file, known by its sha256: where it was last seen, what validation found, its token counts."""

    __tablename__ = "datasets"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    filename: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    n_examples: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    last_seen_at: Mapped[int] = mapped_column(BigInteger, default=now)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    token_stats: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class Evaluation(Base):
    """One `ftlab eval` or `ftlab compare` (`kind`): the test set (by sha256), the metrics asked for, the
    pairwise comparisons and judges; a comparison keeps its arms' tokens, costs, break-even volumes and learning
    curve in `details`."""

    __tablename__ = "evaluations"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    source: Mapped[str] = mapped_column(String(16), default="cli")
    kind: Mapped[str] = mapped_column(String(16), default="eval", server_default="eval", index=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    test_file: Mapped[str] = mapped_column(Text)
    test_sha256: Mapped[str] = mapped_column(String(64), index=True)
    n_examples: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[list[Any]] = mapped_column(JSON, default=list)
    headline: Mapped[str | None] = mapped_column(String(32), default=None)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    comparisons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    judgements: Mapped[list[Any]] = mapped_column(JSON, default=list)
    human_agreement: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    output_path: Mapped[str | None] = mapped_column(Text, default=None)
    code_version: Mapped[str | None] = mapped_column(String(64), default=None)

    models: Mapped[list[EvaluationModel]] = relationship(
        back_populates="evaluation", order_by="EvaluationModel.position", cascade="all, delete-orphan"
    )


class EvaluationModel(Base):
    """One model's part of an evaluation: its aggregate metrics and every per-example output."""

    __tablename__ = "evaluation_models"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    evaluation_pk: Mapped[int] = mapped_column(ForeignKey("evaluations.pk", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    run_pk: Mapped[int | None] = mapped_column(ForeignKey("runs.pk", ondelete="SET NULL"), index=True, default=None)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    seconds: Mapped[float] = mapped_column(Float)
    load_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    examples: Mapped[list[Any]] = mapped_column(JSON, default=list)

    evaluation: Mapped[Evaluation] = relationship(back_populates="models")
