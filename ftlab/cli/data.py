"""`ftlab data ...`: the data workbench. Each command parses flags, calls one function of `ftlab.data`, renders."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from ftlab.config import BUNDLED_MODEL
from ftlab.data.findings import Finding
from ftlab.data.schema import DataError

app = typer.Typer(help="Check, count, price, split, convert and deduplicate training data.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
MAX_SHOWN_PER_CHECK = 10


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


@contextmanager
def _progress(description: str):
    """A transient progress bar on stderr; yields a callback (done, total) in bytes."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _render_findings(findings: list[Finding]) -> None:
    """One block per finding: severity, check and place, then the message and the fix (narrow-terminal safe)."""
    shown: dict[str, int] = {}
    for finding in findings:
        shown[finding.check] = shown.get(finding.check, 0) + 1
        if shown[finding.check] > MAX_SHOWN_PER_CHECK:
            continue
        where = f" {escape(finding.location())}" if finding.location() else ""
        out.print(f"[{SEVERITY_STYLE[finding.severity]}]{finding.severity}[/] [bold]{finding.check}[/]{where}")
        out.print(f"    {escape(finding.message)}", highlight=False)
        if finding.fix:
            out.print(f"    [dim]fix: {escape(finding.fix)}[/]", highlight=False)
    for check, n in shown.items():
        if n > MAX_SHOWN_PER_CHECK:
            out.print(f"… {n - MAX_SHOWN_PER_CHECK} more '{check}' findings (--json lists them all)")


@app.command()
def validate(
    file: Path = typer.Argument(..., help="chat JSONL file to check"),
    model: str = typer.Option(
        BUNDLED_MODEL, "--model", "-m", help="target model: tokenizer for the length checks (OpenAI names use tiktoken)"
    ),
    labels: Path | None = typer.Option(None, "--labels", help="allowed outputs, one per line"),
    infer_labels: bool = typer.Option(False, "--infer-labels", help="infer the label set from repeated outputs"),
    max_length: int | None = typer.Option(
        None, "--max-length", help="training length in tokens (default: max_length of training, or OpenAI's limit)"
    ),
    threshold: float = typer.Option(0.8, "--threshold", help="near-duplicate character 3-gram Jaccard threshold"),
    no_tokens: bool = typer.Option(False, "--no-tokens", help="skip tokenising (no length checks)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Check a chat JSONL file before training. Exit code 1 when there are errors, 0 with warnings only."""
    from ftlab.data.labels import read_labels
    from ftlab.data.validate import validate_file

    try:
        label_list = read_labels(labels) if labels else None
        with _progress(f"validating {file.name}") as progress:
            report = validate_file(
                file,
                None if no_tokens else model,
                max_length=max_length,
                labels=label_list,
                infer_labels=infer_labels,
                near_threshold=threshold,
                progress=progress,
            )
    except (DataError, LookupError, ValueError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        _render_validation(report)
    raise typer.Exit(0 if report.ok else 1)


def _render_validation(report) -> None:
    out.print(f"[bold]{escape(report.path)}[/]: {report.n_examples} examples on {report.n_lines} lines")
    if report.tokens:
        t = report.tokens
        out.print(
            f"tokens ({escape(t['counted_with'])}): total {t['total']:,}; per example "
            f"min {t['min']} / median {t['median']} / p95 {t['p95']} / max {t['max']}; "
            f"{t['over_max_length']} over the training length {report.max_length} ({t['tokens_cut']:,} tokens cut)"
        )
    if report.labels:
        lab = report.labels
        dist = ", ".join(f"{escape(label)} {lab.distribution[label]}" for label in lab.labels[:30])
        out.print(f"labels ({'inferred' if lab.inferred else 'given'}): {lab.share_inside:.1%} inside; {dist}")
    if report.findings:
        _render_findings(report.findings)
    for (check, severity), n in sorted(report.suppressed.items()):
        out.print(f"  … and {n} more '{check}' {severity}s not listed")
    verdict = "[bold green]OK[/]" if report.ok else "[bold red]FAILED[/]"
    out.print(f"{verdict}: {report.n_errors} errors, {report.n_warnings} warnings")


@app.command()
def split(
    file: Path = typer.Argument(..., help="JSONL file to split"),
    out_dir: Path = typer.Option(..., "--out", help="folder for train.jsonl, val.jsonl and test.jsonl"),
    val: float = typer.Option(0.15, "--val", help="share of examples for validation"),
    test: float = typer.Option(0.15, "--test", help="share of examples for test"),
    seed: int = typer.Option(42, "--seed", help="same seed, same file: byte-identical splits"),
    group_by: str | None = typer.Option(
        None, "--group-by", help="key (dotted, or inside 'metadata') whose value keeps examples in one split"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Split FILE into train / val / test reproducibly; --group-by keeps each group in one split."""
    from ftlab.data.split import split_file

    try:
        result = split_file(file, out_dir, val=val, test=test, seed=seed, group_by=group_by)
    except (DataError, ValueError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    for name, path in result.paths().items():
        groups = f" ({result.groups[name]} groups)" if group_by else ""
        out.print(f"{name:5} {result.counts[name]:6} examples{groups} -> {escape(str(path))}")
