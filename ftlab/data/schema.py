"""OpenAI chat fine-tuning JSONL: the canonical data format, as typed objects.

One line is one `ChatExample`: `messages` (system / user / assistant / tool, with optional `weight` 0|1 on
assistant messages and `tool_calls` kept intact) and optional `tools`. A malformed line raises `DataError`
naming the file, the line, the message index and the field — never a stack trace.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ftlab.data import tools

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


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


def _error_from_validation(exc: ValidationError, path: str | Path | None, line: int) -> DataError:
    err = exc.errors()[0]
    loc = [p for p in err["loc"]]
    message_index = None
    field = None
    if len(loc) >= 2 and loc[0] == "messages" and isinstance(loc[1], int):
        message_index = loc[1]
        rest = [str(p) for p in loc[2:] if not str(p).startswith(("str", "list", "literal", "int"))]
        field = ".".join(rest) or None
    elif loc:
        field = ".".join(str(p) for p in loc)
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
    try:
        return _parse(raw, path, line)
    except RecursionError:  # json and pydantic recurse once per level of nesting
        raise DataError(
            f"JSON nested too deeply to read (deeper than about {sys.getrecursionlimit()} levels)", path=path, line=line
        ) from None


def _parse(raw: str | dict[str, Any], path: str | Path | None, line: int) -> ChatExample:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno})", path=path, line=line) from None
    if not isinstance(raw, dict):
        raise DataError(f"expected a JSON object, got {type(raw).__name__}", path=path, line=line)
    if "messages" not in raw:
        hint = ""
        if {"prompt", "completion"} <= raw.keys():
            hint = " (this looks like prompt-completion data: convert it with `ftlab data convert`)"
        raise DataError(f"required key 'messages' is missing{hint}", path=path, line=line, field="messages")
    try:
        example = ChatExample.model_validate(raw)
    except ValidationError as exc:
        raise _error_from_validation(exc, path, line) from None
    example.line = line
    return example


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
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path=path)
    examples = [parse_example(text, path=path, line=number) for number, text in iter_lines(path)]
    if not examples:
        raise DataError("the file has no examples", path=path)
    return examples


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
