"""Metrics that compare a model's outputs with reference answers.

Two kinds: per-example scores (exact, contains, json_valid, set_f1, field_acc, valid_label, label_acc, chrf, and
for tool calls tool_name, tool_args, tool_json) — kept for every example so two models can be compared pairwise;
they live in `ftlab.data.scoring`, which the training recipe scores its validation replies with too — and
corpus-level summaries (BLEU, macro-F1, per-label precision/recall, confusion pairs, length statistics) computed
once over the whole test set.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ftlab.data.scoring import parse_json
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
    parsed = [parse_json(ref) for ref in references]
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
