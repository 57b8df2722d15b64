"""LLM-as-judge: both orders for pairwise, G-Eval weighting for local judges, unparsed verdicts, kappa."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from ftlab.evaluate.judges import (
    Judge,
    cohen_kappa,
    judge_evaluation,
    judge_pairwise,
    judge_scores,
    load_prompt,
    read_rubric,
)
from ftlab.evaluate.run import EvalOptions, EvalResult, ModelResult
from ftlab.infer.refs import ModelRef, resolve_ref
from ftlab.infer.remote import RemoteChatModel


def remote_judge(name: str, reply) -> Judge:
    """A judge behind an OpenAI-compatible endpoint (the vendor is mocked at the HTTP layer); `reply(prompt)`
    gives its answer. The prompts it received are kept in `judge.seen`."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        seen.append(prompt)
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": name,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply(prompt)}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    ref = resolve_ref(f"openai:{name}@http://judge.test/v1")
    client = httpx.Client(transport=httpx.MockTransport(handler))
    backend = RemoteChatModel(name, "http://judge.test/v1", name=ref.name, http_client=client, concurrency=1)
    judge = Judge(ref, backend)
    judge.seen = seen
    return judge


def model_result(name: str, outputs: list[str]) -> ModelResult:
    examples = [{"index": i, "line": i + 1, "prompt": f"question {i}", "conversation": f"user: question {i}",
                 "reference": "good answer", "output": out, "scores": {"exact": float(out == "good answer")}}
                for i, out in enumerate(outputs)]
    return ModelResult(spec=ModelRef(name, name), summary={}, examples=examples, seconds=0.0)


def _answers(prompt: str) -> tuple[str, str]:
    a = re.search(r"Answer A:\n(.*?)\n", prompt).group(1)
    b = re.search(r"Answer B:\n(.*?)\n", prompt).group(1)
    return a, b


def test_pairwise_runs_both_orders_and_counts_flips_as_ties():
    base = model_result("base", ["meh", "meh", "good answer", "meh"])
    tuned = model_result("tuned", ["good answer", "good answer", "good answer", "meh"])

    def fair(prompt: str) -> str:  # prefers the good answer wherever it stands
        a, b = _answers(prompt)
        return "tie" if a == b else "A" if a == "good answer" else "B" if b == "good answer" else "tie"

    judge = remote_judge("fair", fair)
    run = judge_pairwise([judge], base, tuned)
    assert len(judge.seen) == 8
    # every example was shown once as (base, tuned) and once as (tuned, base)
    shown = [_answers(p) for p in judge.seen]
    assert shown[4:] == [(b, a) for a, b in shown[:4]]
    assert run.summary["b_wins"] == 0.5 and run.summary["ties"] == 0.5 and run.summary["flip_rate"] == {
        "openai:fair@http://judge.test/v1": 0.0}

    biased = remote_judge("first", lambda prompt: "A")  # always picks the first answer: pure position bias
    run = judge_pairwise([biased], base, tuned)
    assert run.summary["ties"] == 1.0 and run.summary["b_wins"] == 0.0
    assert list(run.summary["flip_rate"].values()) == [1.0]


def test_unparseable_verdicts_are_counted():
    results = [model_result("m", ["a", "b", "c"])]
    replies = iter(["7", "Score: 9/10", "I would rather not say"])
    judge = remote_judge("chatty", lambda prompt: next(replies))
    run = judge_scores([judge], results, "score", (0, 10))
    summary = run.summary["m"]
    assert summary["unparsed"] == {judge.name: 1}
    assert summary["mean"] == 8.0
    assert [e["scores"]["judge_score"] for e in results[0].examples] == [0.7, 0.9, None]


def test_local_judge_uses_probability_weighted_scores(tiny_model_dir: Path):
    judge = Judge(resolve_ref(str(tiny_model_dir)))
    results = [model_result("m", ["good answer", "bad"])]
    run = judge_scores([judge], results, "likert", (1, 5))
    for row in run.per_example["m"]:
        verdict = row["judges"][judge.name]
        probabilities = verdict["probabilities"]
        assert set(probabilities) == {"1", "2", "3", "4", "5"} and sum(probabilities.values()) == pytest.approx(1)
        assert verdict["value"] == pytest.approx(sum(int(k) * p for k, p in probabilities.items()))
        assert verdict["choice"] == max(probabilities, key=probabilities.get)
        assert 1 <= row["value"] <= 5


def test_rubric_ensemble_and_human_kappa(tmp_path: Path):
    outputs = ["good answer", "good answer", "meh", "meh", "good answer", "meh"]
    result = EvalResult(test_file="t.jsonl", metrics=["exact"], options=EvalOptions(),
                        models=[model_result("m", outputs)])
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("# criteria\naccuracy: Is the answer correct?\nbrevity: Is it short?\n")
    assert read_rubric(rubric) == {"accuracy": "Is the answer correct?", "brevity": "Is it short?"}

    def strict(prompt: str) -> str:
        return "yes" if "Assistant's answer:\ngood answer" in prompt or "(brevity)" in prompt else "no"

    def lenient(prompt: str) -> str:
        return "Yes." if "(accuracy)" in prompt or "good answer\n\nQuestion" in prompt else "No"

    human = tmp_path / "human.jsonl"
    labels = [True, True, False, True, True, False]  # the humans disagree with `strict` on line 4
    human.write_text("".join(json.dumps({"line": i + 1, "accuracy": label}) + "\n" for i, label in enumerate(labels)))
    judges = [remote_judge("strict", strict), remote_judge("strict2", strict), remote_judge("lenient", lenient)]
    judge_evaluation(result, [], ["rubric"], rubric=rubric, human=human, judges=judges)
    [run] = result.judgements
    accuracy = run["summary"]["m"]["accuracy"]
    assert accuracy["pass_rate"] == 0.5  # majority of 2 strict vs 1 lenient
    assert accuracy["agreement"] == 0.5  # all three agree only on the good answers
    judged = ["yes" if o == "good answer" else "no" for o in outputs]
    humans = ["yes" if x else "no" for x in labels]
    agreement = result.human_agreement["accuracy"]
    assert agreement["n"] == 6 and agreement["agreement"] == pytest.approx(5 / 6)
    # kappa by hand: p_o = 5/6; judge says yes 3/6, humans 4/6 → p_e = .5*.667 + .5*.333 = .5 → (5/6-.5)/.5 = 2/3
    assert agreement["cohen_kappa"] == pytest.approx(2 / 3) == cohen_kappa(judged, humans)
    assert [e["scores"]["rubric_accuracy"] for e in result.models[0].examples] == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]

    from ftlab.evaluate.report import write_report

    page = write_report(result, tmp_path / "report").read_text()
    assert "rubric judge" in page and "against human labels" in page


def test_prompts_are_editable_files(tmp_path: Path):
    (tmp_path / "score.txt").write_text("Rate {{ answer }} from {{ low }} to {{ high }}.")
    judge = remote_judge("echo", lambda prompt: "3")
    judge_scores([judge], [model_result("m", ["forty-two"])], "score", (0, 10), prompts_dir=tmp_path)
    assert judge.seen == ["Rate forty-two from 0 to 10."]
    assert "Reply with yes or no only." in load_prompt("rubric")
    result = EvalResult(test_file="t.jsonl", metrics=["exact"], options=EvalOptions(),
                        models=[model_result("m", ["x"])])
    with pytest.raises(ValueError, match="--judge needs at least one"):
        judge_evaluation(result, [], ["rubric"], judges=[])
    with pytest.raises(ValueError, match="unknown judge kind"):
        judge_evaluation(result, [], ["vibes"], judges=[judge])
