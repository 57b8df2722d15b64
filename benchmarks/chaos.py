"""Chaos: tiny fine-tuning jobs on `ftlab serve` with several workers on PostgreSQL, while worker processes, the
server alone, or the server with all its workers are killed with SIGKILL at random moments and the server is
started again. Afterwards every job must have ended succeeded (or failed only after its attempts), none trained
to its end twice, every step recorded once, and no uploaded file or checkpoint lost. Prints the counts.

    python benchmarks/chaos.py [--jobs 12] [--workers 3] [--kills 12] [--epochs 4] [--seed 0]
                               [--database-url postgresql+psycopg://…]

Without --database-url it starts a PostgreSQL 15 of its own (initdb and pg_ctl on the PATH, as the tests do).
It uses the tests' real-server helpers (tests/serve_helpers.py) and their tiny random Llama; a bounded version
runs in tests/test_chaos.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # Server, Postgres and the tiny model: the same helpers the tests use

from serve_helpers import EMOJI, Server, chat_rows, write_jsonl  # noqa: E402

TERMINAL = ("succeeded", "failed", "cancelled")
KILLS = ("worker", "worker", "server", "everything")  # what a kill hits; workers twice as often
BATCH = 5
EXAMPLES = 10


@dataclass
class Report:
    jobs: int = 0
    succeeded: int = 0
    failed_after_attempts: int = 0
    failed_otherwise: int = 0
    unfinished: int = 0
    kills: Counter = field(default_factory=Counter)
    server_starts: int = 0
    attempts: Counter = field(default_factory=Counter)  # attempts a job took -> jobs
    trained_to_the_end_twice: int = 0  # jobs a worker trained to the last step more than once
    taken_over: int = 0  # trainings that ended after another worker had taken their job
    steps_not_once: int = 0  # jobs whose metrics events do not list each step exactly once
    files_checked: int = 0
    files_lost: int = 0
    checkpoints_checked: int = 0
    checkpoints_lost: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**{k: dict(v) if isinstance(v, Counter) else v for k, v in vars(self).items()}, "ok": self.ok}


def run(
    home: Path, database_url: str, model: Path, *, jobs: int = 12, workers: int = 3, kills: int = 12, epochs: int = 4,
    seed: int = 0, pause: tuple[float, float] = (2.0, 8.0), timeout: float = 3600,
) -> Report:  # fmt: skip
    """Submit `jobs` jobs, kill something `kills` times (each a random pause after some job is training: a worker
    that trains, the server alone, or everything), wait for every job to end, then check what is left."""
    rng = random.Random(seed)
    report = Report(jobs=jobs)
    started = time.monotonic()
    env = {"FTLAB_DATABASE_URL": database_url}

    def start() -> Server:
        report.server_starts += 1
        return Server(home, "--workers", str(workers), env=env).start()

    server = start()
    try:
        uploads, job_ids = submit(server, home, model, jobs, epochs)
        for _ in range(kills):
            if not wait_for_training(server, job_ids, timeout):
                break
            time.sleep(rng.uniform(*pause))
            kind = rng.choice(KILLS)
            if kind == "worker":
                pids = training_workers(server) or server.worker_pids()
                if not pids:
                    continue
                os.kill(rng.choice(pids), signal.SIGKILL)  # `serve` starts another in its place
            elif kind == "server":
                os.kill(server.process.pid, signal.SIGKILL)  # its workers see it gone and hand their jobs back
                server.process.wait()
                server = start()
            else:
                server.kill9()  # a power cut: the server and its workers at once
                server = start()
            report.kills[kind] += 1
        deadline = time.monotonic() + timeout
        while not all_ended(server, job_ids) and time.monotonic() < deadline:
            time.sleep(1)
        check(server, uploads, job_ids, epochs, report)
    finally:
        server.stop()
    report.seconds = round(time.monotonic() - started, 1)
    return report


def submit(server: Server, home: Path, model: Path, jobs: int, epochs: int) -> tuple[dict[str, str], list[str]]:
    """Upload one small training file per job and create the jobs; (file id -> sha256, job ids)."""
    client = server.client()
    folder = home / "chaos-data"
    folder.mkdir(parents=True, exist_ok=True)
    uploads, job_ids = {}, []
    for i in range(jobs):
        pairs = [EMOJI[(i + k) % len(EMOJI)] for k in range(EXAMPLES)]
        path = write_jsonl(folder / f"train-{i}.jsonl", chat_rows(pairs))
        with open(path, "rb") as handle:
            file_id = client.files.create(file=handle, purpose="fine-tune").id
        uploads[file_id] = hashlib.sha256(path.read_bytes()).hexdigest()
        job = client.fine_tuning.jobs.create(training_file=file_id, model=str(model), suffix=f"chaos{i}",
                                             hyperparameters={"n_epochs": epochs, "batch_size": BATCH})  # fmt: skip
        job_ids.append(job.id)
    return uploads, job_ids


def all_ended(server: Server, job_ids: list[str]) -> bool:
    client = server.client()
    return all(client.fine_tuning.jobs.retrieve(job_id).status in TERMINAL for job_id in job_ids)


def wait_for_training(server: Server, job_ids: list[str], timeout: float) -> bool:
    """Wait until some job is running (so that a kill lands on training); False once every job has ended."""
    client = server.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = {client.fine_tuning.jobs.retrieve(job_id).status for job_id in job_ids}
        if "running" in statuses:
            return True
        if statuses <= set(TERMINAL):
            return False
        time.sleep(0.5)
    return False


def training_workers(server: Server) -> list[int]:
    """The pids of the server's workers that are training a job now (from the jobs' `worker_id`s)."""
    from sqlalchemy import select

    from ftlab.records.db import session_scope
    from ftlab.records.tables import Job

    with session_scope(server.env["FTLAB_DATABASE_URL"], read_only=True) as db:
        owners = db.scalars(select(Job.worker_id).where(Job.status == "running")).all()
    pids = {int(owner.rsplit(":", 2)[1]) for owner in owners if owner}
    return sorted(pids & set(server.worker_pids()))


def check(server: Server, uploads: dict[str, str], job_ids: list[str], epochs: int, report: Report) -> None:
    """Count how every job ended and what is left of its files, steps and checkpoints."""
    from sqlalchemy import select

    from ftlab.records.db import session_scope
    from ftlab.records.tables import Checkpoint, Job

    client = server.client()
    steps_per_epoch = -(-EXAMPLES // BATCH)
    log = server.log.read_text(errors="replace")
    for job_id in job_ids:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status == "succeeded":
            report.succeeded += 1
        elif job.status == "failed" and job.error.code == "worker_lost":
            report.failed_after_attempts += 1
        elif job.status == "failed":
            report.failed_otherwise += 1
            report.problems.append(f"{job_id} failed: {job.error.message}")
        else:
            report.unfinished += 1
            report.problems.append(f"{job_id} is still {job.status}")
        ends = len(re.findall(rf"job {job_id}: training ended \(succeeded\)", log))
        if ends > 1:
            report.trained_to_the_end_twice += 1
            report.problems.append(f"{job_id} was trained to its end {ends} times")
        if job.status != "succeeded":
            continue
        events = client.fine_tuning.jobs.list_events(job_id, limit=10_000).data
        steps = sorted(e.data["step"] for e in events if e.type == "metrics")
        if steps != list(range(1, epochs * steps_per_epoch + 1)):
            report.steps_not_once += 1
            report.problems.append(f"{job_id} lists the steps {steps}")
        listed = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job_id, limit=100).data]
        expected = [steps_per_epoch * (k + 1) for k in range(epochs)]
        with session_scope(server.env["FTLAB_DATABASE_URL"], read_only=True) as db:
            record = db.scalar(select(Job).where(Job.id == job_id))
            report.attempts[record.attempts] += 1
            paths = [Path(c.path) for c in db.scalars(select(Checkpoint).where(Checkpoint.job_pk == record.pk))]
        report.checkpoints_checked += epochs
        missing = len(set(expected) - set(listed)) + sum(not (p / "adapter_model.safetensors").is_file() for p in paths)
        if missing or len(listed) != epochs:
            report.checkpoints_lost += missing or abs(len(listed) - epochs)
            report.problems.append(f"{job_id}: checkpoints at steps {sorted(listed)}, expected {expected}")
    report.taken_over = log.count("was taken over by")
    for file_id, sha256 in uploads.items():
        report.files_checked += 1
        if hashlib.sha256(client.files.content(file_id).content).hexdigest() != sha256:
            report.files_lost += 1
            report.problems.append(f"{file_id} changed or lost")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--database-url", help="a PostgreSQL database to use (default: start one)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    home = Path(tempfile.mkdtemp(prefix="ftlab-chaos-"))
    postgres = None
    if args.database_url is None:
        from postgres import Postgres

        postgres = Postgres().start()
    try:
        from tiny_llama import write_tiny_llama

        from ftlab.config import BUNDLED_MODEL
        from ftlab.models import resolve_model

        model = write_tiny_llama(home / "tiny-llama", Path(resolve_model(BUNDLED_MODEL)))
        url = args.database_url or postgres.new_database()
        report = run(home / "home", url, model, jobs=args.jobs, workers=args.workers, kills=args.kills,
                     epochs=args.epochs, seed=args.seed)  # fmt: skip
    finally:
        if postgres is not None:
            postgres.stop()
    print(json.dumps(report.to_dict(), indent=2))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
