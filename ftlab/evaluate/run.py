"""Evaluate one or more models on a held-out chat JSONL file.

For each example the model continues the conversation without its last assistant message; the reply is
compared with that message. Every model sees the same examples, so any two can be compared pairwise.
Per-example outputs and scores are kept, next to the aggregate metrics, in one JSON-serialisable result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ftlab.data.schema import ChatExample, message_dicts, read_test_examples
from ftlab.data.scoring import score_example
from ftlab.evaluate.compare import compare_scores
from ftlab.evaluate.metrics import aggregate, auto_metrics
from ftlab.infer.backend import ChatBackend, default_max_new_tokens, open_backend
from ftlab.infer.refs import ModelRef

DECODE_MODES = ("auto", "free", "constrained", "rank")
# Per-example scores, in the order a summary table shows them; the first present one is the headline metric.
HEADLINE_ORDER = ("tool_args", "tool_name", "set_f1", "field_acc", "label_acc", "contains", "chrf", "json_valid",
                  "valid_label", "exact")


@dataclass
class EvalOptions:
    """How to generate and what to measure (shared by the CLI, the service and Python callers)."""

    metrics: list[str] | None = None  # None: chosen from the references (see metrics.auto_metrics)
    labels: list[str] | None = None
    decode: str = "auto"  # a fine-tuned model's learned reply schema (see `reply_schema`), else free
    fallback: str | None = None  # "nearest": map invalid free outputs to the closest label
    json_schema: dict[str, Any] | None = None
    max_new_tokens: int | None = None  # None: enough for the longest reference
    batch_size: int = 8
    baseline: str | None = None  # the model the others are compared with (default: the first)
    n_resamples: int = 10_000
    progress: bool = False  # a progress bar of the replies generated (what the CLI shows)

    def check(self) -> None:
        if self.decode not in DECODE_MODES:
            raise ValueError(f"--decode must be one of {', '.join(DECODE_MODES)}, not '{self.decode}'")
        if self.decode in ("constrained", "rank") and not self.labels:
            raise ValueError(f"--decode {self.decode} needs the label set: --labels LABELS.txt")
        if self.fallback not in (None, "nearest"):
            raise ValueError(f"--fallback must be 'nearest', not '{self.fallback}'")
        if self.fallback and (self.decode not in ("auto", "free") or not self.labels):
            raise ValueError("--fallback nearest goes with --decode free (or auto) and --labels LABELS.txt")
        if self.json_schema is not None and self.labels:
            raise ValueError("--json-schema and --labels constrain the output in two different ways: pick one")


@dataclass
class ModelResult:
    spec: ModelRef
    summary: dict[str, Any]
    examples: list[dict[str, Any]]
    seconds: float  # generating and decoding (loading the model not included)
    load_seconds: float = 0.0

    def scores(self, metric: str) -> list[float | None]:
        return [example["scores"].get(metric) for example in self.examples]

    def mean_per_example(self, key: str) -> float:
        """The mean of a per-example count (`prompt_tokens`, `completion_tokens`) over the examples; 0 for none."""
        return sum(example[key] for example in self.examples) / max(1, len(self.examples))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.spec.name, "spec": self.spec.describe(), "summary": self.summary,
                "load_seconds": self.load_seconds, "seconds": self.seconds,
                "seconds_per_example": self.seconds / max(1, len(self.examples)),
                "examples": self.examples}


@dataclass
class EvalResult:
    test_file: str
    metrics: list[str]
    options: EvalOptions
    models: list[ModelResult]
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    judgements: list[dict[str, Any]] = field(default_factory=list)
    human_agreement: dict[str, Any] | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def model(self, name: str) -> ModelResult:
        for result in self.models:
            if result.spec.name == name:
                return result
        raise KeyError(f"no model named '{name}' in this evaluation")

    @property
    def headline(self) -> str:
        keys = self.models[0].examples[0]["scores"].keys() if self.models and self.models[0].examples else []
        return next((m for m in HEADLINE_ORDER if m in keys), "exact")

    def to_dict(self) -> dict[str, Any]:
        options = {k: v for k, v in vars(self.options).items() if k not in ("labels", "progress")}
        options["n_labels"] = len(self.options.labels) if self.options.labels else None
        return {"test_file": self.test_file, "created_at": self.created_at, "metrics": self.metrics,
                "headline": self.headline, "options": options, "comparisons": self.comparisons,
                "judgements": self.judgements, "human_agreement": self.human_agreement,
                "models": [m.to_dict() for m in self.models]}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        return path


def reply_schema(spec: ModelRef, options: EvalOptions) -> dict[str, Any] | None:
    """The JSON schema `spec`'s replies are held to: --json-schema's; under --decode auto, the one a fine-tuned
    model's training replies share (`ftlab.data.reply_format`); None for plain decoding."""
    if options.json_schema is not None:
        return options.json_schema
    return spec.reply_schema if options.decode == "auto" and not options.labels else None


def generate_outputs(model: ChatBackend, conversations: list[list[dict[str, Any]]], references: Sequence[str],
                     options: EvalOptions, tools: list[dict[str, Any]] | None = None,
                     json_schema: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """What `model` answers to each conversation under the chosen decoding: a dict per example with `output`
    (and `raw_output` when the nearest-label fallback replaced it), token counts and finish reason. `tools`: the
    functions every conversation may call (their calls are part of the output's text); `json_schema`: what the
    replies are held to (`reply_schema`)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(conversations), desc="replies", unit="reply", dynamic_ncols=True, leave=False,
               disable=not options.progress)  # fmt: skip
    if options.decode == "rank":
        if not model.local:
            raise ValueError("--decode rank needs a local model (it reads the model's logits); with an endpoint "
                             "use --decode free --fallback nearest, or --decode constrained against an ftlab "
                             "server")  # fmt: skip
        rows = []
        for messages in conversations:
            scores = model.rank_labels(messages, options.labels)
            best = int(scores.argmax())
            rows.append({"output": options.labels[best], "prompt_tokens": len(model.prompt_ids(messages)),
                         "completion_tokens": 0, "finish_reason": "rank", "label_logprob": float(scores[best])})
            bar.update()
        bar.close()
        return rows
    completions = model.generate(
        conversations,
        max_new_tokens=options.max_new_tokens or default_max_new_tokens(model, references),
        labels=options.labels if options.decode == "constrained" else None,
        json_schema=json_schema,
        tools=tools,
        on_done=bar.update,
    )
    bar.close()
    rows = [{"output": c.text, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
             "finish_reason": c.finish_reason} for c in completions]
    if options.fallback == "nearest":
        from ftlab.infer.constrained import nearest_labels

        allowed = set(options.labels)
        invalid = [i for i, row in enumerate(rows) if row["output"].strip() not in allowed]
        nearest = nearest_labels([rows[i]["output"] for i in invalid], options.labels)
        for i, (label, similarity) in zip(invalid, nearest, strict=True):
            rows[i].update(raw_output=rows[i]["output"], output=label, fallback_similarity=similarity)
    return rows


def conversation_text(example: ChatExample) -> str:
    """The conversation so far as `role: text` lines (what a judge reads)."""
    return "\n".join(f"{m.role}: {m.text}" for m in example.prompt_messages())


def evaluate_model(spec: ModelRef, examples: Sequence[ChatExample], metrics: Sequence[str],
                   options: EvalOptions, model: ChatBackend | None = None,
                   conversations: list[list[dict[str, Any]]] | None = None) -> ModelResult:
    """Generate for every example with one model (opened from `spec` unless given) and score the outputs.
    `conversations`: what to send for each example instead of its own prompt (few-shot turns, retrieved
    passages); the outputs are still scored against each example's reference."""
    started = time.perf_counter()
    model = model if model is not None else open_backend(spec, batch_size=options.batch_size)
    loaded = time.perf_counter()
    if conversations is None:
        conversations = [message_dicts(example.prompt_messages()) for example in examples]
    references = [example.reference() for example in examples]
    rows: list[dict[str, Any]] = [{} for _ in examples]
    by_tools: dict[str, list[int]] = {}  # one `generate` call per set of tool definitions (usually one)
    for index, example in enumerate(examples):
        by_tools.setdefault(json.dumps(example.tool_definitions()), []).append(index)
    schema = reply_schema(spec, options)
    for indices in by_tools.values():
        outputs = generate_outputs(model, [conversations[i] for i in indices], [references[i] for i in indices],
                                   options, examples[indices[0]].tool_definitions() or None, schema)  # fmt: skip
        for index, row in zip(indices, outputs, strict=True):
            rows[index] = row
    generated = time.perf_counter()
    labels = set(options.labels) if options.labels else None
    records = []
    for index, (example, reference, row) in enumerate(zip(examples, references, rows, strict=True)):
        scores = score_example(row["output"], reference, metrics, labels)
        records.append({"index": index, "line": example.line, "prompt": example.question(),
                        "conversation": conversation_text(example),
                        "reference": reference, **row, "scores": scores})
    outputs = [row["output"] for row in rows]
    summary = aggregate(outputs, references, [r["scores"] for r in records], metrics, options.labels,
                        [row["completion_tokens"] for row in rows])
    if options.fallback == "nearest":
        rescued = [r for r in records if "raw_output" in r]
        summary["fallback"] = {"invalid_before": len(rescued),
                               "rescued_correct": sum(r["output"].strip() == r["reference"].strip() for r in rescued)}
    if options.decode in ("constrained", "rank") or options.fallback:
        summary["decode"] = options.decode + ("+nearest" if options.fallback else "")
    elif schema is not None:
        summary["decode"] = "json_schema" if options.json_schema is not None else "reply_schema"
    return ModelResult(spec=spec, summary=summary, examples=records, seconds=generated - loaded,
                       load_seconds=loaded - started)


def pairwise_comparisons(models: Sequence[ModelResult], baseline: str | None = None,
                         n_resamples: int = 10_000) -> list[dict[str, Any]]:
    """Every model against the baseline (default: the first) on every per-example metric, with a paired
    bootstrap 95% interval and the indices of examples where their scores differ."""
    if len(models) < 2:
        return []
    base = next((m for m in models if m.spec.name == baseline), None) if baseline else models[0]
    if base is None:
        raise ValueError(f"--baseline '{baseline}' is not one of the evaluated models")
    keys = list(base.examples[0]["scores"]) if base.examples else []
    comparisons = []
    for other in models:
        if other is base:
            continue
        for metric in keys:
            difference = compare_scores(metric, base.spec.name, base.scores(metric), other.spec.name,
                                        other.scores(metric), n_resamples=n_resamples)
            if difference is None:
                continue
            disagree = [i for i, (x, y) in enumerate(zip(base.scores(metric), other.scores(metric), strict=True))
                        if x is not None and y is not None and x != y]
            comparisons.append({**difference.to_dict(), "disagreements": disagree})
    return comparisons


def evaluate(test_file: str | Path, specs: Sequence[ModelRef], options: EvalOptions | None = None,
             on_model: Callable[[ModelRef, int, int], None] | None = None) -> EvalResult:
    """Evaluate every model on the test file and compare each with the baseline."""
    options = options or EvalOptions()
    options.check()
    examples = read_test_examples(test_file)
    metrics = options.metrics or auto_metrics([e.reference() for e in examples], options.labels)
    if options.labels and "label" not in metrics:
        metrics = [*metrics, "label"]
    results = []
    for number, spec in enumerate(specs, start=1):
        if on_model is not None:
            on_model(spec, number, len(specs))
        results.append(evaluate_model(spec, examples, metrics, options))
    result = EvalResult(test_file=str(test_file), metrics=list(metrics), options=options, models=results)
    result.comparisons = pairwise_comparisons(results, options.baseline, options.n_resamples)
    return result
