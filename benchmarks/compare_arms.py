"""Should I fine-tune at all? The five arms of `ftlab compare` on two shipped hand-written sets, as one table.

    python benchmarks/compare_arms.py [--datasets recipes_real,bug_tickets] [--out compare-arms/]
        [--model smollm2-135m-instruct] [--epochs 5] [--lr-multiplier 2.5] [--run recipes_real=RUN_DIR]
        [--hosted openai:gpt-4o-mini@https://api.openai.com/v1] [--sizes 10,25,50,100] [--limit N]

For each set: train LoRA on its train split (the demo's settings; with its validation split when it has one, and
the arm uses the best checkpoint), then compare base, few-shot:k=5, rag:k=3, ft:run:RUN@best|final and
rag+ft:run:RUN@… on its test split. recipes_real has no documents, so its RAG arms retrieve from the training set
(rag:source=train, the nearest recipes with their answers); bug_tickets retrieves from its 40 tickets in docs/.
bug_tickets is also scored per the README of the set: the share of `facts.json`'s must_contain values an answer
states, separately for the questions whose facts a training answer already states and for those answerable only
from the tickets. `--hosted` adds the hosted model and the hosted model with few-shot:k=5 (key from OPENAI_API_KEY).

Prints a Markdown table (the README's "Should I fine-tune at all?" is filled from it) and writes each comparison's
JSON and report under --out. Training runs for minutes: run it on a quiet machine. `--limit N` takes the first N
test examples (a quick check that everything runs, e.g. with a tiny --model and --epochs 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
from math import nan
from pathlib import Path

from ftlab.config import BUNDLED_MODEL, PLAIN_LORA, TrainConfig
from ftlab.data.schema import read_examples, write_examples
from ftlab.evaluate.compare_report import write_compare_report
from ftlab.evaluate.versus import CompareOptions, ComparisonResult, plan_comparison, run_comparison
from ftlab.infer.refs import resolve_ref

DATA = Path(__file__).resolve().parent / "data"


def train_run(name: str, folder: Path, args: argparse.Namespace) -> tuple[Path, str]:
    """A LoRA run on the set's train split (and its validation split, if any): (run folder, checkpoint)."""
    from ftlab.train.recipe import train

    validation = folder / "val.jsonl"
    config = TrainConfig(model=args.model, n_epochs=args.epochs, batch_size=8,
                         learning_rate_multiplier=args.lr_multiplier, **PLAIN_LORA)  # fmt: skip
    output = args.out / name / "run"
    print(f"[{name}] training {config.adapter} on {folder / 'train.jsonl'} ({args.epochs} epochs) → {output}")
    result = train(config, folder / "train.jsonl", validation if validation.exists() else None, output)
    return result.output_dir, "best" if validation.exists() else "final"


def facts_found(result: ComparisonResult, facts: list[dict]) -> dict[str, dict[str, float]]:
    """Per arm: the mean share of must_contain values in its answers, for all questions and each half."""
    halves = {"all": lambda f: True, "in train answers": lambda f: f["keys_in_train_answers"],
              "docs only": lambda f: not f["keys_in_train_answers"]}  # fmt: skip
    found = {}
    for arm in result.arms:
        shares = {e["line"]: sum(value in e["output"] for value in f["must_contain"]) / len(f["must_contain"])
                  for e, f in zip(arm.model.examples, facts, strict=False)}  # fmt: skip
        found[arm.arm.name] = {
            half: statistics.fmean([shares[f["line"]] for f in facts if keep(f) and f["line"] in shares] or [nan])
            for half, keep in halves.items()
        }
    return found


def compare_set(name: str, args: argparse.Namespace) -> list[str]:
    folder = DATA / name
    test = folder / "test.jsonl"
    if args.limit:
        test = args.out / name / "test.jsonl"
        test.parent.mkdir(parents=True, exist_ok=True)
        write_examples(read_examples(folder / "test.jsonl")[: args.limit], test)
    if name in args.run:
        run_dir = Path(args.run[name])
        which = "best" if json.loads((run_dir / "config.json").read_text()).get("best_checkpoint") else "final"
    else:
        run_dir, which = train_run(name, folder, args)
    docs = folder / "docs" if (folder / "docs").is_dir() else None
    rag = "rag:k=3" if docs else "rag:k=3,source=train"
    ft = f"ft:run:{run_dir}@{which}"
    arms = ["base", "few-shot:k=5", rag, ft, f"{rag}+{ft}"]
    if args.hosted:
        arms += [args.hosted, f"{args.hosted}+few-shot:k=5"]
    metrics = ["exact", "chrf"] if docs else None  # free-text answers; the recipes' JSON lists get set-F1
    options = CompareOptions(metrics=metrics, base_model=args.model, sizes=args.sizes, seed=0)
    plan = plan_comparison(test, arms, train_file=folder / "train.jsonl", docs_dir=docs, options=options)
    fit = None
    if args.sizes:
        def fit(subset: Path, out: Path):
            from ftlab.train.recipe import train

            config = TrainConfig(model=args.model, n_epochs=args.epochs, batch_size=8,
                                 learning_rate_multiplier=args.lr_multiplier, **PLAIN_LORA)  # fmt: skip
            return resolve_ref(f"run:{train(config, subset, None, out, progress=False).output_dir}@final")
    print(f"[{name}] comparing {', '.join(arms)}")
    result = run_comparison(plan, fit=fit, curve_folder=args.out / name / "curve",
                            on_arm=lambda arm, i, n: print(f"[{name}] ({i}/{n}) {arm}"))  # fmt: skip
    result.write(args.out / name / "compare.json")
    write_compare_report(result, args.out / name / "report")
    found = facts_found(result, json.loads((folder / "facts.json").read_text())) if name == "bug_tickets" else {}
    rows = []
    for arm in result.arms:
        mean, low, high = arm.interval or (float("nan"),) * 3
        cost = arm.cost.per_1000()
        price = f"${cost['usd']:.3f}" if "usd" in cost else f"{cost['machine_seconds']:.0f} s"
        facts = found.get(arm.arm.name)
        rows.append(f"| {name} | {arm.arm.name.replace(str(run_dir), 'RUN')} | {result.headline} {mean:.3f} "
                    f"[{low:.3f}, {high:.3f}] | "
                    f"{arm.model.summary['invented_rate']:.2f} | {arm.usage.prompt_tokens:.0f} | "
                    f"{arm.usage.seconds:.2f} | {price} | "
                    + (f"{facts['all']:.2f} / {facts['in train answers']:.2f} / {facts['docs only']:.2f} |" if facts
                       else "– |"))  # fmt: skip
    for row in result.break_even:
        rows.append(f"|  | ↳ {row['arm'].replace(str(run_dir), 'RUN')} vs {row['against']}: break-even "
                    f"{'never' if row['requests'] is None else format(row['requests'], ',.0f') + ' requests'} "
                    f"({row['currency'].replace('_', ' ')}) | | | | | | |")
    if result.curve:
        points = ", ".join(f"{p['n']}: {p['mean']:.2f}" for p in result.curve["points"] if p["mean"] is not None)
        rows.append(f"|  | ↳ learning curve ({result.curve['metric']}): {points} | | | | | | |")
    print(f"[{name}] report: {args.out / name / 'report' / 'index.html'}; headline metric {result.headline}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="recipes_real,bug_tickets")
    parser.add_argument("--out", type=Path, default=Path("compare-arms"))
    parser.add_argument("--model", default=BUNDLED_MODEL)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr-multiplier", type=float, default=2.5)
    parser.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR: use this run instead of training")
    parser.add_argument("--hosted", help="openai:MODEL@URL: add the hosted model, plain and with few-shot:k=5")
    parser.add_argument("--sizes", type=lambda s: [int(n) for n in s.split(",")], default=None)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    args.run = dict(item.split("=", 1) for item in args.run)
    rows = ["| set | arm | headline [95% interval] | invented | tokens in | s / request | cost / 1k requests | "
            "facts found: all / in train answers / docs only |", "|---|---|---|---|---|---|---|---|"]
    for name in args.datasets.split(","):
        rows += compare_set(name, args)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
