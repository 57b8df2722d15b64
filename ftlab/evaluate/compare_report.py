"""The report of `ftlab compare`: one HTML page with PNG plots in the style of the evaluation report.

What it shows: every arm's quality with its interval, invented claims, tokens and cost per request; quality
against cost as a scatter (one panel per currency: dollars, or machine seconds where a local arm has no price);
the paired differences with the baseline; the learning curve; the break-even volumes; and the examples where the
arms' answers differ, with what each prompt carried.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ftlab.evaluate.report import PALETTE, plot_differences, plot_text, pyplot, templates
from ftlab.evaluate.versus import ArmResult, ComparisonResult

CURRENCY_LABELS = {"usd": "US dollars per 1,000 requests", "machine_seconds": "machine seconds per 1,000 requests"}


def _currency(arm: ArmResult) -> str | None:
    """The currency an arm is drawn in: dollars when it has a price, else machine seconds."""
    per_1000 = arm.cost.per_1000()
    return next((c for c in CURRENCY_LABELS if c in per_1000), None)


def plot_quality_cost(result: ComparisonResult, path: Path) -> Path | None:
    """Headline metric (with its 95% interval) against cost per 1,000 requests, one panel per currency."""
    panels = [c for c in CURRENCY_LABELS if any(_currency(a) == c and a.interval for a in result.arms)]
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(8.5 * len(panels), 4.6), dpi=110, squeeze=False)
    for ax, currency in zip(axes[0], panels, strict=True):
        for i, arm in enumerate(result.arms):
            if _currency(arm) != currency or not arm.interval:
                continue
            mean, low, high = arm.interval
            x = arm.cost.per_1000()[currency]
            ax.errorbar(x, mean, yerr=[[mean - low], [high - mean]], fmt="o", capsize=4, ms=7,
                        color=PALETTE[i % len(PALETTE)], label=plot_text(arm.arm.name))  # fmt: skip
        ax.set_xlabel(CURRENCY_LABELS[currency])
        ax.set_ylabel(f"{result.headline} (95% interval)")
        ax.set_xlim(left=0)
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title("Quality against cost: up and to the left is better")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_learning_curve(curve: dict[str, Any] | None, path: Path) -> Path | None:
    """The headline metric against training examples, with 95% intervals."""
    points = [p for p in (curve or {}).get("points", []) if p["mean"] is not None]
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    xs = [p["n"] for p in points]
    means = [p["mean"] for p in points]
    ax.fill_between(xs, [p["ci_low"] for p in points], [p["ci_high"] for p in points], color=PALETTE[0], alpha=0.2,
                    label="95% interval")  # fmt: skip
    ax.plot(xs, means, marker="o", color=PALETTE[0], label=curve["metric"])
    ax.set_xlabel("training examples (nested subsets; 0 = the base model)")
    ax.set_ylabel(curve["metric"])
    ax.set_xticks(xs)
    ax.set_ylim(-0.02, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Learning curve: does more data still help?")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _differing_examples(result: ComparisonResult, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Examples where the arms' headline scores are not all equal, each with every arm's answer."""
    headline, rows = result.headline, []
    for index, first in enumerate(result.arms[0].model.examples):
        answers = [arm.model.examples[index] for arm in result.arms]
        if len({a["scores"].get(headline) for a in answers}) > 1:
            rows.append({"example": first, "answers": list(zip(result.arms, answers, strict=True))})
    return rows[:limit], len(rows)


def write_compare_report(result: ComparisonResult, folder: str | Path, examples: int = 20) -> Path:
    """Write `index.html` and its PNGs into `folder`; returns the HTML path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plots = {
        "scatter": plot_quality_cost(result, folder / "quality_cost.png"),
        "curve": plot_learning_curve(result.curve, folder / "learning_curve.png"),
        "differences": plot_differences(result.evaluation, folder / "differences.png"),
    }
    differing, n_differing = _differing_examples(result, examples)
    page = templates().get_template("compare.html").render(
        result=result, data=result.to_dict(with_examples=False), plots={k: v.name for k, v in plots.items() if v},
        differing=differing, n_differing=n_differing, test_file=html.escape(Path(result.evaluation.test_file).name),
    )
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
