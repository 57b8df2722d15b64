"""A CLI training run is in the records while it trains (what the dashboard's live curve reads), and a recorded
run goes to MLflow on request: params, per-step metrics, tags, artefacts and the adapter, read back with MLflow's
own client from a real local tracking store; a second export completes the same MLflow run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.config import TrainConfig
from ftlab.records.db import session_scope
from ftlab.records.export import export_run
from ftlab.records.query import find_run
from ftlab.records.store import RunRecorder, record_run
from ftlab.records.tables import Run, RunMetric
from ftlab.train.recipe import train

mlflow = pytest.importorskip("mlflow", reason="the optional MLflow client (pip install 'ftlab[mlflow]')")

runner = CliRunner()


def write_chats(path: Path, n: int, offset: int = 0) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"colour of item {i}?"},
                          {"role": "assistant", "content": ["red", "green", "blue"][i % 3]}]}
            for i in range(offset, offset + n)]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_cli_run_is_recorded_while_it_trains_then_exported_to_mlflow(tiny_model_dir: Path, tmp_path: Path) -> None:
    train_file, val_file = write_chats(tmp_path / "train.jsonl", 8), write_chats(tmp_path / "val.jsonl", 4, 50)
    folder = tmp_path / "run"
    recorder = RunRecorder(folder)
    seen_while_training: list[tuple[str, int]] = []

    def on_event(event) -> None:
        recorder.on_event(event)
        if event.type == "metrics":  # what a dashboard polling the database sees at this moment
            with session_scope() as db:
                run = find_run(db, str(folder))
                count = db.scalar(select(func.count()).select_from(RunMetric).where(RunMetric.run_pk == run.pk))
                seen_while_training.append((run.status, count))

    config = TrainConfig(model=str(tiny_model_dir), n_epochs=2, batch_size=4, learning_rate_multiplier=10.0)
    result = train(config, train_file, val_file, folder, on_event=on_event, progress=False)
    assert seen_while_training == [("running", 1), ("running", 2), ("running", 3), ("running", 4)]
    run_id = record_run(result)
    with session_scope() as db:
        run = db.scalar(select(Run).where(Run.id == run_id))
        assert run.status == "succeeded" and run.pk == recorder.run_pk  # completed, not recorded twice
        assert len(run.metrics) == 4 and [c.step for c in run.checkpoints] == [2, 4]

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exported = export_run(run_id, uri, "colours")
    assert exported.created
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    mlrun = client.get_run(exported.mlflow_run_id)
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == run_id
    assert mlrun.data.tags["ftlab.run_id"] == run_id and mlrun.data.tags["ftlab.code_version"]
    params = mlrun.data.params
    assert params["lora_r"] == "64" and params["n_epochs"] == "2" and params["model"] == str(tiny_model_dir)
    assert params["dataset_sha256.train"] == result.dataset_sha256["train"]
    history = client.get_metric_history(exported.mlflow_run_id, "train_loss")
    csv_rows = result.metrics_csv.read_text().splitlines()[1:]
    assert [(m.step, round(m.value, 4)) for m in history] == [
        (int(r.split(",")[0]), round(float(r.split(",")[1]), 4)) for r in csv_rows
    ]
    assert [m.step for m in client.get_metric_history(exported.mlflow_run_id, "valid_loss")] == [2, 4]  # per epoch
    files = {f.path for f in client.list_artifacts(exported.mlflow_run_id)}
    assert {"config.json", "metrics.csv", "loss.png", "adapter"} <= files
    assert (tmp_path / "mlartifacts").is_dir()  # next to the store, not in the working directory
    assert "adapter/adapter_model.safetensors" in {f.path for f in client.list_artifacts(mlrun.info.run_id, "adapter")}

    again = export_run(run_id, uri, "colours")
    assert not again.created and again.mlflow_run_id == exported.mlflow_run_id
    assert len(client.get_metric_history(exported.mlflow_run_id, "train_loss")) == 4  # nothing logged twice
    assert len(client.search_runs([mlrun.info.experiment_id])) == 1
    with session_scope() as db:
        assert find_run(db, run_id).artifacts["mlflow"] == [
            {"tracking_uri": uri, "experiment": "colours", "run_id": exported.mlflow_run_id}
        ]


def test_train_with_mlflow_flag_and_runs_export(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_chats(tmp_path / "train.jsonl", 6)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(app, ["train", str(data), "--model", str(tiny_model_dir), "--epochs", "1",
                                 "--batch-size", "3", "--output", str(tmp_path / "run"), "--mlflow", uri,
                                 "--mlflow-experiment", "cli"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Exported to MLflow: run" in result.output and "experiment 'cli'" in result.output
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "cli"]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert len(client.get_metric_history(mlrun.info.run_id, "train_loss")) == 2

    exported = runner.invoke(app, ["runs", "export", str(tmp_path / "run"), "--mlflow", uri, "--experiment", "cli"])
    assert exported.exit_code == 0, exported.output
    assert f"already in MLflow, completed: run {mlrun.info.run_id}" in exported.output
    unknown = runner.invoke(app, ["runs", "export", "run-does-not-exist", "--mlflow", uri])
    assert unknown.exit_code == 1 and "no recorded run 'run-does-not-exist'" in unknown.output
