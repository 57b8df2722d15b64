"""Issue 16's reproductions, each now a test on a real `ftlab serve` driven by the official client, on SQLite and on
PostgreSQL: a file an unfinished job uses cannot be deleted, a job that cannot start fails without stopping the
worker, every upload purpose lists, reads never wait for a writer, a chunked upload is refused while it is read,
deep nesting is a 400, out-of-range settings are 400s and a loss that is not finite fails the job, a worker killed
alone is replaced and its job resumes, SIGTERM queues work again, leftovers go at start, and projects keep keys
apart."""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import get_args

import httpx
import openai
import pytest
from data_helpers import animal_pairs
from openai.types import FilePurpose
from serve_helpers import EMOJI, REPO, Server, chat_rows, ftlab_env, run_cli, wait_for, write_jsonl

TERMINAL = ("succeeded", "failed", "cancelled")
MAX_UPLOAD_MB = 16
PROMPT_S = 3.0  # "promptly": a read that waited for a writer would take the busy timeout (30 s) or the upload


def database_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The server's database for this parameter: its home's SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return {}
    return {"FTLAB_DATABASE_URL": request.getfixturevalue("postgres").new_database()}


def database_url(server: Server) -> str:
    return server.env.get("FTLAB_DATABASE_URL") or f"sqlite:///{server.home / 'ftlab.db'}"


def start_worker(server: Server) -> subprocess.Popen:
    """An `ftlab worker` on the server's database that exits once the queue is empty."""
    return subprocess.Popen(
        [sys.executable, "-m", "ftlab.cli.serve", "worker", "--exit-when-idle", "--poll-interval", "0.2"],
        cwd=REPO, env=ftlab_env(server.home, **server.env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def wait_terminal(client: openai.OpenAI, job_id: str):
    return wait_for(lambda: (job := client.fine_tuning.jobs.retrieve(job_id)).status in TERMINAL and job)


def upload(client: openai.OpenAI, path: Path, purpose: str = "fine-tune") -> str:
    with open(path, "rb") as handle:
        return client.files.create(file=handle, purpose=purpose).id


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without workers (jobs stay queued until a test starts one)."""
    home = tmp_path_factory.mktemp(f"reliability-{request.param}")
    server = Server(home, "--workers", "0", "--max-upload-mb", str(MAX_UPLOAD_MB), env=database_env(request))
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("reliability-data") / "train.jsonl", chat_rows(EMOJI[:10]))


@pytest.fixture(scope="module")
def diverging_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with an infinite value in every embedding: every loss it computes is NaN."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = math.inf
    folder = tmp_path_factory.mktemp("diverging-llama")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


# Rows 1 and 9: a file in use cannot be deleted; a job that cannot train fails, and the worker goes on ------------
def test_a_file_in_use_cannot_be_deleted_and_jobs_that_cannot_train_fail_alone(
    server: Server, train_file: Path, tiny_model_dir: Path, diverging_model_dir: Path
) -> None:
    client = server.client()
    used, broken = upload(client, train_file), upload(client, train_file)
    settings = {"hyperparameters": {"n_epochs": 2, "batch_size": 5}}
    missing = client.fine_tuning.jobs.create(training_file=broken, model=str(tiny_model_dir), **settings)
    diverging = client.fine_tuning.jobs.create(training_file=used, model=str(diverging_model_dir), **settings)
    good = client.fine_tuning.jobs.create(training_file=used, model=str(tiny_model_dir), **settings)
    with pytest.raises(openai.ConflictError) as info:
        client.files.delete(used)
    error = info.value.body
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "file_in_use"
    assert diverging.id in error["message"] and client.files.retrieve(used).id == used

    (server.home / "files" / broken).unlink()  # the bytes vanish behind the server's back (a disk problem)
    worker = start_worker(server)
    assert worker.wait(600) == 0  # it ran all three jobs and left when the queue was empty: nothing killed it
    missing, diverging, good = (client.fine_tuning.jobs.retrieve(j.id) for j in (missing, diverging, good))
    assert missing.status == "failed" and missing.error.param == "training_file"
    assert missing.error.message == f"The bytes of training file {broken} are missing from the server's file store"
    assert diverging.status == "failed" and diverging.fine_tuned_model is None
    assert "step 1: the training loss is nan, not a finite number" in diverging.error.message
    assert not client.fine_tuning.jobs.checkpoints.list(diverging.id).data
    assert good.status == "succeeded", good.error
    assert client.files.delete(used).deleted  # its jobs have ended: now the file may go


# Row 2: every purpose openai-python uploads is stored, retrieved and listed ---------------------------------------
def test_every_upload_purpose_is_accepted_and_the_listing_never_breaks(server: Server, tmp_path: Path) -> None:
    client = server.client()
    notes = write_jsonl(tmp_path / "notes.jsonl", [{"text": "not a chat"}])
    for purpose in get_args(FilePurpose):
        if purpose == "fine-tune":
            continue  # a training file is checked as one: covered by the other tests
        stored = client.files.create(file=("notes.jsonl", notes.read_bytes()), purpose=purpose)
        assert stored.purpose == purpose and stored.status == "processed"
        assert client.files.retrieve(stored.id).purpose == purpose
        assert stored.id in [f.id for f in client.files.list(purpose=purpose)]
        assert stored.id in [f.id for f in client.files.list()]  # the whole listing still answers
    raw = httpx.get(f"{server.base_url}/files").json()
    assert raw["first_id"] == raw["data"][0]["id"] and raw["last_id"] == raw["data"][-1]["id"]
    assert "expires_at" not in raw["data"][0] and "status_details" not in raw["data"][0]  # sent when they have a value
    empty = httpx.get(f"{server.base_url}/files", params={"purpose": "batch_output"}).json()
    assert empty["data"] == [] and empty["first_id"] is None and empty["has_more"] is False


# Row 5: reads never wait for a writer -----------------------------------------------------------------------------
@contextmanager
def writer_holding_the_database(url: str) -> Iterator[None]:
    """Another process in the middle of a long write: SQLite's write lock, or PostgreSQL's EXCLUSIVE lock on the
    tables the API reads (writers wait; plain reads must not)."""
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        connection.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        connection = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        connection.execute("LOCK TABLE files, fine_tuning_jobs, job_events IN EXCLUSIVE MODE")
    try:
        yield
    finally:
        connection.rollback()
        connection.close()


def timed(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_reads_answer_promptly_while_a_writer_holds_the_database(server: Server, train_file: Path) -> None:
    client = server.client()
    file_id = upload(client, train_file)
    with writer_holding_the_database(database_url(server)):
        for read in (client.files.list, lambda: client.files.retrieve(file_id), client.fine_tuning.jobs.list,
                     client.models.list):  # fmt: skip
            assert timed(read) < PROMPT_S


def test_listing_answers_promptly_while_a_large_upload_is_checked_and_a_job_created(
    server: Server, tmp_path: Path, tiny_model_dir: Path
) -> None:
    rows = chat_rows(EMOJI) * 2_500  # 30,000 examples, ~6 MB: seconds of validation
    big = write_jsonl(tmp_path / "big.jsonl", rows)
    client = server.client()
    polls: list[tuple[float, float]] = []  # (started, finished) of each listing
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            started = time.monotonic()
            client.files.list(purpose="user_data")
            polls.append((started, time.monotonic()))
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        busy_from = time.monotonic()
        big_id = upload(client, big)
        job = client.fine_tuning.jobs.create(training_file=big_id, model=str(tiny_model_dir))
        client.fine_tuning.jobs.cancel(job.id)
        busy_until = time.monotonic()
    finally:
        done.set()
        poller.join()
    # How many listings fit in depends on the machine's speed; that some ran while the server was busy does not.
    during = [finished - started for started, finished in polls if started < busy_until and finished > busy_from]
    assert during and max(during) < PROMPT_S, polls


# Row 10: a chunked upload is refused while it is read -------------------------------------------------------------
def test_a_chunked_upload_over_the_limit_is_refused_while_it_is_read(server: Server) -> None:
    sent = 0
    boundary = "ftlab-boundary"

    def body() -> Iterator[bytes]:
        nonlocal sent
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n--{boundary}\r\n'
                'Content-Disposition: form-data; name="file"; filename="huge.jsonl"\r\n\r\n').encode()  # fmt: skip
        yield head
        chunk = b'{"messages": []}\n' * 4096
        while sent < 10 * MAX_UPLOAD_MB * 2**20:  # 160 MB if nobody stops it; no Content-Length: chunked
            sent += len(chunk)
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = httpx.post(f"{server.base_url}/files", content=body(), headers=headers, timeout=300)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "file_too_large"
    assert sent < 4 * MAX_UPLOAD_MB * 2**20  # stopped near the limit (plus socket buffers), not after the whole body
    assert not list((server.home / "files").glob(".upload-*"))


# Rows 9 and 12: settings out of range, deep nesting -----------------------------------------------------------------
ISSUE_SETTINGS = [
    ("n_epochs", 1e9), ("batch_size", 1e9), ("lora_r", 100_000), ("max_length", 1e9), ("eval_every", 0),
    ("eval_every", -5), ("weight_decay", -1e9), ("max_grad_norm", -1), ("learning_rate_multiplier", 1e308),
]  # fmt: skip


def test_the_issues_settings_are_refused_naming_the_parameter(
    server: Server, train_file: Path, tiny_model_dir: Path
) -> None:
    file_id = upload(server.client(), train_file)
    for setting, value in [*ISSUE_SETTINGS, ("learning_rate_multiplier", math.inf)]:
        body = {"model": str(tiny_model_dir), "training_file": file_id, "hyperparameters": {setting: value}}
        response = httpx.post(f"{server.base_url}/fine_tuning/jobs", content=json.dumps(body),
                              headers={"content-type": "application/json"})  # fmt: skip
        error = response.json()["error"]
        assert response.status_code == 400 and error["param"] == f"hyperparameters.{setting}", (setting, error)


def test_json_nested_100000_deep_is_a_400(server: Server) -> None:
    deep = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    with pytest.raises(openai.BadRequestError, match=r"deep\.jsonl, line 1.*nested too deeply"):
        server.client().files.create(file=("deep.jsonl", deep), purpose="fine-tune")


# Row 6 and SIGTERM: a dead worker is replaced and its job resumes; a stopped server queues its job again ----------
@pytest.fixture
def db_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The database of a test that starts its own servers (each such test names its database: these tests train
    and restart, so each runs on one database; the module's quick ones run on both)."""
    return database_env(request)


ON_SQLITE = pytest.mark.parametrize("db_env", ["sqlite"], indirect=True)
ON_POSTGRESQL = pytest.mark.parametrize("db_env", ["postgresql"], indirect=True)


def steps_of(client: openai.OpenAI, job_id: str) -> list[int]:
    events = client.fine_tuning.jobs.list_events(job_id, limit=1000).data
    return sorted(e.data["step"] for e in events if e.type == "metrics")


@ON_SQLITE
def test_a_worker_killed_alone_is_replaced_and_its_job_resumes(
    tmp_path: Path, train_file: Path, tiny_model_dir: Path, db_env: dict[str, str]
) -> None:
    server = Server(tmp_path / "home", env=db_env).start()
    try:
        client = server.client()
        job = client.fine_tuning.jobs.create(training_file=upload(client, train_file), model=str(tiny_model_dir),
                                             hyperparameters={"n_epochs": 8, "batch_size": 5})  # fmt: skip
        wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, interval=0.1)
        (worker,) = server.worker_pids()
        os.kill(worker, signal.SIGKILL)
        replaced = wait_for(lambda: [p for p in server.worker_pids() if p != worker], timeout=120)
        assert worker not in replaced
        final = wait_terminal(client, job.id)
        assert final.status == "succeeded", final.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data]
        assert any("has exited; the job is queued again and will resume" in m for m in messages)
        assert any(m.startswith("Resumed from checkpoint-epoch-") for m in messages)
        assert steps_of(client, job.id) == list(range(1, 17))  # resumed steps listed once each
        checkpoints = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id, limit=100).data]
        assert sorted(checkpoints) == list(range(2, 17, 2))
    finally:
        server.stop()


@ON_SQLITE
def test_sigterm_queues_the_running_job_again_and_a_restart_finishes_it(
    tmp_path: Path, train_file: Path, tiny_model_dir: Path, db_env: dict[str, str]
) -> None:
    home = tmp_path / "home"
    server = Server(home, env=db_env).start()
    try:
        client = server.client()
        job = client.fine_tuning.jobs.create(training_file=upload(client, train_file), model=str(tiny_model_dir),
                                             hyperparameters={"n_epochs": 8, "batch_size": 5})  # fmt: skip
        wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, interval=0.1)
    finally:
        server.stop()  # SIGTERM to the server and its worker, as systemd or docker stop sends it
    assert server.process.returncode == 0

    server = Server(home, "--workers", "0", env=db_env).start()
    try:
        client = server.client()
        stopped = client.fine_tuning.jobs.retrieve(job.id)
        assert stopped.status == "queued", stopped
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data]
        assert any(m.startswith("The worker running this job is shutting down; the job is queued again") for m in
                   messages)  # fmt: skip
        assert start_worker(server).wait(600) == 0
        assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"
        assert steps_of(client, job.id) == list(range(1, 17))
    finally:
        server.stop()


# Row 13: what a killed upload or checkpoint save leaves behind goes at the next start -----------------------------
@ON_SQLITE
def test_leftovers_of_killed_processes_are_removed_at_start(tmp_path: Path, db_env: dict[str, str]) -> None:
    home = tmp_path / "home"
    server = Server(home, "--workers", "0", env=db_env).start()
    big = write_jsonl(tmp_path / "big.jsonl", chat_rows(EMOJI) * 5_000)  # ~12 MB: seconds of validation
    uploading = threading.Thread(target=lambda: _upload_ignoring_errors(server, big))
    try:
        uploading.start()
        wait_for(lambda: list((home / "files").glob(".upload-*")), interval=0.02)
        server.kill9()  # killed while the upload is being written or checked
    finally:
        server.stop()
        uploading.join()
    assert list((home / "files").glob(".upload-*"))
    held = home / "files" / ".upload-live"  # another server on the same folder, still writing its upload
    handle = os.open(held, os.O_CREAT | os.O_WRONLY)
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        server = Server(home, "--workers", "0", env=db_env).start()
        server.stop()
        assert [p.name for p in (home / "files").glob(".upload-*")] == [held.name]
    finally:
        os.close(handle)


def _upload_ignoring_errors(server: Server, path: Path) -> None:
    with suppress(openai.APIConnectionError):  # the server is killed under it
        upload(server.client(), path)


# Row 8: projects ---------------------------------------------------------------------------------------------------
@ON_POSTGRESQL
def test_keys_of_one_project_never_see_another_projects_objects(
    tmp_path: Path, train_file: Path, tiny_model_dir: Path, db_env: dict[str, str]
) -> None:
    home = tmp_path / "home"
    alpha = run_cli(home, "keys", "create", "--project", "alpha", env=db_env).stdout.strip()
    beta = run_cli(home, "keys", "create", "--project", "beta", env=db_env).stdout.strip()
    admin = run_cli(home, "keys", "create", "--admin", env=db_env).stdout.strip()
    assert "project alpha" in run_cli(home, "keys", "list", env=db_env).stdout
    refused = run_cli(home, "keys", "create", "--project", "no spaces", env=db_env, check=False)
    assert refused.returncode == 2 and "project 'no spaces'" in refused.stderr
    server = Server(home, "--require-key", env=db_env).start()
    try:
        a, b, root = server.client(alpha), server.client(beta), server.client(admin)
        file_id = upload(a, train_file)
        job = a.fine_tuning.jobs.create(training_file=file_id, model=str(tiny_model_dir),
                                        hyperparameters={"n_epochs": 1, "batch_size": 5})  # fmt: skip
        job = wait_terminal(a, job.id)
        assert job.status == "succeeded", job.error
        (checkpoint,) = a.fine_tuning.jobs.checkpoints.list(job.id).data
        ask = [{"role": "user", "content": "hi"}]

        assert file_id not in [f.id for f in b.files.list()] and job.id not in [j.id for j in b.fine_tuning.jobs.list()]
        assert job.fine_tuned_model not in [m.id for m in b.models.list()]
        for call in (lambda: b.files.retrieve(file_id), lambda: b.files.content(file_id),
                     lambda: b.files.delete(file_id), lambda: b.fine_tuning.jobs.retrieve(job.id),
                     lambda: b.fine_tuning.jobs.cancel(job.id), lambda: b.fine_tuning.jobs.list_events(job.id),
                     lambda: b.fine_tuning.jobs.checkpoints.list(job.id),
                     lambda: b.models.retrieve(job.fine_tuned_model), lambda: b.models.delete(job.fine_tuned_model),
                     lambda: b.chat.completions.create(model=job.fine_tuned_model, messages=ask, max_tokens=2),
                     lambda: b.chat.completions.create(model=checkpoint.fine_tuned_model_checkpoint, messages=ask,
                                                       max_tokens=2)):  # fmt: skip
            with pytest.raises(openai.NotFoundError):
                call()
        with pytest.raises(openai.BadRequestError, match="no such file"):
            b.fine_tuning.jobs.create(training_file=file_id, model=str(tiny_model_dir))
        # DPO goes on from a fine-tuned model of one's own project only: alpha's is as absent to beta as a typo
        pairs = upload(b, write_jsonl(tmp_path / "pairs.jsonl", animal_pairs([f"animal {n}" for n in range(10)])))
        with pytest.raises(openai.BadRequestError, match="not available for fine-tuning") as refused:
            b.fine_tuning.jobs.create(training_file=pairs, model=job.fine_tuned_model, method={"type": "dpo"})
        assert refused.value.body["param"] == "model"
        assert client_sees(a, file_id, job.id, job.fine_tuned_model)
        assert client_sees(root, file_id, job.id, job.fine_tuned_model)
        assert a.files.retrieve(job.result_files[0]).purpose == "fine-tune-results"  # the job's results are alpha's
        with pytest.raises(openai.NotFoundError):
            b.files.retrieve(job.result_files[0])

        # The API's description and its pages take a key too; the dashboard, which shows every project, an admin's.
        base = f"http://127.0.0.1:{server.port}"
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert httpx.get(base + path).status_code == 401
            assert httpx.get(base + path, headers={"Authorization": f"Bearer {beta}"}).status_code == 200
        assert httpx.get(f"{base}/dashboard/api/runs", headers={"Authorization": f"Bearer {beta}"}).status_code == 401
        assert httpx.get(f"{base}/dashboard/api/runs", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    finally:
        server.stop()


def client_sees(client: openai.OpenAI, file_id: str, job_id: str, model: str) -> bool:
    return (
        file_id in [f.id for f in client.files.list()]
        and job_id in [j.id for j in client.fine_tuning.jobs.list()]
        and model in [m.id for m in client.models.list()]
        and client.files.retrieve(file_id).id == file_id
        and client.models.retrieve(model).id == model
    )
