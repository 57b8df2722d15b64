"""How fast the dashboard's pages answer with 1,000 runs and 100,000 metric points, against a nearly empty database.

    python benchmarks/dashboard_pages.py [--runs 1000] [--points 100000] [--repeat 5]

Builds two SQLite databases in a temporary FTLAB_HOME — "empty" (one run, one evaluation, the datasets they use:
just what each page needs to exist) and "full" (the same plus --runs runs sharing --points metric rows,
3 checkpoints each, 40 datasets and 50 evaluations) — then requests every page in-process (FastAPI's
TestClient, so no network noise) and prints the best and median time per page and the full/empty ratio of the
best times. Not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path


def fill(url: str, n_runs: int, n_points: int, n_datasets: int, n_evals: int) -> dict[str, str]:
    """Insert synthetic records in bulk; return ids of one run, two more runs, a dataset and an evaluation."""
    from ftlab.records.db import init_db, session_scope
    from ftlab.records.tables import Checkpoint, Dataset, Evaluation, EvaluationModel, Run, RunMetric, new_id

    init_db(url)
    rng = random.Random(0)
    hashes = [f"{rng.getrandbits(256):064x}" for _ in range(n_datasets)]
    per_run = max(1, n_points // n_runs)
    with session_scope(url) as db:
        db.execute(Dataset.__table__.insert(), [
            {"sha256": h, "filename": f"data-{i}.jsonl", "path": f"/data/data-{i}.jsonl", "bytes": 10_000 + i,
             "n_examples": 100 + i, "summary": {"valid": True, "n_examples": 100 + i},
             "token_stats": {"smollm2": {"tokenizer": "smollm2", "tokens": 20_000, "trained_tokens": 5_000}}}
            for i, h in enumerate(hashes)
        ])  # fmt: skip
        run_ids = [new_id("run-") for _ in range(n_runs)]
        db.execute(Run.__table__.insert(), [
            {"id": run_id, "status": "succeeded" if i % 10 else "running", "source": "cli", "base_model": "smollm2",
             "config": {"model": "smollm2", "adapter": "lora", "n_epochs": 3, "batch_size": 8,
                        "learning_rate_multiplier": 1.0 + i % 4, "lora_r": 16, "seed": i},
             "dataset_sha256": {"train": hashes[i % len(hashes)], "validation": hashes[(i + 1) % len(hashes)]},
             "output_dir": f"/runs/{run_id}", "artifacts": {"total_steps": per_run}, "code_version": "0.1.0",
             "machine": {"hostname": "bench", "device": "cpu"}, "started_at": 1_700_000_000 + i,
             "finished_at": 1_700_000_600 + i, "created_at": 1_700_000_000 + i}
            for i, run_id in enumerate(run_ids)
        ])  # fmt: skip
        pks = dict(db.execute(Run.__table__.select().with_only_columns(Run.id, Run.pk)).all())
        rows = []
        for run_id in run_ids:
            for step in range(1, per_run + 1):
                rows.append({"run_pk": pks[run_id], "step": step, "total_steps": per_run, "data": {},
                             "train_loss": 3.0 / step ** 0.3 + rng.random() * 0.05,
                             "valid_loss": 3.2 / step ** 0.25 if step % 10 == 0 else None})  # fmt: skip
        db.execute(RunMetric.__table__.insert(), rows)
        db.execute(Checkpoint.__table__.insert(), [
            {"id": new_id("ftckpt-"), "run_pk": pks[run_id], "step": per_run * k // 3, "epoch": k,
             "path": f"/runs/{run_id}/checkpoint-epoch-{k}", "metrics": {"valid_loss": 1.0 / k}}
            for run_id in run_ids for k in (1, 2, 3)
        ])  # fmt: skip
        eval_ids = []
        for e in range(n_evals):
            examples = [{"index": i, "line": i + 1, "prompt": f"question {i}", "reference": "answer",
                         "output": "answer" if i % 3 else "other", "scores": {"exact": float(i % 3 > 0)}}
                        for i in range(30)]  # fmt: skip
            evaluation = Evaluation(
                id=new_id("eval-"), test_file="/data/test.jsonl", test_sha256=hashes[e % len(hashes)], n_examples=30,
                metrics=["exact"], headline="exact", options={}, judgements=[],
                comparisons=[{"a": "base", "b": "tuned", "metric": "exact", "difference": 0.3, "ci_low": 0.1,
                              "ci_high": 0.5, "disagreements": [1, 2]}],
                models=[EvaluationModel(position=p, name=name, spec={"name": name}, summary={"exact": 0.5 + 0.2 * p},
                                        seconds=3.0, examples=examples, run_pk=pks[run_ids[e % n_runs]] if p else None)
                        for p, name in enumerate(("base", "tuned"))],
            )  # fmt: skip
            db.add(evaluation)
            eval_ids.append(evaluation.id)
    return {"run": run_ids[-1], "runs": run_ids[-3:], "dataset": hashes[0], "eval": eval_ids[-1]}


def pages(ids: dict) -> dict[str, str]:
    run = ids["run"]
    return {
        "runs (/)": "/",
        "runs, last page": "/?page=20",
        "run": f"/runs/{run}",
        "run metrics JSON (live poll)": f"/dashboard/api/runs/{run}/metrics",
        "runs JSON (live table)": "/dashboard/api/runs",
        "compare 3 runs": "/compare?" + "&".join(f"run={r}" for r in ids["runs"]),
        "datasets": "/datasets",
        "dataset": f"/datasets/{ids['dataset']}",
        "evaluations": "/evals",
        "evaluation": f"/evals/{ids['eval']}",
    }


def time_pages(url: str, ids: dict, repeat: int) -> dict[str, tuple[float, float]]:
    from fastapi.testclient import TestClient

    from ftlab.serve.app import Settings, create_app

    os.environ["FTLAB_DATABASE_URL"] = url
    timings = {}
    with TestClient(create_app(Settings())) as client:
        for name, path in pages(ids).items():
            assert client.get(path).status_code == 200, path  # warm-up, and the page must exist
            samples = []
            for _ in range(repeat):
                start = time.perf_counter()
                client.get(path)
                samples.append(time.perf_counter() - start)
            timings[name] = min(samples), statistics.median(samples)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["FTLAB_HOME"] = home
        empty_url, full_url = f"sqlite:///{Path(home) / 'empty.db'}", f"sqlite:///{Path(home) / 'full.db'}"
        empty_ids = fill(empty_url, n_runs=3, n_points=300, n_datasets=2, n_evals=1)
        start = time.perf_counter()
        full_ids = fill(full_url, n_runs=args.runs, n_points=args.points, n_datasets=40, n_evals=50)
        print(f"filled {args.runs} runs, {args.points} metric points in {time.perf_counter() - start:.1f} s "
              f"({(Path(home) / 'full.db').stat().st_size / 1e6:.1f} MB)")  # fmt: skip
        empty = time_pages(empty_url, empty_ids, args.repeat)
        full = time_pages(full_url, full_ids, args.repeat)
    # Best of N is what the code costs; the median adds whatever else the machine was doing.
    print(f"{'page':32} {'empty ms':>9} {'full ms':>9} {'ratio':>6}   (best of {args.repeat}; medians in brackets)")
    for name in empty:
        (e_best, e_median), (f_best, f_median) = empty[name], full[name]
        print(f"{name:32} {e_best * 1e3:9.1f} {f_best * 1e3:9.1f} {f_best / e_best:6.1f}   "
              f"[{e_median * 1e3:.1f} / {f_median * 1e3:.1f}]")  # fmt: skip


if __name__ == "__main__":
    main()
