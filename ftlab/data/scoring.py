"""Scoring one reply against its reference: exact, contains, JSON validity, set-F1, field accuracy, chrF, valid label,
tool calls.

Pure functions of two strings (and a label set), with no model and no test run behind them, so both `ftlab eval`
(`ftlab.evaluate.metrics` sums them up over a test set) and the training recipe (which picks a checkpoint by one
of them on the validation set, `select_by`) score with this one code.
"""

from __future__ import annotations

import json
import statistics
import unicodedata
from collections.abc import Collection, Sequence
from typing import Any

from ftlab.config import TASK_METRICS
from ftlab.data.tools import parse

MISSING = object()  # what `parse_json` returns for text that is not JSON (JSON's own null is None)


def parse_json(text: str) -> Any:
    """The JSON value a reply spells (surrounding whitespace ignored), or `MISSING`."""
    try:
        return json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return MISSING


def normalise(text: str) -> str:
    """Case- and space-insensitive form of a string: NFKC, casefolded, inner whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def exact_match(output: str, reference: str) -> float:
    return float(output.strip() == reference.strip())


def contains(output: str, reference: str) -> float:
    """1 when the normalised reference is a substring of the normalised output (a code or name in a sentence)."""
    return float(normalise(reference) in normalise(output))


def json_valid(output: str, reference: str) -> float:
    """1 when the output parses as JSON — and, when the reference is a JSON list or object, as that kind."""
    value = parse_json(output)
    if value is MISSING:
        return 0.0
    ref = parse_json(reference)
    if isinstance(ref, list | dict):
        return float(isinstance(value, type(ref)))
    return 1.0


def _string_set(value: Any) -> set[str] | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return {normalise(item) for item in value}


def set_f1(output: str, reference: str) -> float | None:
    """F1 between the output's and the reference's JSON lists of strings (normalised, as sets).

    None when the reference is not such a list (the metric does not apply); 0 when the output is not.
    """
    ref = _string_set(parse_json(reference))
    if ref is None:
        return None
    pred = _string_set(parse_json(output))
    if pred is None:
        return 0.0
    if not ref and not pred:
        return 1.0
    overlap = len(ref & pred)
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return normalise(a) == normalise(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    return a == b


def field_accuracy(output: str, reference: str) -> float | None:
    """Share of the reference object's top-level fields the output has with an equal value (strings
    compared normalised). None when the reference is not a JSON object; 0 when the output is not one."""
    ref = parse_json(reference)
    if not isinstance(ref, dict):
        return None
    if not ref:
        return 1.0
    pred = parse_json(output)
    if not isinstance(pred, dict):
        return 0.0
    return sum(key in pred and _same_value(pred[key], value) for key, value in ref.items()) / len(ref)


def sentence_chrf(output: str, reference: str) -> float:
    from sacrebleu.metrics import CHRF

    return CHRF().sentence_score(output, [reference]).score / 100


PER_EXAMPLE = {
    "exact": exact_match,
    "contains": contains,
    "json_valid": json_valid,
    "set_f1": set_f1,
    "field_acc": field_accuracy,
    "chrf": sentence_chrf,
}


def _calls(reply) -> list[tuple[str, Any]]:
    return sorted(((c["function"]["name"], json.loads(c["function"]["arguments"])) for c in reply.tool_calls),
                  key=lambda call: json.dumps(call, sort_keys=True))  # fmt: skip


def tool_call_scores(output: str, reference: str) -> dict[str, float | None]:
    """Tool calls of the output against the reference's (both read with `ftlab.data.tools.parse`):

    - `tool_name`: the output calls the same functions (as many times each); with a reference that calls
      nothing, 1 when the output calls nothing either;
    - `tool_args`: the output makes exactly the reference's calls, arguments equal as JSON (None when the
      reference calls nothing);
    - `tool_json`: the share of the output's `<tool_call>` blocks that are a call with a JSON-object of arguments
      (None when it writes none)."""
    out, ref = parse(output), parse(reference)
    out_calls, ref_calls = _calls(out), _calls(ref)
    blocks = len(out.tool_calls) + len(out.invalid)
    return {
        "tool_name": float(sorted(n for n, _ in out_calls) == sorted(n for n, _ in ref_calls)),
        "tool_args": float(out_calls == ref_calls) if ref_calls else None,
        "tool_json": len(out.tool_calls) / blocks if blocks else None,
    }


def score_example(output: str, reference: str, metrics: Sequence[str], labels: Collection[str] | None = None):
    """Per-example scores for the chosen metrics (None where a metric does not apply to this example); the
    metric `label` gives `valid_label` (the output is one of `labels`) and `label_acc`."""
    scores: dict[str, float | None] = {}
    for name in metrics:
        if name in PER_EXAMPLE:
            scores[name] = PER_EXAMPLE[name](output, reference)
        elif name == "tool_calls":
            scores.update(tool_call_scores(output, reference))
        elif name == "label":
            scores["valid_label"] = float(output.strip() in labels) if labels is not None else None
            scores["label_acc"] = float(output.strip() == reference.strip())
    return scores


# --- one number for a set of replies: what `select_by` compares across evaluations ----------------------------

# How many validation replies `select_by auto` generates at each evaluation (`auto_selection_size`).
AUTO_SELECT_MIN_REPLIES = 20
AUTO_SELECT_MAX_REPLIES = 200


def _per_example(metric: str):
    """The per-example function of a `TASK_METRICS` name: (output, reference, labels) → score or None."""
    if metric == "valid_label":
        return lambda output, reference, labels: float(output.strip() in labels)
    return lambda output, reference, labels: PER_EXAMPLE[metric](output, reference)


def applies_to(metric: str, reference: str) -> bool:
    """Whether `metric` can score replies to this reference (set-F1 needs a JSON list of strings, field accuracy
    a JSON object; the others score any reply)."""
    return metric not in ("set_f1", "field_acc") or _per_example(metric)(reference, reference, ()) is not None


def mean_score(metric: str, outputs: Sequence[str], references: Sequence[str],
               labels: Collection[str] | None = None) -> float:
    """The mean of a `TASK_METRICS` score over the replies it applies to (what `ftlab eval` reports as that
    metric's value); 0 when it applies to none."""
    if metric not in TASK_METRICS:
        raise ValueError(f"unknown metric '{metric}': choose from {', '.join(TASK_METRICS)}")
    if metric == "valid_label" and not labels:
        raise ValueError("the metric valid_label needs the label set")
    score = _per_example(metric)
    values = [s for o, r in zip(outputs, references, strict=True) if (s := score(o, r, labels)) is not None]
    return statistics.fmean(values) if values else 0.0


def auto_selection_metric(references: Sequence[str]) -> str | None:
    """What `select_by auto` picks a checkpoint by, from the validation references: set_f1 when each is a JSON
    list of strings, field_acc when each is a JSON object (what `ftlab eval` reports for such references; a reply
    that does not parse scores 0, so the metric sees the looping, cut-off replies that validation loss misses).
    None — validation loss — for anything else (free text, labels, a mix)."""
    if not references:
        return None
    for metric in ("set_f1", "field_acc"):
        if all(applies_to(metric, reference) for reference in references):
            return metric
    return None


def auto_selection_size(n_valid: int, n_train: int) -> int:
    """How many validation examples `select_by auto` generates replies for at each evaluation, so that generating
    them stays a bounded share of the run: a quarter as many as training examples (measured on 100 real recipes,
    20 or 25 replies at each of 5 evaluations: 23-26% of the run), but at least AUTO_SELECT_MIN_REPLIES (fewer
    would pick a checkpoint by noise) and at most AUTO_SELECT_MAX_REPLIES; all of them when the validation set is
    smaller."""
    return min(n_valid, max(AUTO_SELECT_MIN_REPLIES, n_train // 4), AUTO_SELECT_MAX_REPLIES)
