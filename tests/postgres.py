"""A real PostgreSQL for the tests: `initdb` and `pg_ctl` from the PATH, run as the `postgres` user when the
tests run as root (PostgreSQL refuses root), in a temporary folder, on a free port with its unix socket in that
folder. Each test that wants a database gets a fresh one (`new_database`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from serve_helpers import free_port

START_TIMEOUT_S = 120  # bounds a hang on a shared machine; it measures nothing
SERVER_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started here; the message says why (the tests that need it are skipped)."""


class Postgres:
    """One PostgreSQL server for the test session."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
        if not self.initdb or not self.pg_ctl:
            raise PostgresUnavailable("initdb and pg_ctl (PostgreSQL 15) are not on the PATH")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise PostgresUnavailable("the psycopg driver is not installed (pip install 'psycopg[binary]')") from None
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if not runuser:
                raise PostgresUnavailable("running as root, and there is no runuser to start PostgreSQL as postgres")
            self.as_user = [runuser, "-u", SERVER_USER, "--"]
        self.folder = Path(tempfile.mkdtemp(prefix="ftlab-postgres-"))
        if self.as_user:
            shutil.chown(self.folder, SERVER_USER)
        self.data = self.folder / "data"
        self.port = free_port()
        self.databases = 0

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, *command], capture_output=True, text=True, timeout=START_TIMEOUT_S)

    def start(self) -> Postgres:
        made = self._run(self.initdb, "-D", str(self.data), "-U", "ftlab", "--auth=trust", "-E", "UTF8", "--no-sync")
        if made.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {made.stderr.strip() or made.stdout.strip()}")
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")  # fmt: skip
        started = self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.folder / "server.log"),
                            "-w", "-t", str(START_TIMEOUT_S), "start")  # fmt: skip
        if started.returncode != 0:
            log = self.folder / "server.log"
            raise PostgresUnavailable(f"pg_ctl start failed: {started.stderr.strip()} {log.read_text()[-2000:]}")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://ftlab@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a fresh, empty database."""
        import psycopg

        self.databases += 1
        name = f"ftlab_{os.getpid()}_{self.databases}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=ftlab dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
