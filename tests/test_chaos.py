"""A bounded run of benchmarks/chaos.py: three tiny jobs on `ftlab serve` with three workers on PostgreSQL while a
worker, the server alone and then everything are killed with SIGKILL. Every job still ends succeeded (or failed
after its attempts), none is trained to its end twice, each step is listed once, and no file or checkpoint is
lost."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from chaos import run  # noqa: E402


def test_jobs_survive_random_kills_of_workers_and_server(postgres, tiny_model_dir: Path, tmp_path: Path) -> None:
    report = run(tmp_path / "home", postgres.new_database(), tiny_model_dir, jobs=3, workers=3, kills=3, epochs=3,
                 seed=4, pause=(3.0, 6.0), timeout=900)  # fmt: skip
    assert report.ok, report.to_dict()
    assert report.succeeded + report.failed_after_attempts == 3 and report.succeeded >= 1, report.to_dict()
    assert report.files_lost == report.checkpoints_lost == report.trained_to_the_end_twice == 0
    assert sum(report.kills.values()) >= 1, "the jobs ended before anything was killed: nothing was tested"
