"""The training worker: takes queued jobs from the database one at a time and runs the training recipe; with no
job queued, it runs trials of the sweeps (`ftlab sweep`) in the same database that want more.

Several workers (on one machine or several) can share a database: a job is claimed with a conditional UPDATE
(`… WHERE status = 'queued'`), so exactly one worker wins it. A running job carries its worker's id and a
heartbeat. When a worker dies (kill -9, power loss), the next worker or server to start notices — at once
when the dead process was on the same machine, otherwise when the heartbeat is older than `stale_after` — and
queues the job again to resume from its last per-epoch checkpoint, or marks it failed after `max_attempts`.
A job is never left "running" without a live worker behind it. A sweep's trials keep their own heartbeats
(Optuna's, see `ftlab.train.sweep`): a trial whose worker dies is retried by the next process to look.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ftlab.config import TrainConfig
from ftlab.infer.refs import checkpoint_model_name, fine_tuned_model_name
from ftlab.records import query
from ftlab.records.db import init_db, session_scope
from ftlab.records.store import RunRecorder
from ftlab.records.tables import Checkpoint, Job, RunMetric, now
from ftlab.serve.files import get_file, register_result_file, stored_path
from ftlab.serve.jobs import add_event

if TYPE_CHECKING:
    from ftlab.train.recipe import TrainEvent, TrainResult

log = logging.getLogger("ftlab.worker")

HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0
MAX_ATTEMPTS = 3
POLL_S = 1.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _worker_process_alive(worker_id: str | None) -> bool | None:
    """Whether the process behind a worker id still runs: True/False on this machine, None elsewhere."""
    if not worker_id or worker_id.count(":") < 2:
        return None
    host, pid, _ = worker_id.rsplit(":", 2)
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _requeue_or_fail(db: Session, job: Job, reason: str, max_attempts: int) -> None:
    if job.cancel_requested:
        job.status, job.finished_at, job.run.status = "cancelled", now(), "cancelled"
        add_event(db, job, f"{reason}; the job had been asked to cancel, so it is cancelled")
    elif job.attempts >= max_attempts:
        message = (
            f"{reason}, for the {job.attempts}th time; giving up. Checkpoints written so far stay usable as models."
        )
        job.status, job.finished_at, job.run.status = "failed", now(), "failed"
        job.error = {"code": "worker_lost", "message": message, "param": None}
        job.run.error = message
        add_event(db, job, message, level="error")
    else:
        job.status = "queued"
        add_event(
            db,
            job,
            f"{reason}; the job is queued again and will resume from its last checkpoint "
            f"(attempt {job.attempts + 1} of {max_attempts})",
            level="warn",
        )
        # Steps after the last checkpoint will be trained again: drop their metric rows so each step has one.
        last = db.scalar(
            select(Checkpoint.step).where(Checkpoint.run_pk == job.run_pk).order_by(Checkpoint.step.desc())
        )
        db.execute(delete(RunMetric).where(RunMetric.run_pk == job.run_pk, RunMetric.step > (last or 0)))
    job.worker_id = None
    job.heartbeat_at = None


def recover_orphaned_jobs(
    db: Session, *, stale_after: float = STALE_AFTER_S, max_attempts: int = MAX_ATTEMPTS
) -> list[str]:
    """Requeue (or fail) every running job whose worker is gone. Returns the ids of the jobs it touched."""
    touched = []
    for job in db.scalars(select(Job).where(Job.status == "running")):
        alive = _worker_process_alive(job.worker_id)
        stale = job.heartbeat_at is None or time.time() - job.heartbeat_at > stale_after
        if alive is False or stale:
            why = "has exited" if alive is False else f"sent no heartbeat for over {stale_after:.0f} s"
            _requeue_or_fail(db, job, f"The worker running this job ({job.worker_id}) {why}", max_attempts)
            touched.append(job.id)
    return touched


def claim_next_job(db: Session, worker_id: str) -> int | None:
    """Atomically move the oldest queued job to running for this worker; its primary key, or None."""
    candidate = db.scalar(select(Job.pk).where(Job.status == "queued").order_by(Job.pk).limit(1))
    if candidate is None:
        return None
    claimed = db.execute(
        update(Job)
        .where(Job.pk == candidate, Job.status == "queued")
        .values(status="running", worker_id=worker_id, heartbeat_at=time.time(), attempts=Job.attempts + 1)
    )
    return candidate if claimed.rowcount == 1 else None


class JobProgress:
    """What the service adds to a run's record while its job trains: the job's events (OpenAI's
    `fine_tuning.job.event` rows), checkpoint model names, the estimated finish and a heartbeat per event. Its
    `write` is the run recorder's `also` (same transaction); `should_stop` tells the recipe to stop."""

    def __init__(self, job_pk: int, worker: Worker) -> None:
        self.job_pk = job_pk
        self.worker = worker
        self.started = time.time()
        self.first_step: int | None = None
        self.lost = False  # another worker took the job over: stop and write nothing final

    def write(self, db: Session, event: TrainEvent, checkpoint: Checkpoint | None) -> None:
        job = db.get(Job, self.job_pk)
        if event.type == "metrics":
            data = {k: v for k, v in event.data.items() if v is not None}
            add_event(db, job, event.message, type="metrics", data=data)
            self._estimate_finish(job, data)
        elif checkpoint is not None:
            checkpoint.job_pk, checkpoint.model_name = job.pk, checkpoint_model_name(job, checkpoint.step)
            public = {k: v for k, v in event.data.items() if k != "path"}  # server paths stay private
            add_event(db, job, event.message or f"Checkpoint created at step {checkpoint.step}", data=public)
        elif "status" not in event.data:  # the recipe's own closing line: the worker writes the job's
            level = {"warning": "warn", "error": "error"}.get(event.type, "info")
            add_event(db, job, event.message, level=level, data=_jsonable(event.data) or None)
        job.heartbeat_at = time.time()

    def _estimate_finish(self, job: Job, data: dict) -> None:
        step, total = data.get("step"), data.get("total_steps")
        if not step or not total:
            return
        if self.first_step is None:
            self.first_step, self.started = step, time.time()
            return
        done = step - self.first_step
        if done > 0:
            job.estimated_finish = int(time.time() + (time.time() - self.started) / done * (total - step))

    def should_stop(self) -> bool:
        if self.worker.stopping.is_set():
            return True
        with session_scope() as db:
            job = db.get(Job, self.job_pk)
            if job.worker_id != self.worker.id:
                self.lost = True
            return job.cancel_requested or self.lost


def _jsonable(data: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in (data or {}).items()}


class Worker:
    """One worker process: recovers orphaned jobs, then trains queued jobs one at a time, and trials of open
    sweeps while no job is queued."""

    def __init__(
        self,
        *,
        poll_interval: float = POLL_S,
        stale_after: float = STALE_AFTER_S,
        max_attempts: int = MAX_ATTEMPTS,
        parent_pid: int | None = None,
        exit_when_idle: bool = False,
    ) -> None:
        self.id = new_worker_id()
        self.poll_interval = poll_interval
        self.stale_after = stale_after
        self.max_attempts = max_attempts
        self.parent_pid = parent_pid
        self.exit_when_idle = exit_when_idle
        self.stopping = threading.Event()
        self.skipped_studies: set[str] = set()  # studies this worker cannot run (their data files are elsewhere)

    def _parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def stop(self, *_args) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Loop until stopped (SIGTERM/SIGINT, the parent server exiting, or an empty queue with exit_when_idle)."""
        init_db()
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        log.info("worker %s started", self.id)
        while not self.stopping.is_set():
            if self._parent_gone():
                log.info("the server that started this worker has exited; stopping")
                break
            with session_scope() as db:
                for job_id in recover_orphaned_jobs(db, stale_after=self.stale_after, max_attempts=self.max_attempts):
                    log.warning("recovered orphaned job %s", job_id)
            with session_scope() as db:
                job_pk = claim_next_job(db, self.id)
            if job_pk is not None:
                self.run_job(job_pk)
            elif self.run_study_trial():
                continue
            elif self.exit_when_idle:
                break
            else:
                self.stopping.wait(self.poll_interval)
        log.info("worker %s stopped", self.id)

    def run_study_trial(self) -> bool:
        """One trial of a sweep that wants more, when there is one (a queued job waits for it to end); whether
        a trial ran. A study this worker cannot run (data files not on this machine, a judge it cannot load) is
        logged and left to other processes."""
        with session_scope() as db:
            names = [s.name for s in query.list_studies(db) if s.open and s.name not in self.skipped_studies]
        if not names:
            return False
        from ftlab.evaluate.judges import validation_judge
        from ftlab.train.sweep import load_sweep, optimize  # optuna, torch and transformers load only here

        for name in names:
            try:
                sweep = load_sweep(name)
                ran = optimize(sweep, worker=os.getpid(), max_trials=1, score_validation=validation_judge(
                    sweep.config.select_by), should_stop=lambda: self.stopping.is_set() or self._parent_gone())
            except Exception:  # a broken study must not stop the worker: its jobs still need it
                log.exception("cannot run trials of study %s here; leaving it to other processes", name)
                self.skipped_studies.add(name)
                continue
            if ran:
                log.info("ran a trial of study %s", name)
                return True
        return False

    def _heartbeat(self, job_pk: int, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_S):
            if self._parent_gone():
                self.stopping.set()
            with session_scope() as db:
                db.execute(
                    update(Job).where(Job.pk == job_pk, Job.worker_id == self.id).values(heartbeat_at=time.time())
                )

    def run_job(self, job_pk: int) -> None:
        """Train one claimed job and record how it ended."""
        from ftlab.evaluate.judges import validation_judge
        from ftlab.train.recipe import train  # torch and transformers load only in the worker

        with session_scope() as db:
            job = db.get(Job, job_pk)
            run = job.run
            config = TrainConfig.model_validate(run.config)
            train_file = stored_path(get_file(db, job.training_file, param="training_file"))
            validation_file = (
                stored_path(get_file(db, job.validation_file, param="validation_file")) if job.validation_file else None
            )
            output_dir = Path(run.output_dir)
            resume = output_dir.exists()
            add_event(
                db, job, "Resuming fine-tuning job from its last checkpoint" if resume else "Fine-tuning job started"
            )
            job_id = job.id
        log.info("running %s (%s)", job_id, "resume" if resume else "fresh")

        progress = JobProgress(job_pk, self)
        recorder = RunRecorder(output_dir, source="service", also=progress.write)
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_pk, done), daemon=True)
        beat.start()
        try:
            result = train(
                config,
                train_file,
                validation_file,
                output_dir,
                on_event=recorder.on_event,
                should_stop=progress.should_stop,
                resume=resume,
                progress=False,
                score_validation=validation_judge(config.select_by),  # hyperparameters.select_by judge:MODEL
            )
        except Exception as exc:  # any failure of training ends the job as failed, with the reason on it
            log.exception("job %s failed", job_id)
            with session_scope() as db:
                job = db.get(Job, job_pk)
                if job.worker_id == self.id:
                    message = f"Training failed: {type(exc).__name__}: {exc}"
                    job.status, job.finished_at, job.worker_id = "failed", now(), None
                    job.error = {"code": "training_failed", "message": message, "param": None}
                    recorder.fail("failed", message, db)
                    add_event(db, job, message, level="error")
            self._export(job_pk)
            return
        finally:
            done.set()
            beat.join()
        with session_scope() as db:
            job = db.get(Job, job_pk)
            if job.worker_id != self.id:
                log.warning("job %s was taken over by %s; leaving it alone", job_id, job.worker_id)
                return
            ended = result.status == "succeeded" or job.cancel_requested
            if ended:  # the run's record is complete in the same transaction as the job's end
                recorder.finish(result, db)
            if result.status == "cancelled" and job.cancel_requested:
                job.status, job.finished_at = "cancelled", now()
                add_event(db, job, "Fine-tuning job cancelled")
            elif result.status == "cancelled":  # this worker is shutting down: hand the job to the next one
                job.attempts -= 1
                _requeue_or_fail(db, job, "The worker running this job is shutting down", self.max_attempts)
            else:
                self._succeed(db, job, result)
            job.worker_id = None
        if ended:
            self._export(job_pk)

    def _export(self, job_pk: int) -> None:
        """Copy the ended job's run to the job's MLflow integrations; the outcome is a job event either way."""
        with session_scope() as db:
            job = db.get(Job, job_pk)
            integrations, run_id = list(job.integrations or []), job.run.id
        if not integrations:
            return
        from ftlab.records.export import ExportError, export_run

        for integration in integrations:
            options = integration["mlflow"]
            try:
                exported = export_run(run_id, options["tracking_uri"], options["experiment_name"])
                message, level = (f"Exported to MLflow: run {exported.mlflow_run_id} in experiment "
                                  f"'{exported.experiment}'"), "info"  # fmt: skip
            except ExportError as exc:
                message, level = f"MLflow export failed: {exc}", "warn"
            with session_scope() as db:
                add_event(db, db.get(Job, job_pk), message, level=level)

    def _succeed(self, db: Session, job: Job, result: TrainResult) -> None:
        results = register_result_file(db, Path(result.metrics_csv), filename="step_metrics.csv")
        job.fine_tuned_model = fine_tuned_model_name(job)
        job.result_files = [results.id]
        job.trained_tokens = result.trained_tokens
        job.status, job.finished_at = "succeeded", now()
        add_event(db, job, f"New fine-tuned model created: {job.fine_tuned_model}")
        add_event(db, job, "The job has successfully completed")
