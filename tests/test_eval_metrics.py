"""Metrics and the paired bootstrap, on hand-made outputs."""

from __future__ import annotations

import numpy as np
import pytest

from ftlab.data.scoring import (
    AUTO_SELECT_MAX_REPLIES,
    AUTO_SELECT_MIN_REPLIES,
    auto_selection_metric,
    auto_selection_size,
    field_accuracy,
    json_valid,
    mean_score,
    score_example,
    set_f1,
    tool_call_scores,
)
from ftlab.evaluate.compare import compare_scores, paired_bootstrap
from ftlab.evaluate.metrics import aggregate, auto_metrics, corpus_bleu, label_report, parse_metrics


def test_set_f1_normalises_case_and_space_and_ignores_order():
    assert set_f1('["Flour", "  brown   sugar"]', '["brown sugar", "flour"]') == 1.0
    # one of two predicted is right, one of three references found: P=1/2, R=1/3 → F1=0.4
    assert set_f1('["flour", "salt"]', '["flour", "eggs", "milk"]') == pytest.approx(0.4)
    assert set_f1("[]", "[]") == 1.0


def test_unparseable_output_scores_zero_and_is_not_json_valid():
    reference = '["flour", "eggs"]'
    for output in ("flour, eggs", '["flour", "eggs"', '{"a": 1}', "[1, 2]"):
        assert set_f1(output, reference) == 0.0
    assert json_valid("flour, eggs", reference) == 0.0
    assert json_valid('{"a": 1}', reference) == 0.0  # JSON, but not the list the reference is
    assert json_valid('["x"]', reference) == 1.0
    assert set_f1('["x"]', "not json") is None  # the metric does not apply to this reference


def test_field_accuracy_counts_reference_fields():
    reference = '{"name": "Ada Lovelace", "born": 1815, "tags": ["math"]}'
    assert field_accuracy('{"name": "ada  lovelace", "born": 1815, "tags": ["Math"]}', reference) == 1.0
    assert field_accuracy('{"name": "Ada", "born": 1815}', reference) == pytest.approx(1 / 3)
    assert field_accuracy("nope", reference) == 0.0


def test_label_report_precision_recall_and_confusions():
    refs = ["cat", "cat", "dog", "dog", "bird"]
    preds = ["cat", "dog", "dog", "dog", "fish"]
    report = label_report(preds, refs, labels=["cat", "dog", "bird"])
    assert report["valid_label"] == pytest.approx(4 / 5)
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["per_label"]["cat"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert report["per_label"]["dog"]["precision"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert report["confusions"][0]["count"] == 1
    assert {(c["reference"], c["predicted"]) for c in report["confusions"]} == {("cat", "dog"), ("bird", "fish")}


def test_bleu_uses_characters_for_japanese():
    refs = ["東京は日本の首都です", "猫が好きです"]
    assert corpus_bleu(refs, refs)["bleu_tokenize"] == "char"
    assert corpus_bleu(refs, refs)["bleu"] == pytest.approx(100.0)
    # whitespace tokenisation would see each sentence as one word and score a near miss as 0
    assert corpus_bleu(["東京は日本の首都だ", "猫が好きだ"], refs)["bleu"] > 20
    assert corpus_bleu(["the cat sat"], ["the cat sat"])["bleu_tokenize"] == "13a"


def test_select_by_scores_a_set_of_replies_as_eval_sums_it_up():
    # What a training run picks its checkpoint by (`select_by`) is the number `ftlab eval` reports for that metric.
    refs = ['["a", "b"]', '["c"]', "not a list"]
    outputs = ['["a"]', '["c"]', '["x"]']
    metrics = ["exact", "json_valid", "set_f1", "chrf"]
    summary = aggregate(outputs, refs, [score_example(o, r, metrics) for o, r in zip(outputs, refs, strict=True)],
                        metrics)  # fmt: skip
    for metric in metrics:
        assert mean_score(metric, outputs, refs) == pytest.approx(summary[metric]), metric
    assert mean_score("set_f1", outputs, refs) == pytest.approx((2 / 3 + 1) / 2)  # the prose reference is skipped
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        mean_score("bleu", outputs, refs)


def test_select_by_auto_watches_the_json_metric_where_replies_are_json_on_a_sample_sized_by_the_training_set():
    lists, objects = ['["a", "b"]', '["c"]'], ['{"a": 1}', '{"b": [2]}']
    assert auto_selection_metric(lists) == "set_f1"
    assert auto_selection_metric(objects) == "field_acc"
    assert auto_selection_metric([*lists, *objects]) is None  # no one metric scores both
    assert auto_selection_metric(["free text", '["a"]']) is None  # prose: validation loss
    assert auto_selection_metric(['[1, 2]']) is None  # set-F1 needs lists of strings
    assert auto_selection_metric([]) is None
    # Generating the replies must stay a small share of the run: a quarter as many as training examples, but enough
    # not to choose by noise, and never more than the cap; a small validation set is scored whole.
    assert auto_selection_size(n_valid=100, n_train=100) == 25  # the cookbook's split: 100 to train, 100 to validate
    assert auto_selection_size(n_valid=100, n_train=40) == AUTO_SELECT_MIN_REPLIES
    assert auto_selection_size(n_valid=12, n_train=40) == 12
    assert auto_selection_size(n_valid=5000, n_train=10**6) == AUTO_SELECT_MAX_REPLIES


def test_auto_metrics_and_aggregate():
    refs = ['["a", "b"]', '["c"]']
    assert auto_metrics(refs) == ["exact", "json_valid", "set_f1", "length"]
    assert "field_acc" in auto_metrics(['{"a": 1}'])
    assert "chrf" in auto_metrics(["free text"])
    assert "label" in auto_metrics(["cat"], labels=["cat", "dog"])
    outputs = ['["a", "b"]', "c"]
    metrics = ["exact", "json_valid", "set_f1", "length"]
    scores = [score_example(o, r, metrics) for o, r in zip(outputs, refs, strict=True)]
    summary = aggregate(outputs, refs, scores, metrics, completion_tokens=[5, 1])
    assert summary["set_f1"] == 0.5 and summary["json_valid"] == 0.5 and summary["exact"] == 0.5
    assert summary["length"]["output_tokens"]["mean"] == 3
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metrics("exact,rouge")


def _call(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


def test_tool_calls_score_name_arguments_and_json():
    reference = _call("reserve_bike", '{"station_id": "ST-214", "hold_minutes": 10}')
    assert auto_metrics([reference, "Which station?"]) == ["exact", "tool_calls", "length"]
    same_order_swapped = _call("reserve_bike", '{"hold_minutes": 10, "station_id": "ST-214"}')
    assert tool_call_scores(same_order_swapped, reference) == {"tool_name": 1.0, "tool_args": 1.0, "tool_json": 1.0}
    wrong_value = _call("reserve_bike", '{"station_id": "ST-215", "hold_minutes": 10}')
    assert tool_call_scores(wrong_value, reference) == {"tool_name": 1.0, "tool_args": 0.0, "tool_json": 1.0}
    broken = "<tool_call>\n{\"name\": \"reserve_bike\", \"arguments\": {\"station_id\": }\n</tool_call>"
    assert tool_call_scores(broken, reference) == {"tool_name": 0.0, "tool_args": 0.0, "tool_json": 0.0}
    assert tool_call_scores("Sure, which station?", reference) == {"tool_name": 0.0, "tool_args": 0.0,
                                                                  "tool_json": None}  # fmt: skip
    # No call needed: calling nothing is right, calling something is wrong; arguments do not apply.
    assert tool_call_scores("Which station?", "Which station?") == {"tool_name": 1.0, "tool_args": None,
                                                                   "tool_json": None}  # fmt: skip
    assert tool_call_scores(reference, "Which station?")["tool_name"] == 0.0
    two = reference + "\n" + _call("find_stations", '{"near": "Old Harbour"}')
    assert tool_call_scores(two, reference)["tool_name"] == 0.0  # one call too many
    assert score_example(reference, reference, ["exact", "tool_calls"])["tool_args"] == 1.0


def test_paired_bootstrap_interval_covers_the_true_difference():
    """Over many synthetic test sets with a known difference of 0.1, the 95% interval covers it ~95% of the time."""
    rng = np.random.default_rng(1)
    covered = 0
    trials = 200
    for trial in range(trials):
        difficulty = rng.uniform(0, 1, size=150)  # pairs share a per-example difficulty
        a = (rng.uniform(0, 1, size=150) < 0.4 + 0.3 * difficulty).astype(float)
        b = (rng.uniform(0, 1, size=150) < 0.5 + 0.3 * difficulty).astype(float)
        _, low, high, _ = paired_bootstrap(a, b, n_resamples=2000, seed=trial)
        covered += low <= 0.1 <= high
    assert 0.88 <= covered / trials <= 0.99


def test_compare_scores_uses_examples_scored_by_both():
    result = compare_scores("set_f1", "base", [0.0, 0.0, None, 0.5], "tuned", [1.0, 0.5, 1.0, 1.0], n_resamples=500)
    assert result.n == 3
    assert result.difference == pytest.approx(2 / 3)
    assert result.ci_low > 0 and result.significant
