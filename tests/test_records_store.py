"""Records of datasets, runs and evaluations: what a real (tiny) training run and evaluation leave in the
database, idempotent re-recording, `ftlab runs` from a fresh process, and two processes writing one database
(SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from ftlab.config import TrainConfig
from ftlab.data.schema import file_sha256
from ftlab.records.db import database_url, session_scope
from ftlab.records.query import comparison, diff, find_run, list_runs
from ftlab.records.store import code_version, record_dataset, record_eval, record_run, summarize_dataset
from ftlab.records.tables import Dataset, Evaluation, Run, RunMetric

REPO = Path(__file__).resolve().parents[1]


def write_chats(path: Path, n: int, offset: int = 0) -> Path:
    with open(path, "w") as handle:
        for i in range(offset, offset + n):
            handle.write(json.dumps({"messages": [
                {"role": "system", "content": "Answer with a JSON list."},
                {"role": "user", "content": f"Ingredients of dish number {i}?"},
                {"role": "assistant", "content": json.dumps([f"item{i % 5}", "salt"])},
            ]}) + "\n")  # fmt: skip
    return path


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two real tiny training runs that differ in training data and learning rate, recorded (module-wide DB)."""
    from ftlab.train.recipe import train

    folder = tmp_path_factory.mktemp("records")
    url = database_url()  # the session's FTLAB_HOME/ftlab.db, which the dashboard tests below read too
    val = write_chats(folder / "val.jsonl", 4, offset=100)
    config = TrainConfig(model=str(tiny_model_dir), n_epochs=2, batch_size=4, learning_rate_multiplier=10.0, seed=3)
    first = train(config, write_chats(folder / "train_a.jsonl", 8), val, folder / "run-a", progress=False)
    second = train(
        config.model_copy(update={"learning_rate_multiplier": 30.0}),
        write_chats(folder / "train_b.jsonl", 8, offset=50),
        val,
        folder / "run-b",
        progress=False,
    )
    return url, first, second, record_run(first), record_run(second)


@pytest.fixture(scope="module")
def evaluation(two_runs):
    """A real evaluation of the base model and the first run's adapter on the validation file, recorded."""
    from ftlab.evaluate.run import EvalOptions, evaluate
    from ftlab.infer.refs import resolve_refs

    _, first, _, _, _ = two_runs
    base = first.config.model
    result = evaluate(first.output_dir.parent / "val.jsonl", resolve_refs([base, f"{base}+{first.final_dir}"]),
                      EvalOptions(max_new_tokens=4, n_resamples=200))  # fmt: skip
    return result, record_eval(result)


def test_a_run_is_recorded_with_everything_needed_to_reproduce_it(two_runs) -> None:
    url, first, _, run_id, _ = two_runs
    with session_scope(url) as db:
        run = find_run(db, run_id)
        assert run.status == "succeeded" and run.source == "cli"
        assert run.config["learning_rate_multiplier"] == 10.0 and run.config["n_epochs"] == 2
        assert run.dataset_sha256 == {
            "train": file_sha256(first.output_dir.parent / "train_a.jsonl"),
            "validation": file_sha256(first.output_dir.parent / "val.jsonl"),
        }
        assert run.code_version == code_version() and run.code_version.startswith("0.")
        assert run.machine["hostname"] and run.machine["torch"]
        assert run.started_at <= run.finished_at
        assert [c.step for c in run.checkpoints] == [c.step for c in first.checkpoints] == [2, 4]
        assert Path(run.artifacts["final_dir"]) == first.final_dir and Path(run.artifacts["loss_png"]).exists()
        metrics = db.scalars(select(RunMetric).where(RunMetric.run_pk == run.pk).order_by(RunMetric.step)).all()
        assert [m.step for m in metrics] == [1, 2, 3, 4]
        assert all(m.train_loss > 0 for m in metrics) and [m.valid_loss is not None for m in metrics] == [
            False, True, False, True]  # fmt: skip
        train_data = db.scalar(select(Dataset).where(Dataset.sha256 == run.dataset_sha256["train"]))
        assert train_data.n_examples == 8 and train_data.summary["valid"]
        stats = train_data.token_stats[str(first.config.model)]
        assert stats["n_examples"] == 8 and stats["tokens"] > stats["trained_tokens"] > 0
        # The same folder and other names for it find the same run.
        assert find_run(db, str(first.output_dir)).id == find_run(db, run_id[:10]).id == run_id


def test_recording_again_completes_instead_of_duplicating(two_runs) -> None:
    url, first, _, run_id, _ = two_runs
    assert record_run(first, url=url) == run_id
    resumed = replace(first, status="cancelled")
    assert record_run(resumed, url=url) == run_id
    with session_scope(url) as db:
        assert db.scalar(select(func.count()).select_from(Run).where(Run.output_dir == str(first.output_dir))) == 1
        assert (
            db.scalar(select(func.count()).select_from(RunMetric).where(RunMetric.run_pk == find_run(db, run_id).pk))
            == 4
        )
        assert find_run(db, run_id).status == "cancelled"
    assert record_run(first, url=url) == run_id


def test_metric_rows_are_known_by_step_not_by_count(two_runs, db_url: str) -> None:
    _, first, _, _, _ = two_runs
    url = db_url
    run_id = record_run(first, url=url)
    with session_scope(url) as db:  # a cut attempt's row at step 9 and a missing step 3: still four rows
        run = find_run(db, run_id)
        db.execute(delete(RunMetric).where(RunMetric.run_pk == run.pk, RunMetric.step == 3))
        db.add(RunMetric(run_pk=run.pk, step=9, train_loss=99.0, data={}))
    assert record_run(first, url=url) == run_id
    with session_scope(url) as db:
        rows = db.scalars(select(RunMetric).where(RunMetric.run_pk == find_run(db, run_id).pk).order_by(RunMetric.step))
        assert [(m.step, m.train_loss > 0) for m in rows] == [(1, True), (2, True), (3, True), (4, True)]


def test_diff_shows_exactly_what_changed(two_runs) -> None:
    url, first, second, a_id, b_id = two_runs
    with session_scope(url) as db:
        a, b = find_run(db, a_id), find_run(db, b_id)
        changes = {(section, name): (x, y) for section, name, x, y in diff(db, a, b)}
        assert changes[("data", "train sha256")] == (first.dataset_sha256["train"], second.dataset_sha256["train"])
        assert changes[("hyperparameters", "learning_rate_multiplier")] == (10.0, 30.0)
        assert ("data", "validation sha256") not in changes and ("hyperparameters", "seed") not in changes
        inputs = {key for key in changes if key[0] != "results"}
        assert inputs == {
            ("data", "train sha256"),
            ("hyperparameters", "learning_rate_multiplier"),
            ("hyperparameters", "learning_rate"),
        }
        table = {(s, n): v for s, n, v in comparison(db, [a, b, a])}
        assert table[("hyperparameters", "seed")] == [3, 3, 3]
        assert table[("results", "steps")] == [4, 4, 4]
        assert [row.run.id for row in list_runs(db, limit=2)] == [b_id, a_id]


def test_runs_cli_reads_the_records_from_a_fresh_process(two_runs) -> None:
    url, first, _, a_id, _ = two_runs
    env = {"FTLAB_DATABASE_URL": url, "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    shown = subprocess.run([sys.executable, "-m", "ftlab.cli.main", "runs", "show", a_id, "--json"], cwd=REPO, env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    record = json.loads(shown.stdout)
    assert record["config"]["learning_rate_multiplier"] == 10.0 and len(record["metrics"]) == 4
    assert {d["role"] for d in record["datasets"]} == {"train", "validation"} and record["code_version"]
    assert [c["step"] for c in record["checkpoints"]] == [2, 4]


def test_runs_list_compare_and_diff_commands(two_runs) -> None:
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    _, first, second, a_id, b_id = two_runs

    def runs(*args: str) -> str:
        result = CliRunner().invoke(app, ["runs", *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert [r["id"] for r in json.loads(runs("list", "--json"))][:2] == [b_id, a_id]
    listed = runs("list")  # CliRunner's output is not a terminal: ids come out whole, not folded at 80 columns
    assert "newest runs" in listed and a_id in listed and b_id in listed
    assert max(len(line) for line in listed.splitlines()) > 80
    text = runs("diff", a_id, b_id)
    assert f"data.train sha256: {first.dataset_sha256['train']} → {second.dataset_sha256['train']}" in text
    assert "hyperparameters.learning_rate_multiplier: 10.0 → 30.0" in text
    compared = json.loads(runs("compare", a_id, b_id, "--json"))
    assert {r["field"] for r in compared["rows"] if r["differs"] and r["section"] != "results"} == {
        "train sha256", "learning_rate_multiplier", "learning_rate"}  # fmt: skip
    side_by_side = runs("compare", a_id, str(second.output_dir))
    assert "runs side by side" in side_by_side and a_id in side_by_side and b_id in side_by_side
    assert first.dataset_sha256["train"][:12] in side_by_side and first.dataset_sha256["train"] not in side_by_side
    missing = CliRunner().invoke(app, ["runs", "show", "run-nope"])
    assert missing.exit_code == 1 and "no recorded run 'run-nope'" in missing.output


def test_an_evaluation_is_recorded_and_linked_to_its_run(two_runs, evaluation) -> None:
    url, first, _, run_id, _ = two_runs
    result, eval_id = evaluation
    with session_scope(url) as db:
        recorded = db.scalar(select(Evaluation).where(Evaluation.id == eval_id))
        assert recorded.test_sha256 == file_sha256(first.output_dir.parent / "val.jsonl")
        assert recorded.n_examples == 4 and recorded.headline == result.headline
        assert [m.name for m in recorded.models] == [m.spec.name for m in result.models]
        assert recorded.models[0].run_pk is None and recorded.models[1].run_pk == find_run(db, run_id).pk
        assert [e["output"] for e in recorded.models[1].examples] == [e["output"] for e in result.models[1].examples]
        assert recorded.comparisons == result.comparisons
        assert db.scalar(select(Dataset).where(Dataset.sha256 == recorded.test_sha256)).n_examples == 4


def test_a_broken_dataset_is_recorded_with_the_line_and_field(tmp_path: Path, db_url: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                   '{"messages": [{"role": "robot", "content": "x"}]}\n')  # fmt: skip
    summary = summarize_dataset(bad)
    assert summary["valid"] is False and summary["line"] == 2 and "role" in str(summary["field"])
    url = db_url
    sha = record_dataset(bad, url=url)
    assert record_dataset(bad, {"valid": True, "n_examples": 1, "note": "from the validator"}, url=url) == sha
    with session_scope(url) as db:
        (dataset,) = db.scalars(select(Dataset)).all()
        assert dataset.sha256 == sha and dataset.summary["note"] == "from the validator" and dataset.n_examples == 1


def test_a_validation_report_is_kept_as_the_dataset_summary(tmp_path: Path) -> None:
    from ftlab.data.validate import validate_file

    url = f"sqlite:///{tmp_path / 'ftlab.db'}"
    good = write_chats(tmp_path / "good.jsonl", 12)
    sha = record_dataset(good, validate_file(good, None).to_dict(), url=url)
    assert record_dataset(good, url=url) == sha  # the quick summary of a later run does not replace the report
    with session_scope(url) as db:
        dataset = db.scalar(select(Dataset).where(Dataset.sha256 == sha))
        assert dataset.n_examples == 12 and dataset.summary["ok"] is True and "findings" in dataset.summary


def _record_copies(url: str, source: Path, names: list[str], start, out) -> None:
    """In its own process: record a run for each copy of a run folder, with its data, as fast as it can."""
    from ftlab.records.store import record_run
    from ftlab.train.recipe import Checkpoint, TrainResult

    info = json.loads((source / "config.json").read_text())
    start.wait()
    ids = []
    for name in names:
        folder = source.parent / name
        result = TrainResult(
            output_dir=folder, config=TrainConfig(**info["config"]), dataset_sha256=info["dataset_sha256"],
            checkpoints=[Checkpoint(c["step"], c["epoch"], Path(c["path"]), c["metrics"]) for c in info["checkpoints"]],
            final_dir=folder / "final", metrics_csv=folder / "metrics.csv", trained_tokens=info["trained_tokens"],
            status="succeeded", best_checkpoint=None,
        )  # fmt: skip
        ids.append(record_run(result, source=f"writer-{names[0]}", url=url))
    out.put(ids)


def test_two_processes_record_into_one_database_at_once(two_runs, db_url: str) -> None:
    _, first, _, _, _ = two_runs
    url = db_url
    names = [[f"copy-{w}-{i}" for i in range(8)] for w in range(2)]
    for name in names[0] + names[1]:
        shutil.copytree(first.output_dir, first.output_dir.parent / name, dirs_exist_ok=True)
    # spawn, not fork: forking a parent whose torch/OpenMP threads are running can deadlock the child (seen
    # here). Each writer opens its own connection to the file, as two workers would; `start` lines them up.
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    writers = [context.Process(target=_record_copies, args=(url, first.output_dir, n, start, out)) for n in names]
    for writer in writers:
        writer.start()
    start.set()
    ids = [out.get(timeout=300) for _ in writers]
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    assert len(set(ids[0] + ids[1])) == 16
    with session_scope(url) as db:
        assert db.scalar(select(func.count()).select_from(Run)) == 16
        assert db.scalar(select(func.count()).select_from(RunMetric)) == 16 * 4
        assert db.scalar(select(func.count()).select_from(Dataset)) == 2  # the same two files, once each


def test_dashboard_pages_show_runs_datasets_evaluations_and_comparisons(two_runs, evaluation) -> None:
    from fastapi.testclient import TestClient

    from ftlab.serve.app import Settings, create_app

    _, first, second, a_id, b_id = two_runs
    _, eval_id = evaluation
    train_sha = first.dataset_sha256["train"]
    with TestClient(create_app(Settings())) as client:
        index = client.get("/").text
        assert a_id in index and b_id in index and "Compare selected runs" in index
        run_page = client.get(f"/runs/{a_id}").text
        assert (
            'id="loss-chart"' in run_page and str(first.checkpoints[0].path) in run_page and train_sha[:12] in run_page
        )
        assert f"/evals/{eval_id}" in run_page  # the evaluation of this run's adapter is linked from the run
        metrics = client.get(f"/dashboard/api/runs/{a_id}/metrics").json()
        assert metrics["status"] == "succeeded" and [m["step"] for m in metrics["metrics"]] == [1, 2, 3, 4]
        assert [m["step"] for m in client.get(f"/dashboard/api/runs/{a_id}/metrics?after=2").json()["metrics"]] == [
            3,
            4,
        ]
        compare = client.get(f"/compare?run={a_id}&run={b_id}").text
        assert '<tr class="differs"><td class="muted">hyperparameters</td><td>learning_rate_multiplier</td>' in compare
        assert '<tr class=""><td class="muted">hyperparameters</td><td>seed</td>' in compare
        datasets = client.get("/datasets").text
        assert train_sha[:12] in datasets and "train_a.jsonl" in datasets
        dataset = client.get(f"/datasets/{train_sha}").text
        assert a_id in dataset and b_id not in dataset
        assert eval_id in client.get("/evals").text
        eval_page = client.get(f"/evals/{eval_id}").text
        assert 'id="bars-data"' in eval_page and "Per-example outputs" in eval_page and f"/runs/{a_id}" in eval_page
        missing = client.get("/runs/run-does-not-exist")
        assert missing.status_code == 404 and "no recorded run" in missing.text
        assert client.get("/dashboard/static/dashboard.js").status_code == 200
        assert client.get("/dashboard/static/..%2Fapp.py").status_code == 404


def test_dashboard_asks_for_a_key_when_the_server_requires_one(two_runs) -> None:
    from fastapi.testclient import TestClient

    from ftlab.serve.app import Settings, create_app
    from ftlab.serve.auth import create_key

    with session_scope() as db:
        _, secret = create_key(db, "dashboard test", admin=True)
        _, project_key = create_key(db, "one project", project="alpha")
    with TestClient(create_app(Settings(require_key=True))) as client:
        page = client.get("/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert client.get("/dashboard/api/runs").status_code == 401
        wrong = client.post("/login", data={"key": "ftl-wrong", "next": "/"}, follow_redirects=False)
        assert "error" in wrong.headers["location"]
        # The dashboard shows every project's records: a key of one project is not enough.
        one_project = client.post("/login", data={"key": project_key, "next": "/"}, follow_redirects=False)
        assert "not+an+admin+key" in one_project.headers["location"]
        assert client.get("/dashboard/api/runs", headers={"Authorization": f"Bearer {project_key}"}).status_code == 401
        assert client.post("/login", data={"key": secret, "next": "/datasets"}).url.path == "/datasets"
        assert client.get("/").status_code == 200 and client.get("/dashboard/api/runs").status_code == 200
        assert client.get("/", headers={"Authorization": f"Bearer {secret}"}, cookies={}).status_code == 200
