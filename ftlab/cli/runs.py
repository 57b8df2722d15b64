"""`ftlab runs list|show|compare|diff`: the recorded training runs, from the CLI, the service and Python alike."""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ftlab.cli.output import print_error, print_table
from ftlab.records import format as fmt

runs_app = typer.Typer(help="Recorded training runs: list, show, compare side by side, diff.", no_args_is_help=True)
console = Console(soft_wrap=True)  # ids and paths in text lines are never broken by rich; tables fit

JSON_OPTION = typer.Option("--json", help="Print JSON instead of a table.")
# The dashboard's formats, with an ASCII '-' for a missing value in a terminal.
_when = partial(fmt.when, missing="-")
_fmt = partial(fmt.value, missing="-")


def _open(refs: list[str]):
    from ftlab.records.db import init_db, new_session
    from ftlab.records.query import find_run

    init_db()
    db = new_session()
    try:
        return db, [find_run(db, ref) for ref in refs]
    except LookupError as exc:
        db.close()
        print_error(console, exc.args[0])
        raise typer.Exit(1) from None


@runs_app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(help="Show this many of the newest runs.")] = 20,
    status: Annotated[str | None, typer.Option(help="Only runs with this status (e.g. succeeded, running).")] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List the newest runs: status, model, adapter, training data, progress and losses."""
    from ftlab.records.query import list_runs

    db, _ = _open([])
    with db:
        rows = list_runs(db, limit=limit, status=status)
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
            return
        table = Table(title=f"{len(rows)} newest runs" if rows else "no runs recorded yet")
        for title in ("id", "status", "source", "model", "adapter", "train data", "steps", "train loss",
                      "best valid loss", "started"):  # fmt: skip
            table.add_column(title, overflow="fold")
        for row in rows:
            run = row.run
            table.add_row(run.id, run.status, run.source, run.base_model, run.adapter,
                          _fmt(run.dataset_sha256.get("train")), row.progress, _fmt(row.train_loss),
                          _fmt(row.best_valid_loss), _when(run.started_at or run.created_at))  # fmt: skip
        print_table(console, table)


@runs_app.command("show")
def show_command(
    run: Annotated[str, typer.Argument(help="Run id (or a unique prefix), job id, or run folder.")],
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Everything recorded about one run: config, data, code version, machine, metrics, checkpoints, artefacts."""
    from ftlab.records.query import run_datasets, run_metrics, run_row

    db, (found,) = _open([run])
    with db:
        row = run_row(db, found)
        datasets = run_datasets(db, found)
        metrics = run_metrics(db, found)
        checkpoints = [{"step": c.step, "epoch": c.epoch, "path": c.path, "metrics": c.metrics,
                        "model_name": c.model_name} for c in found.checkpoints]  # fmt: skip
        record = {
            **row.to_dict(), "config": found.config, "machine": found.machine, "artifacts": found.artifacts,
            "error": found.error, "trained_tokens": found.trained_tokens,
            "datasets": [{"role": role, "sha256": sha, "path": d.path if d else None,
                          "n_examples": d.n_examples if d else None} for role, sha, d in datasets],
            "checkpoints": checkpoints, "metrics": metrics,
        }  # fmt: skip
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    console.print(f"[bold]{found.id}[/]  {found.status}  ({found.source})")
    if row.job_id:
        console.print(f"job {row.job_id}" + (f" → {row.fine_tuned_model}" if row.fine_tuned_model else ""))
    console.print(f"started {_when(found.started_at)}  finished {_when(found.finished_at)}  "
                  f"code {found.code_version or '-'}  folder {found.output_dir or '-'}")  # fmt: skip
    if found.error:
        print_error(console, found.error)
    for item in record["datasets"]:
        console.print(f"data {item['role']}: {item['sha256']}  {item['path'] or '(file not recorded)'}  "
                      f"{item['n_examples'] or '?'} examples")  # fmt: skip
    console.print("config: " + ", ".join(f"{k}={_fmt(v)}" for k, v in found.config.items()))
    if found.machine:
        console.print("machine: " + ", ".join(f"{k}={v}" for k, v in found.machine.items()))
    console.print(f"steps {row.progress}  train loss {_fmt(row.train_loss)}  valid loss {_fmt(row.valid_loss)}  "
                  f"best valid loss {_fmt(row.best_valid_loss)}  "
                  f"trained tokens {_fmt(found.trained_tokens)}")  # fmt: skip
    if checkpoints:
        table = Table(title="checkpoints")
        for title in ("step", "epoch", "valid loss", "path"):
            table.add_column(title, overflow="fold")
        for c in checkpoints:
            table.add_row(str(c["step"]), _fmt(c["epoch"]), _fmt(c["metrics"].get("valid_loss")), c["path"])
        print_table(console, table)
    for name, path in (found.artifacts or {}).items():
        if isinstance(path, str) and path.startswith("/"):
            console.print(f"artefact {name}: {path}")


@runs_app.command("compare")
def compare_command(
    runs: Annotated[list[str], typer.Argument(help="Two or more runs (ids, prefixes, job ids or folders).")],
    only_differences: Annotated[bool, typer.Option("--only-differences", help="Hide rows that agree.")] = False,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Configs and metrics of several runs side by side; rows that differ are highlighted."""
    from ftlab.records.query import comparison, differs

    db, found = _open(runs)
    with db:
        table_rows = comparison(db, found)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "runs": [r.id for r in found],
                    "rows": [{"section": s, "field": f, "values": v, "differs": differs(v)} for s, f, v in table_rows],
                },
                indent=2,
            )
        )
        return
    table = Table(title="runs side by side (differences in yellow)")
    table.add_column("section")
    table.add_column("field")
    for run in found:
        table.add_column(run.id, overflow="fold")
    for section, name, values in table_rows:
        changed = differs(values)
        if only_differences and not changed:
            continue
        table.add_row(section, name, *[_fmt(v) for v in values], style="bold yellow" if changed else None)
    print_table(console, table)


@runs_app.command("diff")
def diff_command(
    run_a: Annotated[str, typer.Argument(help="The first run.")],
    run_b: Annotated[str, typer.Argument(help="The second run.")],
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Exactly what changed from RUN_A to RUN_B: data hashes, base model, hyperparameters, code version, machine,
    and the results that followed."""
    from ftlab.records.query import diff

    db, (a, b) = _open([run_a, run_b])
    with db:
        changes = diff(db, a, b)
    if as_json:
        typer.echo(json.dumps([{"section": s, "field": f, "a": x, "b": y} for s, f, x, y in changes], indent=2))
        return
    console.print(f"--- {a.id}\n+++ {b.id}")
    inputs = [c for c in changes if c[0] != "results"]
    if not inputs:
        console.print("same data, model, hyperparameters, code version and machine")
    for section, name, x, y in changes:
        # sha256s are shown in full here: a diff must show exactly what changed.
        before, after = "-" if x is None else x, "-" if y is None else y
        console.print(f"{section}.{name}: [red]{before}[/] → [green]{after}[/]", highlight=False)


@runs_app.command("export")
def export_command(
    runs: Annotated[list[str], typer.Argument(help="Runs to export (id or unique prefix, job id, run folder).")],
    mlflow: Annotated[str, typer.Option(help="MLflow tracking URI: a server URL, sqlite:///mlflow.db, a folder.")],
    experiment: Annotated[str, typer.Option(help="MLflow experiment (created if missing).")] = "ftlab",
) -> None:
    """Copy recorded runs to MLflow: params, per-step metrics, tags, config/metrics/plot and the final adapter.

    Exporting a run again completes its MLflow run instead of creating a second one."""
    from ftlab.records.export import ExportError, export_run

    db, found = _open(runs)  # every name is checked before anything is exported
    ids = [run.id for run in found]
    db.close()
    for run_id in ids:
        try:
            exported = export_run(run_id, mlflow, experiment)
        except ExportError as exc:
            print_error(console, f"{run_id}: {exc}")
            raise typer.Exit(1) from None
        verb = "exported as" if exported.created else "already in MLflow, completed:"
        console.print(f"{run_id}: {verb} run {exported.mlflow_run_id} in experiment '{exported.experiment}'")
