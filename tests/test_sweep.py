"""`ftlab sweep` on the tiny model: a space is checked before any training, a 3-trial study with pruning lands in the
records and on the dashboard, and `ftlab sweep` processes and an `ftlab worker` share one study while one of them
is killed mid-trial."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import optuna
import pytest
from serve_helpers import REPO, Server, ftlab_env, wait_for
from test_train import write_dataset
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.config import TrainConfig
from ftlab.records import query
from ftlab.records.db import session_scope
from ftlab.train.sweep import (
    DEFAULT_SPACE,
    SpaceError,
    Sweep,
    check_space,
    create_sweep,
    optimize,
    read_space,
    study_storage,
)

runner = CliRunner()
SPACE = "learning_rate_multiplier: {low: 0.5, high: 50, log: true}\nn_epochs: {low: 1, high: 3}\n"


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FTLAB_DATABASE_URL", raising=False)
    return tmp_path / "home"


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return write_dataset(tmp_path / "train.jsonl", 24), write_dataset(tmp_path / "val.jsonl", 6, offset=100)


BAD_SPACES = [
    ("space.yaml", "lora_rank: [8, 16]\n", "space.yaml: lora_rank: unknown parameter (did you mean 'lora_r'?)"),
    ("space.yaml", "n_epochs: {low: 5, high: 2}\n", "space.yaml: n_epochs: empty range: low 5 is above high 2"),
    ("space.toml", "adapter = []\n", "space.toml: adapter: empty range (no choices)"),
    ("space.yaml", "lora_dropout: {low: 0, high: 1.5}\n", "space.yaml: lora_dropout: Input should be less than 1"),
    ("space.yaml", "adapter: [lora, qlora]\n", "space.yaml: adapter: Input should be 'lora', 'dora' or 'full'"),
    ("space.yaml", "model: [a, b]\n", "space.yaml: model: a setting a sweep holds fixed"),
    ("space.yaml", "lora_dropout: {low: 0, high: 0.1, log: true}\n", "lora_dropout: a log range needs low > 0"),
    ("space.yaml", "lora_r: 16\n", "space.yaml: lora_r: expected a list of choices or a range"),
    ("space.yaml", "", "space.yaml: no parameters to search"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "message"), BAD_SPACES, ids=[c[2].split(": ")[-1][:30] for c in BAD_SPACES])
def test_a_bad_space_file_names_the_file_and_the_parameter(tmp_path: Path, name: str, text: str, message: str):
    (tmp_path / name).write_text(text)
    with pytest.raises(SpaceError) as info:
        read_space(tmp_path / name)
    assert message in str(info.value).replace(str(tmp_path) + "/", "")


def test_the_default_space_and_a_space_file_in_one_form(tmp_path: Path) -> None:
    space = check_space(DEFAULT_SPACE)
    assert space["n_epochs"] == {"low": 2, "high": 10, "log": False, "integer": True}
    assert space["learning_rate_multiplier"]["log"] and not space["learning_rate_multiplier"]["integer"]
    assert space["adapter"] == {"choices": ["lora", "dora"]} and None in space["loraplus_lr_ratio"]["choices"]
    (tmp_path / "space.toml").write_text("lora_r = [8, 16]\n[learning_rate_multiplier]\nlow = 0.5\nhigh = 4\n")
    assert read_space(tmp_path / "space.toml") == {
        "lora_r": {"choices": [8, 16]},
        "learning_rate_multiplier": {"low": 0.5, "high": 4.0, "log": False, "integer": False},
    }


def test_bad_input_is_refused_before_any_trial_trains(home: Path, data, tmp_path: Path, tiny_model_dir: Path):
    (tmp_path / "bad.yaml").write_text("n_epochs: {low: 3, high: 1}\n")
    base = ["sweep", str(data[0]), "--validation", str(data[1]), "--model", str(tiny_model_dir)]
    cases = [
        (["--metric", "f1"], "--select-by: unknown metric"),
        (["--metric", "auto"], "a sweep optimises one metric: name it"),
        (["--metric", "valid_label_rate"], "select_by valid_label needs the label set"),
        (["--metric", "field_acc"], "val.jsonl, line 1: select_by field_acc needs validation replies that are a JSON"),
        (["--metric", "chrf", "--space", str(tmp_path / "bad.yaml")], "bad.yaml: n_epochs: empty range"),
        (["--metric", "chrf", "--space", str(tmp_path / "bad.yaml"), "--epochs", "2"], "empty range"),
        (["--metric", "chrf", "--timeout", "soon"], "--timeout: expected seconds"),
        (["--validation", str(data[1])], "a sweep needs --validation VAL and --metric"),
    ]  # fmt: skip
    for flags, message in cases:
        result = runner.invoke(app, [*base, *flags])
        assert result.exit_code == 2 and message in flat(result.output), (flags, result.output)
    joined = runner.invoke(app, ["sweep", "--study", "nothing-here"])
    assert joined.exit_code == 2 and "no study 'nothing-here'" in flat(joined.output)
    assert not (home / "runs").exists()


def test_a_three_trial_sweep_with_pruning_lands_in_the_records_and_on_the_dashboard(
    home: Path, data, tmp_path: Path, tiny_model_dir: Path
) -> None:
    (tmp_path / "space.yaml").write_text(SPACE)
    result = runner.invoke(app, ["sweep", str(data[0]), "--validation", str(data[1]), "--metric", "chrf",
                                 "--trials", "3", "--space", str(tmp_path / "space.yaml"), "--study", "three",
                                 "--model", str(tiny_model_dir), "--batch-size", "4", "--lora-r", "16",
                                 "--lora-dropout", "0", "--loraplus-lr-ratio", "1"])  # the adapter measured below
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="three", storage=study_storage())
    trials = study.get_trials()
    states = [t.state.name for t in trials]
    # Trial 0 completes; the median pruner (fed each epoch's chrF) stops both others behind it (measured).
    assert len(trials) == 3 and states[0] == "COMPLETE" and states.count("PRUNED") >= 1, states
    for trial in trials:
        assert trial.intermediate_values and all(step % 6 == 0 for step in trial.intermediate_values)
        assert Path(trial.user_attrs["run_dir"]).name == f"three-trial-{trial.number}"
    assert "Best: trial 0, chrf =" in flat(result.output)
    again = runner.invoke(app, ["sweep", "--study", "three", "--workers", "0"])  # joined by name: the report again
    assert again.exit_code == 0 and "Best: trial 0, chrf =" in flat(again.output) and len(study.get_trials()) == 3
    report = home / "studies" / "three"
    assert (report / "index.html").read_text().count("<tr") == 4 and (report / "history.png").exists()

    server = Server(home, "--workers", "0").start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        runs = {r["id"]: r for r in httpx.get(f"{base}/dashboard/api/runs").json()["runs"]}
        for trial in trials:
            run = runs[trial.user_attrs["run_id"]]
            assert run["source"] == "sweep" and run["status"] == {"COMPLETE": "succeeded", "PRUNED": "pruned"}[
                trial.state.name]
            metrics = httpx.get(f"{base}/dashboard/api/runs/{run['id']}/metrics").json()["metrics"]
            assert [m["step"] for m in metrics if m["chrf"] is not None] == sorted(trial.intermediate_values)
        listing = httpx.get(f"{base}/studies").text
        assert "/studies/three" in listing and "maximize chrf" in listing
        page = httpx.get(f"{base}/studies/three").text
        assert page.count("/runs/run-") >= 4 and "Best: trial 0" in page and 'data-trials="trials-data"' in page
        best_lr = trials[0].params["learning_rate_multiplier"]
        assert "settings: <span" in page and f"learning_rate_multiplier={best_lr:.4g}" in page
        assert httpx.get(f"{base}/studies/three/importance.png").headers["content-type"] == "image/png"
        assert httpx.get(f"{base}/studies/nope").status_code == 404
    finally:
        server.stop()


def test_a_trial_its_process_stops_is_queued_again_and_resumed_from_its_checkpoint(
    home: Path, data, tiny_model_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker shutting down stops its trial (`should_stop`): the trial fails, is queued again with its settings
    and run folder, and whichever process runs next resumes that folder from its epoch checkpoint. On SQLite and
    on PostgreSQL: Optuna's tables beside ftlab's, read back as the dashboard reads them."""
    monkeypatch.setenv("FTLAB_DATABASE_URL", db_url)
    config = TrainConfig(model=str(tiny_model_dir), n_epochs=2, batch_size=4, select_by="chrf")
    sweep = Sweep("stopped", data[0], data[1], config, check_space({"learning_rate_multiplier": {"low": 1, "high": 4}}),
                  1, db_url)  # fmt: skip
    create_sweep(sweep)
    folder = home / "runs" / "stopped-trial-0"
    assert optimize(sweep, should_stop=lambda: (folder / "checkpoint-epoch-1").is_dir()) == 1
    checkpoint = folder / "checkpoint-epoch-1" / "adapter_model.safetensors"
    written = checkpoint.stat().st_mtime_ns
    study = sweep.study()
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "WAITING"]
    with session_scope(db_url) as db:
        assert query.find_study(db, "stopped").open  # what an idle worker looks for
    assert optimize(sweep) == 1 and optimize(sweep) == 0  # the queued trial, then nothing more: 1 trial was asked
    stopped, resumed = study.get_trials()
    assert resumed.state.name == "COMPLETE" and resumed.params == stopped.params
    assert resumed.user_attrs["run_dir"] == str(folder) and checkpoint.stat().st_mtime_ns == written
    rows = (folder / "metrics.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(1, 13))  # each step once, across both processes
    with session_scope(db_url) as db:
        found = query.find_study(db, "stopped")
        assert (found.states, found.best_trial, found.open) == ({"fail": 1, "complete": 1}, 1, False)
        listed = query.study_trials(db, "stopped")
        assert [t["state"] for t in listed] == ["fail", "complete"] and listed[1]["params"] == stopped.params
        assert listed[0]["run"].id == listed[1]["run"].id and listed[1]["run"].status == "succeeded"  # one run, resumed


def test_a_sweep_and_an_ftlab_worker_share_a_study_and_one_killed_mid_trial_is_retried(
    data, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """An idle `ftlab worker` (the service's training worker) joins the study `ftlab sweep --workers 2` starts (two
    processes). Once one of the sweep's own trials has an epoch checkpoint, that process is killed (SIGKILL): its
    trial stops sending heartbeats, the next process to look fails it and queues it again, and the retry resumes the
    dead trial's run folder from its checkpoint. The study still ends with its 3 finished trials."""
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'ftlab.db'}"
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate_multiplier: {low: 1, high: 20, log: true}\n")
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("sweep", "worker")}  # noqa: SIM115

    def start(name: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "ftlab.cli.main", *args], cwd=REPO, env=ftlab_env(home),
                                stdout=logs[name], stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def trials() -> list[optuna.trial.FrozenTrial]:
        try:
            return optuna.load_study(study_name="shared", storage=study_storage(url)).get_trials()
        except KeyError:  # not created yet
            return []

    def killable() -> tuple[int] | None:
        """(the number of) a trial the sweep's first process runs whose folder has an epoch checkpoint."""
        return next(((t.number,) for t in trials() if t.state.name == "RUNNING"
                     and t.user_attrs.get("worker", "").endswith(f":{a.pid}")
                     and (Path(t.user_attrs["run_dir"]) / "checkpoint-epoch-1").is_dir()), None)  # fmt: skip

    def finished() -> bool:
        states = [t.state.name for t in trials()]
        return states.count("COMPLETE") + states.count("PRUNED") >= 3 and "RUNNING" not in states

    b = start("worker", "worker", "--poll-interval", "0.5")  # idle: no job is queued, and no study yet
    wait_for(lambda: (home / "ftlab.db").exists())  # the worker's migrations ran (before the test reads the study)
    a = start("sweep", "sweep", str(data[0]), "--validation", str(data[1]), "--metric", "chrf", "--trials", "3",
              "--space", str(space), "--epochs", "3", "--model", str(tiny_model_dir), "--batch-size", "4",
              "--study", "shared", "--heartbeat", "1", "--workers", "2")  # fmt: skip
    try:
        found = wait_for(lambda: killable() if a.poll() is None else ("sweep ended",))
        assert found != ("sweep ended",), (tmp_path / "sweep.log").read_text()
        (killed,) = found
        os.kill(a.pid, signal.SIGKILL)  # the first process only: the second (its child) and the worker go on
        a.wait()
        checkpoint = Path(trials()[killed].user_attrs["run_dir"]) / "checkpoint-epoch-1" / "adapter_model.safetensors"
        written = checkpoint.stat().st_mtime_ns
        wait_for(finished, timeout=1200)
        os.killpg(b.pid, signal.SIGTERM)  # a worker stops at SIGTERM, between trials or at the next step
        assert b.wait(timeout=120) == 0, (tmp_path / "worker.log").read_text()
    finally:
        for process in (a, b):
            with contextlib.suppress(ProcessLookupError):  # the sweep's second process, if still there
                os.killpg(process.pid, signal.SIGKILL)
        for log in logs.values():
            log.close()
    everything = trials()
    dead = everything[killed]
    assert dead.state.name == "FAIL"
    (retry,) = [t for t in everything if t.system_attrs.get("failed_trial") == killed]
    assert retry.state.name in ("COMPLETE", "PRUNED") and retry.params == dead.params
    assert retry.user_attrs["run_dir"] == dead.user_attrs["run_dir"] and not retry.user_attrs["worker"].endswith(
        f":{a.pid}")  # fmt: skip
    assert checkpoint.stat().st_mtime_ns == written  # resumed from the checkpoint, not trained again from step 1
    assert len([t for t in everything if t.state.name in ("COMPLETE", "PRUNED")]) >= 3
    workers = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in everything}
    assert str(b.pid) in workers and len(workers) >= 2, (workers, a.pid, b.pid)  # the worker's and the sweep's
