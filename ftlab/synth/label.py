"""Labelling inputs with a teacher, held to a closed label set.

A local teacher is constrained to spell a label (the label trie of `ftlab.infer.constrained`); every reply, local
or remote, is then validated against the set. A reply that is not a label (an emoji where a name is required, a
sentence, a label that does not exist) is answered with a correction and asked again; one still invalid after
the retries goes to `OUT.rejected.jsonl` with every reply it got, and is never written as a label.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftlab.data.schema import DataError, iter_lines
from ftlab.infer.backend import ChatBackend
from ftlab.synth.runner import Journal, Outputs, Progress, side_path
from ftlab.synth.validated import ask_validated

LABEL_SYSTEM = (
    "{instruction}Answer with exactly one label from this list, spelled as written, and nothing else:\n{labels}"
)
DEFAULT_INSTRUCTION = "Label the user's text."
_WRAPPERS = " \t\r\n\"'`*_“”‘’「」『』[]()<>.。:"


@dataclass
class LabelResult:
    out: Path
    rejected_path: Path
    labelled: int = 0
    rejected: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def read_inputs(path: str | Path) -> list[tuple[int, str]]:
    """(line, text) for each input: a JSON object with "text" or "input", or a chat example whose last user
    message is the input."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path=path)
    inputs = []
    for number, line in iter_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno})", path=path, line=number) from None
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object", path=path, line=number)
        text = obj.get("text", obj.get("input"))
        if text is None and isinstance(obj.get("messages"), list):
            users = [m for m in obj["messages"] if isinstance(m, dict) and m.get("role") == "user"]
            text = users[-1].get("content") if users else None
        if not isinstance(text, str) or not text.strip():
            raise DataError(
                "no input text: give a non-empty 'text' (or 'input') string, or 'messages' with a user message",
                path=path,
                line=number,
                field="text",
            )
        inputs.append((number, text))
    if not inputs:
        raise DataError("the file has no inputs", path=path)
    return inputs


def match_label(reply: str, labels: list[str]) -> str | None:
    """The label `reply` names, tolerating case, width, surrounding quotes and a final period; else None."""
    text = reply.strip().strip(_WRAPPERS)
    if text in labels:
        return text
    folded = unicodedata.normalize("NFKC", text).casefold()
    for label in labels:
        if unicodedata.normalize("NFKC", label).casefold() == folded:
            return label
    return None


def synth_label(
    inputs_path: str | Path,
    labels: list[str],
    out: str | Path,
    teacher: ChatBackend,
    instruction: str | None = None,
    system: str | None = None,
    invalid_retries: int = 2,
    round_size: int = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> LabelResult:
    """Write `out` (chat JSONL: system, user input, assistant label) and `OUT.rejected.jsonl`."""
    out = Path(out)
    inputs = read_inputs(inputs_path)
    listed = "\n".join(f"- {label}" for label in labels)
    teacher_system = LABEL_SYSTEM.format(instruction=(instruction or DEFAULT_INSTRUCTION).strip() + " ", labels=listed)
    digest = hashlib.sha256(Path(inputs_path).read_bytes()).hexdigest()[:16]
    job = {"command": "label", "inputs": digest, "labels": labels, "teacher": teacher.name,
           "instruction": instruction, "system": system, "invalid_retries": invalid_retries}  # fmt: skip
    journal = Journal(side_path(out, "journal"), job, overwrite)
    rejected_path = side_path(out, "rejected")

    def render_example(record: dict[str, Any], line: int) -> dict[str, Any]:
        return {
            "messages": [
                {"role": "system", "content": system or teacher_system},
                {"role": "user", "content": record["input"]},
                {"role": "assistant", "content": record["label"]},
            ]
        }

    def render_provenance(record: dict[str, Any], line: int) -> dict[str, Any]:
        return {"line": line, "input_file": str(inputs_path), "input_line": record["line"],
                "replies": record["replies"]}  # fmt: skip

    def render_rejected(record: dict[str, Any], line: int) -> dict[str, Any]:
        return {"input_file": str(inputs_path), "input_line": record["line"], "input": record["input"],
                "replies": record["replies"], "reason": "no valid label after retries"}  # fmt: skip

    outputs = Outputs(
        {
            out: ({"kept"}, render_example),
            side_path(out, "provenance"): ({"kept"}, render_provenance),
            rejected_path: ({"invalid"}, render_rejected),
        }
    )
    outputs.rebuild(journal.records)
    todo = [(line, text) for line, text in inputs if f"line-{line}" not in journal.done]
    bar = Progress(f"label {Path(inputs_path).name}", len(todo), journal.spend(), enabled=progress)
    try:
        for start in range(0, len(todo), round_size):
            batch = todo[start : start + round_size]
            conversations = [
                [{"role": "system", "content": teacher_system}, {"role": "user", "content": text}] for _, text in batch
            ]
            results = ask_validated(
                teacher,
                conversations,
                bar,
                parse=lambda reply: match_label(reply, labels),
                correction=lambda reply: (
                    f"{reply.strip()!r} is not one of the labels. Answer with exactly one of: {', '.join(labels)}"
                ),
                retries=invalid_retries,
                max_new_tokens=max(16, max(len(label) for label in labels) + 8),
                temperature=0.0,
                labels=labels if teacher.local else None,  # an endpoint may not know ftlab's `labels` field
            )
            records = [
                {
                    "key": f"line-{line}",
                    "line": line,
                    "input": text,
                    "status": "kept" if result.value is not None else "invalid",
                    "label": result.value,
                    "replies": result.replies,
                    "tokens": result.tokens,
                }
                for (line, text), result in zip(batch, results, strict=True)
            ]
            journal.append(records)
            outputs.append(records)
    finally:
        bar.close()
    counts: dict[str, int] = {}
    for record in journal.records:
        if record["status"] == "kept":
            counts[record["label"]] = counts.get(record["label"], 0) + 1
    prompt_tokens, completion_tokens = journal.spend()
    return LabelResult(
        out=out,
        rejected_path=rejected_path,
        labelled=sum(counts.values()),
        rejected=sum(r["status"] == "invalid" for r in journal.records),
        counts=counts,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
