"""Turning CSV / TSV / JSONL rows into chat JSONL (or OpenAI's DPO preference format).

A row becomes a conversation through a column mapping: the user turn is a column or a template over the
row's columns (`"Title: {title}\\n\\nIngredients: {ingredients}"`, Python `str.format` syntax), the assistant
turn likewise, and an optional system prompt. Without a mapping, rows with `prompt` and `completion` become a
user and an assistant message (the legacy completions format). With `to="dpo"`, each row becomes
`{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}`, from a preferred
and a non-preferred column, or from A/B choices (columns `a`, `b` and `choice`, whose value is `a` or `b`;
a tie is skipped). A prompt given as a list of messages (JSONL) is the whole conversation.

An evaluation written by `ftlab eval … --judge pairwise` (its JSON, format `eval`) becomes preference pairs
too: each example the judge decided in both orders gives the winner's reply as preferred and the loser's as
non-preferred, on the prompt read back from the evaluation's test file (ties and undecided examples are skipped).
"""

from __future__ import annotations

import csv
import json
import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ftlab.data.near_dup import normalise
from ftlab.data.schema import DataError, Message, parse_preference, read_test_examples

Format = Literal["csv", "tsv", "jsonl", "eval"]
PREFERRED_NAMES = ("preferred_output", "preferred", "chosen")
NON_PREFERRED_NAMES = ("non_preferred_output", "non_preferred", "rejected")
A_NAMES, B_NAMES = ("a", "response_a", "output_a"), ("b", "response_b", "output_b")
CHOICE_NAMES = ("choice", "winner", "preference", "preferred")
TIES = ("tie", "both", "neither", "none", "", "=")


@dataclass
class Mapping:
    """How a row becomes messages: a column or a template for each turn, and a system prompt."""

    user_column: str | None = None
    user_template: str | None = None
    assistant_column: str | None = None
    assistant_template: str | None = None
    system: str | None = None
    system_column: str | None = None
    preferred_column: str | None = None
    non_preferred_column: str | None = None
    a_column: str | None = None
    b_column: str | None = None
    choice_column: str | None = None


@dataclass
class ConvertResult:
    out: Path
    written: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, why)

    def to_dict(self) -> dict:
        return {"out": str(self.out), "written": self.written,
                "skipped": [{"line": n, "reason": why} for n, why in self.skipped]}


def unescape(template: str) -> str:
    r"""Turn the two-character sequences \n, \t and \\ typed on a command line into the characters."""
    out, i = [], 0
    while i < len(template):
        if template[i] == "\\" and i + 1 < len(template) and template[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[template[i + 1]])
            i += 2
        else:
            out.append(template[i])
            i += 1
    return "".join(out)


def detect_format(path: Path) -> Format:
    suffix = path.suffix.lower()
    if suffix in (".csv",):
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix == ".json" and _is_evaluation(path):
        return "eval"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise ValueError(f"cannot tell the format of '{path}' from its extension: pass --format csv|tsv|jsonl")


def _is_evaluation(path: Path) -> bool:
    """Whether a .json file is one evaluation written by `ftlab eval` (one object with judgements and models)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and {"judgements", "models", "test_file"} <= data.keys()


def read_rows(path: str | Path, fmt: Format | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for each record; CSV line numbers are where the record starts."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    fmt = fmt or detect_format(path)
    if fmt == "jsonl":
        with open(path, encoding="utf-8-sig") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"not valid JSON ({exc.msg} at column {exc.colno})", path=path, line=number
                    ) from None
                if not isinstance(row, dict):
                    raise DataError("expected a JSON object", path=path, line=number)
                yield number, row
        return
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # recipe directions and documents exceed the 128 KB default
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t" if fmt == "tsv" else ",")
        if reader.fieldnames is None:  # reads the header
            raise DataError("the file is empty (expected a header row)", path=path, line=1)
        start = reader.line_num + 1
        for row in reader:
            if None in row:
                raise DataError(f"{len(row[None])} more fields than the header has", path=path, line=start)
            yield start, row
            start = reader.line_num + 1


def _columns(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _fill(template: str, row: dict[str, Any], path: Path, line: int) -> str:
    for name in _columns(template):
        if name not in row:
            raise DataError(
                f"the template uses {{{name}}} but the row has no column '{name}' "
                f"(columns: {', '.join(map(str, row))})",
                path=path, line=line, field=name,
            )
    return template.format_map({k: "" if v is None else v for k, v in row.items()})


def _value(row: dict[str, Any], column: str, path: Path, line: int) -> str:
    if column not in row:
        raise DataError(f"no column '{column}' (columns: {', '.join(map(str, row))})", path=path, line=line,
                        field=column)
    value = row[column]
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _pick(row: dict[str, Any], names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in row), None)


def _turn(row, column, template, path, line) -> str:
    return _fill(template, row, path, line) if template is not None else _value(row, column, path, line)


def convert_file(
    path: str | Path,
    out: str | Path,
    mapping: Mapping | None = None,
    *,
    fmt: Format | None = None,
    to: Literal["chat", "dpo"] = "chat",
    test_file: str | Path | None = None,
) -> ConvertResult:
    """Write chat (or DPO) JSONL from `path`; rows with an empty reply are skipped and listed. An evaluation
    (format `eval`) becomes DPO pairs from its pairwise judgements; `test_file` stands in for the test file it
    names when that has moved."""
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise DataError("file not found", path=path)
    fmt = fmt or detect_format(path)
    if fmt == "eval":
        if to != "dpo":
            raise ValueError("an evaluation's pairwise judgements become preference pairs: pass --to dpo")
        return convert_judgements(path, out, test_file)
    mapping = mapping or Mapping()
    result = ConvertResult(out=out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        for line, row in read_rows(path, fmt):
            record = _convert_row(row, mapping, to, path, line, result)
            if record is not None:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                result.written += 1
    if not result.written:
        raise DataError("no rows converted" + (f" ({result.skipped[0][1]} …)" if result.skipped else ""), path=path)
    return result


def _convert_row(
    row: dict[str, Any], mapping: Mapping, to: str, path: Path, line: int, result: ConvertResult
) -> dict | None:
    user_column, assistant_column = mapping.user_column, mapping.assistant_column
    if mapping.user_template is None and user_column is None:
        user_column = _pick(row, ("prompt", "input", "question", "user"))
        if user_column is None:
            raise DataError("no user column: pass --user-column or --user-template", path=path, line=line)
    system = mapping.system
    if mapping.system_column is not None:
        system = _value(row, mapping.system_column, path, line)
    user = _turn(row, user_column, mapping.user_template, path, line)
    prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    if not user.strip() and not isinstance(row.get(user_column), list):
        result.skipped.append((line, "empty user message"))
        return None

    if to == "dpo":
        if isinstance(row.get(user_column), list):  # a whole conversation (JSONL)
            prompt = ([] if system is None or any(m.get("role") == "system" for m in row[user_column] if
                                                   isinstance(m, dict)) else prompt[:1]) + row[user_column]
        outputs = _preference_outputs(row, mapping, path, line)
        if isinstance(outputs, str):
            result.skipped.append((line, outputs))
            return None
        good, bad = outputs
        if not good.strip() or not bad.strip():
            result.skipped.append((line, "empty preferred or non-preferred output"))
            return None
        return _preference_record(prompt, None, good, bad, path, line)

    if mapping.assistant_template is None and assistant_column is None:
        assistant_column = _pick(row, ("completion", "output", "answer", "response", "assistant"))
        if assistant_column is None:
            raise DataError("no assistant column: pass --assistant-column or --assistant-template", path=path,
                            line=line)
    reply = _turn(row, assistant_column, mapping.assistant_template, path, line)
    if not reply.strip():
        result.skipped.append((line, "empty assistant reply"))
        return None
    if mapping.user_template is None and user_column == "prompt" and assistant_column == "completion":
        # Legacy completions put a separator after the prompt and a leading space before the completion.
        user, reply = user.strip(), reply.strip()
        prompt[-1]["content"] = user
    return {"messages": [*prompt, {"role": "assistant", "content": reply}]}


def _preference_outputs(row: dict[str, Any], mapping: Mapping, path: Path, line: int) -> tuple[str, str] | str:
    """(preferred, non-preferred) text of a row: from its preferred and non-preferred columns, or from an A/B
    choice. A tie is returned as the reason to skip the row."""
    explicit = mapping.preferred_column or mapping.non_preferred_column
    a = mapping.a_column or _pick(row, A_NAMES)
    b = mapping.b_column or _pick(row, B_NAMES)
    choice = mapping.choice_column or _pick(row, CHOICE_NAMES)
    if not explicit and (mapping.choice_column or (a and b and choice)):
        if a is None or b is None:
            raise DataError("A/B choices need the two replies: name them a and b, or pass --a-column and "
                            "--b-column", path=path, line=line)  # fmt: skip
        picked = _value(row, choice, path, line).strip().lower()
        if picked in TIES:
            return f"{choice} is '{picked}' (a tie): no preference to learn"
        sides = {"a": (a, b), "1": (a, b), a.lower(): (a, b), "b": (b, a), "2": (b, a), b.lower(): (b, a)}
        if picked not in sides:
            raise DataError(f"'{picked}' is not a choice: write a or b (or tie)", path=path, line=line, field=choice)
        better, worse = sides[picked]
        return _value(row, better, path, line), _value(row, worse, path, line)
    preferred = mapping.preferred_column or _pick(row, PREFERRED_NAMES)
    rejected = mapping.non_preferred_column or _pick(row, NON_PREFERRED_NAMES)
    if preferred is None or rejected is None:
        raise DataError("DPO needs a preferred and a non-preferred column (--preferred-column and "
                        "--non-preferred-column, or columns named chosen / rejected), or A/B choices (columns a, b "
                        "and choice)", path=path, line=line)  # fmt: skip
    return _value(row, preferred, path, line), _value(row, rejected, path, line)


def _preference_record(prompt: list[dict[str, Any]], tools: list[dict[str, Any]] | None, good: str, bad: str,
                       path: Path, line: int) -> dict[str, Any]:  # fmt: skip
    """A preference line, checked by the parser the trainer uses (so a bad prompt is named by its source line)."""
    record = {"input": {"messages": prompt, **({"tools": tools} if tools else {})},
              "preferred_output": [{"role": "assistant", "content": good}],
              "non_preferred_output": [{"role": "assistant", "content": bad}]}  # fmt: skip
    parse_preference(record, path=path, line=line)
    return record


def convert_judgements(path: str | Path, out: str | Path, test_file: str | Path | None = None) -> ConvertResult:
    """Preference pairs from an evaluation's pairwise judgements (`ftlab eval … --judge pairwise`): for each
    example decided the same way in both orders, the winner's reply is preferred over the loser's, on the
    prompt of that line of the test file. Ties, undecided examples and identical replies are skipped."""
    path, out = Path(path), Path(out)
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    runs = [run for run in data.get("judgements") or [] if run.get("kind") == "pairwise"]
    if not runs:
        raise DataError("the evaluation has no pairwise judgements: run `ftlab eval TEST --model A --model B "
                        "--judge pairwise --judge-model JUDGE` first", path=path)  # fmt: skip
    test = Path(test_file or data["test_file"])
    if not test.is_file():
        raise DataError(f"the evaluation's test file '{test}' is not there: pass --test-file", path=path)
    examples = {example.line: example for example in read_test_examples(test)}
    outputs = {model["name"]: model["examples"] for model in data["models"]}
    result = ConvertResult(out=out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        for run in runs:
            a, b = run["summary"]["a"], run["summary"]["b"]
            for verdicts in run["per_example"].values():
                for row_a, row_b, verdict in zip(outputs[a], outputs[b], verdicts, strict=True):
                    line = row_a["line"]
                    winner = verdict["winner"]
                    if winner not in (a, b):
                        result.skipped.append((line, f"{a} vs {b}: " + ("a tie" if winner == "tie" else
                                                                         "no verdict")))  # fmt: skip
                        continue
                    good, bad = (row_a, row_b) if winner == a else (row_b, row_a)
                    if normalise(good["output"]) == normalise(bad["output"]):
                        result.skipped.append((line, f"{a} vs {b}: the same reply"))
                        continue
                    example = examples.get(line)
                    if example is None or example.question() != row_a["prompt"]:
                        raise DataError(f"line {line} of the test file is not the prompt the evaluation judged: the "
                                        "file changed since (pass the original with --test-file)",
                                        path=test)  # fmt: skip
                    prompt = [_message(m) for m in example.prompt_messages()]
                    record = _preference_record(prompt, example.tools, good["output"], bad["output"], test, line)
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                    result.written += 1
    if not result.written:
        raise DataError(f"no pairs: every judged example was skipped ({result.skipped[0][1]} …)"
                        if result.skipped else "no judged examples", path=path)  # fmt: skip
    return result


def _message(message: Message) -> dict[str, Any]:
    return message.model_dump(exclude_none=True)
