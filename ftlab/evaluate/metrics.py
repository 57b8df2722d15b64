"""Metrics that compare a model's outputs with reference answers.

Two kinds: per-example scores (exact, contains, json_valid, set_f1, field_acc, valid_label, label_acc, chrf, and
for tool calls tool_name, tool_args, tool_json) — kept for every example so two models can be compared pairwise —
and corpus-level summaries (BLEU, macro-F1, per-label precision/recall, confusion pairs, length statistics)
computed once over the whole test set.
"""

from __future__ import annotations

import json
import re
import statistics
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ftlab.data.tools import parse

METRIC_NAMES = ("exact", "contains", "json_valid", "set_f1", "field_acc", "label", "tool_calls", "chrf", "bleu",
                "length")
METRIC_HELP = {
    "exact": "output equals the reference (surrounding whitespace ignored)",
    "contains": "the reference appears in the output (case/space normalised): short facts inside a sentence",
    "json_valid": "output parses as JSON (of the reference's type when the reference is JSON)",
    "set_f1": "F1 between output and reference parsed as JSON lists of strings (case/space normalised)",
    "field_acc": "share of the reference JSON object's fields whose value the output reproduces",
    "label": "classification: valid-label rate, accuracy, macro-F1, per-label precision/recall, confusions",
    "tool_calls": "function calling: the right tools called (tool_name), with the reference's arguments exactly "
    "(tool_args), arguments that are a JSON object (tool_json)",
    "chrf": "character n-gram F-score (sacrebleu chrF), per example and corpus",
    "bleu": "corpus BLEU (sacrebleu; character tokenisation when the references are Japanese/Chinese)",
    "length": "output length statistics (characters, tokens) next to the references'",
}
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def parse_metrics(spec: str | None) -> list[str] | None:
    """`"exact,set_f1"` → `["exact", "set_f1"]`; None or "auto" → None (chosen from the references)."""
    if spec is None or spec.strip() in ("", "auto"):
        return None
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}: choose from {', '.join(METRIC_NAMES)}")
    return names


def auto_metrics(references: Sequence[str], labels: Sequence[str] | None = None) -> list[str]:
    """Sensible metrics for a test set: tool-call metrics when a reference calls a tool, JSON metrics when the
    references are JSON, label metrics when a label set is given, chrF/BLEU for free text; always exact match
    and length."""
    parsed = [_loads(ref) for ref in references]
    chosen = ["exact"]
    if any(parse(ref).tool_calls for ref in references):
        chosen.append("tool_calls")
    elif labels:
        chosen.append("label")
    elif all(isinstance(p, list) for p in parsed):
        chosen += ["json_valid", "set_f1"]
    elif all(isinstance(p, dict) for p in parsed):
        chosen += ["json_valid", "field_acc"]
    else:
        chosen += ["chrf", "bleu"]
    return chosen + ["length"]


# --- per-example metrics -------------------------------------------------------------------------------------

_MISSING = object()


def _loads(text: str) -> Any:
    try:
        return json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return _MISSING


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
    value = _loads(output)
    if value is _MISSING:
        return 0.0
    ref = _loads(reference)
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
    ref = _string_set(_loads(reference))
    if ref is None:
        return None
    pred = _string_set(_loads(output))
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
    ref = _loads(reference)
    if not isinstance(ref, dict):
        return None
    if not ref:
        return 1.0
    pred = _loads(output)
    if not isinstance(pred, dict):
        return 0.0
    return sum(key in pred and _same_value(pred[key], value) for key, value in ref.items()) / len(ref)


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


def sentence_chrf(output: str, reference: str) -> float:
    from sacrebleu.metrics import CHRF

    return CHRF().sentence_score(output, [reference]).score / 100


# --- corpus-level metrics ------------------------------------------------------------------------------------


def is_cjk(texts: Sequence[str]) -> bool:
    """Whether most texts are written in Japanese/Chinese/Korean (no spaces between words)."""
    with_cjk = sum(bool(_CJK.search(text)) for text in texts)
    return with_cjk * 2 > len(texts)


def corpus_bleu(outputs: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """sacrebleu BLEU (0–100); character tokenisation for CJK references, where words are not spaced."""
    from sacrebleu.metrics import BLEU

    tokenize = "char" if is_cjk(references) else "13a"
    score = BLEU(tokenize=tokenize).corpus_score(list(outputs), [list(references)])
    return {"bleu": score.score, "bleu_tokenize": tokenize}


def corpus_chrf(outputs: Sequence[str], references: Sequence[str]) -> float:
    from sacrebleu.metrics import CHRF

    return CHRF().corpus_score(list(outputs), [list(references)]).score / 100


def label_report(
    predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] | None = None, top_confusions: int = 10
) -> dict[str, Any]:
    """Classification summary: valid-label rate, accuracy, macro-F1 and per-label precision/recall/F1 over
    the labels seen in the references, and the most frequent (reference → predicted) confusions."""
    allowed = set(labels) if labels else set(references)
    preds = [p.strip() for p in predictions]
    refs = [r.strip() for r in references]
    seen = sorted(set(refs))
    per_label: dict[str, dict[str, float]] = {}
    for label in seen:
        tp = sum(p == label and r == label for p, r in zip(preds, refs, strict=True))
        predicted = sum(p == label for p in preds)
        actual = sum(r == label for r in refs)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    confusions = Counter((r, p) for p, r in zip(preds, refs, strict=True) if p != r)
    return {
        "valid_label": sum(p in allowed for p in preds) / len(preds),
        "accuracy": sum(p == r for p, r in zip(preds, refs, strict=True)) / len(preds),
        "macro_f1": statistics.fmean(v["f1"] for v in per_label.values()) if per_label else 0.0,
        "per_label": per_label,
        "confusions": [
            {"reference": r, "predicted": p, "count": n} for (r, p), n in confusions.most_common(top_confusions)
        ],
        "predicted_distribution": dict(Counter(preds).most_common()),
        "reference_distribution": dict(Counter(refs).most_common()),
    }


def length_stats(outputs: Sequence[str], references: Sequence[str], completion_tokens: Sequence[int] | None = None):
    """Mean/median/max length in characters of outputs and references, and of outputs in tokens."""

    def summary(values: Sequence[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "median": statistics.median(values), "max": max(values)}

    stats = {"output_chars": summary([len(o) for o in outputs]),
             "reference_chars": summary([len(r) for r in references])}
    if completion_tokens:
        stats["output_tokens"] = summary(completion_tokens)
    return stats


# --- putting them together -----------------------------------------------------------------------------------

PER_EXAMPLE = {
    "exact": exact_match,
    "contains": contains,
    "json_valid": json_valid,
    "set_f1": set_f1,
    "field_acc": field_accuracy,
    "chrf": sentence_chrf,
}


def score_example(output: str, reference: str, metrics: Sequence[str], labels: set[str] | None = None):
    """Per-example scores for the chosen metrics (None where a metric does not apply to this example)."""
    scores: dict[str, float | None] = {}
    for name in metrics:
        if name in PER_EXAMPLE:
            scores[name] = PER_EXAMPLE[name](output, reference)
        elif name == "tool_calls":
            scores.update(tool_call_scores(output, reference))
        elif name == "label":
            allowed = labels if labels is not None else None
            scores["valid_label"] = float(output.strip() in allowed) if allowed is not None else None
            scores["label_acc"] = float(output.strip() == reference.strip())
    return scores


def aggregate(
    outputs: Sequence[str],
    references: Sequence[str],
    scores: Sequence[dict[str, float | None]],
    metrics: Sequence[str],
    labels: Sequence[str] | None = None,
    completion_tokens: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Means of the per-example scores (over examples where they apply) plus the corpus-level metrics."""
    summary: dict[str, Any] = {"n": len(outputs)}
    keys = [key for key in (scores[0] if scores else {}) if key not in ("valid_label", "label_acc")]
    for key in keys:
        values = [s[key] for s in scores if s.get(key) is not None]
        summary[key] = statistics.fmean(values) if values else None
    if "chrf" in metrics:
        summary["chrf_corpus"] = corpus_chrf(outputs, references)
    if "bleu" in metrics:
        summary.update(corpus_bleu(outputs, references))
    if "label" in metrics:
        report = label_report(outputs, references, labels)
        summary.update({k: report[k] for k in ("valid_label", "accuracy", "macro_f1")})
        summary["labels"] = {k: report[k] for k in report if k not in ("valid_label", "accuracy", "macro_f1")}
    if "length" in metrics:
        summary["length"] = length_stats(outputs, references, completion_tokens)
    return summary
