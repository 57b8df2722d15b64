"""Should I fine-tune at all? Every arm (base, few-shot, RAG, fine-tuned, RAG + fine-tuned, hosted) answers every
example of one test set; each is scored, checked for invented facts, priced, and compared with a baseline arm
by the paired bootstrap (`ftlab compare`).

Two steps, so that bad input fails before any compute: `plan_comparison` reads and checks everything (the test
set's reference answers, the arms' spellings, what each arm needs, the models' names, the learning curve's
sizes) and `run_comparison` embeds, generates, scores and prices.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ftlab.config import BUNDLED_MODEL
from ftlab.data.estimate import openai_cost
from ftlab.data.prices import PriceTable, read_prices
from ftlab.data.schema import ChatExample, read_examples
from ftlab.embed import DEFAULT_EMBEDDER
from ftlab.evaluate.arms import Arm, ArmError, Prompt, Prompter, check_arms, parse_arms, read_test_set
from ftlab.evaluate.compare import mean_interval
from ftlab.evaluate.costs import Cost, Usage, break_even_table, request_cost, run_training_seconds
from ftlab.evaluate.curve import Fit, check_sizes, learning_curve
from ftlab.evaluate.grounded import invented
from ftlab.evaluate.metrics import auto_metrics
from ftlab.evaluate.run import EvalOptions, EvalResult, ModelResult, evaluate_model, pairwise_comparisons
from ftlab.infer.backend import open_backend
from ftlab.infer.refs import ModelRef, resolve_ref
from ftlab.retrieve.passages import Passage, document_passages


@dataclass
class CompareOptions:
    """How to run the arms and what to price (shared by the CLI and Python callers)."""

    metrics: list[str] | None = None  # None: chosen from the references (see metrics.auto_metrics)
    baseline: str | None = None  # the arm the others are compared with (default: the first)
    base_model: str | None = None  # the model of base/few-shot/rag arms (default: a fine-tuned arm's base)
    embedder: str = DEFAULT_EMBEDDER
    max_new_tokens: int | None = None
    batch_size: int = 8
    n_resamples: int = 10_000
    prices: str | Path | None = None  # a price table file (default: the shipped one)
    usd_per_hour: float | None = None  # what this machine costs, to price local arms in dollars
    volume: int | None = None  # print the total for this many requests
    sizes: list[int] | None = None  # learning curve: training-set sizes
    seed: int = 0  # the learning curve's subsets


@dataclass
class Plan:
    """Everything checked and resolved; nothing embedded, loaded or generated yet."""

    test_file: Path
    tests: list[ChatExample]
    train_file: Path | None
    train: list[ChatExample] | None
    docs: list[Passage] | None
    arms: list[Arm]
    base: ModelRef | None  # the model of the arms that name none (None: every arm names its model)
    refs: dict[str, ModelRef]  # arm name → the model it runs
    metrics: list[str]
    prices: PriceTable
    options: CompareOptions


def default_arms(train_file: Path | None, docs_dir: Path | None) -> list[str]:
    """base, and few-shot:k=5 with a training set, rag:k=3 with documents."""
    return ["base"] + (["few-shot:k=5"] if train_file else []) + (["rag:k=3"] if docs_dir else [])


def _base_ref(name: str | None, fine_tuned: Sequence[ModelRef]) -> ModelRef:
    """The model of the arms that name none: `name`, else the base a local fine-tuned arm was trained from, else
    the bundled model."""
    if name:
        return resolve_ref(name)
    local = next((ref for ref in fine_tuned if ref.local and ref.adapter is not None), None)
    if local is not None:
        return ModelRef(local.model, local.model, revision=local.revision)
    return resolve_ref(BUNDLED_MODEL)


def plan_comparison(test_file: str | Path, arm_texts: Sequence[str], *, train_file: str | Path | None = None,
                    docs_dir: str | Path | None = None, options: CompareOptions | None = None) -> Plan:
    """Read and check everything a comparison needs, in the order a user fixes it; raises DataError, ArmError,
    ValueError or ModelNotFound naming the file, line, arm or flag."""
    options = options or CompareOptions()
    test_file, train_path = Path(test_file), Path(train_file) if train_file else None
    tests = read_test_set(test_file)
    arms = parse_arms(arm_texts or default_arms(train_path, Path(docs_dir) if docs_dir else None))
    train = read_examples(train_path) if train_path else None
    docs = document_passages(docs_dir) if docs_dir else None
    check_arms(arms, tests, train, docs, test_file)
    if options.sizes:
        check_sizes(options.sizes, len(train) if train is not None else None)
    if options.baseline and options.baseline not in [arm.name for arm in arms]:
        raise ArmError(f"--baseline '{options.baseline}' is not one of the arms ({', '.join(a.name for a in arms)})")
    if options.volume is not None and options.volume < 1:
        raise ValueError("--volume is a number of requests (≥ 1)")
    refs = {arm.name: resolve_ref(arm.model) for arm in arms if arm.model is not None}
    base = None
    if len(refs) < len(arms) or options.base_model:  # an arm runs the base model, or the user named it
        base = _base_ref(options.base_model, [refs[a.name] for a in arms if a.fine_tuned])
        refs = {arm.name: refs.get(arm.name, base) for arm in arms}
    metrics = options.metrics or auto_metrics([t.reference() for t in tests])
    return Plan(test_file, tests, train_path, train, docs, arms, base, refs, list(metrics),
                read_prices(options.prices), options)


# --- running ----------------------------------------------------------------------------------------------------


@dataclass
class ArmResult:
    arm: Arm
    model: ModelResult
    usage: Usage
    cost: Cost
    interval: tuple[float, float, float] | None  # the headline metric's mean and bootstrap 95% interval


@dataclass
class ComparisonResult:
    evaluation: EvalResult  # every arm as a model of one evaluation: the tables, judges and records reuse it
    arms: list[ArmResult]
    prices: PriceTable
    options: CompareOptions
    break_even: list[dict[str, Any]] = field(default_factory=list)
    curve: dict[str, Any] | None = None

    @property
    def headline(self) -> str:
        return self.evaluation.headline

    def arm_dict(self, result: ArmResult, with_examples: bool = True) -> dict[str, Any]:
        usage, interval = result.usage, result.interval
        data = {
            "name": result.arm.name, "arm": result.arm.describe(), "model": result.model.spec.describe(),
            "metrics": result.model.summary,
            "headline": {"metric": self.headline, "mean": interval[0] if interval else None,
                         "ci_low": interval[1] if interval else None, "ci_high": interval[2] if interval else None},
            "invented_rate": result.model.summary.get("invented_rate"),
            "tokens_per_request": {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens,
                                   "total": usage.prompt_tokens + usage.completion_tokens},
            "seconds_per_request": usage.seconds, "tokens_per_second": usage.tokens_per_second,
            "cost_per_1000_requests": result.cost.per_1000(), "cost": result.cost.to_dict(self.options.volume),
        }  # fmt: skip
        if with_examples:
            data["examples"] = result.model.examples
        return data

    def to_dict(self, with_examples: bool = True) -> dict[str, Any]:
        evaluation = self.evaluation
        return {
            "test_file": evaluation.test_file, "created_at": evaluation.created_at,
            "n_examples": len(evaluation.models[0].examples), "metrics": evaluation.metrics, "headline": self.headline,
            "baseline": self.options.baseline or self.arms[0].arm.name, "prices": self.prices.describe(),
            "usd_per_hour": self.options.usd_per_hour, "volume": self.options.volume,
            "arms": [self.arm_dict(a, with_examples) for a in self.arms], "break_even": self.break_even,
            "learning_curve": self.curve, "comparisons": evaluation.comparisons, "judgements": evaluation.judgements,
        }  # fmt: skip

    def details(self) -> dict[str, Any]:
        """What the records keep beside the evaluation's own columns (no per-example outputs, no comparisons)."""
        data = self.to_dict(with_examples=False)
        for key in ("comparisons", "judgements", "test_file", "created_at", "metrics", "headline"):
            data.pop(key)
        return data

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        return path


def _score_groundedness(result: ModelResult, tests: Sequence[ChatExample], prompts: Sequence[Prompt],
                        train: Sequence[ChatExample]) -> None:  # fmt: skip
    """Per example: what the prompt carried, the answer's invented claims and `grounded` (1: none invented)."""
    for record, test, prompt in zip(result.examples, tests, prompts, strict=True):
        sources = [m.text for m in test.messages]  # the question and the reference answer
        sources += [hit.passage.text for hit in prompt.context]
        missing = invented(record["output"], sources)
        record["context"] = [hit.passage.source for hit in prompt.context]
        record["shots"] = [train[i].line for i in prompt.shots]
        record["invented"] = missing
        record["scores"]["grounded"] = float(not missing)
    grounded = [r["scores"]["grounded"] for r in result.examples]
    result.summary["grounded"] = statistics.fmean(grounded)
    result.summary["invented_rate"] = 1 - result.summary["grounded"]
    result.summary["invented_per_answer"] = statistics.fmean(len(r["invented"]) for r in result.examples)


def _usage(result: ModelResult) -> Usage:
    return Usage(len(result.examples), result.mean_per_example("prompt_tokens"),
                 result.mean_per_example("completion_tokens"), result.seconds / max(1, len(result.examples)))


def _training_cost(arm: Arm, ref: ModelRef, plan: Plan) -> tuple[dict[str, float], str | None]:
    """A fine-tuned arm's one-off training cost: a local run's measured seconds (dollars at --usd-per-hour), or
    OpenAI's training price for the training file's billed tokens."""
    if not arm.fine_tuned:
        return {}, None
    if not ref.local:
        entry = plan.prices.find(ref.model)
        if entry is None or plan.train_file is None:
            return {}, "training cost unknown: " + ("no price" if entry is None else "give --train to price it")
        from ftlab.data.tokens import token_counter

        tokens = [count.total for count in token_counter(entry.name).count(plan.train, detail=False)]
        return {"usd": openai_cost(entry.name, tokens, "auto", plan.prices).usd}, None
    run_dir = ref.run_dir or (ref.adapter.parent if ref.adapter else None)
    seconds = run_training_seconds(run_dir) if run_dir else None
    if seconds is None:
        return {}, "training cost unknown: the model's run folder records no training time"
    usd = {"usd": seconds * plan.options.usd_per_hour / 3600} if plan.options.usd_per_hour is not None else {}
    return {"machine_seconds": seconds, **usd}, None


def run_comparison(plan: Plan, *, on_arm: Callable[[str, int, int], None] | None = None, fit: Fit | None = None,
                   curve_folder: Path | None = None, on_size: Callable[[int], None] | None = None) -> ComparisonResult:
    """Build every arm's prompts, generate with each model once loaded, score, price and compare; then, with
    `fit` and sizes, the learning curve (trained by `fit` under `curve_folder`)."""
    options = plan.options
    # Every arm decodes freely: a fine-tuned arm's learned reply schema (`ftlab eval`'s default) would hold it
    # to JSON while the prompted arms wrote freely, and the arms would differ by more than prompts and weights.
    eval_options = EvalOptions(metrics=plan.metrics, decode="free", max_new_tokens=options.max_new_tokens,
                               batch_size=options.batch_size, baseline=options.baseline,
                               n_resamples=options.n_resamples)  # fmt: skip
    prompter = Prompter(plan.train, plan.docs, options.embedder)
    prompts = {arm.name: prompter.prompts(arm, plan.tests) for arm in plan.arms}
    results: dict[str, ModelResult] = {}
    groups: dict[tuple, list[Arm]] = {}
    for arm in plan.arms:  # arms on one model share it: loaded once
        ref = plan.refs[arm.name]
        groups.setdefault((ref.model, str(ref.adapter), ref.base_url, ref.revision), []).append(arm)
    done = 0
    for arms in groups.values():
        backend = open_backend(plan.refs[arms[0].name], batch_size=options.batch_size)
        for arm in arms:
            done += 1
            if on_arm is not None:
                on_arm(arm.name, done, len(plan.arms))
            spec = replace(plan.refs[arm.name], name=arm.name)
            conversations = [prompt.messages for prompt in prompts[arm.name]]
            result = evaluate_model(spec, plan.tests, plan.metrics, eval_options, backend, conversations)
            _score_groundedness(result, plan.tests, prompts[arm.name], plan.train or [])
            results[arm.name] = result
        del backend
    models = [results[arm.name] for arm in plan.arms]
    evaluation = EvalResult(test_file=str(plan.test_file), metrics=plan.metrics, options=eval_options, models=models)
    evaluation.comparisons = pairwise_comparisons(models, options.baseline, options.n_resamples)
    arm_results, costs = [], {}
    for arm, model in zip(plan.arms, models, strict=True):
        ref, usage = plan.refs[arm.name], _usage(model)
        cost = request_cost(usage, hosted_model=None if ref.local else ref.model, fine_tuned=arm.fine_tuned,
                            prices=plan.prices, usd_per_hour=options.usd_per_hour)  # fmt: skip
        cost.training, note = _training_cost(arm, ref, plan)
        cost.note = cost.note or note
        costs[arm.name] = cost
        interval = mean_interval(model.scores(evaluation.headline), n_resamples=options.n_resamples)
        arm_results.append(ArmResult(arm, model, usage, cost, interval))
    fine_tuned = [a.name for a in plan.arms if a.fine_tuned]
    prompted = [a.name for a in plan.arms if not a.fine_tuned and (a.few_shot or a.rag)]
    result = ComparisonResult(evaluation, arm_results, plan.prices, options,
                              break_even_table(costs, fine_tuned, prompted))
    if options.sizes and fit is not None:
        base = next((r for r in arm_results if r.arm.model is None and not r.arm.few_shot and not r.arm.rag), None)
        folder = curve_folder or plan.test_file.parent / "curve"
        result.curve = learning_curve(
            plan.train or [], plan.tests, options.sizes, fit=fit, folder=folder, metric=evaluation.headline,
            metrics=plan.metrics, options=eval_options, seed=options.seed,
            start=base.model.scores(evaluation.headline) if base else None, on_size=on_size,
        )  # fmt: skip
    return result
