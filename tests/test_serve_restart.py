"""Nothing lost: kill -9 of the server and its worker in the middle of training, then a restart. Every file and
job is still there, and the running job resumes from its last checkpoint instead of staying "running"."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import EMOJI, Server, chat_rows, wait_for, write_jsonl


def test_kill_9_mid_training_then_restart_resumes_the_job(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> None:
    home = tmp_path_factory.mktemp("restart-home")
    train = write_jsonl(home.parent / "restart-train.jsonl", chat_rows(EMOJI[:10]))
    server = Server(home).start()
    try:
        client = server.client()
        upload = client.files.create(file=open(train, "rb"), purpose="fine-tune")  # noqa: SIM115
        job = client.fine_tuning.jobs.create(
            training_file=upload.id, model=str(tiny_model_dir), hyperparameters={"n_epochs": 50, "batch_size": 1}
        )
        before = wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, interval=0.1)
        server.kill9()
    finally:
        server.stop()
    killed_after = max(c.step_number for c in before)

    server = Server(home).start()
    try:
        client = server.client()
        assert client.files.retrieve(upload.id).bytes == upload.bytes
        assert client.files.content(upload.id).content == train.read_bytes()
        assert [j.id for j in client.fine_tuning.jobs.list().data] == [job.id]

        def checkpoint_after_restart():
            steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id, limit=100).data]
            return max(steps) > killed_after and steps

        steps = wait_for(checkpoint_after_restart)
        assert len(steps) == len(set(steps))  # each checkpoint recorded once
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data]
        assert any("has exited; the job is queued again and will resume" in m for m in messages)
        assert any(m.startswith("Resumed from checkpoint-epoch-") for m in messages)
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"

        client.fine_tuning.jobs.cancel(job.id)
        final = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status != "running" and j)
        assert final.status == "cancelled"
    finally:
        server.stop()
