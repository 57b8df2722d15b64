"""`ftlab eval`: generate with one or more models on a held-out set, score, compare, report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from ftlab.cli.output import print_error, print_table
from ftlab.config import home
from ftlab.data.schema import DataError
from ftlab.evaluate.metrics import METRIC_HELP, parse_metrics

if TYPE_CHECKING:
    from ftlab.evaluate.run import EvalOptions
    from ftlab.infer.refs import ModelRef

console = Console()

# Summary keys shown in the table, with their column titles, in order.
COLUMNS = (
    ("exact", "exact"), ("contains", "contains"), ("json_valid", "json valid"), ("set_f1", "set-F1"),
    ("field_acc", "field acc"), ("valid_label", "valid label"), ("accuracy", "accuracy"), ("macro_f1", "macro-F1"),
    ("tool_name", "tool name"), ("tool_args", "tool args"), ("tool_json", "tool JSON"), ("chrf_corpus", "chrF"),
    ("bleu", "BLEU"),
)


def summary_table(result) -> Table:
    table = Table(title=f"{Path(result.test_file).name} · {len(result.models[0].examples)} examples")
    table.add_column("model", overflow="fold")
    shown = [(key, title) for key, title in COLUMNS if any(m.summary.get(key) is not None for m in result.models)]
    for _, title in shown:
        table.add_column(title, justify="right")
    table.add_column("tokens out", justify="right")
    table.add_column("s/example", justify="right")
    for model in result.models:
        cells = []
        for key, _ in shown:
            value = model.summary.get(key)
            cells.append("—" if value is None else f"{value:.1f}" if key == "bleu" else f"{value:.3f}")
        tokens_out = model.mean_per_example("completion_tokens")  # every reply's, whatever the metrics
        cells.append(f"{tokens_out:.1f}" if model.examples else "—")
        cells.append(f"{model.seconds / max(1, len(model.examples)):.2f}")
        table.add_row(model.spec.name, *cells)
    return table


def comparison_table(result) -> Table:
    table = Table(title="paired comparison with the baseline (bootstrap 95% interval)")
    for title in ("baseline", "model", "metric", "difference", "95% interval", "disagree"):
        table.add_column(title, justify="right" if title in ("difference", "95% interval", "disagree") else "left",
                         overflow="fold")
    for c in result.comparisons:
        style = "green" if c["ci_low"] > 0 else "red" if c["ci_high"] < 0 else ""
        table.add_row(c["a"], c["b"], c["metric"], f"[{style}]{c['difference']:+.3f}[/]" if style else
                      f"{c['difference']:+.3f}", f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]",
                      str(len(c["disagreements"])))
    return table


def _pct(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def judge_tables(result) -> list[Table]:
    """One table per judging kind: scores, rubric pass rates, pairwise wins with flip rates."""
    tables = []
    for run in result.judgements:
        kind, summary = run["kind"], run["summary"]
        judges = ", ".join(run["judges"])
        if kind in ("score", "likert"):
            table = Table(title=f"{kind} judge ({judges}; scale {summary['scale'][0]}-{summary['scale'][1]})")
            for title in ("model", "mean", "normalised", "unparsed", "judge agreement"):
                table.add_column(title)
            for model in result.models:
                s = summary[model.spec.name]
                table.add_row(model.spec.name, _pct(s["mean"]), _pct(s["normalised"]),
                              str(sum(s["unparsed"].values())), _pct(s["agreement"]))
        elif kind == "rubric":
            criteria = list(summary["criteria"])
            table = Table(title=f"rubric judge ({judges}): pass rate per criterion")
            table.add_column("model")
            for name in criteria:
                table.add_column(name, justify="right")
            for model in result.models:
                s = summary[model.spec.name]
                table.add_row(model.spec.name, *[_pct(s[name]["pass_rate"]) for name in criteria])
        else:
            table = Table(title=f"pairwise judge ({judges}): {summary['b']} vs {summary['a']}, both orders")
            for title in ("B wins", "A wins", "ties", "flip rate", "unparsed", "undecided"):
                table.add_column(title, justify="right")
            table.add_row(_pct(summary["b_wins"]), _pct(summary["a_wins"]), _pct(summary["ties"]),
                          ", ".join(f"{v:.2f}" for v in summary["flip_rate"].values()),
                          str(sum(summary["unparsed"].values())), str(summary["undecided"]))
        tables.append(table)
    if result.human_agreement:
        table = Table(title="agreement with human labels")
        for title in ("criterion", "n", "agreement", "Cohen's kappa"):
            table.add_column(title)
        for criterion, a in result.human_agreement.items():
            table.add_row(criterion, str(a["n"]), _pct(a["agreement"]), _pct(a["cohen_kappa"]))
        tables.append(table)
    return tables


def held_note(spec: ModelRef, options: EvalOptions) -> str:
    """What the progress line adds when a model's replies are held to its learned reply schema."""
    from ftlab.evaluate.run import reply_schema

    if options.json_schema is None and reply_schema(spec, options) is not None:
        return " (held to its learned reply schema, reply_schema.json; --decode free lets it write freely)"
    return ""


def eval_command(
    test_file: Path = typer.Argument(..., help="Held-out chat JSONL: each example's last assistant message is the "
                                     "reference answer (or preference pairs: the preferred output is)."),
    model: list[str] = typer.Option(..., "--model", "-m", help="Model to evaluate (repeat to compare): a base "
                                    "name, folder or hub id, an adapter folder, NAME+ADAPTER_DIR, run:DIR (every "
                                    "checkpoint of a run; run:DIR@best|final|epoch-N for one), an ft: name of "
                                    "`ftlab serve` (ft:…:ckpt-step-N for a checkpoint), or openai:MODEL@BASE_URL "
                                    "(key from OPENAI_API_KEY)."),
    adapter: Path | None = typer.Option(None, help="LoRA adapter folder for a single --model."),
    metrics: str | None = typer.Option(None, help="Comma-separated: " + ", ".join(
        f"{k} ({v})" for k, v in METRIC_HELP.items()) + ". Default: chosen from the references."),
    output: Path | None = typer.Option(None, help="Write per-example outputs and aggregate metrics to this JSON "
                                       "file (default: FTLAB_HOME/evals/eval-TIME.json)."),
    report: Path | None = typer.Option(None, help="Write an HTML report with PNG plots into this folder."),
    judge: list[str] = typer.Option([], help="LLM-as-judge (repeatable): score (0-10), likert (--scale), pairwise "
                                    "(each model against the baseline, both orders), rubric (yes/no per criterion)."),
    judge_model: list[str] = typer.Option([], help="Judge model (repeat for an ensemble): any --model form; a local "
                                          "judge's scores are probability-weighted over the score tokens (G-Eval)."),
    ensemble: str | None = typer.Option(None, help="How several judges combine: mean or majority (default: mean "
                                        "for score/likert, majority for pairwise/rubric)."),
    scale: str = typer.Option("1-5", help="Likert scale, LOW-HIGH."),
    criteria: str | None = typer.Option(None, help="What score/likert/pairwise judges should judge on."),
    rubric: Path | None = typer.Option(None, help="Rubric file, one 'name: yes/no question' per line (default: "
                                       "context_consistency, accuracy, tone, brevity)."),
    judge_prompts: Path | None = typer.Option(None, help="Folder with edited judge prompts (score.txt, likert.txt, "
                                              "pairwise.txt, rubric.txt; copy them from ftlab/evaluate/prompts/)."),
    human: Path | None = typer.Option(None, help="Human labels (JSONL: line, optional model, one field per criterion "
                                      "or score): per-criterion agreement and Cohen's kappa with the judges."),
    max_new_tokens: int | None = typer.Option(None, help="Default: enough for the longest reference."),
    batch_size: int = typer.Option(8, help="Conversations generated together."),
    baseline: str | None = typer.Option(None, help="Model the others are compared with (default: the first)."),
    labels: Path | None = typer.Option(None, help="LABELS.txt, one allowed label per line: adds the label metrics "
                                       "(valid-label rate, accuracy, macro-F1, per-label precision/recall)."),
    decode: str = typer.Option("auto", help="auto: a fine-tuned model trained on JSON replies is held to their "
                               "shape (the reply_schema.json its checkpoint keeps), anything else decodes freely; "
                               "free: plain generation; constrained: only the --labels can be written (token trie; "
                               "for an openai: endpoint, sent as ftlab serve's `labels` extension); rank: score every "
                               "label by log-likelihood, take the best (local models)."),
    fallback: str | None = typer.Option(None, help="nearest: with --decode free or auto, map an output that is not a "
                                        "label to the closest label by embedding cosine (bundled MiniLM)."),
    json_schema: Path | None = typer.Option(None, "--json-schema", help="SCHEMA.json: generation constrained to "
                                            "JSON valid under this schema (xgrammar)."),
) -> None:
    """Generate an answer for each test conversation (without its last assistant message), compare it with that
    message, print a table and write per-example outputs and aggregate metrics as JSON."""
    from ftlab.data.labels import read_labels
    from ftlab.evaluate.run import EvalOptions, evaluate
    from ftlab.infer.constrained import read_schema
    from ftlab.infer.refs import resolve_refs
    from ftlab.infer.remote import EndpointError

    try:
        specs = resolve_refs(model, adapter)
        options = EvalOptions(metrics=parse_metrics(metrics), max_new_tokens=max_new_tokens, batch_size=batch_size,
                              baseline=baseline, labels=read_labels(labels) if labels else None, decode=decode,
                              fallback=fallback, json_schema=read_schema(json_schema) if json_schema else None,
                              progress=True)
        judge_specs = resolve_refs(judge_model) if judge_model else []
        if judge and not judge_specs:
            raise ValueError("--judge needs a --judge-model")
        result = evaluate(test_file, specs, options,
                          on_model=lambda spec, i, n: console.print(f"[bold]({i}/{n})[/] generating with {spec.name}"
                                                                    + held_note(spec, options)))
        if judge:
            from ftlab.evaluate.judges import judge_evaluation

            console.print(f"judging ({', '.join(judge)}) with {', '.join(s.name for s in judge_specs)}")
            judge_evaluation(result, judge_specs, judge, scale=scale, criteria=criteria, rubric=rubric,
                             ensemble=ensemble, prompts_dir=judge_prompts, human=human)
    except (DataError, ValueError, LookupError, ImportError, EndpointError) as exc:
        print_error(console, str(exc))
        raise typer.Exit(1) from None
    print_table(console, summary_table(result))
    if result.comparisons:
        print_table(console, comparison_table(result))
    for table in judge_tables(result):
        print_table(console, table)
    path = output or home() / "evals" / f"eval-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    result.write(path)
    console.print(f"Per-example outputs and metrics: {path}")
    from ftlab.records.store import record_eval

    console.print(f"Recorded as evaluation {record_eval(result, output_path=path)}")
    if report is not None:
        from ftlab.evaluate.report import write_report

        console.print(f"Report: {write_report(result, report)}")
    for model in result.models:
        if "fallback" in model.summary:
            f = model.summary["fallback"]
            console.print(f"{model.spec.name}: nearest-label fallback replaced {f['invalid_before']} invalid outputs, "
                          f"{f['rescued_correct']} of them with the right label")

