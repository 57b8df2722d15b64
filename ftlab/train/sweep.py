"""Hyperparameter sweeps of the recipe on Optuna: each trial an ordinary ftlab run, the study in the records database.

A study is created once (`create_sweep`) with everything it needs — the data files (and their sha256), the fixed
settings, the metric (`select_by`), the search space, the number of trials and the heartbeat — kept as the study's
attributes, so any process that reaches the database joins it by name (`load_sweep`) and runs trials (`optimize`)
while the study wants more: `ftlab sweep --workers N` on one machine, `ftlab sweep --study NAME` or any idle
`ftlab worker` (the service's training worker) on others. TPE proposes each trial's settings; the metric of each
evaluation goes to a median pruner, which stops a trial that falls behind the others at the same step (through the
recipe's `should_stop`). A trial's process sends heartbeats; when one dies mid-trial, the next process to look
marks it failed and queues it again, and the retry resumes the dead trial's run folder from its last epoch
checkpoint. A trial its process stops on purpose (a worker shutting down) is queued again the same way.

Optuna's tables live beside ftlab's in one database (`FTLAB_DATABASE_URL`). Both keep Alembic's `alembic_version`
table: ftlab's migrations own it (`init_db` runs first) and Optuna is told not to compare its own schema revision
with it (`skip_compatibility_check`); Optuna creates its tables as it does in any empty database.
"""

from __future__ import annotations

import difflib
import json
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from pydantic import ValidationError

from ftlab.config import SELECT_AUTO, ConfigFileError, TrainConfig, explain, home, read_settings, runs_dir
from ftlab.data.schema import DataError, file_sha256, read_examples
from ftlab.records.db import database_url, init_db
from ftlab.records.store import RunRecorder
from ftlab.train.recipe import ScoreReplies, last_checkpoint, reply_scorer, train

# The default search space, in a space file's form: a list is a set of choices, {low, high[, log]} a range.
DEFAULT_SPACE: dict[str, Any] = {
    "learning_rate_multiplier": {"low": 0.25, "high": 8.0, "log": True},
    "n_epochs": {"low": 2, "high": 10},
    "lora_r": [8, 16, 32, 64],
    "lora_alpha": [16, 32, 64, 128],
    "lora_dropout": {"low": 0.0, "high": 0.2},
    "adapter": ["lora", "dora"],
    "loraplus_lr_ratio": [None, 4.0, 16.0],
}
# Settings a sweep holds fixed: what is trained on and judged by, and lists Optuna cannot take as a choice.
FIXED = ("model", "method", "suffix", "select_by", "labels", "lora_target_modules")
HEARTBEAT_S = 10  # a trial silent for three heartbeats counts as dead
MAX_RETRIES = 2  # how often a dead trial is queued again
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


class TrialInterrupted(RuntimeError):
    """The trial's process stopped it (a worker shutting down); it is queued again to resume its run folder."""


class SpaceError(ValueError):
    """A search space that cannot be searched; the message names the file and the parameter."""


def studies_dir() -> Path:
    """Where each study's report is written: FTLAB_HOME/studies/NAME/."""
    return home() / "studies"


# ---------------------------------------------------------------------------------------------------------
# The search space
# ---------------------------------------------------------------------------------------------------------


def _integer(name: str) -> bool:
    schema = TrainConfig.model_json_schema()["properties"][name]
    return any(choice.get("type") == "integer" for choice in schema.get("oneOf") or schema.get("anyOf") or [schema])


def _check_value(name: str, value: Any, where: str) -> None:
    try:
        TrainConfig(**{name: value})
    except ValidationError as exc:
        raise SpaceError(f"{where}: {explain(exc.errors()[0])[1]}") from None


def check_space(space: dict[str, Any], source: str = "the default space") -> dict[str, dict[str, Any]]:
    """The space in one form — `{"choices": [...]}` or `{"low", "high", "log", "integer"}` per parameter — after
    checking every name and bound against `TrainConfig`. Raises SpaceError naming `source` and the parameter."""
    searchable = [name for name in TrainConfig.model_fields if name not in FIXED]
    checked: dict[str, dict[str, Any]] = {}
    if not space:
        raise SpaceError(f"{source}: no parameters to search")
    for name, spec in space.items():
        where = f"{source}: {name}"
        if name not in searchable:
            close = difflib.get_close_matches(name, searchable, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            kind = "a setting a sweep holds fixed" if name in FIXED else "unknown parameter"
            raise SpaceError(f"{where}: {kind}{hint}; a space searches {', '.join(searchable)}")
        if isinstance(spec, list):
            if not spec:
                raise SpaceError(f"{where}: empty range (no choices)")
            for choice in spec:
                _check_value(name, choice, where)
            checked[name] = {"choices": list(spec)}
            continue
        if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) or set(spec) - {"low", "high", "log"}:
            raise SpaceError(f"{where}: expected a list of choices or a range {{low: …, high: …[, log: true]}}, "
                             f"got {spec!r}")  # fmt: skip
        low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
        for value in (low, high):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise SpaceError(f"{where}: a range's low and high are numbers, got {value!r}")
            _check_value(name, value, where)
        if low > high:
            raise SpaceError(f"{where}: empty range: low {low} is above high {high}")
        if log and low <= 0:
            raise SpaceError(f"{where}: a log range needs low > 0, got {low}")
        integer = _integer(name)
        if integer and (low != int(low) or high != int(high)):
            raise SpaceError(f"{where}: {name} is a whole number; got the range {low}..{high}")
        checked[name] = {"low": int(low) if integer else float(low), "high": int(high) if integer else float(high),
                         "log": log, "integer": integer}  # fmt: skip
    return checked


def read_space(path: str | Path) -> dict[str, dict[str, Any]]:
    """A search space from a YAML, TOML or JSON file (`learning_rate_multiplier: {low: 0.5, high: 4, log: true}`,
    `lora_r: [8, 16, 32]`), checked; it replaces the default space."""
    try:
        return check_space(read_settings(Path(path)), str(path))
    except ConfigFileError as exc:
        raise SpaceError(str(exc)) from None


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One trial's settings, drawn from the space by the study's sampler."""
    params = {}
    for name, spec in space.items():
        if "choices" in spec:
            params[name] = trial.suggest_categorical(name, spec["choices"])
        elif spec["integer"]:
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], log=spec["log"])
        else:
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec["log"])
    return params


# ---------------------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Sweep:
    """A study as ftlab knows it: what every trial trains on, holds fixed, searches and is judged by."""

    name: str
    train_file: Path
    validation_file: Path
    config: TrainConfig  # the fixed settings; `select_by` is the metric the study optimises
    space: dict[str, dict[str, Any]]
    n_trials: int
    url: str
    heartbeat_s: int = HEARTBEAT_S  # every process of the study beats, and judges others dead, at this pace

    @property
    def direction(self) -> str:
        return "maximize" if self.config.selects_by_task_metric else "minimize"

    def study(self) -> optuna.Study:
        """The Optuna study, from the records database."""
        return optuna.load_study(study_name=self.name, storage=study_storage(self.url, self.heartbeat_s))

    def attributes(self) -> dict[str, Any]:
        """What the study keeps so that a joining process runs the same trials."""
        return {
            "train_file": str(self.train_file.resolve()), "validation_file": str(self.validation_file.resolve()),
            "train_sha256": file_sha256(self.train_file), "validation_sha256": file_sha256(self.validation_file),
            "config": self.config.model_dump(mode="json"), "space": self.space, "n_trials": self.n_trials,
            "heartbeat_s": self.heartbeat_s, "report_dir": str(studies_dir() / self.name),
        }  # fmt: skip


def study_storage(url: str | None = None, heartbeat_s: int = HEARTBEAT_S) -> RDBStorage:
    """Optuna's storage in the records database, with heartbeats: a trial whose process stops sending them for
    three intervals is failed by the next trial any process starts, and queued again (up to MAX_RETRIES times)."""
    url = url or database_url()
    init_db(url)  # ftlab's migrations first: they own alembic_version (see the module docstring)
    sqlite = url.startswith("sqlite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # Optuna marks heartbeats experimental
        return RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": 30}} if sqlite else {"pool_pre_ping": True},
            skip_compatibility_check=True, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
        )  # fmt: skip


def check_data(sweep: Sweep, score_validation: ScoreReplies | None) -> None:
    """Read both data files and check the metric can score the validation replies: bad input fails here, before
    any trial trains (DataError or ValueError)."""
    if sweep.config.select_by == SELECT_AUTO:
        raise ValueError("a sweep optimises one metric: name it (--metric set_f1, exact, json_valid, valid_loss, …) "
                         "rather than auto")
    read_examples(sweep.train_file)
    reply_scorer(sweep.config, read_examples(sweep.validation_file), sweep.validation_file, score_validation)


def create_sweep(sweep: Sweep, score_validation: ScoreReplies | None = None) -> optuna.Study:
    """Create the study (or join one of that name created with the same settings) after checking the data."""
    check_data(sweep, score_validation)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=sweep.name, storage=study_storage(sweep.url), direction=sweep.direction,
                                load_if_exists=True)  # fmt: skip
    wanted = sweep.attributes()
    if study.user_attrs:
        differ = [key for key in ("train_sha256", "validation_sha256", "config", "space", "n_trials")
                  if study.user_attrs.get(key) != json.loads(json.dumps(wanted[key]))]  # fmt: skip
        if differ:
            raise ValueError(f"study '{sweep.name}' exists with other {', '.join(differ)}: join it with "
                             f"`ftlab sweep --study {sweep.name}` alone, or name a new study")  # fmt: skip
        return study
    for key, value in wanted.items():
        study.set_user_attr(key, value)
    study.set_user_attr("created_at", datetime.now(UTC).isoformat())
    return study


def load_sweep(name: str, url: str | None = None) -> Sweep:
    """A study created by `create_sweep`, to join: its data files must still be there, unchanged."""
    url = url or database_url()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        attrs = optuna.load_study(study_name=name, storage=study_storage(url)).user_attrs
    except KeyError:
        raise LookupError(f"no study '{name}' in {url}") from None
    for role in ("train", "validation"):
        path = Path(attrs[f"{role}_file"])
        if not path.is_file() or file_sha256(path) != attrs[f"{role}_sha256"]:
            raise DataError(f"the study's {role} file is missing here or has changed since the study began", path=path)
    return Sweep(name, Path(attrs["train_file"]), Path(attrs["validation_file"]),
                 TrainConfig.model_validate(attrs["config"]), attrs["space"], attrs["n_trials"], url,
                 attrs.get("heartbeat_s", HEARTBEAT_S))  # fmt: skip


def done_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=DONE))


def wants_trial(study: optuna.Study, n_trials: int) -> bool:
    """Whether the study should start another trial now: one is queued (a retry), or its finished and running
    trials are fewer than `n_trials` — after failing (and queueing again) the trials whose process stopped beating.
    A study whose failures (those not queued again) reach `n_trials` wants no more: something is wrong."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    retried |= {t.user_attrs["resumes_trial"] for t in trials if "resumes_trial" in t.user_attrs}
    states = [t.state for t in trials]
    if TrialState.WAITING in states:
        return True
    failed = [t for t in trials if t.state == TrialState.FAIL and t.number not in retried]
    busy = sum(states.count(state) for state in (*DONE, TrialState.RUNNING))
    return len(failed) < n_trials and busy < n_trials


def optimize(
    sweep: Sweep,
    *,
    worker: int = 0,
    timeout: float | None = None,
    max_trials: int | None = None,
    score_validation: ScoreReplies | None = None,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Run trials of the study in this process, one at a time, while it wants more (`wants_trial`, counting every
    process's trials), for at most `max_trials` trials and starting none after `timeout` seconds; the report is
    redrawn after each. `worker` numbers the processes of one command (or is a pid), so their samplers draw
    differently; `should_stop` stops the running trial (queued again) and starts no other. Returns the number run.

    Several processes may each start a trial when one is left: a study can end with a trial or two more than asked
    (each a complete, recorded run), and fewer only when as many trials as asked have failed."""
    study = sweep.study()
    # The sampler's seed: the training seed, moved on by the trials already run and by the worker's number, so
    # two processes do not propose the same settings, yet a fresh single-process sweep is repeatable.
    seed = (sweep.config.seed + len(study.trials) + 7919 * worker) % 2**32
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, sweep.n_trials // 3)))
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=min(5, max(1, sweep.n_trials // 4)))
    started, finished = time.monotonic(), []
    stopped = should_stop or (lambda: False)
    while (wants_trial(study, sweep.n_trials) and (max_trials is None or len(finished) < max_trials)
           and not stopped() and (timeout is None or time.monotonic() - started < timeout)):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(lambda trial: run_trial(sweep, trial, score_validation, stopped), n_trials=1,
                           catch=(RuntimeError,), callbacks=[lambda study, trial: finished.append(trial)])  # fmt: skip
        write_report(sweep)
        if on_trial is not None:
            on_trial(finished[-1])
    return len(finished)


def _folder(sweep: Sweep, trial: optuna.Trial) -> Path:
    """The trial's run folder: a retried trial goes on in the folder of the trial that died, a trial queued again
    by the process that stopped it in its own (kept in its `run_dir` when it was queued)."""
    trials = trial.study.get_trials(deepcopy=False)
    frozen = next(t for t in trials if t.number == trial.number)
    first = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    earlier = next((t for t in trials if t.number == first), frozen)
    if earlier.user_attrs.get("run_dir") and Path(earlier.user_attrs["run_dir"]).is_dir():
        return Path(earlier.user_attrs["run_dir"])
    return runs_dir() / f"{sweep.name}-trial-{trial.number}"


def run_trial(sweep: Sweep, trial: optuna.Trial, score_validation: ScoreReplies | None = None,
              should_stop: Callable[[], bool] | None = None) -> float:
    """Train one trial as an ordinary recorded run; its value is the best checkpoint's metric. Each evaluation's
    metric goes to the pruner, whose verdict stops the run (recorded as `pruned`, its checkpoints kept).
    `should_stop` (a worker shutting down) stops it too: then the trial fails and is queued again, with its
    settings and run folder, for any process to resume."""
    params = suggest(trial, sweep.space)
    config = TrainConfig(**{**sweep.config.model_dump(), **params})
    folder = _folder(sweep, trial)
    trial.set_user_attr("run_dir", str(folder))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    recorder = RunRecorder(folder, source="sweep")
    pruned_at: list[int] = []
    interrupted = should_stop or (lambda: False)

    def on_event(event) -> None:
        recorder.on_event(event)
        value = event.data.get(config.selection_metric) if event.type == "metrics" else None
        if value is not None and not pruned_at:
            trial.report(value, event.data["step"])
            if trial.should_prune():
                pruned_at.append(event.data["step"])

    resume = last_checkpoint(folder) is not None
    try:
        result = train(config, sweep.train_file, sweep.validation_file, folder, on_event=on_event,
                       should_stop=lambda: bool(pruned_at) or interrupted(), resume=resume, progress=False,
                       score_validation=score_validation)  # fmt: skip
    except Exception as exc:
        recorder.fail("failed", f"{type(exc).__name__}: {exc}")
        raise
    trial.set_user_attr("run_id", recorder.finish(result))
    best = result.best_checkpoint
    if best is not None:
        trial.set_user_attr("best_checkpoint", str(best.path))
    if pruned_at and result.status == "cancelled":  # a verdict at the last evaluation stops nothing
        recorder.fail("pruned", f"stopped by the pruner of study {sweep.name} at step {pruned_at[0]}")
        raise optuna.TrialPruned(f"pruned at step {pruned_at[0]}")
    if result.status == "cancelled":
        trial.study.enqueue_trial(trial.params, user_attrs={"run_dir": str(folder), "resumes_trial": trial.number})
        raise TrialInterrupted(f"trial {trial.number} stopped by its process; queued again to resume {folder}")
    if best is None:
        raise RuntimeError(f"trial {trial.number} ended without an evaluated checkpoint")
    return float(best.metrics[config.selection_metric])


# ---------------------------------------------------------------------------------------------------------
# What a study found
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TrialRow:
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    run_id: str | None
    run_dir: str | None
    best_checkpoint: str | None
    seconds: float | None


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append(TrialRow(t.number, t.state.name.lower(), t.value, dict(t.params), t.user_attrs.get("run_id"),
                             t.user_attrs.get("run_dir"), t.user_attrs.get("best_checkpoint"), seconds))  # fmt: skip
    return rows


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    return study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None


def write_report(sweep: Sweep) -> Path:
    """The study's report, FTLAB_HOME/studies/NAME/index.html: the best trial, a table of trials and three
    pictures (the metric by trial, parameter importance, parallel coordinates), drawn by Optuna with matplotlib."""
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    study = sweep.study()
    folder = studies_dir() / sweep.name
    folder.mkdir(parents=True, exist_ok=True)
    pictures = {"history.png": ("the metric by trial", plots.plot_optimization_history),
                "importance.png": ("parameter importance (fANOVA)", plots.plot_param_importances),
                "parallel.png": ("parallel coordinates", plots.plot_parallel_coordinate)}  # fmt: skip
    drawn = []
    for name, (title, plot) in pictures.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                axes = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError):  # too few complete trials for this picture
                (folder / name).unlink(missing_ok=True)
                continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        figure.set_size_inches(8, 4.5)
        figure.tight_layout()
        figure.savefig(folder / f"{name}.partial", dpi=100, format="png")  # another process may read it meanwhile
        (folder / f"{name}.partial").replace(folder / name)
        plt.close(figure)
        drawn.append((name, title))
    rows = trial_rows(study)
    names = list(sweep.space)
    best = best_trial(study)
    cell = lambda v: "–" if v is None else f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    table = "".join(
        f"<tr{' class=best' if best and r.number == best.number else ''}><td>{r.number}</td><td>{r.state}</td>"
        f"<td>{cell(r.value)}</td>" + "".join(f"<td>{cell(r.params.get(n))}</td>" for n in names)
        + f"<td>{cell(r.run_id)}</td><td>{cell(r.seconds)}</td></tr>" for r in rows)  # fmt: skip
    summary = ("no trial has completed yet" if best is None else
               f"best: trial {best.number}, {sweep.config.select_by} = {best.value:.4g}, "
               f"checkpoint {html.escape(str(best.user_attrs.get('best_checkpoint')))}")  # fmt: skip
    page = (
        f"<!doctype html><meta charset=utf-8><title>study {html.escape(sweep.name)}</title>"
        "<style>body{font:14px system-ui;margin:2em}td,th{padding:2px 8px;text-align:right}"
        ".best{background:#e6ffec}img{max-width:100%}</style>"
        f"<h1>Study {html.escape(sweep.name)}</h1><p>{html.escape(sweep.direction)} {sweep.config.select_by} on "
        f"{html.escape(str(sweep.validation_file))} · {len(rows)} trials · {summary}</p>"
        f"<table><tr><th>trial</th><th>state</th><th>{sweep.config.select_by}</th>"
        + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "<th>run</th><th>seconds</th></tr>"
        + table + "</table>"
        + "".join(f"<h2>{title}</h2><img src='{name}' alt='{title}'>" for name, title in drawn)
    )  # fmt: skip
    (folder / "index.html.partial").write_text(page, encoding="utf-8")
    (folder / "index.html.partial").replace(folder / "index.html")
    return folder / "index.html"


def new_study_name() -> str:
    return f"sweep-{datetime.now(UTC):%Y%m%d-%H%M%S}-{os.getpid() % 10000:04d}"
