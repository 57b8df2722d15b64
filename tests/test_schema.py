"""The chat JSONL schema: valid shapes are kept intact, malformed lines are located precisely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftlab.data.schema import DataError, parse_example, read_examples, template_messages


def test_tool_calls_and_weights_are_kept_intact() -> None:
    line = {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "weight": 0, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "4°C"},
            {"role": "assistant", "content": "It is 4°C in Oslo.", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    }
    example = parse_example(json.dumps(line))
    assert example.to_openai() == line
    rendered = template_messages(example.messages)
    assert rendered[1]["content"] == '<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    assert rendered[2] == {"role": "tool", "content": '<tool_response id="c1" name="weather">\n4°C\n</tool_response>'}
    assert [m.trained for m in example.messages] == [False, False, False, True]
    assert example.reference() == "It is 4°C in Oslo."


@pytest.mark.parametrize(
    ("line", "message_index", "field", "words"),
    [
        ('{"messages": [', None, None, "not valid JSON"),
        ('["a"]', None, None, "expected a JSON object"),
        ('{"prompt": "a", "completion": "b"}', None, "messages", "prompt-completion"),
        ('{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}', 0, "role",
         "unknown role 'robot'"),
        ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant"}]}', 1, None, "'content' is missing"),
        ('{"messages": [{"role": "user", "content": "x"}]}', None, "messages", "no assistant message"),
        ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]}', 1,
         "weight", "weight must be 0 or 1"),
        ('{"messages": [{"role": "user", "content": "x", "colour": 1}, {"role": "assistant", "content": "y"}]}', 0,
         "colour", "unknown key 'colour'"),
        ('{"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant", "content": "y"}]}', 0,
         None, "only allowed on assistant"),
        ('{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}", None, None, "nested too deeply"),
    ],
)
def test_errors_name_line_message_and_field(tmp_path: Path, line: str, message_index, field, words: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}'
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(DataError) as caught:
        read_examples(path)
    error = caught.value
    assert error.line == 3 and error.path == str(path)
    assert error.message_index == message_index
    if field:
        assert error.field == field
    assert words in str(error)
    assert f"{path}, line 3" in str(error)


def test_invalid_utf8_is_located(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"messages": [{"role": "user", "content": "caf\xe9"}]}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="line 1: not valid UTF-8"):
        read_examples(path)


def test_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"messages": [{"role": "user", "content": "a"}, '
                     b'{"role": "assistant", "content": "b"}]}\n')
    assert read_examples(path)[0].reference() == "b"
