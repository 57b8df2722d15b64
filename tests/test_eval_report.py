"""The HTML report: written with its plots, and rendered by headless Chromium with every plot visible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftlab.data.scoring import score_example
from ftlab.evaluate.metrics import aggregate
from ftlab.evaluate.run import EvalOptions, EvalResult, ModelResult, pairwise_comparisons
from ftlab.infer.refs import ModelRef

CHROMIUM = Path("/usr/bin/chromium")
HANG_GUARD_MS = 300_000  # bounds a hang on a loaded machine; nothing here is a timing assertion
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _model(spec: ModelRef, outputs: list[str], references: list[str], labels: list[str]) -> ModelResult:
    metrics = ["exact", "label", "length"]
    examples = [{"index": i, "line": i + 1, "prompt": f"question {i} <b>not bold</b>", "reference": ref,
                 "output": out, "completion_tokens": 2, "finish_reason": "stop",
                 "scores": score_example(out, ref, metrics, set(labels))}
                for i, (out, ref) in enumerate(zip(outputs, references, strict=True))]
    summary = aggregate(outputs, references, [e["scores"] for e in examples], metrics, labels, [2] * len(outputs))
    return ModelResult(spec=spec, summary=summary, examples=examples, seconds=1.0)


@pytest.fixture
def result(tmp_path: Path) -> EvalResult:
    """A base model and three checkpoints of a run (with its metrics.csv) on a 5-label emoji task."""
    labels = ["😀", "😢", "😡", "猫", "🎉"]
    references = [labels[i % 5] for i in range(40)]
    run = tmp_path / "run-7"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "base", "steps_per_epoch": 10}))
    (run / "metrics.csv").write_text("step,train_loss,train_mean_token_accuracy,valid_loss,valid_mean_token_accuracy\n"
                                     + "".join(f"{s},{2.5 - 0.05 * s},0.5,{'' if s % 10 else 2.6 - 0.04 * s},"
                                               f"{'' if s % 10 else 0.5}\n" for s in range(1, 31)))
    models = [_model(ModelRef("base", "base"), ["I think it is happy"] * 40, references, labels)]
    for epoch, correct in ((1, 15), (2, 30), (3, 36)):
        outputs = [ref if i < correct else "😀" for i, ref in enumerate(references)]
        spec = ModelRef(f"run-7:epoch-{epoch}", "base", "run", run_dir=run, epoch=epoch, step=10 * epoch)
        models.append(_model(spec, outputs, references, labels))
    options = EvalOptions(labels=labels, decode="free")
    return EvalResult(test_file=str(tmp_path / "test.jsonl"), metrics=["exact", "label", "length"],
                      options=options, models=models, comparisons=pairwise_comparisons(models, n_resamples=500))


def test_report_writes_page_and_plots(result: EvalResult, tmp_path: Path):
    from ftlab.evaluate.report import write_report

    page = write_report(result, tmp_path / "report")
    text = page.read_text()
    for png in ("metrics.png", "curves.png", "differences.png", "labels.png"):
        assert (tmp_path / "report" / png).stat().st_size > 5_000
        assert f'src="{png}"' in text
    assert "run-7:epoch-3" in text and "Worst examples" in text
    assert "<b>not bold</b>" not in text and "&lt;b&gt;not bold&lt;/b&gt;" in text  # outputs are escaped
    assert "😡 → 😀" in text  # confusions


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_report_renders_in_headless_chromium(result: EvalResult, tmp_path: Path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from ftlab.evaluate.report import write_report

    page_path = write_report(result, tmp_path / "report")
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(HANG_GUARD_MS)
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.id, e.complete, e.naturalWidth])")
        rows = page.eval_on_selector_all("#summary tr", "els => els.length")
        page.locator("#plot-curves").screenshot(path=str(tmp_path / "curves-shot.png"))
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert {i[0] for i in images} == {"plot-summary", "plot-curves", "plot-differences", "plot-labels"}
    assert all(complete and width > 300 for _, complete, width in images), images
    assert rows == 1 + len(result.models)
    full = Image.open(shot)
    assert full.size[0] == 1280 and full.size[1] > 2000  # the whole page, plots and tables included
    curves = Image.open(tmp_path / "curves-shot.png").convert("L")
    assert curves.size[0] > 600
    low, high = curves.getextrema()
    assert high - low > 100  # the plot drew lines and text, not a blank box
