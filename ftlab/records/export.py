"""Exporting a recorded run to MLflow, when the user asks (`ftlab train --mlflow URI`, `ftlab runs export`, or a
service job's `integrations: [{"type": "mlflow", ...}]`). Never required: ftlab's own records are complete.

A run becomes one MLflow run, named by its ftlab id and tagged with it (`ftlab.run_id`), so exporting again
finds it instead of duplicating it. It carries:

- params: the resolved training config (`lora_r`, `learning_rate`, …) and each dataset's sha256;
- tags: status, source, base model, code version, machine, run folder;
- metrics: `train_loss`, `train_mean_token_accuracy`, `valid_loss`, `valid_mean_token_accuracy` per step;
- artefacts: `config.json`, `metrics.csv`, `loss.png` and the final adapter (`adapter/`).

The MLflow client comes from the optional extra: `pip install 'ftlab[mlflow]'` (the `mlflow-skinny` client
writes to a tracking server, `sqlite:///mlflow.db` or a `./mlruns` folder alike).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ftlab.records.db import database_url, session_scope
from ftlab.records.query import find_run
from ftlab.records.store import METRIC_FIELDS, _ready
from ftlab.records.tables import Run, RunMetric

DEFAULT_EXPERIMENT = "ftlab"
STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED", "running": "RUNNING"}
BATCH = 1000  # MLflow's log_batch accepts at most 1,000 metrics per call
MAX_PARAM_CHARS = 6000  # and params of at most 6,000 characters


class ExportError(Exception):
    """The export could not be done: MLflow missing, the run unknown, the tracking server refusing."""


@dataclass
class Exported:
    tracking_uri: str
    experiment: str
    mlflow_run_id: str
    created: bool  # False: the run was exported before, and that MLflow run was completed, not duplicated


def mlflow_client(tracking_uri: str):
    """An `MlflowClient` for the URI, or an ExportError that says how to install it."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ExportError("MLflow export needs the MLflow client: pip install 'ftlab[mlflow]'") from None
    return MlflowClient(tracking_uri=tracking_uri)


def _flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(_flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return out
    text = value if isinstance(value, str) else json.dumps(value)
    return {prefix: text[:MAX_PARAM_CHARS]}


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artefacts of a new experiment in a `sqlite:///PATH` store go next to the database (`mlartifacts/`), not
    into `./mlruns` under whatever folder the exporting process happens to run in; elsewhere MLflow decides."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///")).expanduser().resolve()
    return (database.parent / "mlartifacts").as_uri()


def run_params(run: Run) -> dict[str, str]:
    """The run's resolved config and dataset hashes as MLflow params (nested keys joined with dots)."""
    return {**_flatten("", run.config or {}), **_flatten("dataset_sha256", run.dataset_sha256 or {})}


def run_tags(run: Run) -> dict[str, str]:
    machine = run.machine or {}
    tags = {
        "ftlab.run_id": run.id,
        "ftlab.status": run.status,
        "ftlab.source": run.source,
        "ftlab.base_model": run.base_model,
        "ftlab.code_version": run.code_version or "",
        "ftlab.output_dir": run.output_dir or "",
        "ftlab.machine": ", ".join(f"{k}={v}" for k, v in machine.items() if isinstance(v, str | int | float)),
        "mlflow.runName": run.id,
    }
    return {k: v[:MAX_PARAM_CHARS] for k, v in tags.items() if v}


def export_run(
    ref: str, tracking_uri: str, experiment: str | None = None, *, url: str | None = None
) -> Exported:
    """Export the recorded run `ref` (id, job id or run folder) to MLflow and return where it went."""
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow_client(tracking_uri)
    experiment = experiment or DEFAULT_EXPERIMENT
    url = _ready(url or database_url())
    with session_scope(url) as db:
        try:
            run = find_run(db, ref)
        except LookupError as exc:
            raise ExportError(exc.args[0]) from None
        params, tags = run_params(run), run_tags(run)
        rows = db.scalars(select(RunMetric).where(RunMetric.run_pk == run.pk).order_by(RunMetric.step, RunMetric.pk))
        metrics = [(r.step, name, getattr(r, name), r.created_at) for r in rows for name in METRIC_FIELDS
                   if getattr(r, name) is not None]  # fmt: skip
        times = (run.started_at or run.created_at, run.finished_at)
        artifacts = dict(run.artifacts or {})
        status = STATUS.get(run.status, "FINISHED")
        run_id = run.id

    try:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(
            experiment, artifact_location=default_artifact_location(tracking_uri)
        )
        previous = client.search_runs([experiment_id], filter_string=f"tags.`ftlab.run_id` = '{run_id}'",
                                      max_results=1)  # fmt: skip
        if previous:
            mlflow_run_id, created = previous[0].info.run_id, False
            known = set(previous[0].data.params)
            params = {k: v for k, v in params.items() if k not in known}  # params are write-once in MLflow
            logged = {(m.key, m.step) for name in METRIC_FIELDS for m in client.get_metric_history(mlflow_run_id, name)}
            metrics = [m for m in metrics if (m[1], m[0]) not in logged]
        else:
            mlflow_run_id = client.create_run(experiment_id, start_time=times[0] * 1000, tags=tags).info.run_id
            created = True
        client.log_batch(mlflow_run_id, params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])  # fmt: skip
        entries = [Metric(name, value, timestamp * 1000, step) for step, name, value, timestamp in metrics]
        for start in range(0, len(entries), BATCH):
            client.log_batch(mlflow_run_id, metrics=entries[start : start + BATCH])
        for key in ("config_json", "metrics_csv", "loss_png"):
            if artifacts.get(key) and Path(artifacts[key]).is_file():
                client.log_artifact(mlflow_run_id, artifacts[key])
        if artifacts.get("final_dir") and Path(artifacts["final_dir"]).is_dir():
            client.log_artifacts(mlflow_run_id, artifacts["final_dir"], artifact_path="adapter")
        if status != "RUNNING":
            client.set_terminated(mlflow_run_id, status=status, end_time=(times[1] or times[0]) * 1000)
    except Exception as exc:  # the tracking server's own errors (MlflowException, connection errors) end here
        raise ExportError(f"MLflow at {tracking_uri} refused the export: {type(exc).__name__}: {exc}") from exc

    with session_scope(url) as db:  # remember where the run went, for `ftlab runs show`
        run = find_run(db, run_id)
        exports = [e for e in (run.artifacts or {}).get("mlflow", []) if e.get("run_id") != mlflow_run_id]
        exports.append({"tracking_uri": tracking_uri, "experiment": experiment, "run_id": mlflow_run_id})
        run.artifacts = {**(run.artifacts or {}), "mlflow": exports}
    return Exported(tracking_uri, experiment, mlflow_run_id, created)

