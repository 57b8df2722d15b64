"""OpenAI fine-tuning JSONL, chat and preference: the canonical data formats, as typed objects.

A chat line is one `ChatExample`: `messages` (system / user / assistant / tool, with optional `weight` 0|1 on
assistant messages and `tool_calls` kept intact) and optional `tools`. A preference line (OpenAI's DPO format)
is one `PreferenceExample`: `input` (`messages`, optional `tools`, `parallel_tool_calls`) and two one-message
assistant outputs, `preferred_output` and `non_preferred_output`. A malformed line raises `DataError` naming
the file, the line, the message index and the field — never a stack trace.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ftlab.data import tools

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
DataKind = Literal["chat", "preference"]
T = TypeVar("T")
PREFERENCE_KEYS = {"input", "preferred_output", "non_preferred_output"}


class DataError(ValueError):
    """A problem in a data file, located precisely enough to fix it."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        message_index: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.message_index = message_index
        self.field = field
        self.detail = message
        super().__init__(self.__str__())

    def location(self) -> str:
        parts = []
        if self.path:
            parts.append(self.path)
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.message_index is not None:
            parts.append(f"messages[{self.message_index}]")
        if self.field:
            parts.append(f"field '{self.field}'")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.location()
        return f"{where}: {self.detail}" if where else self.detail


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    arguments: str


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    weight: Literal[0, 1] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None  # the legacy spelling of one tool call
    refusal: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Message:
        if self.weight is not None and self.role != "assistant":
            raise ValueError("'weight' is only allowed on assistant messages")
        if self.role != "assistant" and self.tool_calls:
            raise ValueError("only assistant messages may carry 'tool_calls'")
        if self.content is None and not (self.tool_calls or self.function_call):
            raise ValueError("'content' is missing (only an assistant message with tool_calls may omit it)")
        return self

    @property
    def text(self) -> str:
        """The content as plain text (content parts joined), followed by any tool calls as ftlab writes them
        (`ftlab.data.tools`)."""
        if self.role != "assistant":
            return tools.content_text(self.content)
        return tools.render([self.model_dump(exclude_none=True)])[0]["content"]

    @property
    def trained(self) -> bool:
        """Whether the loss covers this message: assistant messages unless weight is 0."""
        return self.role == "assistant" and self.weight != 0


class ChatExample(BaseModel):
    """One line of a chat fine-tuning file."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    functions: list[dict[str, Any]] | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, Any] | None = None
    line: int | None = Field(None, exclude=True, description="1-based line number in the source file")

    @model_validator(mode="after")
    def _has_assistant(self) -> ChatExample:
        if not any(m.role == "assistant" for m in self.messages):
            raise ValueError("no assistant message: there is nothing to learn from this example")
        return self

    def prompt_messages(self) -> list[Message]:
        """The conversation without its final assistant message (what a model is asked to continue)."""
        last = max(i for i, m in enumerate(self.messages) if m.role == "assistant")
        return self.messages[:last]

    def reference(self) -> str:
        """The text of the final assistant message (the expected answer)."""
        last = max(i for i, m in enumerate(self.messages) if m.role == "assistant")
        return self.messages[last].text

    def question(self) -> str:
        """The text of the prompt's last user message ("" when it has none)."""
        users = [m for m in self.prompt_messages() if m.role == "user"]
        return users[-1].text if users else ""

    def to_openai(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude={"line"})

    def tool_definitions(self) -> list[dict[str, Any]]:
        """The tools the conversation may call (`tools`, with the legacy `functions` folded in)."""
        return tools.definitions(self.tools, self.functions)

class PreferenceInput(BaseModel):
    """The prompt of a preference example: the conversation so far and the tools it may call."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    parallel_tool_calls: bool | None = None


class PreferenceExample(BaseModel):
    """One line of a preference (DPO) file, OpenAI's format: a prompt and two replies, the preferred one and the
    non-preferred one. Each output is one assistant message (OpenAI trains one-turn outputs); it may call tools."""

    model_config = ConfigDict(extra="forbid")

    input: PreferenceInput
    preferred_output: list[Message]
    non_preferred_output: list[Message]
    metadata: dict[str, Any] | None = None
    line: int | None = Field(None, exclude=True, description="1-based line number in the source file")

    def prompt_messages(self) -> list[Message]:
        return self.input.messages

    def conversations(self) -> tuple[ChatExample, ChatExample]:
        """The prompt continued by the preferred and by the non-preferred reply, as chat examples whose only
        trained message is that reply (assistant turns of the prompt get weight 0): what DPO scores."""
        prompt = [m.model_copy(update={"weight": 0}) if m.role == "assistant" else m for m in self.input.messages]
        return tuple(  # type: ignore[return-value]
            ChatExample(messages=[*prompt, *output], tools=self.input.tools,
                        parallel_tool_calls=self.input.parallel_tool_calls, line=self.line)
            for output in (self.preferred_output, self.non_preferred_output)
        )  # fmt: skip

    def outputs(self) -> tuple[Message, Message]:
        return self.preferred_output[0], self.non_preferred_output[0]

    def to_openai(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude={"line"})


def message_dicts(messages: list[Message] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as OpenAI's message dicts (tool calls and tool-call ids kept; ftlab's `weight` left out), what
    `ChatBackend.generate` and `ftlab.data.tools.apply_template` take."""
    return [m.model_dump(exclude_none=True, exclude={"weight"}) if isinstance(m, Message) else m for m in messages]


def template_messages(
    messages: list[Message] | list[dict[str, Any]], tool_definitions: list[dict[str, Any]] | None = None
) -> list[dict[str, str]]:
    """Messages as the plain {role, content} dicts every chat template understands, tools and tool calls written
    in ftlab's format (`ftlab.data.tools.render`)."""
    return tools.render(message_dicts(messages), tool_definitions)


_TYPE_TAGS = ("str", "list", "literal", "int", "function-")  # pydantic's names of union branches in a location


def _field_path(loc: list[Any]) -> str:
    """A location as it is written in the file: `input.messages[1].role`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not str(part).startswith(_TYPE_TAGS):
            path += f".{part}" if path else str(part)
    return path


def _error_from_validation(exc: ValidationError, path: str | Path | None, line: int) -> DataError:
    err = exc.errors()[0]
    loc = [p for p in err["loc"]]
    message_index = None
    field = None
    if len(loc) >= 2 and loc[0] == "messages" and isinstance(loc[1], int):
        message_index = loc[1]
        field = _field_path(loc[2:]) or None
    elif loc:
        field = _field_path(loc)
    else:
        field = "messages"  # example-level checks are about the conversation as a whole
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = f"unknown key '{loc[-1]}'"
        field = field or str(loc[-1])
    elif err["type"] == "missing":
        msg = f"required key '{loc[-1]}' is missing"
    elif err["type"] == "literal_error" and loc and loc[-1] == "role":
        msg = f"unknown role {err['input']!r} (expected system, user, assistant or tool)"
    elif err["type"] == "literal_error" and loc and loc[-1] == "weight":
        msg = f"weight must be 0 or 1, got {err['input']!r}"
    return DataError(msg, path=path, line=line, message_index=message_index, field=field)


def parse_example(raw: str | dict[str, Any], *, path: str | Path | None = None, line: int = 1) -> ChatExample:
    """Parse one line (text or an already-decoded object) into a `ChatExample`, or raise `DataError`."""
    return _guarded(_parse, raw, path, line)


def _guarded(parse: Callable[[dict[str, Any], Any, int], T], raw: str | dict[str, Any], path: str | Path | None,
             line: int) -> T:  # fmt: skip
    """`parse` on the line decoded as one JSON object; a line that is not one is a `DataError`."""
    try:
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno})", path=path, line=line) from None
        if not isinstance(raw, dict):
            raise DataError(f"expected a JSON object, got {type(raw).__name__}", path=path, line=line)
        return parse(raw, path, line)
    except RecursionError:  # json and pydantic recurse once per level of nesting
        raise DataError(
            f"JSON nested too deeply to read (deeper than about {sys.getrecursionlimit()} levels)", path=path, line=line
        ) from None


def _parse(raw: dict[str, Any], path: str | Path | None, line: int) -> ChatExample:
    if "messages" not in raw:
        hint = ""
        if {"prompt", "completion"} <= raw.keys():
            hint = " (this looks like prompt-completion data: convert it with `ftlab data convert`)"
        elif PREFERENCE_KEYS & raw.keys():
            hint = " (this looks like preference data: train it with method dpo, `ftlab train FILE --method dpo`)"
        raise DataError(f"required key 'messages' is missing{hint}", path=path, line=line, field="messages")
    try:
        example = ChatExample.model_validate(raw)
    except ValidationError as exc:
        raise _error_from_validation(exc, path, line) from None
    example.line = line
    return example


def parse_preference(raw: str | dict[str, Any], *, path: str | Path | None = None,
                     line: int = 1) -> PreferenceExample:  # fmt: skip
    """Parse one line of a preference file into a `PreferenceExample`, or raise `DataError` naming the field
    (`input.messages[0].role`, `preferred_output[0].content`)."""
    return _guarded(_parse_preference, raw, path, line)


def _parse_preference(raw: dict[str, Any], path: str | Path | None, line: int) -> PreferenceExample:
    for key in ("input", "preferred_output", "non_preferred_output"):
        if key not in raw:
            hint = (" (this line is chat data; every line of a preference file has input, preferred_output and "
                    "non_preferred_output)") if "messages" in raw else ""  # fmt: skip
            raise DataError(f"required key '{key}' is missing{hint}", path=path, line=line, field=key)
    try:
        example = PreferenceExample.model_validate(raw)
    except ValidationError as exc:
        raise _error_from_validation(exc, path, line) from None
    for key in ("preferred_output", "non_preferred_output"):
        output: list[Message] = getattr(example, key)
        if len(output) != 1:
            raise DataError(f"holds {len(output)} messages; an output is exactly one assistant message (OpenAI "
                            "trains one-turn outputs)", path=path, line=line, field=key)  # fmt: skip
        if output[0].role != "assistant":
            raise DataError(f"role '{output[0].role}': an output is an assistant message", path=path, line=line,
                            field=f"{key}[0].role")  # fmt: skip
        if output[0].weight is not None:
            raise DataError("an output is always trained: remove 'weight'", path=path, line=line,
                            field=f"{key}[0].weight")  # fmt: skip
    example.line = line
    return example


def data_kind(path: str | Path) -> DataKind:
    """Whether a JSONL file holds chat or preference data, from its first non-blank line (every later line is
    then read as the same kind, so a stray line of the other kind is an error at its own line number)."""
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            try:
                first = json.loads(raw.decode("utf-8", errors="replace").lstrip("\ufeff"))
            except (json.JSONDecodeError, RecursionError):
                return "chat"
            is_preference = isinstance(first, dict) and "messages" not in first and PREFERENCE_KEYS & first.keys()
            return "preference" if is_preference else "chat"
    return "chat"


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for every non-blank line, streaming; rejects a file that is not UTF-8."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); re-save the file"
                    " as UTF-8",
                    path=path,
                    line=number,
                ) from None
            if text.strip():
                yield number, text


def read_examples(path: str | Path) -> list[ChatExample]:
    """Every example of a chat JSONL file; the first malformed line raises `DataError`."""
    return _read_all(path, parse_example)


def read_preferences(path: str | Path) -> list[PreferenceExample]:
    """Every example of a preference JSONL file; the first malformed line raises `DataError`."""
    return _read_all(path, parse_preference)


def _read_all(path: str | Path, parse: Callable[..., T]) -> list[T]:
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path=path)
    examples = [parse(text, path=path, line=number) for number, text in iter_lines(path)]
    if not examples:
        raise DataError("the file has no examples", path=path)
    return examples


def read_test_examples(path: str | Path) -> list[ChatExample]:
    """A held-out set as chat examples, each scored against its last assistant message: a chat file as it is; a
    preference file's pairs as their prompt answered by the preferred output (so held-out pairs can be the test
    set of `ftlab eval`, judged pairwise)."""
    if Path(path).is_file() and data_kind(path) == "preference":
        return [pair.conversations()[0] for pair in read_preferences(path)]
    return read_examples(path)


def write_examples(examples: list[ChatExample], path: str | Path) -> None:
    """Write examples as chat JSONL (UTF-8, one object per line, non-ASCII kept readable)."""
    with open(path, "w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_openai(), ensure_ascii=False) + "\n")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
