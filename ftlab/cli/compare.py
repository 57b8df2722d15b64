"""`ftlab compare`: should I fine-tune at all? Base, few-shot, RAG, fine-tuned and hosted arms on one test set,
with quality, invented facts, tokens and cost per request, break-even volume and a learning curve."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ftlab.cli.eval import comparison_table, judge_tables
from ftlab.cli.output import print_error, print_table
from ftlab.config import home
from ftlab.data.schema import DataError
from ftlab.evaluate.metrics import METRIC_HELP, parse_metrics

console = Console()
ARM_HELP = ("An arm (repeat): base | few-shot[:k=5,select=random|nearest,seed=0] | rag[:k=3,source=docs|train] | "
            "ft:MODEL (a fine-tuned model in any --model spelling of `ftlab eval`: ft:run:RUN@best, "
            "ft:BASE+ADAPTER_DIR, an ft: model name) | openai:MODEL@URL | a model joined to few-shot/rag by '+': "
            "rag+ft:run:RUN@best, openai:gpt-4o-mini@URL+few-shot:k=5. Default: base, few-shot:k=5 with --train, "
            "rag:k=3 with --docs.")  # fmt: skip


def _money(costs: dict[str, float]) -> str:
    parts = []
    if "usd" in costs:
        parts.append(f"${costs['usd']:,.4f}" if costs["usd"] < 1 else f"${costs['usd']:,.2f}")
    if "machine_seconds" in costs:
        parts.append(f"{costs['machine_seconds']:,.0f} s")
    return " · ".join(parts) or "—"


def arms_table(result) -> Table:
    headline, volume = result.headline, result.options.volume
    table = Table(title=f"{Path(result.evaluation.test_file).name} · {len(result.evaluation.models[0].examples)} "
                  f"examples · prices {result.prices.as_of}")  # fmt: skip
    for title in ("arm", f"{headline} (95% interval)", "invented", "tokens in", "tokens out", "cost / 1k requests",
                  "s / request", *([f"total for {volume:,}"] if volume else [])):  # fmt: skip
        table.add_column(title, justify="left" if title == "arm" else "right", overflow="fold")
    for arm in result.arms:
        mean = f"{arm.interval[0]:.3f} [{arm.interval[1]:.3f}, {arm.interval[2]:.3f}]" if arm.interval else "—"
        cells = [arm.arm.name, mean, f"{arm.model.summary['invented_rate']:.2f}", f"{arm.usage.prompt_tokens:.0f}",
                 f"{arm.usage.completion_tokens:.0f}", _money(arm.cost.per_1000()), f"{arm.usage.seconds:.2f}"]
        if volume:
            cells.append(_money(arm.cost.total(volume)))
        table.add_row(*cells)
    return table


def break_even_lines(result) -> list[str]:
    lines = []
    for row in result.break_even:
        unit = {"usd": "dollars", "machine_seconds": "machine seconds"}[row["currency"]]
        training = _money({row["currency"]: row["training"]})
        if row["requests"] is None:
            lines.append(f"{row['arm']} never repays its training ({training}) against {row['against']}: its "
                         f"requests cost as much or more (in {unit})")  # fmt: skip
        else:
            lines.append(f"{row['arm']} repays its training ({training}) against {row['against']} after "
                         f"{row['requests']:,.0f} requests (in {unit})")  # fmt: skip
    return lines


def curve_table(curve: dict) -> Table:
    table = Table(title=f"learning curve: {curve['metric']} by training examples (nested subsets, seed "
                  f"{curve['seed']})")  # fmt: skip
    for title in ("examples", curve["metric"], "95% interval", "training s"):
        table.add_column(title, justify="right")
    for p in curve["points"]:
        table.add_row(str(p["n"]), "—" if p["mean"] is None else f"{p['mean']:.3f}",
                      "—" if p["ci_low"] is None else f"[{p['ci_low']:.3f}, {p['ci_high']:.3f}]",
                      "—" if p["train_seconds"] is None else f"{p['train_seconds']:.0f}")  # fmt: skip
    return table


def compare_command(
    test_file: Annotated[Path, typer.Argument(help="Held-out chat JSONL: each example ends with its reference "
                                              "answer (an assistant message).")],  # fmt: skip
    arm: Annotated[list[str], typer.Option("--arm", "-a", metavar="ARM", help=ARM_HELP)] = [],  # noqa: B006
    train_file: Annotated[Path | None, typer.Option("--train", help="Training set: few-shot examples, "
                                                    "rag:source=train passages, learning-curve subsets.")] = None,
    docs: Annotated[Path | None, typer.Option(help="Documents for rag arms (Markdown/text/HTML, chunked along "
                                              "their headings).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="The model of arms that name none (base, "
                                              "few-shot, rag). Default: the base of a fine-tuned arm, else the "
                                              "bundled model.")] = None,
    metrics: Annotated[str | None, typer.Option(help="Comma-separated: " + ", ".join(
        f"{k} ({v})" for k, v in METRIC_HELP.items()) + ". Default: chosen from the references.")] = None,
    baseline: Annotated[str | None, typer.Option(help="The arm the others are compared with (default: the "
                                                 "first).")] = None,
    judge: Annotated[list[str], typer.Option(help="LLM-as-judge as in `ftlab eval` (score, likert, pairwise, "
                                             "rubric); needs --judge-model.")] = [],  # noqa: B006
    judge_model: Annotated[list[str], typer.Option(help="Judge model (repeat for an ensemble).")] = [],  # noqa: B006
    volume: Annotated[int | None, typer.Option(help="Print each arm's total cost for this many requests "
                                               "(training included).")] = None,
    sizes: Annotated[str | None, typer.Option(help="Learning curve: train on nested seeded subsets of these "
                                              "sizes, e.g. 10,25,50,100, and evaluate each.")] = None,
    recipe: Annotated[Path | None, typer.Option(help="Training settings for the learning curve (a --config file "
                                                "of `ftlab train`). Default: the first fine-tuned arm's run, else "
                                                "ftlab train's defaults.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the learning curve's subsets.")] = 0,
    embedder: Annotated[str, typer.Option(help="Sentence-transformers model for retrieval and nearest few-shot: "
                                          "minilm (bundled), a folder or a hub id.")] = "minilm",
    prices: Annotated[Path | None, typer.Option(help="A price table (JSON, the shape of ftlab/data/prices.json). "
                                                "Default: the shipped, dated one.")] = None,
    usd_per_hour: Annotated[float | None, typer.Option(help="What this machine costs per hour: prices local arms "
                                                       "and local training in dollars too.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Default: enough for the longest reference.")] = None,
    batch_size: Annotated[int, typer.Option(help="Conversations generated together.")] = 8,
    output: Annotated[Path | None, typer.Option(help="Write the comparison as JSON (default: "
                                                "FTLAB_HOME/compare/compare-TIME.json).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report with plots into this folder.")] = None,
) -> None:
    """Compare fine-tuning with few-shot prompting, retrieval and a hosted model on your test set: quality with
    95% intervals, invented identifiers, tokens and cost per request, and when fine-tuning pays for itself."""
    from ftlab.evaluate.curve import parse_sizes
    from ftlab.evaluate.versus import CompareOptions, plan_comparison, run_comparison
    from ftlab.infer.refs import resolve_refs
    from ftlab.infer.remote import EndpointError

    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    try:
        options = CompareOptions(metrics=parse_metrics(metrics), baseline=baseline, base_model=model,
                                 embedder=embedder, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                 prices=prices, usd_per_hour=usd_per_hour, volume=volume, sizes=parse_sizes(sizes),
                                 seed=seed)  # fmt: skip
        plan = plan_comparison(test_file, arm, train_file=train_file, docs_dir=docs, options=options)
        judge_specs = resolve_refs(judge_model) if judge_model else []
        if judge and not judge_specs:
            raise ValueError("--judge needs a --judge-model")
        fit = _curve_trainer(plan, recipe) if options.sizes else None
        console.print(f"comparing {len(plan.arms)} arms on {len(plan.tests)} examples: "
                      f"{', '.join(a.name for a in plan.arms)}", highlight=False)  # fmt: skip
        result = run_comparison(
            plan, fit=fit, curve_folder=home() / "compare" / f"curve-{stamp}",
            on_arm=lambda name, i, n: console.print(f"[bold]({i}/{n})[/] {name}", highlight=False),
            on_size=lambda n: console.print(f"learning curve: training on {n} examples", highlight=False),
        )  # fmt: skip
        if judge:
            from ftlab.evaluate.judges import judge_evaluation

            judge_evaluation(result.evaluation, judge_specs, judge)
    except (DataError, ValueError, LookupError, ImportError, EndpointError) as exc:
        print_error(console, str(exc))
        raise typer.Exit(1) from None
    print_table(console, arms_table(result))
    if result.evaluation.comparisons:
        print_table(console, comparison_table(result.evaluation))
    for line in break_even_lines(result):
        console.print(line, highlight=False)
    for arm_result in result.arms:
        if arm_result.cost.note:
            console.print(f"{arm_result.arm.name}: {arm_result.cost.note}", highlight=False)
    if result.curve:
        print_table(console, curve_table(result.curve))
    for table in judge_tables(result.evaluation):
        print_table(console, table)
    path = result.write(output or home() / "compare" / f"compare-{stamp}.json")
    console.print(f"Comparison (per arm: metrics, tokens and cost per request, outputs): {path}")
    console.print(f"Prices as of {result.prices.as_of}: {result.prices.source}", highlight=False)
    from ftlab.records.store import record_eval

    recorded = record_eval(result.evaluation, output_path=path, kind="compare", details=result.details())
    console.print(f"Recorded as evaluation {recorded}")
    if report is not None:
        from ftlab.evaluate.compare_report import write_compare_report

        console.print(f"Report: {write_compare_report(result, report)}")


def _curve_trainer(plan, recipe: Path | None):
    """`fit(subset, folder)` for the learning curve: the recipe (a settings file, else the first fine-tuned arm's
    recorded settings, else ftlab train's defaults on the base model) trained on the subset."""
    import json

    from ftlab.cli.settings import build_config
    from ftlab.config import TrainConfig
    from ftlab.infer.refs import resolve_ref

    runs = [plan.refs[a.name].run_dir for a in plan.arms if a.fine_tuned and plan.refs[a.name].run_dir]
    if recipe is not None:
        config = build_config({}, recipe)
    elif runs:
        config = TrainConfig.model_validate(json.loads((runs[0] / "config.json").read_text())["config"])
    elif plan.base is not None and plan.base.local:
        config = TrainConfig(model=plan.base.model)
    else:
        raise ValueError("the learning curve trains here: give a local --model, or the settings with --recipe")

    def fit(subset: Path, folder: Path):
        from ftlab.train.recipe import train

        result = train(config, subset, None, folder, progress=False)
        return resolve_ref(f"run:{result.output_dir}@final")

    return fit
