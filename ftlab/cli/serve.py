"""`ftlab serve`, `ftlab worker` and `ftlab keys`: the OpenAI-compatible service, its training worker and its keys."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import typer

from ftlab.config import BUNDLED_MODEL

serve_app = typer.Typer()
keys_app = typer.Typer(help="Create, list and revoke the API keys the service accepts.", no_args_is_help=True)
serve_app.add_typer(keys_app, name="keys")

WORKER_SHUTDOWN_S = 60  # how long `serve` waits for its workers to checkpoint-free stop before killing them
SUPERVISE_S = 1.0  # how often `serve` looks for a worker that died
RESTART_BACKOFF_S = (1, 2, 5, 10, 30, 60)  # waits before restarting a worker that keeps dying at once
HEALTHY_AFTER_S = 60  # a worker that ran this long before dying is restarted without waiting

log = logging.getLogger("ftlab.serve")


class Workers:
    """The training workers `serve` runs beside the API: each a `ftlab worker` process, started again when it
    dies (kill -9, out of memory) — at once, or after a growing wait when it keeps dying on start — and asked
    to stop (SIGTERM: it queues its job again) when the server stops."""

    def __init__(self, n: int, env: dict[str, str]) -> None:
        self.n = n
        self.env = env
        self.children: list[subprocess.Popen] = []
        self.started: list[float] = []
        self.failures: list[int] = []
        self.stopping = threading.Event()
        self.watcher = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def _spawn(self) -> subprocess.Popen:
        command = [sys.executable, "-m", "ftlab.cli.serve", "worker", "--parent-pid", str(os.getpid())]
        return subprocess.Popen(command, env=self.env)

    def start(self) -> None:
        self.children = [self._spawn() for _ in range(self.n)]
        self.started = [time.monotonic()] * self.n
        self.failures = [0] * self.n
        self.watcher.start()

    def _watch(self) -> None:
        while not self.stopping.wait(SUPERVISE_S):
            for slot, child in enumerate(self.children):
                if child.poll() is None:
                    continue
                quick = time.monotonic() - self.started[slot] < HEALTHY_AFTER_S
                self.failures[slot] = self.failures[slot] + 1 if quick else 0
                wait = RESTART_BACKOFF_S[min(self.failures[slot], len(RESTART_BACKOFF_S)) - 1] if quick else 0
                log.warning("worker %d (pid %d) exited with %s; starting another%s", slot, child.pid,
                            child.returncode, f" in {wait} s" if wait else "")  # fmt: skip
                if self.stopping.wait(wait):
                    return
                self.children[slot], self.started[slot] = self._spawn(), time.monotonic()

    def stop(self) -> None:
        self.stopping.set()
        if self.watcher.is_alive():
            self.watcher.join()
        stop_processes(self.children)  # SIGTERM: a worker stops at the next step and queues its job again


def stop_processes(children: list[subprocess.Popen]) -> None:
    """SIGTERM each child, then wait for them all (killing one that takes longer than WORKER_SHUTDOWN_S)."""
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(WORKER_SHUTDOWN_S)
        except subprocess.TimeoutExpired:
            child.kill()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def thread_budget(cores: int, workers: int, generation_threads: int | None) -> tuple[int | None, int]:
    """CPU threads for the server's generation and for each training worker, so neither starves the other.

    Generation gets `generation_threads`, else half the cores when workers train beside it (all without
    workers); the workers share the rest, at least one thread each. `OMP_NUM_THREADS`, when set, wins for
    both (None: leave torch's setting alone). The event loop and FastAPI's thread pool need no cores of their
    own: they wait on I/O, and generation runs on its own thread.
    """
    if generation_threads is None and "OMP_NUM_THREADS" in os.environ:
        return None, int(os.environ["OMP_NUM_THREADS"])
    generation = generation_threads or (max(1, cores // 2) if workers else cores)
    return generation, max(1, (cores - generation) // max(1, workers))


def start_vllm(model: str) -> tuple[str, subprocess.Popen]:
    """Start vLLM's OpenAI server for `model` with runtime LoRA loading on a free loopback port."""
    import importlib.util
    import socket

    from ftlab.models import resolve_model
    from ftlab.serve.vllm import vllm_command, vllm_env

    if importlib.util.find_spec("vllm") is None:
        typer.echo("error: --engine vllm needs vLLM here (`pip install vllm`, on a machine with a GPU), or "
                   "--vllm-url of one running elsewhere", err=True)  # fmt: skip
        raise typer.Exit(2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    child = subprocess.Popen(vllm_command(resolve_model(model), model, port), env=vllm_env())
    return f"http://127.0.0.1:{port}", child


@serve_app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback requires API keys."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(
        1, min=0, help="Training worker processes to start beside the server (0: run `ftlab worker` yourself)."
    ),
    require_key: bool = typer.Option(
        False, "--require-key", help="Require an API key even on loopback (always on for other addresses)."
    ),
    max_upload_mb: float = typer.Option(512, help="Largest accepted upload, in MiB."),
    max_loaded_models: int = typer.Option(
        2, min=1, help="Base models kept loaded for chat completions (LRU); fine-tuned adapters load onto them."
    ),
    max_adapters: int = typer.Option(16, min=1, help="Fine-tuned adapters kept loaded per base model (LRU)."),
    max_batch_size: int = typer.Option(32, min=1, help="Chat completions (choices) generated together in one batch."),
    max_queued: int = typer.Option(
        256, min=1, help="Choices waiting for generation before new chat requests get 429 with Retry-After."
    ),
    generation_threads: int | None = typer.Option(
        None, min=1, help="CPU threads for generation (default: half the cores when workers train beside it, else all)."
    ),
    engine: str = typer.Option("local", help="local: generate in this process, batched; vllm: hand chat "
                               "completions to vLLM (files and jobs stay here)."),
    vllm_url: str | None = typer.Option(None, help="--engine vllm: a running vLLM OpenAI server to use (started "
                                        "with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True); default: "
                                        "start one."),
    vllm_model: str = typer.Option(BUNDLED_MODEL, help="--engine vllm: the base model vLLM serves."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve the OpenAI-compatible API (files, fine_tuning.jobs, models, chat.completions) under /v1.

    State lives under FTLAB_HOME (database ftlab.db, uploads in files/, runs in runs/); FTLAB_DATABASE_URL
    points at another database (e.g. PostgreSQL) that several servers and workers can share.
    """
    import uvicorn

    from ftlab.records.db import init_db, session_scope
    from ftlab.serve.app import Settings, create_app
    from ftlab.serve.auth import active_key_count

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    init_db()
    require_key = require_key or not is_loopback(host)
    if require_key:
        with session_scope() as db:
            if active_key_count(db) == 0:
                typer.echo(
                    f"error: binding to {host} requires API keys and there are none: create one with "
                    "`ftlab keys create`",
                    err=True,
                )
                raise typer.Exit(2)
    if engine not in ("local", "vllm"):
        typer.echo(f"error: --engine is local or vllm, not {engine}", err=True)
        raise typer.Exit(2)
    children = []
    if engine == "vllm" and vllm_url is None:
        vllm_url, child = start_vllm(vllm_model)
        children.append(child)
    generation, training = thread_budget(os.cpu_count() or 1, workers, generation_threads)
    settings = Settings(
        require_key=require_key,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_loaded_models=max_loaded_models,
        max_adapters=max_adapters,
        max_batch_size=max_batch_size,
        max_queued=max_queued,
        generation_threads=generation,
        vllm_url=vllm_url if engine == "vllm" else None,
        vllm_model=vllm_model,
    )
    # uvicorn answers SIGTERM with a graceful shutdown, then raises it again under the handler found at start:
    # this one, so the workers are stopped (their jobs queued again) before the process ends, with status 0.
    signal.signal(signal.SIGTERM, _stop_serving)
    worker_env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(training))}
    supervised = Workers(workers, worker_env)
    supervised.start()
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
    finally:
        supervised.stop()
        stop_processes(children)  # vLLM, when this server started it


def _stop_serving(*_args) -> None:
    raise SystemExit(0)


@serve_app.command("worker")
def worker_command(
    poll_interval: float = typer.Option(1.0, help="Seconds between looks at the queue when it is empty."),
    stale_after: float = typer.Option(60.0, help="A running job whose heartbeat is older than this is recovered."),
    max_attempts: int = typer.Option(3, min=1, help="Times a job is started before a lost worker fails it."),
    exit_when_idle: bool = typer.Option(False, "--exit-when-idle", help="Exit once the queue is empty."),
    parent_pid: int | None = typer.Option(None, hidden=True, help="Exit when this process (the server) exits."),
) -> None:
    """Train queued fine-tuning jobs, one at a time, from the database the server writes to.

    Run as many as you like against one database (FTLAB_DATABASE_URL); each job is claimed by exactly one.
    """
    from ftlab.serve.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    Worker(
        poll_interval=poll_interval,
        stale_after=stale_after,
        max_attempts=max_attempts,
        parent_pid=parent_pid,
        exit_when_idle=exit_when_idle,
    ).run()


@keys_app.command("create")
def keys_create(
    name: str = typer.Option("", help="A label to recognise the key by."),
    project: str = typer.Option(
        "default", help="The project the key works in: it sees that project's files, jobs and models only."
    ),
    admin: bool = typer.Option(False, "--admin", help="The key sees every project (and the dashboard)."),
) -> None:
    """Create an API key and print it (it is shown only this once)."""
    from ftlab.records.db import init_db, session_scope
    from ftlab.serve.auth import create_key

    init_db()
    try:
        with session_scope() as db:
            key, secret = create_key(db, name, project=project, admin=admin)
            key_id = key.id
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(secret)
    scope = "every project (admin)" if admin else f"project '{project}'"
    typer.echo(f"(id {key_id}, for {scope}; use it as `Authorization: Bearer <key>` or OpenAI(api_key=...))",
               err=True)  # fmt: skip


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (prefix, name, project, created, last used, revoked)."""
    from datetime import UTC, datetime

    from ftlab.records.db import init_db, session_scope
    from ftlab.serve.auth import list_keys

    def when(ts: int | None) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"

    init_db()
    with session_scope() as db:
        for key in list_keys(db):
            state = f"revoked {when(key.revoked_at)}" if key.revoked_at else "active"
            project = f"{key.project} (admin)" if key.admin else key.project
            typer.echo(
                f"{key.id}  {key.prefix}…  {key.name or '-'}  project {project}  created {when(key.created_at)}  "
                f"last used {when(key.last_used_at)}  {state}"
            )


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id (from `ftlab keys list`).")) -> None:
    """Revoke an API key: requests using it get 401 from then on."""
    from ftlab.records.db import init_db, session_scope
    from ftlab.serve.auth import revoke_key

    init_db()
    with session_scope() as db:
        if revoke_key(db, key_id) is None:
            typer.echo(f"error: no key with id {key_id}", err=True)
            raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


if __name__ == "__main__":
    serve_app()
