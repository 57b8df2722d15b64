"""The dashboard in a real browser: headless Chromium watches the loss curve of a job that is training on a real
`ftlab serve` (tiny random model) grow without reloading the page, and saves screenshots under test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from serve_helpers import CHROMIUM, CHROMIUM_ARGS, EMOJI, Server, chat_rows, wait_for, write_jsonl

from ftlab.data.schema import file_sha256

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
HANG_GUARD_MS = 300_000  # bounds a hang on a loaded machine; nothing here is a timing assertion

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)"),
]


def test_the_loss_chart_updates_while_a_job_trains(tmp_path: Path, tiny_model_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    server = Server(tmp_path / "home").start()
    try:
        client = server.client()
        train = write_jsonl(tmp_path / "train.jsonl", chat_rows(EMOJI * 4))
        valid = write_jsonl(tmp_path / "valid.jsonl", chat_rows(EMOJI[:4]))
        with open(train, "rb") as t, open(valid, "rb") as v:
            train_id = client.files.create(file=t, purpose="fine-tune").id
            valid_id = client.files.create(file=v, purpose="fine-tune").id
        base = f"http://127.0.0.1:{server.port}"
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(HANG_GUARD_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            # Long (50 epochs, OpenAI's most, of 48 examples: 2,400 steps) so it is still training while the page
            # watches; cancelled at the end. The page opens while the job is queued, so every point on the chart
            # arrives by polling, without a reload.
            job = client.fine_tuning.jobs.create(training_file=train_id, validation_file=valid_id,
                                                 model=str(tiny_model_dir),
                                                 hyperparameters={"n_epochs": 50, "batch_size": 1})  # fmt: skip
            page.goto(f"{base}/runs/{job.id}")  # a job id names its run
            drawn = "n => +document.querySelector('#loss-chart').dataset.points > n"
            page.wait_for_function(drawn, arg=0)
            first = int(page.get_attribute("#loss-chart", "data-points"))
            page.wait_for_function(drawn, arg=first)  # and more steps arrive while it trains
            assert page.locator("[data-live=status]").inner_text() == "running"
            train_line = page.locator("#loss-chart polyline[data-series='train loss']")
            assert len(train_line.get_attribute("points").split()) > first
            page.screenshot(path=str(ARTIFACTS / "dashboard-live-run.png"), full_page=True)

            page.goto(base + "/")
            assert page.locator(f"tr[data-run] td:has-text('{job.id}')").count() == 1
            assert page.locator("tr[data-run] .badge").first.inner_text() == "running"
            page.screenshot(path=str(ARTIFACTS / "dashboard-runs.png"), full_page=True)
            browser.close()
        assert errors == []
        client.fine_tuning.jobs.cancel(job.id)
        wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "cancelled")
        # The worker completes the run's record when the job ends: code version, data hashes, checkpoints.
        run_id = httpx.get(f"{base}/dashboard/api/runs/{job.id}/metrics").json()["id"]
        runs_api = f"{base}/dashboard/api/runs?ids={run_id}"
        recorded = wait_for(lambda: (run := httpx.get(runs_api).json()["runs"][0])["code_version"] and run)
        assert recorded["status"] == "cancelled" and recorded["train_sha256"] == file_sha256(train)
    finally:
        server.stop()
