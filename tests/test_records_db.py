"""The records database, on SQLite and on PostgreSQL: migrations build exactly the tables the code declares,
SQLite runs in WAL mode and reads take no write lock, and several processes can migrate and write one database
at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from ftlab.records.db import alembic_config, get_engine, init_db, session_scope
from ftlab.records.tables import ApiKey, Base, FileRecord, Job, Run, new_id
from ftlab.serve.worker import claim_next_job


def test_migrations_create_the_declared_schema(db_url: str) -> None:
    url = db_url
    init_db(url)
    init_db(url)  # idempotent
    engine = get_engine(url)
    assert {"files", "runs", "run_metrics", "checkpoints", "fine_tuning_jobs", "job_events", "api_keys"} <= set(
        inspect(engine).get_table_names()
    )
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        assert MigrationContext.configure(connection).get_current_revision() == head
        if url.startswith("sqlite"):
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_records_made_before_projects_move_to_the_default_project(db_url: str) -> None:
    config = alembic_config(db_url)
    with get_engine(db_url).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        connection.execute(text("INSERT INTO api_keys (id, name, prefix, sha256, created_at) "
                                "VALUES ('key-old', 'old', 'ftl-abc', 'digest', 1)"))  # fmt: skip
        connection.execute(text("INSERT INTO files (id, filename, purpose, bytes, sha256, created_at, status) "
                                "VALUES ('file-old', 'a.jsonl', 'fine-tune', 1, 'x', 1, 'processed')"))  # fmt: skip
    init_db(db_url)
    with session_scope(db_url) as db:
        key = db.scalar(select(ApiKey))
        assert (key.project, key.admin) == ("default", True)  # it saw every object before: it still does
        assert db.scalar(select(FileRecord)).project == "default"
        db.add(ApiKey(id="key-new", prefix="ftl-def", sha256="digest2"))
        db.flush()
        assert db.scalar(select(ApiKey).where(ApiKey.id == "key-new")).admin is False


def test_reads_take_no_write_lock_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ftlab.db'}"
    init_db(url)
    _queue(url, 1)
    writer = sqlite3.connect(tmp_path / "ftlab.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock (a long write transaction)
    try:
        started = time.monotonic()
        with session_scope(url, read_only=True) as db:
            assert db.scalar(select(Job.status)) == "queued"
        assert time.monotonic() - started < 2  # a write session would wait here for the busy timeout (30 s)
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_default_database_lives_under_ftlab_home(ftlab_home: Path) -> None:
    from ftlab.records.db import database_url

    assert database_url() == f"sqlite:///{ftlab_home / 'ftlab.db'}"


def _queue(url: str, n: int) -> None:
    with session_scope(url) as db:
        for _ in range(n):
            run = Run(id=new_id("run-"), base_model="m", config={}, source="service")
            db.add(run)
            db.flush()
            db.add(
                Job(
                    id=new_id("ftjob-"), model="m", training_file="file-x", hyperparameters={}, method={}, seed=1,
                    organization_id="org", status="queued", run_pk=run.pk, result_files=[],
                )
            )  # fmt: skip


def _migrate_and_claim_all(url: str, worker: str, out) -> None:
    init_db(url)
    claimed = []
    while True:
        with session_scope(url) as db:
            pk = claim_next_job(db, worker)
        if pk is None:
            with session_scope(url) as db:
                if db.scalar(select(Job.pk).where(Job.status == "queued")) is None:
                    break
            continue
        claimed.append(pk)
    out.put(claimed)


def test_two_processes_share_one_database_and_never_claim_a_job_twice(db_url: str) -> None:
    url = db_url
    init_db(url)
    _queue(url, 20)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [context.Process(target=_migrate_and_claim_all, args=(url, f"w{i}", out)) for i in range(2)]
    for process in workers:
        process.start()
    claimed = [out.get() for _ in workers]
    for process in workers:
        process.join()
        assert process.exitcode == 0
    everything = claimed[0] + claimed[1]
    assert sorted(everything) == sorted(set(everything)) and len(everything) == 20
    with session_scope(url) as db:
        assert {j.worker_id for j in db.scalars(select(Job))} <= {"w0", "w1"}
        assert all(j.status == "running" and j.attempts == 1 for j in db.scalars(select(Job)))


def test_two_processes_can_migrate_a_fresh_database_at_once(db_url: str) -> None:
    url = db_url
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=init_db, args=(url,)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        assert process.exitcode == 0
    assert "fine_tuning_jobs" in inspect(get_engine(url)).get_table_names()
