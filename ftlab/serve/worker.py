"""The training worker: takes queued jobs from the database one at a time and runs the training recipe.

Several workers (on one machine or several) can share a database: a job is claimed with a conditional UPDATE
(`… WHERE status = 'queued'`), so exactly one worker wins it. A running job carries its worker's id and a
heartbeat. When a worker dies (kill -9, power loss), the next worker or server to start notices — at once
when the dead process was on the same machine, otherwise when the heartbeat is older than `stale_after` — and
queues the job again to resume from its last per-epoch checkpoint, or marks it failed after `max_attempts`.
A job is never left "running" without a live worker behind it; `ftlab serve` also runs that check every few
seconds and starts a new worker when one of its own dies.

Anything that goes wrong with one job — a file gone, settings that no longer load, a loss that is not a finite
number, a database error while recording its end — fails that job with the reason on it; the worker goes on
to the next one. SIGTERM stops training at the next step and queues the job again for the next worker.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ftlab.config import TrainConfig, runs_dir
from ftlab.infer.refs import checkpoint_model_name, fine_tuned_model_name
from ftlab.records.db import init_db, session_scope
from ftlab.records.store import RunRecorder
from ftlab.records.tables import Checkpoint, Job, JobEvent, Run, RunMetric, now
from ftlab.serve.errors import APIError
from ftlab.serve.files import get_file, register_result_file, stored_path
from ftlab.serve.jobs import TERMINAL, add_event

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
        _forget_steps_after_last_checkpoint(db, job)
    job.worker_id = None
    job.heartbeat_at = None


def _forget_steps_after_last_checkpoint(db: Session, job: Job) -> None:
    """Steps after the last checkpoint will be trained again: drop their metric rows and metrics events, so each
    step has one of each once the job resumes."""
    last = db.scalar(select(Checkpoint.step).where(Checkpoint.run_pk == job.run_pk).order_by(Checkpoint.step.desc()))
    db.execute(delete(RunMetric).where(RunMetric.run_pk == job.run_pk, RunMetric.step > (last or 0)))
    metrics = db.scalars(select(JobEvent).where(JobEvent.job_pk == job.pk, JobEvent.type == "metrics"))
    for event in metrics:  # the step is inside the event's JSON data: compared here, the same on every database
        if (event.data or {}).get("step", 0) > (last or 0):
            db.delete(event)


def recover_orphaned_jobs(
    db: Session, *, stale_after: float = STALE_AFTER_S, max_attempts: int = MAX_ATTEMPTS
) -> list[str]:
    """Requeue (or fail) every running job whose worker is gone. Returns the ids of the jobs it touched.

    The rows are locked while they are judged (PostgreSQL; rows another recoverer holds are skipped), so a job
    requeued and claimed again meanwhile is judged by its new worker, never requeued from under it."""
    touched = []
    running = select(Job).where(Job.status == "running").with_for_update(skip_locked=True)
    for job in db.scalars(running):
        alive = _worker_process_alive(job.worker_id)
        stale = job.heartbeat_at is None or time.time() - job.heartbeat_at > stale_after
        if alive is False or stale:
            why = "has exited" if alive is False else f"sent no heartbeat for over {stale_after:.0f} s"
            _requeue_or_fail(db, job, f"The worker running this job ({job.worker_id}) {why}", max_attempts)
            touched.append(job.id)
    return touched


def remove_partial_checkpoints(db: Session) -> list[Path]:
    """Delete the `.partial` checkpoint folders (a save cut by kill -9) of runs under FTLAB_HOME/runs that no
    process is training: their job has ended or is queued, or a run without a job is no longer `running`."""
    removed = []
    for partial in runs_dir().glob("*/*.partial"):
        folder = partial.parent
        run = db.scalar(select(Run).where(Run.output_dir.in_({str(folder), str(folder.resolve())})))
        if run is None:
            continue  # not a recorded run: not ours to judge
        job = db.scalar(select(Job).where(Job.run_pk == run.pk))
        if (job.status == "running") if job is not None else (run.status == "running"):
            continue
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial)
    return removed


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
        with session_scope(read_only=True) as db:
            worker_id, cancel = db.execute(
                select(Job.worker_id, Job.cancel_requested).where(Job.pk == self.job_pk)
            ).one()
        if worker_id != self.worker.id:
            self.lost = True
        return cancel or self.lost


class JobCannotStart(Exception):
    """A claimed job that cannot train as recorded; the message says why, `param` names the request field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class JobPlan:
    """What a claimed job trains: its settings, files and run folder (resumed when it exists)."""

    job_id: str
    config: TrainConfig
    train_file: Path
    validation_file: Path | None
    output_dir: Path
    resume: bool


def _jsonable(data: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in (data or {}).items()}


class Worker:
    """One worker process: recovers orphaned jobs, then trains queued jobs one at a time."""

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
            try:
                job_pk = self._next_job()
            except Exception:  # the database is unreachable for a moment: wait and look again
                log.exception("could not look at the queue; trying again")
                self.stopping.wait(self.poll_interval)
                continue
            if job_pk is not None:
                self.run_job(job_pk)
            elif self.exit_when_idle:
                break
            else:
                self.stopping.wait(self.poll_interval)
        log.info("worker %s stopped", self.id)

    def _next_job(self) -> int | None:
        with session_scope() as db:
            for job_id in recover_orphaned_jobs(db, stale_after=self.stale_after, max_attempts=self.max_attempts):
                log.warning("recovered orphaned job %s", job_id)
        with session_scope() as db:
            return claim_next_job(db, self.id)

    def _heartbeat(self, job_pk: int, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_S):
            if self._parent_gone():
                self.stopping.set()
            try:
                with session_scope() as db:
                    db.execute(
                        update(Job).where(Job.pk == job_pk, Job.worker_id == self.id).values(heartbeat_at=time.time())
                    )
            except Exception:  # a missed beat is retried at the next; only a long silence gives the job away
                log.exception("could not record the heartbeat of job %s", job_pk)

    def run_job(self, job_pk: int) -> None:
        """Run one claimed job and record how it ended. Whatever goes wrong fails this job, never the worker."""
        try:
            plan = self._plan(job_pk)
            log.info("running %s (%s)", plan.job_id, "resume" if plan.resume else "fresh")
            progress = JobProgress(job_pk, self)
            recorder = RunRecorder(plan.output_dir, source="service", also=progress.write)
            self._train(job_pk, plan, recorder, progress)
        except JobCannotStart as exc:
            self._fail(job_pk, str(exc), code="invalid_job", param=exc.param)
        except Exception as exc:  # any failure of training or of recording its end fails the job, with the reason
            log.exception("job %s failed", job_pk)
            self._fail(job_pk, f"Training failed: {type(exc).__name__}: {exc}", code="training_failed")

    def _plan(self, job_pk: int) -> JobPlan:
        """What a claimed job trains on, read and checked before any model loads; a `JobCannotStart` names what
        is wrong (a file deleted or missing from the file store, settings that no longer load)."""
        with session_scope() as db:
            job = db.get(Job, job_pk)
            try:
                config = TrainConfig.model_validate(job.run.config)
            except ValueError as exc:
                raise JobCannotStart(f"The job's recorded settings are not valid: {exc}") from None
            files = {"training_file": job.training_file, "validation_file": job.validation_file}
            paths = {param: self._file(db, param, file_id) for param, file_id in files.items() if file_id}
            output_dir = Path(job.run.output_dir)
            resume = output_dir.exists()
            add_event(
                db, job, "Resuming fine-tuning job from its last checkpoint" if resume else "Fine-tuning job started"
            )
            return JobPlan(job.id, config, paths["training_file"], paths.get("validation_file"), output_dir, resume)

    @staticmethod
    def _file(db: Session, param: str, file_id: str) -> Path:
        try:
            path = stored_path(get_file(db, file_id, param=param))
        except APIError:
            raise JobCannotStart(f"The {param.replace('_', ' ')} {file_id} no longer exists", param) from None
        if not path.is_file():
            raise JobCannotStart(f"The bytes of {param.replace('_', ' ')} {file_id} are missing from the server's "
                                 "file store", param)  # fmt: skip
        return path

    def _train(self, job_pk: int, plan: JobPlan, recorder: RunRecorder, progress: JobProgress) -> None:
        from ftlab.train.recipe import train  # torch and transformers load only in the worker

        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_pk, done), daemon=True)
        beat.start()
        try:
            result = train(
                plan.config,
                plan.train_file,
                plan.validation_file,
                plan.output_dir,
                on_event=recorder.on_event,
                should_stop=progress.should_stop,
                resume=plan.resume,
                progress=False,
            )
        finally:
            done.set()
            beat.join()
        log.info("job %s: training ended (%s)", plan.job_id, result.status)
        with session_scope() as db:
            job = db.get(Job, job_pk, with_for_update=True)
            if job.worker_id != self.id:
                log.warning("job %s was taken over by %s; leaving it alone", plan.job_id, job.worker_id)
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

    def _fail(self, job_pk: int, message: str, *, code: str, param: str | None = None) -> None:
        """End this worker's job and its run as failed with `message` (a job another worker has taken over, or
        one that has already ended, is left alone)."""
        try:
            with session_scope() as db:
                job = db.get(Job, job_pk, with_for_update=True)
                if job.worker_id != self.id or job.status in TERMINAL:
                    return
                job.status, job.finished_at, job.worker_id = "failed", now(), None
                job.error = {"code": code, "message": message, "param": param}
                job.run.status, job.run.error, job.run.finished_at = "failed", message, now()
                add_event(db, job, message, level="error")
            self._export(job_pk)
        except Exception:  # the database is gone too: the job's heartbeat stops and recovery takes it from here
            log.exception("could not record that job %s failed", job_pk)

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
        results = register_result_file(db, Path(result.metrics_csv), filename="step_metrics.csv", project=job.project)
        job.fine_tuned_model = fine_tuned_model_name(job)
        job.result_files = [results.id]
        job.trained_tokens = result.trained_tokens
        job.status, job.finished_at = "succeeded", now()
        add_event(db, job, f"New fine-tuned model created: {job.fine_tuned_model}")
        add_event(db, job, "The job has successfully completed")
