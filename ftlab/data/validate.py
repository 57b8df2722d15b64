"""`validate_file`: every check that should pass before money or hours are spent on training.

The file is streamed: examples are checked, tokenised and MinHashed in chunks and then dropped, so memory
grows only by about half a kilobyte per example (fingerprints for the duplicate checks, one MinHash signature) and
at most `MAX_FINDINGS_PER_CHECK` findings per check. Structural errors use `parse_example`, the parser the
trainer uses, so the wording is the same in both places.

The checks: the OpenAI cookbook's format checks (not JSON, missing messages, unknown keys, unknown roles,
missing content, no assistant message — with tool calls, tool messages and `weight` treated as valid), empty
assistant replies, conversations not ending with an assistant turn, examples over the training length (and
the tokens cut), exact and near duplicates, the same prompt with different answers, mixed system prompts,
encoding problems (BOM, invalid UTF-8), fewer than 10 examples, and optionally label checks.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ftlab.config import BUNDLED_MODEL, TrainConfig
from ftlab.data.estimate import COOKBOOK_MAX_TOKENS_PER_EXAMPLE, openai_model
from ftlab.data.findings import Finding, sort_findings
from ftlab.data.labels import SHAPES, LabelReport, LabelTally
from ftlab.data.near_dup import DEFAULT_JACCARD, Signatures, clusters, example_text, minhash_pairs
from ftlab.data.schema import ChatExample, DataError, parse_example
from ftlab.data.tokens import OpenAICounter, TokenCounter, token_counter

MIN_EXAMPLES = 10  # OpenAI rejects smaller training files
MAX_FINDINGS_PER_CHECK = 200
CHUNK = 256
DEFAULT_MAX_LENGTH = TrainConfig.model_fields["max_length"].default

FIXES = {
    "encoding": "re-save the file as UTF-8 (without BOM)",
    "json": 'make every line one complete JSON object: {"messages": [{"role": ..., "content": ...}, ...]}',
    "schema": "fix the field named; the format is OpenAI's chat fine-tuning JSONL",
    "empty_assistant": "write the reply the model should learn, or drop the example",
    "not_ending_with_assistant": "end each conversation with the assistant reply to learn; later turns are not trained",
    "too_long": "shorten the example, split the conversation, or raise --max-length (max_length when training)",
    "nothing_trained": "the prompt alone fills the training length: shorten it or raise max_length",
    "exact_duplicate": "remove the repeats (`ftlab data dedup`): they over-weight one example",
    "near_duplicate": "review these lines; `ftlab data dedup` keeps the first of each cluster",
    "conflicting_answers": "decide which answer is right: the model cannot learn two answers to one prompt",
    "mixed_system_prompts": "use the system prompt you will deploy with, the same in every example",
    "too_few_examples": f"OpenAI requires at least {MIN_EXAMPLES} examples; 50-100 good ones is a better start",
    "labels": "map these outputs to the allowed labels, or fix the labelling prompt",
}
FEW_EXAMPLES_LOCAL = (f"fine for a first local run; 50-100 good examples teach far more (OpenAI would refuse fewer "
                      f"than {MIN_EXAMPLES})")


@dataclass
class ValidationReport:
    """What `validate_file` found, plus token and label summaries."""

    path: str
    model: str | None
    tokenizer: str | None
    max_length: int | None
    n_lines: int = 0
    n_examples: int = 0
    findings: list[Finding] = field(default_factory=list)
    suppressed: Counter = field(default_factory=Counter)  # check -> findings over the per-check cap
    tokens: dict = field(default_factory=dict)
    labels: LabelReport | None = None

    @property
    def n_errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == "error") + self._suppressed("error")

    @property
    def n_warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == "warning") + self._suppressed("warning")

    def _suppressed(self, severity: str) -> int:
        return sum(n for (check, sev), n in self.suppressed.items() if sev == severity)

    @property
    def ok(self) -> bool:
        return self.n_errors == 0

    def to_dict(self) -> dict:
        return {
            "file": self.path,
            "model": self.model,
            "tokenizer": self.tokenizer,
            "max_length": self.max_length,
            "lines": self.n_lines,
            "examples": self.n_examples,
            "errors": self.n_errors,
            "warnings": self.n_warnings,
            "ok": self.ok,
            "findings": [f.model_dump() for f in self.findings],
            "not_listed": [
                {"check": check, "severity": sev, "count": n} for (check, sev), n in sorted(self.suppressed.items())
            ],
            "tokens": self.tokens,
            "labels": self.labels.to_dict() if self.labels else None,
        }


class _Findings:
    """Collects findings, keeping at most MAX_FINDINGS_PER_CHECK of each check (the rest are counted)."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        self.per_check: Counter = Counter()

    def add(self, severity: str, check: str, message: str, lines: list[int] | None = None, **kw) -> None:
        self.per_check[check] += 1
        if self.per_check[check] > MAX_FINDINGS_PER_CHECK:
            self.report.suppressed[(check, severity)] += 1
            return
        kw.setdefault("fix", FIXES.get(check))
        self.report.findings.append(Finding(severity=severity, check=check, message=message, lines=lines or [], **kw))


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes, int]]:
    """(line number, raw bytes without the line break, bytes read so far), streaming."""
    done = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            done += len(raw)
            yield number, raw.rstrip(b"\r\n"), done


def _digest(value: object) -> int:
    """A 64-bit fingerprint (an int: the smallest thing a dict can hold per example; collisions ~1e-9 at 200k)."""
    data = json.dumps(value, sort_keys=True, ensure_ascii=False).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _schema_fix(error: DataError) -> str:
    detail = error.detail
    if "not valid JSON" in detail or "expected a JSON object" in detail:
        return FIXES["json"]
    if "prompt-completion" in detail:
        return "convert it: `ftlab data convert FILE --out chat.jsonl` turns prompt/completion into messages"
    if "unknown key" in detail:
        return "remove or rename the key (allowed: role, content, name, weight, tool_calls, tool_call_id)"
    if "unknown role" in detail:
        return "use one of the roles system, user, assistant, tool"
    if "no assistant message" in detail:
        return "add the assistant reply the model should learn"
    if "'content' is missing" in detail:
        return "add a 'content' string to the message"
    return FIXES["schema"]


class _TokenCheck:
    """Counts tokens chunk by chunk and reports examples over the training length."""

    def __init__(self, counter: TokenCounter, max_length: int, findings: _Findings) -> None:
        self.counter = counter
        self.max_length = max_length
        self.findings = findings
        self.totals = array("l")
        self.cut_tokens = 0

    def add(self, examples: list[ChatExample]) -> None:
        for example, counts in zip(examples, self.counter.count(examples, detail=False), strict=True):
            self.totals.append(counts.total)
            if counts.total <= self.max_length:
                continue
            over = counts.total - self.max_length
            self.cut_tokens += over
            prompt = self.counter.count_prompt(example)
            if prompt >= self.max_length:
                self.findings.add(
                    "error",
                    "nothing_trained",
                    f"{counts.total} tokens; the part before the first assistant reply alone is {prompt} tokens, "
                    f"over the training length {self.max_length}: nothing of this example would be learned",
                    [example.line],
                )
            else:
                self.findings.add(
                    "warning",
                    "too_long",
                    f"{counts.total} tokens, over the training length {self.max_length}: the last {over} tokens "
                    "would be cut",
                    [example.line],
                )

    def summary(self) -> dict:
        if not self.totals:
            return {}
        totals = np.array(self.totals, dtype=np.int64)
        p = np.percentile(totals, [50, 95]).round().astype(int)
        return {
            "counted_with": self.counter.description,
            "total": int(totals.sum()),
            "min": int(totals.min()),
            "median": int(p[0]),
            "p95": int(p[1]),
            "max": int(totals.max()),
            "over_max_length": int((totals > self.max_length).sum()),
            "tokens_cut": self.cut_tokens,
        }


def _max_length_for(model: str, counter: TokenCounter, max_length: int | None) -> int:
    if max_length is not None:
        return max_length
    if isinstance(counter, OpenAICounter):
        entry = openai_model(model)
        return entry.max_tokens_per_example if entry else COOKBOOK_MAX_TOKENS_PER_EXAMPLE
    return DEFAULT_MAX_LENGTH


def validate_file(
    path: str | Path,
    model: str | None = BUNDLED_MODEL,
    *,
    max_length: int | None = None,
    labels: list[str] | None = None,
    infer_labels: bool = False,
    near_threshold: float = DEFAULT_JACCARD,
    tokens: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> ValidationReport:
    """Check a chat JSONL file for training `model` (an OpenAI name holds it to OpenAI's rules; None: no target).
    `tokens=False` (or no model) skips the token checks; `progress(done_bytes, total_bytes)`.

    `labels` (or `infer_labels`) adds the label checks on the final assistant reply of each example.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    counter = token_counter(model) if model and tokens else None
    limit = _max_length_for(model, counter, max_length) if counter else None
    report = ValidationReport(
        path=str(path), model=model, tokenizer=counter.description if counter else None, max_length=limit
    )
    findings = _Findings(report)
    tokens = _TokenCheck(counter, limit, findings) if counter else None
    tally = LabelTally(labels) if (labels or infer_labels) else None
    signatures = Signatures()
    example_lines = array("l")
    seen: dict[int, int] = {}  # example digest -> first line
    duplicate_groups: dict[int, list[int]] = {}  # first line -> lines repeating it
    prompts: dict[int, tuple[int, int]] = {}  # prompt digest -> (first line, answer digest)
    conflicts: dict[int, list[int]] = {}  # first line of a prompt -> lines with a different answer
    systems: dict[str | None, list[int]] = {}  # system prompt -> [count, first line]
    n_weight0 = n_tool = 0
    total_bytes = os.path.getsize(path)
    chunk: list[ChatExample] = []

    def flush() -> None:
        if tokens:
            tokens.add(chunk)
        signatures.add(example_text(e) for e in chunk)
        chunk.clear()

    for number, raw, done in _raw_lines(path):
        report.n_lines = number
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
            findings.add(
                "warning",
                "encoding",
                "the file starts with a UTF-8 byte order mark (BOM)",
                [1],
                fix="re-save as UTF-8 without BOM; some tools read the BOM as part of the first key",
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            findings.add(
                "error",
                "encoding",
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                [number],
            )
            continue
        if not text.strip():
            continue
        try:
            example = parse_example(text, path=path, line=number)
        except DataError as error:
            check = "json" if "JSON" in error.detail else "schema"
            findings.add(
                "error",
                check,
                error.detail,
                [number],
                message_index=error.message_index,
                field=error.field,
                fix=_schema_fix(error),
            )
            continue
        report.n_examples += 1
        example_lines.append(number)

        for index, message in enumerate(example.messages):
            calls = message.tool_calls or message.function_call
            if message.role == "assistant" and not calls and not message.text.strip():
                findings.add(
                    "error" if message.trained else "warning",
                    "empty_assistant",
                    "the assistant reply is empty" + ("" if message.trained else " (weight 0: not trained)"),
                    [number],
                    message_index=index,
                    field="content",
                )
            n_weight0 += message.role == "assistant" and message.weight == 0
        n_tool += any(m.tool_calls or m.role == "tool" for m in example.messages)
        last = example.messages[-1]
        if last.role != "assistant":
            findings.add(
                "warning",
                "not_ending_with_assistant",
                f"the conversation ends with a '{last.role}' message after the last assistant reply",
                [number],
                message_index=len(example.messages) - 1,
            )

        digest = _digest(example.to_openai())
        if digest in seen:
            duplicate_groups.setdefault(seen[digest], []).append(number)
        else:
            seen[digest] = number
        prompt_digest = _digest([m.model_dump(exclude_none=True) for m in example.prompt_messages()])
        answer_digest = _digest(example.reference().strip())
        if prompt_digest in prompts:
            first, answer = prompts[prompt_digest]
            if answer != answer_digest:
                conflicts.setdefault(first, []).append(number)
        else:
            prompts[prompt_digest] = (number, answer_digest)
        system = next((m.text for m in example.messages if m.role in ("system", "developer")), None)
        entry = systems.setdefault(system[:500] if system else None, [0, number])
        entry[0] += 1
        if tally:
            tally.add(number, example.reference())

        chunk.append(example)
        if len(chunk) >= CHUNK:
            flush()
            if progress:
                progress(done, total_bytes)
    if chunk:
        flush()
    if progress:
        progress(total_bytes, total_bytes)

    # Whole-file checks.
    if report.n_examples < MIN_EXAMPLES:
        # OpenAI refuses such a file; ftlab trains on it, though so few examples rarely teach much.
        for_openai = model is not None and openai_model(model) is not None
        findings.add("error" if for_openai else "warning", "too_few_examples",
                     f"only {report.n_examples} valid examples",
                     fix=FIXES["too_few_examples"] if for_openai else FEW_EXAMPLES_LOCAL)  # fmt: skip
    for first, lines in duplicate_groups.items():
        findings.add("warning", "exact_duplicate", f"{len(lines) + 1} identical examples", [first, *lines])
    exact = {line for lines in duplicate_groups.values() for line in lines}
    pairs = [(i, j) for i, j, _ in minhash_pairs(signatures.matrix, near_threshold) if example_lines[j] not in exact]
    roots = clusters(len(example_lines), pairs)
    near: dict[int, list[int]] = {}
    for index, root in enumerate(roots):
        if root != index and example_lines[index] not in exact:
            near.setdefault(root, []).append(example_lines[index])
    for root, lines in near.items():
        findings.add(
            "warning",
            "near_duplicate",
            f"{len(lines) + 1} near-identical examples (character 3-gram Jaccard ≥ {near_threshold})",
            [example_lines[root], *lines],
        )
    for first, lines in conflicts.items():
        findings.add(
            "warning",
            "conflicting_answers",
            f"the same prompt has {len(lines) + 1} different final answers",
            [first, *lines],
        )
    if len(systems) > 1:
        variants = sorted(systems.items(), key=lambda kv: -kv[1][0])
        described = "; ".join(
            f"{count}× {'(none)' if text is None else repr(text[:60] + ('…' if len(text) > 60 else ''))} "
            f"(first on line {line})"
            for text, (count, line) in variants[:5]
        )
        findings.add(
            "warning",
            "mixed_system_prompts",
            f"{len(systems)} different system prompts: {described}",
            [line for _, (_, line) in variants[:20]],
        )
    if n_weight0:
        findings.add("info", "weight", f"{n_weight0} assistant messages have weight 0 (kept as context, not trained)")
    if n_tool:
        findings.add("info", "tools", f"{n_tool} examples use tool calls or tool messages (valid)")
    if tokens:
        report.tokens = tokens.summary()
    if tally:
        report.labels = tally.report()
        _label_findings(report.labels, findings)
    report.findings = sort_findings(report.findings)
    return report


def _label_findings(labels: LabelReport, findings: _Findings) -> None:
    if not labels.labels:
        findings.add(
            "warning",
            "labels",
            "no label-like outputs occur twice or more: the data does not look like "
            "classification, pass the allowed outputs with --labels",
        )
        return
    source = "inferred from the data" if labels.inferred else "given"
    findings.add(
        "info",
        "labels",
        f"{labels.share_inside:.1%} of {labels.n_outputs} final replies are one of the "
        f"{len(labels.labels)} labels ({source})",
    )
    for shape, samples in labels.outside.items():
        count = labels.outside_counts[shape]
        shown = ", ".join(repr(o) for o in dict.fromkeys(o for _, o in samples[:20]))
        findings.add("warning", "labels", f"{count} replies are {SHAPES[shape]}: {shown}", [n for n, _ in samples])
    rare = labels.rare_labels()
    if rare:
        counts = ", ".join(f"{label!r} {labels.distribution[label]}×" for label in rare[:20])
        findings.add(
            "info",
            "labels",
            f"rare labels (under 1% of replies): {counts}",
            fix="add examples of the rare labels, or merge them",
        )
