"""What every synth job shares: bounded concurrent calls, a progress bar with token spend, and a journal that
makes a job resumable.

The journal (`OUT.journal.jsonl`) is the single source of truth: one line per finished unit of work (kept or
rejected, with the reason), appended and flushed to disk before the output files are. A job is cut into rounds;
each round's results are journaled in a fixed order, so a job killed at any point and run again skips what the
journal holds, redoes the rest of the round, and writes the same files an uninterrupted run writes. On start the
output files are rebuilt from the journal, which repairs a kill between the journal and the outputs.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ftlab.infer.backend import ChatBackend, Completion


class JobMismatch(ValueError):
    """The journal next to the output was written by a different job."""


def side_path(out: Path, kind: str) -> Path:
    """`qa.jsonl` → `qa.<kind>.jsonl`."""
    return out.with_name(f"{out.stem}.{kind}{out.suffix or '.jsonl'}")


class Journal:
    """Append-only JSONL of finished work, keyed by `record["key"]`; the first line describes the job."""

    def __init__(self, path: Path, job: dict[str, Any], overwrite: bool = False) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self.done: dict[str, dict[str, Any]] = {}
        if overwrite or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"job": job}, ensure_ascii=False) + "\n", encoding="utf-8")
            return
        raw = path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]  # a line cut by a kill is dropped and redone
        if len(complete) != len(raw):
            with open(path, "r+b") as handle:
                handle.truncate(len(complete))
        lines = complete.decode("utf-8").splitlines()
        if not lines:
            path.write_text(json.dumps({"job": job}, ensure_ascii=False) + "\n", encoding="utf-8")
            return
        previous = json.loads(lines[0]).get("job")
        if previous != job:
            changed = sorted(k for k in set(job) | set(previous or {}) if (previous or {}).get(k) != job.get(k))
            raise JobMismatch(
                f"{path} belongs to a different job (changed: {', '.join(changed)}); rerun with --overwrite to "
                "start again, or choose another --out"
            )
        for line in lines[1:]:
            record = json.loads(line)
            self.records.append(record)
            self.done[record["key"]] = record

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        records = list(records)
        if not records:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        for record in records:
            self.records.append(record)
            self.done[record["key"]] = record

    def spend(self) -> tuple[int, int]:
        """(prompt tokens, completion tokens) spent by all journaled work, across resumes."""
        return (
            sum(r.get("tokens", [0, 0])[0] for r in self.records),
            sum(r.get("tokens", [0, 0])[1] for r in self.records),
        )


Render = Callable[[dict[str, Any], int], dict[str, Any]]


class Outputs:
    """Files rendered from journal records, kept in step with the journal: for each path, the record statuses it
    shows and `render(record, line number in that file) -> JSON object`."""

    def __init__(self, files: dict[Path, tuple[set[str], Render]]) -> None:
        self.files = files
        self.lines = dict.fromkeys(files, 0)

    def rebuild(self, records: list[dict[str, Any]]) -> None:
        for path in self.files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")
            self.lines[path] = 0
        self.append(records)

    def append(self, records: list[dict[str, Any]]) -> None:
        for path, (statuses, render) in self.files.items():
            chosen = [r for r in records if r["status"] in statuses]
            if not chosen:
                continue
            with open(path, "a", encoding="utf-8") as handle:
                for record in chosen:
                    self.lines[path] += 1
                    handle.write(json.dumps(render(record, self.lines[path]), ensure_ascii=False) + "\n")


@dataclass
class Spend:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Progress:
    """A tqdm bar over teacher requests, showing ETA and the tokens spent so far (thread-safe)."""

    def __init__(self, description: str, total: int, spent: tuple[int, int] = (0, 0), enabled: bool = True) -> None:
        self.spend = Spend(prompt_tokens=spent[0], completion_tokens=spent[1])
        self.lock = threading.Lock()
        self.bar = tqdm(total=total, desc=description, unit="req", file=sys.stderr, disable=not enabled, leave=True)
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix_str(
            f"tokens {self.spend.prompt_tokens:,} in / {self.spend.completion_tokens:,} out", refresh=False
        )

    def grow(self, extra: int) -> None:
        with self.lock:
            self.bar.total = max(self.bar.total or 0, self.bar.n + extra)
            self.bar.refresh()

    def advance(self, replies: list[Completion]) -> None:
        with self.lock:
            self.spend.requests += len(replies)
            self.spend.prompt_tokens += sum(r.prompt_tokens for r in replies)
            self.spend.completion_tokens += sum(r.completion_tokens for r in replies)
            self._postfix()
            self.bar.update(len(replies))

    def close(self) -> None:
        self.bar.close()


def ask(
    teacher: ChatBackend,
    conversations: list[list[dict[str, Any]]],
    progress: Progress,
    **options: Any,
) -> list[Completion]:
    """One reply per conversation, in order: `teacher.concurrency` calls at once, `teacher.batch_size`
    conversations per call."""
    if not conversations:
        return []
    step = max(1, teacher.batch_size)
    batches = [conversations[i : i + step] for i in range(0, len(conversations), step)]

    options.setdefault("seed", 0)  # a rerun asks the same questions and, from a local teacher, gets the same replies

    def run(batch: list[list[dict[str, Any]]]) -> list[Completion]:
        replies = teacher.generate(batch, **options)
        progress.advance(replies)
        return replies

    if teacher.concurrency <= 1 or len(batches) == 1:
        results = [run(batch) for batch in batches]
    else:
        with ThreadPoolExecutor(max_workers=teacher.concurrency) as pool:
            results = list(pool.map(run, batches))
    return [reply for batch in results for reply in batch]
