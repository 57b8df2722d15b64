"""LLM-as-judge: score, likert, pairwise (both orders) and rubric judges, ensembles, agreement with humans.

A judge is any model `ftlab eval --model` accepts: a local one or an OpenAI-compatible endpoint. A local judge
never samples its verdict: every allowed answer ("0".."10", "yes"/"no", "A"/"B"/"tie") is scored by its
log-likelihood after the prompt (`rank_labels`), and score judges report the probability-weighted score over
the score tokens (G-Eval, Liu et al. 2023). An endpoint's reply is parsed; a verdict that cannot be parsed is
counted as unparsed, never dropped silently. Prompts are Jinja templates in `ftlab/evaluate/prompts/`; copy the
folder, edit, and pass it as `prompts_dir`.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftlab.config import JUDGE_PREFIX
from ftlab.data.schema import ChatExample
from ftlab.infer.backend import ChatBackend, open_backend
from ftlab.infer.refs import ModelRef

PROMPTS_DIR = Path(__file__).parent / "prompts"
JUDGE_KINDS = ("score", "likert", "pairwise", "rubric")


@dataclass
class Verdict:
    """One judge's answer to one prompt: the chosen option (None when unparseable), the value it stands for
    (a weighted score, p(yes), …), the option probabilities of a local judge and the raw text of a remote one."""

    choice: str | None
    value: float | None
    probabilities: dict[str, float] | None = None
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"choice": self.choice, "value": self.value, "probabilities": self.probabilities, "text": self.text}


def load_prompt(kind: str, prompts_dir: str | Path | None = None) -> str:
    """The judge prompt template for `kind` (from `prompts_dir` when it has one, else the shipped one)."""
    for folder in ([Path(prompts_dir)] if prompts_dir else []) + [PROMPTS_DIR]:
        path = folder / f"{kind}.txt"
        if path.exists():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(f"no judge prompt '{kind}.txt' in {prompts_dir or PROMPTS_DIR}")


def render(template: str, **fields: Any) -> str:
    from jinja2 import Environment, StrictUndefined

    return Environment(undefined=StrictUndefined, keep_trailing_newline=True).from_string(template).render(**fields)


def read_rubric(path: str | Path | None = None) -> dict[str, str]:
    """Criteria as {name: yes/no question}, from lines `name: question` (default: the shipped four)."""
    from ftlab.data.schema import DataError

    path = Path(path) if path else PROMPTS_DIR / "rubric_criteria.txt"
    criteria = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, question = line.partition(":")
        if not sep or not name.strip() or not question.strip():
            raise DataError("expected 'name: yes/no question'", path=path, line=number)
        criteria[name.strip()] = question.strip()
    if not criteria:
        raise DataError("no criteria in the rubric file", path=path)
    return criteria


def parse_scale(scale: str) -> tuple[int, int]:
    """"1-5" → (1, 5)."""
    match = re.fullmatch(r"\s*(-?\d+)\s*[-–:]\s*(-?\d+)\s*", scale)
    if not match or int(match.group(1)) >= int(match.group(2)):
        raise ValueError(f"a scale is written LOW-HIGH, e.g. 1-5, not '{scale}'")
    return int(match.group(1)), int(match.group(2))


# --- asking a judge -------------------------------------------------------------------------------------------


def _parse_choice(text: str, options: Sequence[str]) -> str | None:
    """The option a free-text reply names: the first number in range, or the first option word."""
    cleaned = text.strip().strip("*").strip()
    if all(o.lstrip("-").isdigit() for o in options):
        for number in re.findall(r"-?\d+(?:\.\d+)?", cleaned):
            if number in options or (number.endswith(".0") and number[:-2] in options):
                return number.removesuffix(".0")
        return None
    lowered = [o.casefold() for o in options]
    for word in re.findall(r"[A-Za-z]+", cleaned):
        if word.casefold() in lowered:
            return options[lowered.index(word.casefold())]
    return None


class Judge:
    """A model that answers judge prompts with one option of a closed set."""

    def __init__(self, ref: ModelRef, backend: ChatBackend | None = None) -> None:
        self.name = ref.name
        self.backend = backend if backend is not None else open_backend(ref)

    def ask(self, prompts: Sequence[str], options: Sequence[str], values: Sequence[float]) -> list[Verdict]:
        """For each prompt (sent as one user message), the verdict over `options`, each standing for a value."""
        conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
        if self.backend.local:
            verdicts = []
            for messages in conversations:
                probs = self.backend.rank_labels(messages, options).softmax(-1).tolist()
                best = max(range(len(options)), key=lambda i: probs[i])
                verdicts.append(Verdict(options[best], sum(p * v for p, v in zip(probs, values, strict=True)),
                                        dict(zip(options, probs, strict=True))))
            return verdicts
        completions = self.backend.generate(conversations, max_new_tokens=16, temperature=0.0)
        verdicts = []
        for completion in completions:
            choice = _parse_choice(completion.text, options)
            value = values[list(options).index(choice)] if choice is not None else None
            verdicts.append(Verdict(choice, value, None, completion.text))
        return verdicts


def _question(example: dict[str, Any]) -> str:
    return example.get("conversation") or example["prompt"]


# --- the judge kinds -----------------------------------------------------------------------------------------


@dataclass
class JudgeRun:
    """Everything one kind of judging produced: per-example verdicts and the summary."""

    kind: str
    judges: list[str]
    summary: dict[str, Any]
    per_example: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # model name → one dict per example

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "judges": self.judges, "summary": self.summary, "per_example": self.per_example}


def combine(verdicts: Sequence[Verdict], how: str) -> Verdict:
    """Several judges' verdicts on one item: the mean value, or the majority choice (ties → no majority)."""
    parsed = [v for v in verdicts if v.choice is not None]
    if not parsed:
        return Verdict(None, None)
    if how == "mean":
        return Verdict(None, statistics.fmean(v.value for v in parsed))
    counts = Counter(v.choice for v in parsed).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return Verdict(None, None)
    winner = counts[0][0]
    return Verdict(winner, statistics.fmean(v.value for v in parsed if v.choice == winner))


def agreement(per_judge: Sequence[Sequence[Verdict]]) -> float | None:
    """Share of items on which every judge chose the same option (None with a single judge)."""
    if len(per_judge) < 2:
        return None
    items = list(zip(*per_judge, strict=True))
    same = [len({v.choice for v in item}) == 1 and item[0].choice is not None for item in items]
    return sum(same) / len(same) if same else None


def _ask_all(judges: Sequence[Judge], prompts: list[str], options: list[str], values: list[float]):
    return [judge.ask(prompts, options, values) for judge in judges]


def judge_scores(judges: Sequence[Judge], model_results, kind: str = "score", scale: tuple[int, int] = (0, 10),
                 criteria: str | None = None, ensemble: str = "mean",
                 prompts_dir: str | Path | None = None) -> JudgeRun:
    """`score` (0–10) or `likert` (a given scale): one number per answer, probability-weighted for local judges."""
    low, high = scale
    template = load_prompt(kind, prompts_dir)
    summary: dict[str, Any] = {"scale": [low, high]}
    per_example = {}
    for result in model_results:
        per_judge, combined = _score_answers(judges, result.examples, template, scale, criteria, ensemble)
        scores = [v.value for v in combined]
        valid = [s for s in scores if s is not None]
        summary[result.spec.name] = {
            "mean": statistics.fmean(valid) if valid else None,
            "normalised": statistics.fmean((s - low) / (high - low) for s in valid) if valid else None,
            "unparsed": {judge.name: sum(v.choice is None for v in verdicts)
                         for judge, verdicts in zip(judges, per_judge, strict=True)},
            "agreement": agreement(per_judge),
        }
        per_example[result.spec.name] = [
            {"value": c.value, "judges": {j.name: v.to_dict() for j, v in zip(judges, item, strict=True)}}
            for c, item in zip(combined, zip(*per_judge, strict=True), strict=True)]
        for example, c in zip(result.examples, combined, strict=True):
            example["scores"][f"judge_{kind}"] = None if c.value is None else (c.value - low) / (high - low)
    return JudgeRun(kind, [j.name for j in judges], summary, per_example)


def _score_answers(
    judges: Sequence[Judge], examples: Sequence[dict[str, Any]], template: str, scale: tuple[int, int],
    criteria: str | None, ensemble: str,
) -> tuple[list[list[Verdict]], list[Verdict]]:
    """Every judge's verdict on each answer (`output`, to `conversation` or `prompt`, against `reference`), and
    the verdicts combined per answer."""
    low, high = scale
    options = [str(i) for i in range(low, high + 1)]
    values = [float(i) for i in range(low, high + 1)]
    prompts = [render(template, question=_question(e), reference=e["reference"], answer=e["output"],
                      criteria=criteria, low=low, high=high, scale_labels=None) for e in examples]
    per_judge = _ask_all(judges, prompts, options, values)
    return per_judge, [combine(item, ensemble) for item in zip(*per_judge, strict=True)]


def validation_judge(select_by: str) -> Callable[[list[ChatExample], list[str]], float] | None:
    """For `select_by judge:MODEL`, the recipe's `score_validation`: the mean normalised verdict (0–1) of a 0–10
    score judge (`ftlab eval --judge score`) on the replies a run writes for its validation set; None for the other
    metrics. The judge's name is resolved now, so an unknown one fails before training; it is loaded at the first
    evaluation and kept."""
    if not select_by.startswith(JUDGE_PREFIX):
        return None
    from ftlab.evaluate.run import conversation_text
    from ftlab.infer.refs import resolve_ref

    ref = resolve_ref(select_by.removeprefix(JUDGE_PREFIX).strip())
    template = load_prompt("score")
    judges: list[Judge] = []

    def score(examples: list[ChatExample], replies: list[str]) -> float:
        if not judges:
            judges.append(Judge(ref))
        answers = [{"conversation": conversation_text(e), "reference": e.reference(), "output": reply}
                   for e, reply in zip(examples, replies, strict=True)]  # fmt: skip
        verdicts = _score_answers(judges, answers, template, (0, 10), None, "mean")[1]
        valid = [v.value / 10 for v in verdicts if v.value is not None]
        return statistics.fmean(valid) if valid else 0.0

    return score


def judge_rubric(judges: Sequence[Judge], model_results, criteria: dict[str, str], ensemble: str = "majority",
                 prompts_dir: str | Path | None = None) -> JudgeRun:
    """One yes/no question per criterion and answer; pass rate per criterion (p(yes) weighted for local judges)."""
    template = load_prompt("rubric", prompts_dir)
    summary: dict[str, Any] = {"criteria": criteria}
    per_example: dict[str, list[dict[str, Any]]] = {}
    for result in model_results:
        rows: list[dict[str, Any]] = [{} for _ in result.examples]
        model_summary = {}
        for name, check in criteria.items():
            prompts = [render(template, question=_question(e), reference=e["reference"], answer=e["output"],
                              criterion=name, check=check) for e in result.examples]
            per_judge = _ask_all(judges, prompts, ["yes", "no"], [1.0, 0.0])
            combined = [combine(item, ensemble) for item in zip(*per_judge, strict=True)]
            passed = [v.choice == "yes" for v in combined if v.choice is not None]
            model_summary[name] = {
                "pass_rate": sum(passed) / len(passed) if passed else None,
                "mean_p_yes": statistics.fmean(v.value for v in combined if v.value is not None)
                if any(v.value is not None for v in combined) else None,
                "unparsed": {j.name: sum(v.choice is None for v in verdicts)
                             for j, verdicts in zip(judges, per_judge, strict=True)},
                "no_majority": sum(v.choice is None for v in combined),
                "agreement": agreement(per_judge),
            }
            for row, example, c, item in zip(rows, result.examples, combined, zip(*per_judge, strict=True),
                                             strict=True):
                row[name] = {"choice": c.choice, "judges": {j.name: v.to_dict()
                                                            for j, v in zip(judges, item, strict=True)}}
                example["scores"][f"rubric_{name}"] = None if c.choice is None else float(c.choice == "yes")
        summary[result.spec.name] = model_summary
        per_example[result.spec.name] = rows
    return JudgeRun("rubric", [j.name for j in judges], summary, per_example)


def judge_pairwise(judges: Sequence[Judge], model_a, model_b, criteria: str | None = None,
                   ensemble: str = "majority", prompts_dir: str | Path | None = None) -> JudgeRun:
    """A vs B on every example, asked in both orders. A verdict that flips with the order counts as a tie; the
    flip rate is reported. Returns win/tie rates for B against A."""
    template = load_prompt("pairwise", prompts_dir)
    options, values = ["A", "B", "tie"], [1.0, 0.0, 0.5]

    def prompts(first, second) -> list[str]:
        return [render(template, question=_question(x), reference=x["reference"], answer_a=x["output"],
                       answer_b=y["output"], criteria=criteria)
                for x, y in zip(first.examples, second.examples, strict=True)]

    forward = _ask_all(judges, prompts(model_a, model_b), options, values)  # "A" means model_a
    backward = _ask_all(judges, prompts(model_b, model_a), options, values)  # "A" means model_b
    swap = {"A": "B", "B": "A", "tie": "tie", None: None}
    per_judge_final = []
    flips = {}
    unparsed = {}
    for judge, fwd, bwd in zip(judges, forward, backward, strict=True):
        final = []
        flipped = 0
        for f, b in zip(fwd, bwd, strict=True):
            g = swap[b.choice]  # the backward verdict in forward terms
            if f.choice is None or g is None:
                final.append(Verdict(None, None))
            elif f.choice == g:
                final.append(Verdict(f.choice, values[options.index(f.choice)]))
            else:
                flipped += 1
                final.append(Verdict("tie", 0.5))
        per_judge_final.append(final)
        flips[judge.name] = flipped / len(fwd) if fwd else 0.0
        unparsed[judge.name] = sum(v.choice is None for v in fwd) + sum(v.choice is None for v in bwd)
    combined = [combine(item, ensemble) for item in zip(*per_judge_final, strict=True)]
    decided = [v.choice for v in combined if v.choice is not None]
    n = len(decided) or 1
    summary = {
        "a": model_a.spec.name, "b": model_b.spec.name,
        "b_wins": decided.count("B") / n, "a_wins": decided.count("A") / n, "ties": decided.count("tie") / n,
        "flip_rate": flips, "unparsed": unparsed, "undecided": len(combined) - len(decided),
        "agreement": agreement(per_judge_final),
    }
    per_example = {f"{model_a.spec.name} vs {model_b.spec.name}": [
        {"winner": {"A": model_a.spec.name, "B": model_b.spec.name, "tie": "tie", None: None}[c.choice],
         "judges": {j.name: {"forward": f.to_dict(), "backward": b.to_dict()}
                    for j, f, b in zip(judges, fw, bw, strict=True)}}
        for c, fw, bw in zip(combined, zip(*forward, strict=True), zip(*backward, strict=True), strict=True)]}
    return JudgeRun("pairwise", [j.name for j in judges], summary, per_example)


# --- agreement with human labels -----------------------------------------------------------------------------


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float | None:
    """Cohen's kappa of two raters over the same items (None when undefined: fewer than 2 items)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) < 2:
        return None
    if len(set(a) | set(b)) == 1:
        return 1.0  # both raters gave one and the same label everywhere: perfect, though kappa is 0/0
    kappa = cohen_kappa_score(list(map(str, a)), list(map(str, b)))
    return None if math.isnan(kappa) else float(kappa)


def _yes_no(value: Any) -> str | None:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and value in (0, 1):
        return "yes" if value else "no"
    if isinstance(value, str) and value.strip().casefold() in ("yes", "no", "y", "n", "true", "false", "pass", "fail"):
        return "yes" if value.strip().casefold() in ("yes", "y", "true", "pass") else "no"
    return None


def read_human_labels(path: str | Path) -> list[dict[str, Any]]:
    """Human labels, JSONL: {"line": N (test-file line) or "index": i, "model": NAME (optional), then one field
    per criterion (yes/no, true/false, 1/0) and/or "score"}."""
    from ftlab.data.schema import DataError, iter_lines

    rows = []
    for number, text in iter_lines(path):
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg})", path=path, line=number) from None
        if not isinstance(row, dict) or ("line" not in row and "index" not in row):
            raise DataError("each row needs 'line' (the test file's line) or 'index'", path=path, line=number,
                            field="line")
        row["_line"] = number
        rows.append(row)
    return rows


def human_agreement(runs: Sequence[JudgeRun], model_results, human: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per criterion (rubric criteria; "score" for score/likert judges): how often the judge and the humans
    agree, and Cohen's kappa (on yes/no, or on the rounded score)."""
    by_name = {m.spec.name: m for m in model_results}
    default = model_results[0].spec.name
    pairs: dict[str, tuple[list, list]] = {}
    for row in human:
        name = row.get("model", default)
        if name not in by_name:
            continue
        examples = by_name[name].examples
        index = row["index"] if "index" in row else next((e["index"] for e in examples if e["line"] == row["line"]),
                                                         None)
        if index is None or index >= len(examples):
            continue
        for run in runs:
            if run.kind == "rubric":
                verdicts = run.per_example.get(name, [])
                for criterion in run.summary["criteria"]:
                    human_label = _yes_no(row.get(criterion))
                    judged = verdicts[index][criterion]["choice"] if index < len(verdicts) else None
                    if human_label is not None and judged is not None:
                        pairs.setdefault(criterion, ([], []))[0].append(judged)
                        pairs[criterion][1].append(human_label)
            elif run.kind in ("score", "likert") and "score" in row:
                value = run.per_example.get(name, [])[index]["value"]
                if value is not None:
                    pairs.setdefault(run.kind, ([], []))[0].append(round(value))
                    pairs[run.kind][1].append(round(float(row["score"])))
    return {criterion: {"n": len(j), "agreement": sum(x == y for x, y in zip(j, h, strict=True)) / len(j),
                        "cohen_kappa": cohen_kappa(j, h)}
            for criterion, (j, h) in pairs.items() if j}


# --- all together, on an evaluation ------------------------------------------------------------------------------


def judge_evaluation(result, judge_refs: Sequence[ModelRef], kinds: Sequence[str], *, scale: str = "1-5",
                     criteria: str | None = None, rubric: str | Path | None = None, ensemble: str | None = None,
                     prompts_dir: str | Path | None = None, human: str | Path | None = None,
                     judges: Sequence[Judge] | None = None) -> None:
    """Run the chosen judges on an `EvalResult` in place: adds `result.judgements` (and `result.human_agreement`),
    per-example judge scores that the paired comparisons then cover, and recomputes the comparisons."""
    from ftlab.evaluate.run import pairwise_comparisons

    unknown = [k for k in kinds if k not in JUDGE_KINDS]
    if unknown:
        raise ValueError(f"unknown judge kind(s) {', '.join(unknown)}: choose from {', '.join(JUDGE_KINDS)}")
    if ensemble not in (None, "mean", "majority"):
        raise ValueError(f"--ensemble is mean or majority, not '{ensemble}'")
    judges = list(judges) if judges is not None else [Judge(ref) for ref in judge_refs]
    if not judges:
        raise ValueError("--judge needs at least one --judge-model")
    runs = []
    for kind in kinds:
        if kind == "score":
            runs.append(judge_scores(judges, result.models, "score", (0, 10), criteria, ensemble or "mean",
                                     prompts_dir))
        elif kind == "likert":
            runs.append(judge_scores(judges, result.models, "likert", parse_scale(scale), criteria,
                                     ensemble or "mean", prompts_dir))
        elif kind == "rubric":
            runs.append(judge_rubric(judges, result.models, read_rubric(rubric), ensemble or "majority",
                                     prompts_dir))
        elif kind == "pairwise":
            if len(result.models) < 2:
                raise ValueError("the pairwise judge needs at least two --model")
            baseline = result.models[0]
            for other in result.models[1:]:
                runs.append(judge_pairwise(judges, baseline, other, criteria, ensemble or "majority", prompts_dir))
    result.judgements = [run.to_dict() for run in runs]
    if human is not None:
        result.human_agreement = human_agreement(runs, result.models, read_human_labels(human))
    result.comparisons = pairwise_comparisons(result.models, result.options.baseline, result.options.n_resamples)
