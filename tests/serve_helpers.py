"""Running `ftlab serve` as a real process for the service tests: free port, own FTLAB_HOME, kill -9."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from openai import OpenAI

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 300  # bounds a hang on a shared machine, it measures nothing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ftlab_env(home: Path, **extra: str) -> dict[str, str]:
    # One intra-op thread: the server and its worker share the machine with the test process (and, in CI, with
    # other tests); spinning OpenMP threads on an oversubscribed CPU slow everything down far more than 1 thread.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FTLAB_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("FTLAB_DATABASE_URL", None)  # the home's own SQLite file, unless `extra` names another database
    return {**env, **extra}


def run_cli(
    home: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ftlab.cli.serve", *args],
        cwd=REPO,
        env=ftlab_env(home, **(env or {})),
        capture_output=True,
        text=True,
        check=check,
    )


class Server:
    """`ftlab serve` (with its worker) in its own process group, so a test can kill -9 all of it."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.args = args
        self.env = env or {}
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = home / "server.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Server:
        self.home.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "ftlab.cli.serve", "serve", "--port", str(self.port), *self.args]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=ftlab_env(self.home, **self.env), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ftlab serve exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"ftlab serve did not come up:\n{self.log.read_text()}")

    def kill9(self) -> None:
        """SIGKILL the server and its workers at once, like a power cut."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def worker_pids(self) -> list[int]:
        """The worker processes `ftlab serve` runs (its children)."""
        return children(self.process.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def client(self, api_key: str = "not-needed-on-loopback") -> OpenAI:
        return OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=300)  # a hang guard only


def children(pid: int) -> list[int]:
    """The live child processes of `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return sorted(found)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


EMOJI = [
    ("I love this!", "😍"), ("This is terrible.", "😡"), ("What a sunny day", "☀️"), ("I am so tired", "😴"),
    ("Happy birthday!", "🎂"), ("It is raining again", "🌧️"), ("We won the game!", "🏆"), ("I feel sick", "🤒"),
    ("Pizza for dinner", "🍕"), ("Good night", "🌙"), ("Coffee time", "☕"), ("Let's go to the beach", "🏖️"),
]  # fmt: skip


def chat_rows(pairs: list[tuple[str, str]]) -> list[dict]:
    return [
        {"messages": [
            {"role": "system", "content": "Reply with one emoji."},
            {"role": "user", "content": text},
            {"role": "assistant", "content": emoji},
        ]}
        for text, emoji in pairs
    ]  # fmt: skip


def wait_for(predicate, timeout: float = 600, interval: float = 0.25):
    """Poll until `predicate()` returns something truthy. The timeout only guards against a hang, generous for
    a loaded 2-core machine: the longest wait here is a 1-epoch job of the bundled model."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not reached")
