"""Training in 2 processes (gloo between CPU processes, started by `accelerate launch`): the 1-process loss curve at
the same batch size, checkpoints written once, resume across processes, the record naming both processes, and the
service's worker training a job that way."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from serve_helpers import EMOJI, Server, chat_rows, free_port, wait_for, write_jsonl
from sqlalchemy import select

from ftlab.config import TrainConfig
from ftlab.records.db import session_scope
from ftlab.records.tables import Run
from ftlab.train.launch import train_in_processes
from ftlab.train.recipe import local_share, train
from ftlab.train.tokenize import Tokenized

REPO = Path(__file__).resolve().parents[1]
# 13 examples in batches of 4: 4 steps an epoch, the last batch of 1, so one process trains an example with
# nothing trained at that step. fp32 on both sides: a process's share (2 rows) and the whole batch (4 rows) differ
# only in their shapes, so the float sums round differently — 1e-6 seen, 1e-4 allowed.
# No dropout: each process draws its own masks, so only a dropout-free run draws the one-process curve on two.
SETTINGS = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 20.0, "seed": 7, "precision": "fp32",
            "lora_dropout": 0.0}  # fmt: skip
TOLERANCE = 1e-4


def write_dataset(path: Path, n: int, offset: int = 0) -> Path:
    rows = [{"messages": [
        {"role": "system", "content": "Answer with a JSON list."},
        {"role": "user", "content": f"Ingredients of dish number {i}?"},
        {"role": "assistant", "content": json.dumps([f"item{i % 7}", "salt", "water"][: 1 + i % 3])},
    ]} for i in range(offset, offset + n)]  # fmt: skip
    return write_jsonl(path, rows)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ddp-data")
    return write_dataset(folder / "train.jsonl", 13), write_dataset(folder / "val.jsonl", 5, offset=100)


@pytest.fixture(scope="module")
def one_process(tiny_model_dir: Path, data, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    config = TrainConfig(model=str(tiny_model_dir), **SETTINGS)
    result = train(config, *data, tmp_path_factory.mktemp("one") / "run", progress=False)
    return read_rows(result.metrics_csv)


def assert_same_curve(rows: list[dict[str, str]], reference: list[dict[str, str]]) -> None:
    assert [r["step"] for r in rows] == [r["step"] for r in reference]
    for row, ref in zip(rows, reference, strict=True):
        for key in ("train_loss", "valid_loss", "train_mean_token_accuracy"):
            if ref[key] == "":
                assert row[key] == "", (row, ref)
            else:
                assert abs(float(row[key]) - float(ref[key])) < TOLERANCE, (key, row, ref)


def test_a_process_without_an_example_gets_one_with_nothing_trained() -> None:
    items = [Tokenized([1, 2, 3], [-100, 2, 3]), Tokenized([4, 5], [-100, 5]), Tokenized([6, 7], [-100, 7])]
    assert [local_share(items, [0, 1, 2], rank, 2) for rank in (0, 1)] == [[items[0], items[2]], [items[1]]]
    assert local_share(items, [2], 0, 2) == [items[2]]
    (filler,) = local_share(items, [2], 1, 2)
    assert filler.input_ids == items[2].input_ids and filler.n_trained == 0


def test_two_processes_cancel_resume_and_draw_the_one_process_curve(
    tiny_model_dir: Path, data, one_process: list[dict[str, str]], tmp_path: Path
) -> None:
    config = TrainConfig(model=str(tiny_model_dir), **SETTINGS)
    run = tmp_path / "run"
    # 1. Through the worker's launcher, cancelled after step 5 (epoch 2): the stop question is answered per step.
    events, asked = [], []

    def stop_after_5() -> bool:
        asked.append(1)
        return len(asked) > 5

    cut = train_in_processes(2, config, *data, run, on_event=events.append, should_stop=stop_after_5)
    assert cut.status == "cancelled" and [c.epoch for c in cut.checkpoints] == [1]
    assert [e.data["step"] for e in events if e.type == "metrics"] == [1, 2, 3, 4, 5]
    assert [e.message for e in events].count("Checkpoint saved at step 4 (epoch 1)") == 1

    # 2. Resumed by `ftlab train --resume` under `accelerate launch` with the shipped 2-process config.
    flags = ["--model", str(tiny_model_dir), "--epochs", "2", "--batch-size", "4", "--learning-rate-multiplier", "20",
             "--seed", "7", "--precision", "fp32", "--lora-dropout", "0"]  # fmt: skip
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "examples" / "accelerate" / "ddp_cpu.yaml"), "--main_process_port", str(free_port()),
               "-m", "ftlab.cli.main", "train", str(data[0]), "--validation", str(data[1]), "--output", str(run),
               "--resume", *flags]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=600)  # a hang guard only  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.count("Resumed from checkpoint-epoch-1 at step 4/8") == 1  # the first process speaks for both
    assert out.count("Recorded as run") == 1 and "MiB resident (2 processes)" in out

    # The curve of one process at the same batch size, the cut steps trained again.
    assert_same_curve(read_rows(run / "metrics.csv"), one_process)

    # Checkpoints written once, the newest with both processes' RNG states to resume from; nothing half-written.
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["checkpoint-epoch-1", "checkpoint-epoch-2", "final"]
    assert [p.parent.parent.name for p in run.glob("*/resume/random_states_*.pkl")] == ["checkpoint-epoch-2"] * 2
    record = json.loads((run / "config.json").read_text())
    machine = record["machine"]
    assert machine["num_processes"] == 2 and machine["backend"] == "gloo"
    assert [p["rank"] for p in machine["processes"]] == [0, 1] and len({p["pid"] for p in machine["processes"]}) == 2
    assert len(record["peak_memory_mib"]["rss"]) == 2 and record["status"] == "succeeded"
    with session_scope() as db:  # recorded once, by the first process, naming both
        (recorded,) = db.scalars(select(Run).where(Run.output_dir == str(run.resolve())))
        assert recorded.status == "succeeded" and recorded.machine["num_processes"] == 2


def test_the_worker_trains_a_job_in_two_processes(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = Server(tmp_path / "home", "--worker-processes", "2").start()
    try:
        client = server.client()
        upload = client.files.create(file=write_jsonl(tmp_path / "train.jsonl", chat_rows(EMOJI[:10])),
                                     purpose="fine-tune")  # fmt: skip
        job = client.fine_tuning.jobs.create(training_file=upload.id, model=str(tiny_model_dir),
                                             hyperparameters={"n_epochs": 2, "batch_size": 4})  # fmt: skip
        job = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j)
        assert job.status == "succeeded", job.error
        events = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=100).data
        assert events[0].message == "The job has successfully completed"
        assert [e.data["step"] for e in events if e.type == "metrics"] == [6, 5, 4, 3, 2, 1]
        assert "batch size 4 over 2 processes" in " ".join(e.message for e in events)
        assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data] == [6, 3]
        (run,) = (tmp_path / "home" / "runs").iterdir()
        assert json.loads((run / "config.json").read_text())["machine"]["num_processes"] == 2
        reply = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=4,
                                               messages=[{"role": "user", "content": "I love it"}])  # fmt: skip
        assert reply.choices[0].message.role == "assistant"
    finally:
        server.stop()
