"""`validate_file`: every check that should pass before money or hours are spent on training.

One validator, one list of checks (`CHECKS`: id, severity rule, what it finds, fix): `ftlab data validate`
runs all of them; `ftlab serve` runs the ones that can refuse a file on every fine-tune upload
(`first_error=True`) and the minimum-example rule (`example_count_finding`) when a job names a training file.

The file is streamed: examples are checked, tokenised and MinHashed in chunks and then dropped, so memory
grows only by about half a kilobyte per example (fingerprints for the duplicate checks, one MinHash signature) and
at most `MAX_FINDINGS_PER_CHECK` findings per check. Structural errors use `parse_example`, the parser the
trainer uses, so the wording is the same in both places.
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
from pydantic import ValidationError

from ftlab.config import BUNDLED_MODEL, TrainConfig
from ftlab.data.estimate import COOKBOOK_MAX_TOKENS_PER_EXAMPLE, openai_model
from ftlab.data.findings import Finding, Severity, sort_findings
from ftlab.data.labels import SHAPES, LabelReport, LabelTally
from ftlab.data.near_dup import (
    DEFAULT_JACCARD,
    Signatures,
    all_messages,
    clusters,
    example_key,
    example_text,
    minhash_pairs,
    normalise,
)
from ftlab.data.schema import (
    ChatExample,
    DataError,
    DataKind,
    Message,
    PreferenceExample,
    data_kind,
    parse_example,
    parse_preference,
)
from ftlab.data.tokens import OpenAICounter, TokenCounter, count_pairs, token_counter
from ftlab.data.tools import Tool

MIN_EXAMPLES = 10  # OpenAI rejects smaller training files
MAX_FINDINGS_PER_CHECK = 200
CHUNK = 256
DEFAULT_MAX_LENGTH = TrainConfig.model_fields["max_length"].default


@dataclass(frozen=True)
class Check:
    """One data check: the `check` of its findings, when it is an error / warning / info, what it finds, and the
    fix its findings suggest unless one names a more precise fix."""

    id: str
    severity: str
    finds: str
    fix: str | None


CHECKS: dict[str, Check] = {check.id: check for check in (
    Check("encoding", "warning for a BOM; error for invalid UTF-8",
          "a UTF-8 byte order mark at the start; a line that is not UTF-8",
          "re-save the file as UTF-8 (without BOM)"),
    Check("json", "error", "a line that is not one JSON object, or is nested too deeply to read",
          'make every line one complete JSON object: {"messages": [{"role": ..., "content": ...}, ...]}'),
    Check("schema", "error",
          "missing `messages`, unknown keys, unknown roles, missing content, no assistant message: the trainer's own "
          "parser (`parse_example`), so the wording is the same. Tool calls, tool messages and `weight` are valid. "
          "A preference (DPO) file, told by its first line, is read by `parse_preference`: `input.messages`, and "
          "`preferred_output` and `non_preferred_output` of one assistant message each",
          "fix the field named; the format is OpenAI's chat (or preference) fine-tuning JSONL"),
    Check("empty_user", "error", "an empty or whitespace-only user message (OpenAI refuses empty content)",
          "write the user's message, or drop the example"),
    Check("empty_assistant", "error; warning with weight 0 (not trained)",
          "an empty or whitespace-only assistant reply (or preference output) without tool calls",
          "write the reply the model should learn, or drop the example"),
    Check("identical_outputs", "warning", "a preference pair whose two outputs are the same text: nothing to learn",
          "make the non-preferred output the reply you want less, or drop the pair"),
    Check("not_ending_with_assistant", "warning", "messages after the last assistant reply",
          "end each conversation with the assistant reply to learn; later turns are not trained"),
    Check("too_long", "warning", "an example over the training length, with the tokens that would be cut",
          "shorten the example, split the conversation, or raise --max-length (max_length when training)"),
    Check("nothing_trained", "error", "an example whose prompt alone fills the training length",
          "the prompt alone fills the training length: shorten it or raise max_length"),
    Check("too_few_examples",
          "error with no examples, or under an OpenAI model's minimum (or `ftlab serve`'s); warning for a local model",
          f"fewer than {MIN_EXAMPLES} examples, OpenAI's minimum (`ftlab serve`: `FTLAB_MIN_TRAINING_EXAMPLES`)",
          f"OpenAI requires at least {MIN_EXAMPLES} examples; 50-100 good ones is a better start"),
    Check("exact_duplicate", "warning",
          "examples with the same roles and the same text in every message, up to case, width, punctuation and spacing",
          "remove the repeats (`ftlab data dedup`): they over-weight one example"),
    Check("near_duplicate", "warning", f"character 3-gram MinHash, Jaccard ≥ {DEFAULT_JACCARD}, so Japanese works",
          "review these lines; `ftlab data dedup` keeps the first of each cluster"),
    Check("conflicting_answers", "warning",
          "the same prompt with different final answers; in preference data, a pair preferred one way on one line "
          "and the other way on another",
          "decide which answer is right: the model cannot learn two answers to one prompt"),
    Check("mixed_system_prompts", "warning", "more than one system prompt across the file",
          "use the system prompt you will deploy with, the same in every example"),
    Check("weight", "info", "assistant messages with weight 0 (kept as context, not trained)", None),
    Check("tools", "info", "examples with tool calls or tool messages (valid)", None),
    Check("tool_calls", "error; warning for a call without tool definitions or a result that answers no call",
          "tool definitions that are not OpenAI function tools, calls whose arguments are not a JSON object or whose "
          "function is not defined, calls in an example without `tools`, tool results whose `tool_call_id` names "
          "no earlier call",
          "give each example the `tools` it may call (OpenAI's shape) and each call JSON-object arguments"),
    Check("labels", "warning / info",
          "with `--labels` / `--infer-labels`: share inside the set, outside replies grouped as emoji / "
          "`:shortcode:` / another spelling / unknown label / free text, rare labels",
          "map these outputs to the allowed labels, or fix the labelling prompt"),
)}  # fmt: skip
FEW_EXAMPLES_LOCAL = (f"fine for a first local run; 50-100 good examples teach far more (OpenAI would refuse fewer "
                      f"than {MIN_EXAMPLES})")


def finding(severity: Severity, check: str, message: str, lines: list[int] | None = None, **kw) -> Finding:
    """A finding of one of `CHECKS`, with that check's fix unless `fix` is given."""
    kw.setdefault("fix", CHECKS[check].fix)
    return Finding(severity=severity, check=check, message=message, lines=lines or [], **kw)


def server_min_examples() -> int:
    """The fewest training examples `ftlab serve` accepts: OpenAI's `MIN_EXAMPLES`, or
    `FTLAB_MIN_TRAINING_EXAMPLES`."""
    return int(os.environ.get("FTLAB_MIN_TRAINING_EXAMPLES", MIN_EXAMPLES))


def example_count_finding(n_examples: int, required: int | None) -> Finding | None:
    """The minimum-example rule. No examples is always an error; fewer than `required` (OpenAI's `MIN_EXAMPLES`
    for an OpenAI model, `server_min_examples()` for `ftlab serve`) is an error; with nothing required (local
    training takes any number), fewer than `MIN_EXAMPLES` is a warning."""
    if n_examples == 0:
        return finding("error", "too_few_examples", "the file has no examples", fix=CHECKS["json"].fix)
    if required is not None:
        if n_examples >= required:
            return None
        noun = "example" if n_examples == 1 else "examples"
        return finding("error", "too_few_examples", f"only {n_examples} {noun}; at least {required} are required")
    if n_examples < MIN_EXAMPLES:
        return finding("warning", "too_few_examples", f"only {n_examples} valid examples", fix=FEW_EXAMPLES_LOCAL)
    return None


@dataclass
class ValidationReport:
    """What `validate_file` found, plus token and label summaries."""

    path: str
    model: str | None
    tokenizer: str | None
    max_length: int | None
    kind: DataKind = "chat"
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
            "kind": self.kind,
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
    """Collects findings, keeping at most MAX_FINDINGS_PER_CHECK of each check (the rest are counted), or only
    the errors."""

    def __init__(self, report: ValidationReport, errors_only: bool = False) -> None:
        self.report = report
        self.errors_only = errors_only
        self.per_check: Counter = Counter()

    def add(self, severity: Severity, check: str, message: str, lines: list[int] | None = None, **kw) -> None:
        self.keep(finding(severity, check, message, lines, **kw))

    def keep(self, found: Finding) -> None:
        if self.errors_only and found.severity != "error":
            return
        self.per_check[found.check] += 1
        if self.per_check[found.check] > MAX_FINDINGS_PER_CHECK:
            self.report.suppressed[(found.check, found.severity)] += 1
            return
        self.report.findings.append(found)


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes, int]]:
    """(line number, raw bytes without the line break, bytes read so far), streaming."""
    done = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            done += len(raw)
            yield number, raw.rstrip(b"\r\n"), done


def _text_key(text: str) -> int:
    """A 64-bit fingerprint of a normalised text (see `near_dup.example_key`)."""
    return int.from_bytes(hashlib.blake2b(normalise(text).encode(), digest_size=8).digest(), "little")


def _schema_fix(error: DataError) -> str:
    detail = error.detail
    if "nested too deeply" in detail:
        return "flatten the line: no chat example needs JSON nested this deep"
    if "not valid JSON" in detail or "expected a JSON object" in detail:
        return CHECKS["json"].fix
    if "prompt-completion" in detail:
        return "convert it: `ftlab data convert FILE --out chat.jsonl` turns prompt/completion into messages"
    if "looks like preference data" in detail or "line is chat data" in detail:
        return ("a file holds one kind of data, told by its first line: chat examples (messages) for method "
                "supervised, preference pairs (input, preferred_output, non_preferred_output) for method dpo")
    if "unknown key" in detail and error.field and "messages[" not in error.field and "output[" not in error.field:
        if error.field.startswith("input."):
            return "remove or rename the key (allowed in input: messages, tools, parallel_tool_calls)"
        if error.message_index is None and "." not in error.field and error.field not in ("messages",):
            return ("remove or rename the key (a chat line has messages, tools, parallel_tool_calls, metadata; a "
                    "preference line input, preferred_output, non_preferred_output, metadata)")
    if "unknown key" in detail:
        return "remove or rename the key (allowed: role, content, name, weight, tool_calls, tool_call_id)"
    if "unknown role" in detail:
        return "use one of the roles system, user, assistant, tool"
    if "no assistant message" in detail:
        return "add the assistant reply the model should learn"
    if "'content' is missing" in detail:
        return "add a 'content' string to the message"
    return CHECKS["schema"].fix


class _TokenCheck:
    """Counts tokens chunk by chunk and reports examples over the training length."""

    def __init__(self, counter: TokenCounter, max_length: int, findings: _Findings) -> None:
        self.counter = counter
        self.max_length = max_length
        self.findings = findings
        self.totals = array("l")
        self.cut_tokens = 0

    def add(self, examples: list[ChatExample] | list[PreferenceExample]) -> None:
        if examples and isinstance(examples[0], PreferenceExample):
            self._add_pairs(examples)
            return
        for example, counts in zip(examples, self.counter.count(examples, detail=False), strict=True):
            self.totals.append(counts.total)
            self._check_length(example.line, counts.total, lambda e=example: self.counter.count_prompt(e))

    def _add_pairs(self, pairs: list[PreferenceExample]) -> None:
        """A pair counts its prompt and both outputs; each of its two sequences must fit the training length."""
        for pair, counts in zip(pairs, count_pairs(self.counter, pairs, detail=False), strict=True):
            self.totals.append(counts.total)
            for field_name, length in (("preferred_output", counts.preferred), ("non_preferred_output",
                                                                                 counts.non_preferred)):
                if self._check_length(pair.line, length, lambda n=counts.prompt: n, field_name) == "nothing_trained":
                    break  # the prompt is the same for both: one error says it

    def _check_length(self, line: int | None, total: int, prompt: Callable[[], int],
                      field_name: str | None = None) -> str | None:  # fmt: skip
        """Report a sequence of `total` tokens over the training length; `prompt()` counts its prompt."""
        if total <= self.max_length:
            return None
        over = total - self.max_length
        self.cut_tokens += over
        prompt_tokens = prompt()
        what = f"the prompt with {field_name}: " if field_name else ""
        if prompt_tokens >= self.max_length:
            self.findings.add(
                "error",
                "nothing_trained",
                f"{what}{total} tokens; the part before the first assistant reply alone is {prompt_tokens} tokens, "
                f"over the training length {self.max_length}: nothing of this example would be learned",
                [line],
            )
            return "nothing_trained"
        self.findings.add(
            "warning",
            "too_long",
            f"{what}{total} tokens, over the training length {self.max_length}: the last {over} tokens would be cut",
            [line],
            field=field_name,
        )
        return "too_long"

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


def _is_empty(message: Message) -> bool:
    """No text, no tool call and no non-text content part (an image, say)."""
    if message.tool_calls or message.function_call:
        return False
    if isinstance(message.content, list) and any(part.get("type", "text") != "text" for part in message.content):
        return False
    return not message.text.strip()


def _check_tools(example: ChatExample, findings: _Findings) -> None:
    """Tool definitions, tool calls and tool results fit together, as training and serving render them."""
    number = example.line
    for index, tool in enumerate(example.tools or []):
        try:
            Tool.model_validate(tool)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            findings.add("error", "tool_calls", f"tools[{index}] is not an OpenAI function tool: {where}: "
                         f"{problem['msg']}", [number], field=f"tools[{index}]")  # fmt: skip
    names = {t["function"].get("name") for t in example.tool_definitions() if isinstance(t.get("function"), dict)}
    call_ids: set[str] = set()
    for index, message in enumerate(example.messages):
        for number_in_message, call in enumerate(message.tool_calls or []):
            field = f"tool_calls[{number_in_message}].function"
            call_ids.add(call.id)
            try:
                arguments = json.loads(call.function.arguments)
            except json.JSONDecodeError:
                arguments = None
            if not isinstance(arguments, dict):
                findings.add("error", "tool_calls", "the call's arguments are not a JSON object", [number],
                             message_index=index, field=f"{field}.arguments")  # fmt: skip
            if not example.tool_definitions():
                findings.add("warning", "tool_calls", f"the example calls '{call.function.name}' but defines no "
                             "tools: the model would learn to call a function it is never shown", [number],
                             message_index=index, field=f"{field}.name", fix="add the example's `tools`")  # fmt: skip
            elif names and call.function.name not in names:
                findings.add("error", "tool_calls", f"the call names '{call.function.name}', which is not among "
                             f"the example's tools ({', '.join(sorted(names))})", [number], message_index=index,
                             field=f"{field}.name")  # fmt: skip
        if message.role == "tool" and message.tool_call_id not in call_ids:
            findings.add("warning", "tool_calls", f"the tool result answers '{message.tool_call_id}', which no "
                         "earlier call has as its id", [number], message_index=index, field="tool_call_id",
                         fix="set `tool_call_id` to the id of the call this result answers")  # fmt: skip




def _check_preference(pair: PreferenceExample, findings: _Findings) -> None:
    """The checks of one parsed preference pair on its own."""
    for index, message in enumerate(pair.input.messages):
        if message.role == "user" and _is_empty(message):
            findings.add("error", "empty_user", "the user message is empty", [pair.line],
                         field=f"input.messages[{index}].content")  # fmt: skip
    for key, message in zip(("preferred_output", "non_preferred_output"), pair.outputs(), strict=True):
        if _is_empty(message):
            findings.add("error", "empty_assistant", f"the {key.replace('_', ' ')} is empty", [pair.line],
                         field=f"{key}[0].content")  # fmt: skip
    preferred, non_preferred = pair.outputs()
    if _text_key(preferred.text) == _text_key(non_preferred.text):
        findings.add("warning", "identical_outputs", "the preferred and the non-preferred output are the same text",
                     [pair.line])  # fmt: skip


def _check_example(example: ChatExample | PreferenceExample, findings: _Findings) -> None:
    """The checks of one parsed example on its own."""
    if isinstance(example, PreferenceExample):
        _check_preference(example, findings)
        return
    number = example.line
    _check_tools(example, findings)
    for index, message in enumerate(example.messages):
        if message.role == "user" and _is_empty(message):
            findings.add("error", "empty_user", "the user message is empty", [number], message_index=index,
                         field="content")  # fmt: skip
        if message.role == "assistant" and _is_empty(message):
            findings.add(
                "error" if message.trained else "warning",
                "empty_assistant",
                "the assistant reply is empty" + ("" if message.trained else " (weight 0: not trained)"),
                [number],
                message_index=index,
                field="content",
            )
    last = example.messages[-1]
    if last.role != "assistant":
        findings.add(
            "warning",
            "not_ending_with_assistant",
            f"the conversation ends with a '{last.role}' message after the last assistant reply",
            [number],
            message_index=len(example.messages) - 1,
        )


class _Repeats:
    """The whole-file checks, fed example by example: exact and near duplicates, the same prompt with different
    answers, mixed system prompts, weight-0 replies and tool use."""

    def __init__(self) -> None:
        self.signatures = Signatures()
        self.example_lines = array("l")
        self.seen: dict[int, int] = {}  # example key -> first line
        self.duplicate_groups: dict[int, list[int]] = {}  # first line -> lines repeating it
        self.prompts: dict[int, tuple[int, int]] = {}  # prompt key -> (first line, answer key)
        self.pairs: dict[tuple[int, int, int], int] = {}  # (prompt, preferred, non-preferred key) -> first line
        self.conflicts: dict[int, list[int]] = {}  # first line of a prompt -> lines with a different answer
        self.systems: dict[str | None, list[int]] = {}  # system prompt -> [count, first line]
        self.n_weight0 = self.n_tool = 0

    def add(self, example: ChatExample | PreferenceExample) -> None:
        number = example.line
        messages = all_messages(example)
        self.example_lines.append(number)
        self.n_weight0 += sum(m.role == "assistant" and m.weight == 0 for m in messages)
        self.n_tool += any(m.tool_calls or m.role == "tool" for m in messages)
        key = example_key(example)
        if key in self.seen:
            self.duplicate_groups.setdefault(self.seen[key], []).append(number)
        else:
            self.seen[key] = number
        prompt = example_key(example, prompt_only=True)
        if isinstance(example, PreferenceExample):  # a conflict is the same pair, preferred the other way
            better, worse = (_text_key(m.text) for m in example.outputs())
            first = self.pairs.get((prompt, worse, better))
            if first is not None:
                self.conflicts.setdefault(first, []).append(number)
            self.pairs.setdefault((prompt, better, worse), number)
        elif prompt in self.prompts:
            first, first_answer = self.prompts[prompt]
            if _text_key(example.reference()) != first_answer:
                self.conflicts.setdefault(first, []).append(number)
        else:
            self.prompts[prompt] = (number, _text_key(example.reference()))
        system = next((m.text for m in messages if m.role in ("system", "developer")), None)
        entry = self.systems.setdefault(system[:500] if system else None, [0, number])
        entry[0] += 1

    def add_texts(self, examples: list[ChatExample]) -> None:
        """MinHash a chunk of examples (in the order they were added)."""
        self.signatures.add(example_text(e) for e in examples)

    def report(self, findings: _Findings, near_threshold: float) -> None:
        for first, lines in self.duplicate_groups.items():
            findings.add("warning", "exact_duplicate", f"{len(lines) + 1} identical examples", [first, *lines])
        lines_of = self.example_lines
        exact = {line for lines in self.duplicate_groups.values() for line in lines}
        similar = minhash_pairs(self.signatures.matrix, near_threshold)
        pairs = [(i, j) for i, j, _ in similar if lines_of[j] not in exact]
        roots = clusters(len(lines_of), pairs)
        near: dict[int, list[int]] = {}
        for index, root in enumerate(roots):
            if root != index and lines_of[index] not in exact:
                near.setdefault(root, []).append(lines_of[index])
        for root, lines in near.items():
            findings.add(
                "warning",
                "near_duplicate",
                f"{len(lines) + 1} near-identical examples (character 3-gram Jaccard ≥ {near_threshold})",
                [lines_of[root], *lines],
            )
        for first, lines in self.conflicts.items():
            findings.add(
                "warning",
                "conflicting_answers",
                f"the same prompt has {len(lines) + 1} different final answers" if not self.pairs else
                "the same two outputs are preferred one way here and the other way there",
                [first, *lines],
            )
        if len(self.systems) > 1:
            variants = sorted(self.systems.items(), key=lambda kv: -kv[1][0])
            described = "; ".join(
                f"{count}× {'(none)' if text is None else repr(text[:60] + ('…' if len(text) > 60 else ''))} "
                f"(first on line {line})"
                for text, (count, line) in variants[:5]
            )
            findings.add(
                "warning",
                "mixed_system_prompts",
                f"{len(self.systems)} different system prompts: {described}",
                [line for _, (_, line) in variants[:20]],
            )
        if self.n_weight0:
            message = f"{self.n_weight0} assistant messages have weight 0 (kept as context, not trained)"
            findings.add("info", "weight", message)
        if self.n_tool:
            findings.add("info", "tools", f"{self.n_tool} examples use tool calls or tool messages (valid)")


def validate_file(
    path: str | Path,
    model: str | None = BUNDLED_MODEL,
    *,
    max_length: int | None = None,
    labels: list[str] | None = None,
    infer_labels: bool = False,
    near_threshold: float = DEFAULT_JACCARD,
    tokens: bool = True,
    first_error: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ValidationReport:
    """Check a chat or preference JSONL file (the kind is told by its first line, `schema.data_kind`) for training
    `model` (an OpenAI name holds it to OpenAI's rules; None: no target). `tokens=False` (or no model) skips the
    token checks; `progress(done_bytes, total_bytes)`.

    `labels` (or `infer_labels`) adds the label checks on the final assistant reply of each example.
    `first_error=True` is what an upload needs: only errors, and the report ends at the first one (so it is the
    first error of the file); the checks that only warn (duplicates, system prompts, labels) and the token
    checks are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    counter = token_counter(model) if model and tokens and not first_error else None
    limit = _max_length_for(model, counter, max_length) if counter else None
    kind = data_kind(path)
    parse = parse_preference if kind == "preference" else parse_example
    report = ValidationReport(
        path=str(path), model=model, tokenizer=counter.description if counter else None, max_length=limit, kind=kind
    )
    findings = _Findings(report, errors_only=first_error)
    lengths = _TokenCheck(counter, limit, findings) if counter else None
    tally = LabelTally(labels) if (labels or infer_labels) and not first_error else None
    repeats = None if first_error else _Repeats()
    total_bytes = os.path.getsize(path)
    chunk: list[ChatExample | PreferenceExample] = []

    def flush() -> None:
        if lengths:
            lengths.add(chunk)
        if repeats:
            repeats.add_texts(chunk)
        chunk.clear()

    for number, raw, done in _raw_lines(path):
        if first_error and report.findings:
            return report
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
            example = parse(text, path=path, line=number)
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
        _check_example(example, findings)
        if repeats:
            repeats.add(example)
        if tally:
            tally.add(number, example.outputs()[0].text if kind == "preference" else example.reference())

        chunk.append(example)
        if len(chunk) >= CHUNK:
            flush()
            if progress:
                progress(done, total_bytes)
    if first_error and report.findings:
        return report
    if chunk:
        flush()
    if progress:
        progress(total_bytes, total_bytes)

    # Whole-file checks.
    for_openai = model is not None and openai_model(model) is not None
    count = example_count_finding(report.n_examples, MIN_EXAMPLES if for_openai else None)
    if count:
        findings.keep(count)
    if repeats:
        repeats.report(findings, near_threshold)
    if lengths:
        report.tokens = lengths.summary()
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
