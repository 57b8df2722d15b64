"""Building crafted chat JSONL files for the data workbench tests (English and Japanese content)."""

from __future__ import annotations

import json
from pathlib import Path

SYSTEM = "You are a concise assistant."

GOOD = [
    ("What is the capital of France?", "Paris."),
    ("Name a primary colour.", "Red."),
    ("How many legs does a spider have?", "Eight."),
    ("Translate 'thank you' into German.", "Danke."),
    ("What gas do plants absorb?", "Carbon dioxide."),
    ("日本の首都はどこですか？", "東京です。"),
    ("富士山の高さは何メートルですか？", "3,776メートルです。"),
    ("「ありがとう」を英語で言うと？", "Thank you です。"),
    ("一年は何日ありますか？", "通常は365日です。"),
    ("水の沸点は何度ですか？", "1気圧で100度です。"),
    ("Which planet is known as the red planet?", "Mars."),
    ("寿司の主な材料は何ですか？", "酢飯と魚介類です。"),
]


def chat(user: str, assistant: str, system: str | None = SYSTEM, **extra) -> dict:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages, **extra}


def good_rows(n: int = len(GOOD)) -> list[dict]:
    return [chat(u, a) for u, a in GOOD[:n]]


def write_jsonl(path: Path, rows: list[dict | str | bytes]) -> Path:
    """Rows as JSON objects, raw text lines or raw bytes lines (for encoding errors)."""
    with open(path, "wb") as handle:
        for row in rows:
            if isinstance(row, bytes):
                handle.write(row + b"\n")
            elif isinstance(row, str):
                handle.write(row.encode("utf-8") + b"\n")
            else:
                handle.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    return path


def judged_evaluation(folder: Path, questions: list[tuple[str, str, str]], verdicts: list[str | None],
                      tools: list[dict] | None = None) -> Path:  # fmt: skip
    """What `ftlab eval TEST --model base --model tuned --judge pairwise --output judged.json` writes
    (`EvalResult.to_dict`, built from its own types), on a real test file of `questions` (question, good reply,
    bad reply): base answered badly, tuned well, except the last example, where both gave the same reply.
    `verdicts` are the pairwise judge's winners per example ("base", "tuned", "tie" or None)."""
    from ftlab.evaluate.judges import JudgeRun
    from ftlab.evaluate.run import EvalOptions, EvalResult, ModelResult
    from ftlab.infer.refs import ModelRef

    test = write_jsonl(folder / "test.jsonl", [
        {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q},
                      {"role": "assistant", "content": good}], **({"tools": tools} if tools else {})}
        for q, good, _ in questions])  # fmt: skip
    models = [ModelResult(ModelRef(name, name), {}, [
        {"index": i, "line": i + 1, "prompt": q, "reference": good, "output": good if name == "tuned" else bad,
         "scores": {}} for i, (q, good, bad) in enumerate(questions)], 0.0) for name in ("base", "tuned")]  # fmt: skip
    models[1].examples[-1]["output"] = models[0].examples[-1]["output"]
    run = JudgeRun("pairwise", ["judge"], {"a": "base", "b": "tuned"},
                   {"base vs tuned": [{"winner": w, "judges": {}} for w in verdicts]})
    result = EvalResult(str(test), ["exact"], EvalOptions(), models, judgements=[run.to_dict()])
    return result.write(folder / "judged.json")


CHILD_SYSTEM = "Answer a child: short and kind."


def animal_pairs(animals: list[str]) -> list[dict]:
    """Preference rows in OpenAI's format: the preferred reply is short, the non-preferred one rambles."""
    return [{"input": {"messages": [{"role": "system", "content": CHILD_SYSTEM},
                                    {"role": "user", "content": f"What sound does a {a} make?"}]},
             "preferred_output": [{"role": "assistant", "content": f"A {a} says hi!"}],
             "non_preferred_output": [{"role": "assistant", "content": f"Well, the {a} is an animal that, in many "
                                       "situations and depending on the weather, may or may not make sounds."}]}
            for a in animals]  # fmt: skip
