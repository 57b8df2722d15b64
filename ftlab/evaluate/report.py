"""The evaluation report: one HTML page with PNG plots, readable in any browser without a network.

What it shows: the summary table; per-checkpoint metric curves next to the run's loss curves; the paired
differences with their bootstrap intervals; label distributions; the worst examples of each model and the
examples where the baseline and the best model disagree.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

from ftlab.evaluate.run import EvalResult

TEMPLATES = Path(__file__).parent / "templates"  # report.html and compare.html share report.css
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD"]
# Summary keys plotted and tabulated, with their titles.
SUMMARY_KEYS = (("exact", "exact"), ("contains", "contains"), ("json_valid", "JSON valid"), ("set_f1", "set-F1"),
                ("field_acc", "field acc"), ("valid_label", "valid label"), ("accuracy", "accuracy"),
                ("macro_f1", "macro-F1"), ("tool_name", "tool name"), ("tool_args", "tool args"),
                ("tool_json", "tool JSON"), ("chrf_corpus", "chrF"))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_text(text: str) -> str:
    """`text` when the plotting font has all its glyphs, else its code points (emoji and CJK often lack one)."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    font = FT2Font(font_manager.findfont(font_manager.FontProperties()))
    if all(font.get_char_index(ord(char)) for char in text if not char.isspace()):
        return text
    return " ".join(f"U+{ord(char):04X}" for char in text if char not in "\u200d\ufe0f")


def _shown_keys(result: EvalResult) -> list[tuple[str, str]]:
    return [(k, t) for k, t in SUMMARY_KEYS if any(m.summary.get(k) is not None for m in result.models)]


def plot_summary(result: EvalResult, path: Path) -> Path:
    """Grouped bars: every metric (0–1) for every model."""
    plt = pyplot()
    keys = _shown_keys(result)
    n = len(result.models)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(keys) * max(1, n / 3)), 4), dpi=110)
    width = 0.8 / n
    for i, model in enumerate(result.models):
        values = [model.summary.get(k) or 0.0 for k, _ in keys]
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(keys))]
        ax.bar(xs, values, width, label=plot_text(model.spec.name), color=PALETTE[i % len(PALETTE)])
    ax.set_xticks(range(len(keys)), [t for _, t in keys])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Metrics by model")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _read_losses(run_dir: Path) -> tuple[list[float], list[float], list[float], list[float]]:
    """(steps, train losses, validation steps, validation losses) from a run's metrics.csv."""
    steps, train, valid_steps, valid = [], [], [], []
    path = run_dir / "metrics.csv"
    if not path.exists():
        return steps, train, valid_steps, valid
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            step = float(row["step"])
            if row.get("train_loss"):
                steps.append(step)
                train.append(float(row["train_loss"]))
            if row.get("valid_loss"):
                valid_steps.append(step)
                valid.append(float(row["valid_loss"]))
    return steps, train, valid_steps, valid


def _steps_per_epoch(run_dir: Path, result: EvalResult) -> float | None:
    record_path = run_dir / "config.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if record.get("steps_per_epoch"):
        return float(record["steps_per_epoch"])
    known = [m.spec for m in result.models if m.spec.run_dir == run_dir and m.spec.epoch and m.spec.step]
    return known[-1].step / known[-1].epoch if known else None


def plot_curves(result: EvalResult, path: Path) -> Path | None:
    """Per run: the metric of each checkpoint against epoch, next to the training/validation loss."""
    runs = sorted({m.spec.run_dir for m in result.models if m.spec.run_dir is not None and m.spec.epoch})
    if not runs:
        return None
    plt = pyplot()
    keys = _shown_keys(result)
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.8 * len(runs)), dpi=110, squeeze=False)
    for row, run_dir in enumerate(runs):
        checkpoints = sorted((m for m in result.models if m.spec.run_dir == run_dir and m.spec.epoch),
                             key=lambda m: m.spec.epoch)
        epochs = [m.spec.epoch for m in checkpoints]
        ax = axes[row][0]
        for i, (key, title) in enumerate(keys):
            ax.plot(epochs, [m.summary.get(key) or 0.0 for m in checkpoints], marker="o", label=title,
                    color=PALETTE[i % len(PALETTE)])
        ax.set_xlabel("epoch")
        ax.set_ylabel("score")
        ax.set_ylim(0, 1.05)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{run_dir.name}: test metrics per checkpoint")
        ax = axes[row][1]
        steps, train, valid_steps, valid = _read_losses(run_dir)
        per_epoch = _steps_per_epoch(run_dir, result)
        scale = (1 / per_epoch) if per_epoch else 1.0
        if train:
            ax.plot([s * scale for s in steps], train, label="train loss", color=PALETTE[0], alpha=0.8)
        if valid:
            ax.plot([s * scale for s in valid_steps], valid, marker="o", label="validation loss", color=PALETTE[1])
        ax.set_xlabel("epoch" if per_epoch else "step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if train or valid:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no metrics.csv in this run", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{run_dir.name}: loss")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_differences(result: EvalResult, path: Path) -> Path | None:
    """Each model minus the baseline on the headline metric, with its paired-bootstrap interval."""
    rows = [c for c in result.comparisons if c["metric"] == result.headline]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5), dpi=110)
    for y, c in enumerate(rows):
        color = PALETTE[2] if c["ci_low"] > 0 else PALETTE[3] if c["ci_high"] < 0 else PALETTE[7]
        ax.errorbar(c["difference"], y, xerr=[[c["difference"] - c["ci_low"]], [c["ci_high"] - c["difference"]]],
                    fmt="o", color=color, capsize=4)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [c["b"] for c in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{result.headline}: model − {rows[0]['a']} (95% paired bootstrap)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_labels(result: EvalResult, path: Path, top: int = 20) -> Path | None:
    """Bars of how often each label is the reference and how often each model predicts it."""
    with_labels = [m for m in result.models if "labels" in m.summary]
    if not with_labels:
        return None
    plt = pyplot()
    reference = with_labels[0].summary["labels"]["reference_distribution"]
    names = list(reference)[:top]
    n = len(with_labels) + 1
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(7, 0.6 * len(names) * n / 2), 4), dpi=110)
    series = [("reference", reference)] + [(m.spec.name, m.summary["labels"]["predicted_distribution"])
                                           for m in with_labels]
    for i, (name, counts) in enumerate(series):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [counts.get(label, 0) for label in names], width, label=plot_text(name),
               color="#333333" if i == 0 else PALETTE[(i - 1) % len(PALETTE)])
    ax.set_xticks(range(len(names)), [plot_text(name) for name in names], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("examples")
    ax.legend(fontsize=7)
    ax.set_title(f"Label distribution (top {len(names)} reference labels)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def templates():
    """The reports' Jinja2 environment: HTML escaped, numbers through the `fmt` filter."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.filters["fmt"] = _fmt
    return env


def _worst(model, headline: str, n: int) -> list[dict[str, Any]]:
    scored = [e for e in model.examples if e["scores"].get(headline) is not None]
    return sorted(scored, key=lambda e: e["scores"][headline])[:n]


def _best_model(result: EvalResult):
    def key(model) -> float:
        return model.summary.get(result.headline) or model.summary.get("accuracy") or 0.0

    return max(result.models, key=key)


def write_report(result: EvalResult, folder: str | Path, worst: int = 8) -> Path:
    """Write `index.html` and its PNGs into `folder`; returns the HTML path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plots = {
        "summary": plot_summary(result, folder / "metrics.png"),
        "curves": plot_curves(result, folder / "curves.png"),
        "differences": plot_differences(result, folder / "differences.png"),
        "labels": plot_labels(result, folder / "labels.png"),
    }
    headline = result.headline
    keys = _shown_keys(result)
    baseline = result.models[0]
    best = _best_model(result)
    disagreements = []
    if best is not baseline:
        for base_ex, best_ex in zip(baseline.examples, best.examples, strict=True):
            if base_ex["scores"].get(headline) != best_ex["scores"].get(headline):
                disagreements.append({"example": base_ex, "base_output": base_ex["output"],
                                      "best_output": best_ex["output"],
                                      "base_score": base_ex["scores"].get(headline),
                                      "best_score": best_ex["scores"].get(headline)})
    page = templates().get_template("report.html").render(
        result=result, keys=keys, headline=headline, plots={k: v.name for k, v in plots.items() if v},
        worst={m.spec.name: _worst(m, headline, worst) for m in result.models},
        baseline=baseline, best=best, disagreements=disagreements[:20], n_disagreements=len(disagreements),
        n_examples=len(baseline.examples), test_file=html.escape(Path(result.test_file).name),
    )
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
