"""Tools, tool calls and tool results: the one rendering that training and serving share, and the reply parser.

A model whose chat template knows tools (it reads a `tools` variable: Qwen2.5, Hermes, Llama 3.1, …) gets them
through that template: `apply_chat_template(messages, tools=...)`, assistant `tool_calls` with their arguments
as objects, `tool` messages with their `tool_call_id`. Any other template (SmolLM2's among them) sees ftlab's
format, which is the Hermes format Qwen2.5's template writes, spelled in plain messages:

- the tool definitions close the system prompt (a system message is added when there is none):

      # Tools
      ...
      <tools>
      {"type": "function", "function": {"name": "get_weather", "parameters": {...}}}
      </tools>
      ...

- an assistant tool call is a block after the reply's text, one per call (the call id is not written: the
  model never has to invent one; `parse` gives each call a fresh `call_…` id, as OpenAI does):

      <tool_call>
      {"name": "get_weather", "arguments": {"city": "Oslo"}}
      </tool_call>

- a tool result is a `tool` turn that names the call it answers:

      <tool_response id="call_…" name="get_weather">
      4°C, light rain
      </tool_response>

Replies are parsed back with `parse` (or, streamed, `StreamParser`) in both cases, and `call_schema` is the JSON
schema of one call, which `ftlab.infer.constrained.tool_call_constraint` holds decoding to.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CALL_OPEN, CALL_CLOSE = "<tool_call>\n", "\n</tool_call>"
TOOLS_SECTION = """# Tools

You may call one or more functions to assist with the user query. The functions, as JSON schemas:
<tools>
{tools}
</tools>

For each function call, return a JSON object with the function name and arguments within <tool_call></tool_call> \
XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""
_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_ID_ALPHABET = string.ascii_letters + string.digits


class FunctionDefinition(BaseModel):
    """OpenAI's function definition (`tools[].function`, or one entry of the legacy `functions`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    """One entry of `tools`: ftlab serves function tools (OpenAI's `custom` tools have no JSON schema)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDefinition


def new_call_id() -> str:
    """A fresh id in OpenAI's shape: `call_` and 24 letters and digits."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def definitions(tools: list[dict[str, Any]] | None, functions: list[dict[str, Any]] | None = None) -> list[dict]:
    """The tools of a request or an example, the legacy `functions` list folded in as function tools."""
    return [*(tools or []), *({"type": "function", "function": f} for f in functions or [])]


def content_text(content: str | list[dict[str, Any]] | None) -> str:
    """A message's content as plain text (the text parts of a list joined)."""
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if part.get("type", "text") == "text")
    return content or ""


def _arguments(arguments: Any) -> Any:
    """Arguments as the object they encode (OpenAI sends a JSON string); text that is not JSON stays text."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


def _calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A message's tool calls as dicts (the legacy `function_call` as one call)."""
    calls = [c if isinstance(c, dict) else c.model_dump() for c in message.get("tool_calls") or []]
    if message.get("function_call"):
        calls.append({"id": None, "type": "function", "function": message["function_call"]})
    return calls


def format_calls(calls: list[dict[str, Any]]) -> str:
    """Tool calls as ftlab writes them in a reply: one `<tool_call>` block each."""
    blocks = []
    for call in calls:
        function = call["function"]
        body = json.dumps({"name": function["name"], "arguments": _arguments(function.get("arguments"))},
                          ensure_ascii=False)  # fmt: skip
        blocks.append(f"{CALL_OPEN}{body}{CALL_CLOSE}")
    return "\n".join(blocks)


def assistant_text(content: str, calls: list[dict[str, Any]]) -> str:
    """A reply's text followed by its tool calls."""
    if not calls:
        return content
    return (content + "\n" if content else "") + format_calls(calls)


def render(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[dict[str, str]]:
    """Messages as plain {role, content} dicts in ftlab's tool format, for a template that knows no tools."""
    out: list[dict[str, str]] = []
    names: dict[str, str] = {}  # call id -> function name, so a tool result can say which function answered
    for message in messages:
        role, text = message["role"], content_text(message.get("content"))
        if role == "developer":
            role = "system"
        if role == "assistant":
            calls = _calls(message)
            names.update({c["id"]: c["function"]["name"] for c in calls if c.get("id")})
            text = assistant_text(text, calls)
        elif role in ("tool", "function"):
            call_id = message.get("tool_call_id")
            name = message.get("name") or names.get(call_id or "")
            attributes = "".join(f" {key}={json.dumps(value, ensure_ascii=False)}"
                                 for key, value in (("id", call_id), ("name", name)) if value)  # fmt: skip
            role, text = "tool", f"<tool_response{attributes}>\n{text}\n</tool_response>"
        out.append({"role": role, "content": text})
    if tools:
        section = TOOLS_SECTION.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{section}"}
        else:
            out.insert(0, {"role": "system", "content": section})
    return out


def native_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for a template that knows tools, in the shape transformers documents: assistant `tool_calls` with
    arguments as objects, `tool` messages with `tool_call_id` and `name`, content as text."""
    out = []
    for position, message in enumerate(messages):
        role = {"developer": "system", "function": "tool"}.get(message["role"], message["role"])
        converted: dict[str, Any] = {"role": role, "content": content_text(message.get("content"))}
        if calls := _calls(message):  # a legacy function_call has no id: one that renders the same every time
            converted["tool_calls"] = [
                {"id": c.get("id") or f"call_{position}_{n}", "type": "function",
                 "function": {"name": c["function"]["name"], "arguments": _arguments(c["function"].get("arguments"))}}
                for n, c in enumerate(calls)
            ]  # fmt: skip
        for key in ("tool_call_id", "name"):
            if message.get(key):
                converted[key] = message[key]
        out.append(converted)
    return out


def template_knows_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders tools itself (it reads a `tools` variable)."""
    template = tokenizer.chat_template
    text = " ".join(template.values()) if isinstance(template, dict) else template or ""
    return re.search(r"\btools\b", text) is not None


def apply_template(
    tokenizer,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    *,
    generation_prompt: bool = False,
    tokenize: bool = False,
) -> str | list[int]:
    """A conversation (OpenAI-shaped dicts) through the model's chat template, tools included: the template's
    own tool rendering when it has one, ftlab's format otherwise. The text, or its token ids with `tokenize`."""
    if template_knows_tools(tokenizer):
        rendered, kwargs = native_messages(messages), {"tools": tools or None}
    else:
        rendered, kwargs = render(messages, tools), {}
    output = tokenizer.apply_chat_template(
        rendered, tokenize=tokenize, add_generation_prompt=generation_prompt, return_dict=False, **kwargs
    )
    return list(output) if tokenize else output


# --- reading replies ------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """A generated reply split into its text and its tool calls (OpenAI's `message.tool_calls` entries).

    `invalid` holds the `<tool_call>` blocks that did not parse as a call: they stay in `content` as written."""

    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def _call(block: str) -> dict[str, Any] | None:
    """One `<tool_call>` block's body as an OpenAI tool call, or None when it is not `{"name", "arguments"}`.

    The arguments keep the text the model wrote when it is the JSON of the parsed object, so a streamed call and
    a parsed one carry the same string."""
    try:
        value = json.loads(block)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not isinstance(value.get("arguments"),
                                                                                              dict):
        return None
    arguments = json.dumps(value["arguments"], ensure_ascii=False)
    header = _HEADER.match(block)
    if header:
        written = block[header.end() :].strip()[:-1].rstrip()  # drop the object's closing brace
        if _loads(written) == value["arguments"]:
            arguments = written
    return {"id": new_call_id(), "type": "function", "function": {"name": value["name"], "arguments": arguments}}


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def parse(text: str, limit: int | None = None) -> Reply:
    """A reply's text and tool calls: every `<tool_call>` block (the last may be unclosed, as when a model ends
    its turn right after the JSON) that holds `{"name": ..., "arguments": {...}}` becomes a call; text outside
    the calls is the content. With `limit`, the reply ends after that many calls."""
    calls, invalid, kept, position = [], [], [], 0
    for match in _BLOCK.finditer(text):
        call = _call(match.group(1).strip())
        if call is None:
            invalid.append(match.group(0))
            continue
        calls.append(call)
        kept.append(text[position : match.start()].rstrip())
        position = match.end()
        if len(calls) == limit:
            position = len(text)
            break
    kept.append(text[position:])
    content = "".join(kept).strip()
    return Reply(content=content or None, tool_calls=calls, invalid=invalid)


def call_schema(tools: list[dict[str, Any]], name: str | None = None) -> dict[str, Any]:
    """The JSON schema of one call of `name` (of any of `tools` when None): `{"name", "arguments"}`, the name
    first, as ftlab writes a call."""

    def one(function: dict[str, Any]) -> dict[str, Any]:
        parameters = function.get("parameters") or {"type": "object"}
        return {"type": "object", "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"], "additionalProperties": False}  # fmt: skip

    functions = [t["function"] for t in tools if name is None or t["function"]["name"] == name]
    if not functions:
        raise ValueError(f"no tool is named {name!r}")
    return one(functions[0]) if len(functions) == 1 else {"anyOf": [one(f) for f in functions]}


# --- what a request asks for --------------------------------------------------------------------------------------


class ToolRequestError(ValueError):
    """A tool option this server cannot honour, with the request parameter it is about."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class ToolUse:
    """The tools of one chat request and how they may be used.

    `mode`: "auto" (the model decides), "none" (tools are shown, never called), "required" (at least one call)
    or "named" (one call of `name`). `legacy`: asked with `functions`/`function_call`, so answered with the legacy
    `function_call` field."""

    tools: list[dict[str, Any]]
    mode: Literal["auto", "none", "required", "named"] = "auto"
    name: str | None = None
    parallel: bool = True
    legacy: bool = False

    @property
    def calls(self) -> bool:
        """Whether replies may hold tool calls (and are parsed for them)."""
        return self.mode != "none"

    @property
    def forced(self) -> bool:
        """Whether the reply must be a call ("required" or a named function)."""
        return self.mode in ("required", "named")

    def schema(self) -> dict[str, Any]:
        """The JSON schema every call of this request follows."""
        return call_schema(self.tools, self.name)

    def reply(self, text: str) -> Reply:
        """A generated reply read for tool calls (at most one unless parallel calls are allowed)."""
        if not self.calls:
            return Reply(content=text)
        return parse(text, limit=None if self.parallel else 1)

    def stream_parser(self) -> StreamParser:
        return StreamParser(legacy=self.legacy, parallel=self.parallel, calls=self.calls)


def tool_use(
    tools: list[Tool] | None,
    tool_choice: str | dict[str, Any] | None,
    functions: list[FunctionDefinition] | None = None,
    function_call: str | dict[str, Any] | None = None,
    parallel_tool_calls: bool | None = None,
) -> ToolUse | None:
    """What a request's `tools`, `tool_choice`, legacy `functions`/`function_call` and `parallel_tool_calls` ask
    for (None when it names no tools); `ToolRequestError` for what cannot be served."""
    if tools and functions:
        raise ToolRequestError("use either 'tools' or the legacy 'functions', not both", "functions")
    legacy = bool(functions) or (function_call is not None and not tools and tool_choice is None)
    kind, param, choice, other = ("functions", "function_call", function_call, "tool_choice") if legacy else \
        ("tools", "tool_choice", tool_choice, "function_call")  # fmt: skip
    if (tool_choice if legacy else function_call) is not None:
        raise ToolRequestError(f"'{other}' does not go with {kind}: use '{param}'", other)
    defined = [t.model_dump(exclude_none=True) for t in tools or []]
    defined += [{"type": "function", "function": f.model_dump(exclude_none=True)} for f in functions or []]
    if not defined:
        if choice is not None:
            raise ToolRequestError(f"'{param}' is only allowed when {kind} are given", param)
        return None
    use = ToolUse(tools=defined, parallel=parallel_tool_calls is not False and not legacy, legacy=legacy)
    names = [t["function"]["name"] for t in defined]
    if choice is None or choice == "auto":
        return use
    if choice == "none" or (choice == "required" and not legacy):
        use.mode = choice
        return use
    if isinstance(choice, dict):
        function = choice if legacy else choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if (legacy or choice.get("type") == "function") and isinstance(name, str):
            if name not in names:
                raise ToolRequestError(f"{param} names the function {name!r}, which is not among the {kind} "
                                       f"({', '.join(names)})", param)  # fmt: skip
            use.mode, use.name, use.parallel = "named", name, False  # one call of it, as OpenAI and vLLM answer
            return use
    allowed = ("'none', 'auto' or {'name': ...}" if legacy else
               "'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}")  # fmt: skip
    raise ToolRequestError(f"{param} {json.dumps(choice)} is not supported by this server: use {allowed}", param)


# --- streaming ----------------------------------------------------------------------------------------------------


class StreamParser:
    """Turns streamed text into OpenAI chat-completion `delta`s: text as `content`, each tool call as a first
    delta with its id, type and name, then its arguments in fragments as they are generated.

    Text is held back while it could still be the start of a `<tool_call>` tag, and whitespace next to a call is
    dropped as `parse` drops it, so the deltas add up to what `parse` reads from the whole reply."""

    def __init__(self, *, legacy: bool = False, parallel: bool = True, calls: bool = True) -> None:
        self.legacy, self.limit, self.enabled = legacy, None if parallel else 1, calls
        self.pending = ""  # text not yet emitted
        self.gap = ""  # whitespace before the current `<tool_call>`: content again if the block is no call
        self.in_call = False
        self.started = False  # the current call's first delta is out; its arguments are streaming
        self.arguments_done = False
        self.depth, self.in_string, self.escaped = 0, False, False
        self.n_calls = 0
        self.text_out = False  # some content is out: whitespace before later text is kept

    @property
    def called(self) -> bool:
        """Whether the reply so far holds a tool call."""
        return self.n_calls > 0 or self.started

    def feed(self, text: str) -> list[dict[str, Any]]:
        """The deltas that `text`, the next piece of the reply, completes."""
        if not self.enabled:
            return [{"content": text}] if text else []
        self.pending += text
        deltas: list[dict[str, Any]] = []
        while self.n_calls != self.limit:  # after the last call allowed the reply is over, as for `parse`
            before = len(self.pending), self.in_call
            deltas += self._call_step() if self.in_call else self._text_step()
            if (len(self.pending), self.in_call) == before:
                break
        return deltas

    def finish(self) -> list[dict[str, Any]]:
        """The deltas still held back once the reply has ended."""
        if not self.enabled or self.n_calls == self.limit:
            return []
        if self.started:  # the arguments were streaming when the reply ended
            self.n_calls += 1
            return []
        if self.in_call:  # an unclosed block: a call if it parses, as for `parse`; content otherwise
            self.in_call = False
            call = _call(self.pending.strip())
            if call is not None:
                return self._whole(call)
            self.pending = f"{self.gap}<tool_call>{self.pending}"
        text, self.pending = self.pending.rstrip(), ""
        return self._content(text)

    def _content(self, text: str) -> list[dict[str, Any]]:
        if not self.text_out:
            text = text.lstrip()
        if not text:
            return []
        self.text_out = True
        return [{"content": text}]

    def _text_step(self) -> list[dict[str, Any]]:
        opening = "<tool_call>"
        at = self.pending.find(opening)
        if at >= 0:
            text = self.pending[:at]
            self.gap = text[len(text.rstrip()) :]
            self.pending = self.pending[at + len(opening) :]
            self.in_call, self.started, self.arguments_done = True, False, False
            return self._content(text.rstrip())
        # Keep back what may begin the tag, and trailing whitespace (dropped if a call follows).
        keep = next((n for n in range(min(len(opening) - 1, len(self.pending)), 0, -1)
                     if opening.startswith(self.pending[-n:])), 0)  # fmt: skip
        head = self.pending[: len(self.pending) - keep]
        text = head.rstrip()
        self.pending = head[len(text) :] + self.pending[len(head) :]
        return self._content(text)

    def _call_step(self) -> list[dict[str, Any]]:
        closing = "</tool_call>"
        if self.started and not self.arguments_done:
            fragment = self._scan_arguments()
            return [self._delta(arguments=fragment)] if fragment else []
        at = self.pending.find(closing)
        if self.started:  # the arguments are complete: wait for the end of the block
            if at >= 0:
                self.pending, self.in_call, self.started = self.pending[at + len(closing) :], False, False
                self.n_calls += 1
            return []
        header = _HEADER.match(self.pending)
        if header and self.pending[header.end() : header.end() + 1] == "{":  # stream the arguments from here on
            self.pending = self.pending[header.end() :]
            self.started, self.depth, self.in_string, self.escaped = True, 0, False, False
            return [self._delta(name=json.loads(f'"{header.group(1)}"'), arguments="")]
        if at < 0:
            return []
        block, self.pending = self.pending[:at], self.pending[at + len(closing) :]
        self.in_call = False
        call = _call(block.strip())
        if call is None:  # not a call: its text is content, as `parse` keeps it
            return self._content(f"{self.gap}<tool_call>{block}{closing}")
        return self._whole(call)

    def _scan_arguments(self) -> str:
        """Consume the pending arguments text up to the end of the arguments object."""
        for index, char in enumerate(self.pending):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    fragment, self.pending = self.pending[: index + 1], self.pending[index + 1 :]
                    self.arguments_done = True
                    return fragment
        fragment, self.pending = self.pending, ""
        return fragment

    def _whole(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        function = call["function"]
        delta = self._delta(name=function["name"], arguments=function["arguments"], call_id=call["id"])
        self.n_calls += 1
        return [delta]

    def _delta(self, *, name: str | None = None, arguments: str = "", call_id: str | None = None) -> dict[str, Any]:
        """One call's delta: the first (with the name) or a later one (an arguments fragment)."""
        function: dict[str, Any] = {"arguments": arguments} if name is None else {"name": name, "arguments": arguments}
        if self.legacy:
            return {"function_call": function}
        call: dict[str, Any] = {"index": self.n_calls, "function": function}
        if name is not None:
            call.update(id=call_id or new_call_id(), type="function")
        return {"tool_calls": [call]}
