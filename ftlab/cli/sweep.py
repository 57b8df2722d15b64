"""`ftlab sweep`: search the training settings for the task's own metric with Optuna, each trial a recorded run."""

from __future__ import annotations

import functools
import multiprocessing
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ftlab.cli.output import fail, print_table
from ftlab.cli.settings import build_config, flag, takes_settings
from ftlab.config import ConfigFileError, read_settings
from ftlab.data.schema import DataError
from ftlab.models import ModelNotFound

console = Console()
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_duration(text: str | None) -> float | None:
    """`90`, `90s`, `30m` or `2h` as seconds."""
    if text is None:
        return None
    match = DURATION.match(text)
    if not match:
        raise ValueError(f"--timeout: expected seconds, or a number with s, m or h (30m), got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def fixed_space(space_file: Path | None, fixed: set[str]):
    """The space to search: the file's, or the default one, less the settings given as flags or in --config."""
    from ftlab.train.sweep import DEFAULT_SPACE, check_space, read_space

    if space_file is not None:
        space = read_space(space_file)
        both = sorted(fixed & set(space))
        if both:
            raise ValueError(f"{space_file}: {', '.join(both)} also given as a fixed setting (a flag or --config): "
                             "search it or fix it, not both")  # fmt: skip
        return space
    return check_space({k: v for k, v in DEFAULT_SPACE.items() if k not in fixed})


def join_study(name: str, url: str, worker: int, timeout: float | None) -> None:
    """One more process running trials of a study (what `--workers N` starts N-1 of)."""
    from ftlab.evaluate.judges import validation_judge
    from ftlab.train.sweep import load_sweep, optimize

    sweep = load_sweep(name, url)
    optimize(sweep, worker=worker, timeout=timeout, on_trial=show_trial,
             score_validation=validation_judge(sweep.config.select_by))  # fmt: skip


def show_trial(trial) -> None:
    value = "" if trial.value is None else f" {trial.value:.4f}"
    params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    console.print(f"trial {trial.number} {trial.state.name.lower()}{value} · {params}", highlight=False)


def trials_table(sweep, rows) -> Table:
    table = Table(title=f"study {sweep.name}: {sweep.direction} {sweep.config.select_by}")
    for title in ("trial", "state", sweep.config.select_by, *sweep.space, "run", "s"):
        table.add_column(title, justify="left" if title in ("state", "run") else "right", overflow="fold")
    for r in rows:
        cells = [r.value, *(r.params.get(name) for name in sweep.space), r.run_id, r.seconds]
        table.add_row(str(r.number), r.state, *("–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
                                                 for v in cells))  # fmt: skip
    return table


@functools.partial(takes_settings, exclude=("select_by",))
def sweep_command(
    train_file: Annotated[Path | None, typer.Argument(help="Chat JSONL training file (omit to join --study).")] = None,
    validation: Annotated[Path | None, typer.Option("--validation", help="Chat JSONL validation file: the "
                                                    "metric is scored on replies to it.")] = None,  # fmt: skip
    metric: Annotated[str | None, typer.Option(help="What the study optimises: set_f1, exact, json_valid, "
                                               "field_acc, chrf, valid_label_rate (with --labels), judge:MODEL "
                                               "or valid_loss.")] = None,  # fmt: skip
    trials: Annotated[int, typer.Option(min=1, help="Trials of the study, over all its processes.")] = 20,
    space: Annotated[Path | None, typer.Option(help="Search space file (YAML/TOML/JSON): `lora_r: [8, 16]`, "
                                               "`learning_rate_multiplier: {low: 0.5, high: 4, log: true}`; it "
                                               "replaces the default space.")] = None,  # fmt: skip
    timeout: Annotated[str | None, typer.Option(help="Start no trial after this long: seconds, or 30m, 2h.")] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: new); alone, joins that study, on any "
                                              "machine sharing the database.")] = None,  # fmt: skip
    workers: Annotated[int, typer.Option(min=0, help="Processes running trials on this machine; 0: none here, "
                                         "leave them to `ftlab worker`s (idle ones join open studies).")] = 1,
    heartbeat: Annotated[int, typer.Option(min=1, help="Seconds between a trial's heartbeats, in every process of a "
                                           "new study; a trial silent for three is retried by another.")] = 10,
    config_file: Annotated[Path | None, typer.Option("--config", help="Fixed settings from a YAML, TOML or JSON "
                                                     "file.")] = None,  # fmt: skip
    **settings: str | None,
) -> None:
    """Search the training settings with Optuna (TPE, median pruning) for the best validation metric. Each trial
    is an ordinary recorded run; the study lives in the records database, so several processes share it: more
    `ftlab sweep --study NAME`, and any idle `ftlab worker`. Settings given as flags are fixed and not searched."""
    from ftlab.evaluate.judges import validation_judge
    from ftlab.records.db import database_url
    from ftlab.train.sweep import Sweep, create_sweep, load_sweep, new_study_name, optimize

    url = database_url()
    try:
        timeout_s = parse_duration(timeout)
        if train_file is None:
            if study is None:
                raise ValueError("give TRAIN --validation VAL --metric M to start a study, or --study NAME to join one")
            given = [flag(name) for name, text in settings.items() if text is not None]
            if given or validation or metric or space or config_file:
                raise ValueError("joining a study takes its own settings: give --study NAME alone")
            sweep = load_sweep(study, url)
            score_validation = validation_judge(sweep.config.select_by)
        else:
            if validation is None or metric is None:
                raise ValueError("a sweep needs --validation VAL and --metric (the metric scored on its replies)")
            config = build_config({**settings, "select_by": metric}, config_file)
            fixed = {name for name, text in settings.items() if text is not None}
            fixed |= set(read_settings(config_file)) if config_file else set()
            sweep = Sweep(study or new_study_name(), train_file, validation, config, fixed_space(space, fixed),
                          trials, url, heartbeat)  # fmt: skip
            score_validation = validation_judge(config.select_by)
            create_sweep(sweep, score_validation)
    except (ValueError, LookupError, ModelNotFound, ConfigFileError) as exc:  # DataError, SpaceError too
        fail(str(exc))
    console.print(f"Study [bold]{escape(sweep.name)}[/]: {sweep.direction} {sweep.config.select_by} over "
                  f"{sweep.n_trials} trials, searching {', '.join(sweep.space)}"
                  + (f", {workers} processes" if workers > 1 else "")
                  + ("; no trial runs here: `ftlab worker`s run them" if workers == 0 else ""))  # fmt: skip
    context = multiprocessing.get_context("spawn")
    others = [context.Process(target=join_study, args=(sweep.name, url, n, timeout_s))
              for n in range(1, workers)]  # fmt: skip
    for process in others:
        process.start()
    try:
        if workers:
            optimize(sweep, timeout=timeout_s, on_trial=show_trial, score_validation=score_validation)
    except DataError as exc:
        fail(str(exc))
    finally:
        for process in others:
            process.join()
    report(sweep)


def report(sweep) -> None:
    """The table of trials, the best trial's settings and checkpoint, and the HTML report."""
    from ftlab.train.sweep import best_trial, trial_rows, write_report

    study = sweep.study()
    print_table(console, trials_table(sweep, trial_rows(study)))
    best = best_trial(study)
    if best is None:
        console.print("No trial completed.")
    else:
        run_dir = best.user_attrs.get("run_dir")
        console.print(f"[bold]Best:[/] trial {best.number}, {sweep.config.select_by} = {best.value:.4f}, "
                      f"settings {best.params}\n  checkpoint: {best.user_attrs.get('best_checkpoint')}\n"
                      f"  repeat it: ftlab train {sweep.train_file} --validation {sweep.validation_file} "
                      f"--config {run_dir}/config.json", highlight=False, soft_wrap=True)  # fmt: skip
    console.print(f"Report: {write_report(sweep)}")
