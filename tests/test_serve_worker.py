"""Recovery of jobs whose worker died: queued again to resume, failed after too many attempts, cancelled if
asked to be — never left "running" without a live worker. On SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
from sqlalchemy import select

from ftlab.records.db import init_db, new_session
from ftlab.records.tables import Checkpoint, Job, JobEvent, Run, RunMetric, new_id
from ftlab.serve.worker import recover_orphaned_jobs


@pytest.fixture
def db(db_url: str):
    init_db(db_url)
    session = new_session(db_url)
    yield session
    session.close()


def dead_worker_id() -> str:
    process = subprocess.Popen(["true"])
    process.wait()
    return f"{socket.gethostname()}:{process.pid}:abc123"


def running_job(db, *, worker_id: str, attempts: int = 1, heartbeat_age: float = 0.0, cancel: bool = False) -> Job:
    run = Run(id=new_id("run-"), base_model="m", config={}, source="service", status="running")
    db.add(run)
    db.flush()
    job = Job(
        id=new_id("ftjob-"), model="m", training_file="file-x", hyperparameters={}, method={}, seed=1,
        organization_id="org", status="running", run_pk=run.pk, result_files=[], worker_id=worker_id,
        attempts=attempts, heartbeat_at=time.time() - heartbeat_age, cancel_requested=cancel,
    )  # fmt: skip
    db.add(job)
    db.flush()
    return job


def messages(db, job: Job) -> list[str]:
    return [e.message for e in db.scalars(select(JobEvent).where(JobEvent.job_pk == job.pk))]


def test_a_job_of_a_dead_worker_is_queued_again_to_resume(db) -> None:
    job = running_job(db, worker_id=dead_worker_id())
    db.add(Checkpoint(id=new_id("ftckpt-"), run_pk=job.run_pk, job_pk=job.pk, step=10, path="/x"))
    db.add_all(RunMetric(run_pk=job.run_pk, step=step) for step in (9, 10, 11, 12))
    db.add_all(JobEvent(id=new_id("ftevent-"), job_pk=job.pk, type="metrics", message=f"Step {step}",
                        data={"step": step}) for step in (9, 10, 11, 12))  # fmt: skip
    assert recover_orphaned_jobs(db) == [job.id]
    assert job.status == "queued" and job.worker_id is None
    assert "will resume from its last checkpoint (attempt 2 of 3)" in messages(db, job)[-1]
    # Steps after the checkpoint will be trained again, so their metric rows and metrics events go: once the
    # job resumes, each step is recorded and listed once.
    assert sorted(db.scalars(select(RunMetric.step).where(RunMetric.run_pk == job.run_pk))) == [9, 10]
    steps = db.scalars(select(JobEvent.data).where(JobEvent.job_pk == job.pk, JobEvent.type == "metrics"))
    assert sorted(data["step"] for data in steps) == [9, 10]


def test_a_job_that_lost_its_worker_too_often_fails_with_a_clear_error(db) -> None:
    job = running_job(db, worker_id=dead_worker_id(), attempts=3)
    recover_orphaned_jobs(db, max_attempts=3)
    assert job.status == "failed" and job.finished_at is not None and job.run.status == "failed"
    assert job.error["code"] == "worker_lost" and "giving up" in job.error["message"]


def test_a_cancelled_job_of_a_dead_worker_ends_cancelled(db) -> None:
    job = running_job(db, worker_id=dead_worker_id(), cancel=True)
    recover_orphaned_jobs(db)
    assert job.status == "cancelled"


def test_a_silent_worker_on_another_machine_is_presumed_lost(db) -> None:
    fresh = running_job(db, worker_id="elsewhere:123:abc", heartbeat_age=5)
    silent = running_job(db, worker_id="elsewhere:456:abc", heartbeat_age=120)
    assert recover_orphaned_jobs(db, stale_after=60) == [silent.id]
    assert fresh.status == "running" and silent.status == "queued"
    assert "sent no heartbeat for over 60 s" in messages(db, silent)[-1]


def test_a_live_worker_keeps_its_job(db) -> None:
    job = running_job(db, worker_id=f"{socket.gethostname()}:{os.getpid()}:abc123")
    assert recover_orphaned_jobs(db) == [] and job.status == "running"
