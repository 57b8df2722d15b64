"""`ftlab data ...`: the data workbench. Each command parses flags, calls one function of `ftlab.data`, renders."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from ftlab.cli.output import fail
from ftlab.config import BUNDLED_MODEL
from ftlab.data.findings import Finding
from ftlab.data.schema import DataError

app = typer.Typer(help="Check, count, price, split, convert and deduplicate training data.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
MAX_SHOWN_PER_CHECK = 10


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
    file: Path = typer.Argument(..., help="chat or preference (DPO) JSONL file to check"),
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
    """Check a chat or preference (DPO) JSONL file before training. Exit code 1 when there are errors, 0 with
    warnings only."""
    from ftlab.data.labels import read_labels
    from ftlab.data.validate import validate_file

    try:
        label_list = read_labels(labels) if labels else None
        with _progress(f"validating {file.name}") as progress:
            report = validate_file(
                file,
                model,
                tokens=not no_tokens,
                max_length=max_length,
                labels=label_list,
                infer_labels=infer_labels,
                near_threshold=threshold,
                progress=progress,
            )
    except (DataError, LookupError, ValueError, OSError) as exc:
        fail(str(exc))
    from ftlab.records.store import record_dataset

    record_dataset(file, report.to_dict())  # the dataset's record keeps this summary and its token counts
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        _render_validation(report)
    raise typer.Exit(0 if report.ok else 1)


def _render_validation(report) -> None:
    kind = " preference pairs" if report.kind == "preference" else " examples"
    out.print(f"[bold]{escape(report.path)}[/]: {report.n_examples}{kind} on {report.n_lines} lines")
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
        fail(str(exc))
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    for name, path in result.paths().items():
        groups = f" ({result.groups[name]} groups)" if group_by else ""
        out.print(f"{name:5} {result.counts[name]:6} examples{groups} -> {escape(str(path))}")


def _bar(count: int, largest: int, width: int = 40) -> str:
    return "█" * max(1 if count else 0, round(width * count / largest)) if largest else ""


@app.command()
def stats(
    file: Path = typer.Argument(..., help="chat or preference (DPO) JSONL file"),
    model: str = typer.Option(
        BUNDLED_MODEL, "--model", "-m", help="tokenizer to count with (OpenAI model names use tiktoken)"
    ),
    png: Path | None = typer.Option(None, "--png", help="also write histograms to this PNG"),
    bins: int = typer.Option(12, "--bins", help="histogram bins in the terminal"),
    as_json: bool = typer.Option(False, "--json", help="print the statistics as JSON"),
) -> None:
    """Tokens per example, per role and of the assistant replies; messages per example; percentiles, histogram.
    A preference pair counts its prompt once and both outputs."""
    from ftlab.data.stats import PERCENTILES, histogram, save_histogram_png, stats_file

    try:
        result = stats_file(file, model)
    except (DataError, LookupError, ValueError, OSError) as exc:
        fail(str(exc))
    if png:
        save_histogram_png(result, png)
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    data = result.to_dict()
    out.print(f"[bold]{escape(result.path)}[/]: {len(result.total)} examples, "
              f"counted with {escape(result.counted_with)}")
    if result.skipped_lines:
        out.print(f"[yellow]{len(result.skipped_lines)} invalid lines skipped[/] (lines {result.skipped_lines[:10]}); "
                  "`ftlab data validate` says why")
    header = ["", "mean", "min", *(f"p{p}" for p in PERCENTILES), "max", "sum"]
    trained = "outputs (both)" if result.kind == "preference" else "assistant tokens"
    rows = [("tokens / example", data["tokens_per_example"]),
            (trained, data["assistant_tokens_per_example"]),
            ("messages / example", data["messages_per_example"])]
    rows += [(f"  {role} tokens", values) for role, values in data["tokens_per_role"].items()]
    out.print("  ".join(f"{h:>18}" if i == 0 else f"{h:>8}" for i, h in enumerate(header)))
    for name, d in rows:
        cells = [d["mean"], d["min"], *(d[f"p{p}"] for p in PERCENTILES), d["max"], d["sum"]]
        out.print(f"{name:>18}  " + "  ".join(f"{c:>8}" for c in cells), highlight=False)
    out.print("\ntokens per example:")
    hist = histogram(result.total, bins)
    largest = max(c for _, _, c in hist)
    for low, high, count in hist:
        out.print(f"{low:>8.0f} – {high:<8.0f} {count:>6}  {_bar(count, largest)}", highlight=False)
    if png:
        out.print(f"histograms written to {escape(str(png))}")


@app.command()
def estimate(
    file: Path = typer.Argument(..., help="chat or preference (DPO) JSONL file"),
    model: list[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="OpenAI model to price, or a local model to time (repeatable; default: every priced model + bundled)",
    ),
    epochs: str = typer.Option("auto", "--epochs", help="number of epochs, or 'auto' (the cookbook rule)"),
    local_model: str = typer.Option(BUNDLED_MODEL, "--local-model", help="local model to time training for"),
    no_local: bool = typer.Option(False, "--no-local", help="skip the local training-time estimate"),
    adapter: str = typer.Option("lora", "--adapter", "--method", help="local adapter: lora, dora or full"),
    max_length: int | None = typer.Option(None, "--max-length", help="local training length (default 2048)"),
    recalibrate: bool = typer.Option(False, "--recalibrate", help="measure this machine's throughput again"),
    as_json: bool = typer.Option(False, "--json", help="print the estimate as JSON"),
) -> None:
    """Billed tokens and cost for OpenAI fine-tuning (dated price table), and time to train locally here."""
    from ftlab.cli.settings import build_config
    from ftlab.data.estimate import PRICES_AS_OF, PRICES_SOURCE, estimate_file, openai_model

    try:
        length = None if max_length is None else str(max_length)
        settings = build_config({"n_epochs": epochs, "adapter": adapter, "max_length": length})
    except ValueError as exc:
        fail(str(exc))
    n_epochs = settings.n_epochs
    openai_models = [m for m in model or [] if openai_model(m) is not None]
    local_models = [m for m in model or [] if openai_model(m) is None]
    if len(local_models) > 1:
        fail(f"one local model at a time (got {', '.join(local_models)}); OpenAI names are priced, others timed")
    local = None if no_local else (local_models[0] if local_models else local_model)
    try:
        if local:
            err.print(f"calibrating {local} training throughput on this machine (cached after the first time)…")
        result = estimate_file(file, openai_models if model else None, n_epochs, local_model=local)
        if local:
            from ftlab.train.calibrate import local_time

            result.local = local_time(local, result.sample, result.local_tokens, n_epochs, settings.max_length,
                                      settings.adapter, refresh=recalibrate)  # fmt: skip
    except (DataError, LookupError, ValueError, OSError) as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    out.print(f"[bold]{escape(result.path)}[/]: {result.n_examples} examples")
    if result.skipped_lines:
        out.print(f"[yellow]{len(result.skipped_lines)} invalid lines not counted[/]: run `ftlab data validate`")
    out.print(f"OpenAI fine-tuning, prices as of {PRICES_AS_OF} ({PRICES_SOURCE}):")
    if result.kind == "preference":
        out.print("  preference pairs (DPO): billed per training token at the supervised rate, a pair counted as its "
                  "prompt once plus both outputs (an assumption: OpenAI publishes no DPO rate or count)")
    for cost in result.openai:
        cut = f", {cost.n_cut} examples cut to the limit" if cost.n_cut else ""
        out.print(
            f"  {cost.model:26} {cost.n_epochs:>2} epochs × {cost.billed_tokens_per_epoch:>12,} tokens = "
            f"{cost.billed_tokens:>13,} billed × ${cost.usd_per_1m:.2f}/1M = [bold]${cost.usd:,.2f}[/]{cut}",
            highlight=False,
        )
    if result.local:
        t = result.local
        minutes = t.seconds / 60
        source = "cached calibration" if t.from_cache else "just measured"
        out.print(
            f"local ({escape(t.model)}, {t.adapter}): {t.n_epochs} epochs × {t.tokens_per_epoch:,} tokens at "
            f"{t.tokens_per_second:,.0f} tokens/s ({source}) ≈ [bold]{minutes:,.1f} min[/] of training",
            highlight=False,
        )


@app.command()
def convert(
    file: Path = typer.Argument(..., help="CSV, TSV or JSONL file, or an evaluation's JSON (`ftlab eval` output)"),
    out_file: Path = typer.Option(..., "--out", help="chat (or DPO) JSONL to write"),
    fmt: str | None = typer.Option(None, "--format", help="csv, tsv, jsonl, or eval: the pairwise judgements of "
                                   "an `ftlab eval --judge pairwise` JSON (default: from the file)"),
    to: str = typer.Option("chat", "--to", help="chat, or dpo for preference pairs"),
    system: str | None = typer.Option(None, "--system", help="system prompt for every example"),
    system_column: str | None = typer.Option(None, "--system-column", help="column holding the system prompt"),
    user_column: str | None = typer.Option(None, "--user-column", help="column holding the user message"),
    user_template: str | None = typer.Option(
        None, "--user-template", help="user message from columns, e.g. 'Title: {title}\\n\\nIngredients: {ingredients}'"
    ),
    assistant_column: str | None = typer.Option(None, "--assistant-column", help="column holding the reply"),
    assistant_template: str | None = typer.Option(None, "--assistant-template", help="reply from columns"),
    preferred_column: str | None = typer.Option(None, "--preferred-column", help="DPO: the preferred reply"),
    non_preferred_column: str | None = typer.Option(
        None, "--non-preferred-column", help="DPO: the non-preferred reply"
    ),
    a_column: str | None = typer.Option(None, "--a-column", help="DPO from A/B choices: reply A (default: a)"),
    b_column: str | None = typer.Option(None, "--b-column", help="DPO from A/B choices: reply B (default: b)"),
    choice_column: str | None = typer.Option(
        None, "--choice-column", help="DPO from A/B choices: the column saying a or b (default: choice); ties skipped"
    ),
    test_file: Path | None = typer.Option(
        None, "--test-file", help="--format eval: the evaluation's test set, if it moved since"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Convert CSV/TSV/JSONL rows (or prompt/completion pairs) into chat JSONL, or into OpenAI's DPO format
    (from preferred/non-preferred columns, A/B choices, or an evaluation's pairwise judgements).

    Templates use {column} placeholders; \\n and \\t typed in a template become a newline and a tab.
    """
    from ftlab.data.convert import Mapping, convert_file, unescape

    if fmt not in (None, "csv", "tsv", "jsonl", "eval"):
        fail(f"--format must be csv, tsv, jsonl or eval, got {fmt!r}")
    if to not in ("chat", "dpo"):
        fail(f"--to must be chat or dpo, got {to!r}")
    mapping = Mapping(
        user_column=user_column,
        user_template=unescape(user_template) if user_template is not None else None,
        assistant_column=assistant_column,
        assistant_template=unescape(assistant_template) if assistant_template is not None else None,
        system=unescape(system) if system is not None else None,
        system_column=system_column,
        preferred_column=preferred_column,
        non_preferred_column=non_preferred_column,
        a_column=a_column,
        b_column=b_column,
        choice_column=choice_column,
    )
    try:
        result = convert_file(file, out_file, mapping, fmt=fmt, to=to, test_file=test_file)
    except (DataError, ValueError, OSError) as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    out.print(f"{result.written} examples written to {escape(str(result.out))}")
    for line, why in result.skipped[:20]:
        out.print(f"[yellow]skipped[/] line {line}: {why}")
    if len(result.skipped) > 20:
        out.print(f"… {len(result.skipped) - 20} more rows skipped")


METHOD_HELP = "both (MinHash and embeddings), minhash or embedding"


@app.command()
def dedup(
    file: Path = typer.Argument(..., help="chat JSONL file"),
    out_file: Path = typer.Option(..., "--out", help="where to write the kept examples"),
    threshold: float = typer.Option(0.8, "--threshold", help="character 3-gram Jaccard threshold (MinHash)"),
    cosine: float = typer.Option(0.95, "--cosine", help="embedding cosine threshold"),
    method: str = typer.Option("both", "--method", help=METHOD_HELP),
    embedder: str = typer.Option("minilm", "--embedder", help="'minilm' (bundled) or a sentence-transformers folder"),
    dropped: Path | None = typer.Option(None, "--dropped", help="where to write what was dropped"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Drop exact and near-duplicate examples, keeping the first of each; writes what it dropped and why."""
    from ftlab.data.dedup import dedup_file

    if method not in ("both", "minhash", "embedding"):
        fail(f"--method must be {METHOD_HELP}")
    try:
        result = dedup_file(file, out_file, threshold=threshold, cosine=cosine, method=method, embedder=embedder,
                            dropped_path=dropped)
    except (DataError, LookupError, ValueError, OSError) as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    out.print(f"kept {result.kept}, dropped {len(result.dropped)} -> {escape(str(result.out))}")
    for match in result.dropped[:20]:
        out.print(f"  line {match.line} duplicates line {match.of_line} ({match.method} {match.similarity:.2f})")
    if result.dropped:
        out.print(f"dropped examples written to {escape(str(result.dropped_path))}")


@app.command()
def leakage(
    file_a: Path = typer.Argument(..., help="e.g. train.jsonl"),
    file_b: Path = typer.Argument(..., help="e.g. test.jsonl"),
    threshold: float = typer.Option(0.8, "--threshold", help="character 3-gram Jaccard threshold (MinHash)"),
    cosine: float = typer.Option(0.95, "--cosine", help="embedding cosine threshold"),
    method: str = typer.Option("both", "--method", help=METHOD_HELP),
    embedder: str = typer.Option("minilm", "--embedder", help="'minilm' (bundled) or a sentence-transformers folder"),
    as_json: bool = typer.Option(False, "--json", help="print the pairs as JSON"),
) -> None:
    """Report examples of B that also occur in A: identical, same prompt, or near-duplicate. Exit 1 if any."""
    from ftlab.data.dedup import leakage as find_leakage

    if method not in ("both", "minhash", "embedding"):
        fail(f"--method must be {METHOD_HELP}")
    try:
        report = find_leakage(file_a, file_b, threshold=threshold, cosine=cosine, method=method, embedder=embedder)
    except (DataError, LookupError, ValueError, OSError) as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        out.print(f"{len(report.matches)} pairs across {escape(str(file_a))} ({report.n_a}) and "
                  f"{escape(str(file_b))} ({report.n_b})")
        for m in report.matches[:50]:
            out.print(f"  A line {m.of_line} ~ B line {m.line}: {m.method} {m.similarity:.2f}")
        if len(report.matches) > 50:
            out.print(f"  … {len(report.matches) - 50} more (--json lists them all)")
    raise typer.Exit(1 if report.matches else 0)
