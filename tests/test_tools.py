"""Tools, tool calls and tool results: one rendering for training and serving, replies read back whole or
streamed, tool options resolved, and a tool-calling data set that trains (tiny random Llama)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ftlab.data import tools
from ftlab.data.schema import message_dicts, parse_example, read_examples
from ftlab.data.tools import FunctionDefinition, Tool, ToolRequestError, apply_template, parse, tool_use
from ftlab.data.validate import validate_file
from ftlab.models import load_tokenizer
from ftlab.train.tokenize import IGNORE_INDEX, tokenize_example

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "tool_calls"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tools"
WEATHER = {"type": "function", "function": {"name": "weather", "description": "Today's weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CONVERSATION = {
    "messages": [
        {"role": "system", "content": "You help travellers."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4°C, rain"},
        {"role": "assistant", "content": "It is 4°C and raining in Oslo."},
    ],
    "tools": [WEATHER],
}  # fmt: skip
CALL = '<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
# A template that renders tools itself, as Qwen2.5's and Hermes' do (shortened): ftlab must hand it the tools.
KNOWS_TOOLS = (
    "{%- if tools %}<|im_start|>system\n{{ messages[0].content }}\n# Tools\n<tools>{% for t in tools %}\n"
    "{{ t | tojson }}{% endfor %}\n</tools><|im_end|>\n{% endif %}"
    "{%- for m in messages %}{%- if m.role == 'system' and tools %}"
    "{%- elif m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n{% for c in m.tool_calls %}<tool_call>\n"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}'
    "<|im_end|>\n{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response>"
    "<|im_end|>\n{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def trained_spans(tokenizer, item) -> list[str]:
    spans, current = [], []
    for token, label in zip(item.input_ids, item.labels, strict=True):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            spans, current = [*spans, current], []
    return [tokenizer.decode(span) for span in [*spans, *([current] if current else [])]]


def test_training_text_holds_the_tool_definitions_and_the_mask_covers_the_call(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    assert not tools.template_knows_tools(tokenizer)  # SmolLM2's template: ftlab's format
    item = tokenize_example(tokenizer, parse_example(CONVERSATION))
    text = tokenizer.decode(item.input_ids)
    assert text.startswith("<|im_start|>system\nYou help travellers.\n\n# Tools\n")
    assert json.dumps(WEATHER) in text
    assert '<|im_start|>tool\n<tool_response id="call_1" name="weather">\n4°C, rain\n</tool_response><|im_end|>' in text
    assert trained_spans(tokenizer, item) == [f"{CALL}<|im_end|>", "It is 4°C and raining in Oslo.<|im_end|>"]
    # Serving renders the same conversation to the same prompt, tools and history included.
    prompt = apply_template(tokenizer, CONVERSATION["messages"][:3], [WEATHER], generation_prompt=True)
    assert text.startswith(prompt.removesuffix("<|im_start|>assistant\n")) and CALL in prompt


def test_a_template_that_knows_tools_renders_them_itself(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    tokenizer.chat_template = KNOWS_TOOLS
    assert tools.template_knows_tools(tokenizer)
    item = tokenize_example(tokenizer, parse_example(CONVERSATION))
    text = tokenizer.decode(item.input_ids)
    assert '# Tools\n<tools>{"type": "function"' in text
    assert "You may call one or more functions" not in text  # not ftlab's section
    assert "<|im_start|>user\n<tool_response>\n4°C, rain\n</tool_response>" in text  # the template's own turn
    assert trained_spans(tokenizer, item) == [f"{CALL}<|im_end|>", "It is 4°C and raining in Oslo.<|im_end|>"]


REPLIES = [
    f"Let me check.\n{CALL}",
    f"{CALL}\n{CALL.replace('Oslo', 'Bergen')}",
    "No tools needed here.  ",
    f"A <tool_call>not json</tool_call> {CALL} and after",
    '<tool_call>\n{"arguments": {"city": "Oslo"}, "name": "weather"}\n</tool_call>',  # keys in another order
    '<tool_call>\n{"name": "weather", "arguments": {"city": "O\\"s}lo"}}',  # unclosed at the end of the turn
    "text that ends like a tag <tool_ca",
    '<tool_call>\n{"name": "weather", "arguments": "Oslo"}\n</tool_call>',  # arguments that are no object
]


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("text", REPLIES, ids=["text-then-call", "two-calls", "text", "invalid-block", "key-order",
                                               "unclosed", "half-a-tag", "string-arguments"])
def test_a_streamed_reply_adds_up_to_the_parsed_one(text: str, parallel: bool) -> None:
    whole = parse(text, limit=None if parallel else 1)
    expected = (whole.content, [(c["function"]["name"], c["function"]["arguments"]) for c in whole.tool_calls])
    rng = random.Random(0)
    for _ in range(20):  # random cuts: a tag, a name or an escape split across pieces
        parser = tools.StreamParser(parallel=parallel)
        deltas, at = [], 0
        while at < len(text):
            step = rng.randint(1, 6)
            deltas += parser.feed(text[at : at + step])
            at += step
        deltas += parser.finish()
        content = "".join(d["content"] for d in deltas if "content" in d) or None
        calls: dict[int, list] = {}
        for delta in deltas:
            for call in delta.get("tool_calls", []):
                if "id" in call:  # the first delta of a call: id, type and name, as OpenAI streams it
                    assert call["id"].startswith("call_") and call["type"] == "function"
                    calls[call["index"]] = [call["function"]["name"], ""]
                calls[call["index"]][1] += call["function"]["arguments"]
        assert (content, [tuple(calls[i]) for i in sorted(calls)]) == expected
        assert parser.called == bool(whole.tool_calls)


def test_parse_reads_calls_text_and_invalid_blocks() -> None:
    reply = parse(REPLIES[3])
    assert reply.content == "A <tool_call>not json</tool_call> and after"
    assert reply.invalid == ["<tool_call>not json</tool_call>"]
    ((call),) = reply.tool_calls
    assert call["function"] == {"name": "weather", "arguments": '{"city": "Oslo"}'}
    assert call["id"].startswith("call_") and len(call["id"]) == 29
    assert call["id"] != parse(REPLIES[3]).tool_calls[0]["id"]  # a fresh id each time, as OpenAI's
    assert parse(REPLIES[1], limit=1).content is None and len(parse(REPLIES[1]).tool_calls) == 2


def _tools(*names: str) -> list[Tool]:
    return [Tool(type="function", function=FunctionDefinition(name=name)) for name in names]


def test_tool_options_resolve_and_what_cannot_be_served_is_refused() -> None:
    assert tool_use(None, None) is None
    use = tool_use(_tools("a", "b"), "required", parallel_tool_calls=False)
    assert (use.mode, use.parallel, use.legacy) == ("required", False, False)
    assert use.schema() == {"anyOf": [tools.call_schema(use.tools, "a"), tools.call_schema(use.tools, "b")]}
    named = tool_use(_tools("a", "b"), {"type": "function", "function": {"name": "b"}})
    assert (named.mode, named.name, named.schema()["properties"]["name"]) == ("named", "b", {"const": "b"})
    assert not named.parallel  # one call of the named tool
    assert not tool_use(_tools("a"), "none").calls
    legacy = tool_use(None, None, [FunctionDefinition(name="f")], {"name": "f"})
    assert (legacy.mode, legacy.legacy, legacy.parallel, legacy.tools[0]["function"]["name"]) == ("named", True,
                                                                                                  False, "f")
    refused = [
        ((None, "required"), "tool_choice", "only allowed when tools"),
        ((_tools("a"), {"type": "function", "function": {"name": "zzz"}}), "tool_choice", "'zzz'"),
        ((_tools("a"), {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}), "tool_choice",
         "not supported"),
        ((_tools("a"), None, [FunctionDefinition(name="f")]), "functions", "not both"),
        ((None, "auto", [FunctionDefinition(name="f")]), "tool_choice", "function_call"),
        ((None, None, [FunctionDefinition(name="f")], "required"), "function_call", "not supported"),
        ((None, None, None, "auto"), "function_call", "only allowed when functions"),
        ((_tools("a"), None, None, "auto"), "function_call", "use 'tool_choice'"),
    ]  # fmt: skip
    for arguments, param, words in refused:
        with pytest.raises(ToolRequestError, match=words) as caught:
            tool_use(*arguments)
        assert caught.value.param == param


def test_outside_a_required_call_the_model_writes_freely_but_every_call_fits(tiny_model_dir: Path) -> None:
    xgr = pytest.importorskip("xgrammar")
    from ftlab.infer.constrained import tool_call_constraint

    tokenizer = load_tokenizer(str(tiny_model_dir))

    def accepted(constraint, text: str) -> bool:
        matcher = xgr.GrammarMatcher(constraint.grammar)
        ids = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
        return all(matcher.accept_token(token) for token in ids)

    schema = tools.call_schema([WEATHER])
    auto, required = (tool_call_constraint(tokenizer, schema, required=r) for r in (False, True))
    wrong = CALL.replace('"city"', '"town"')
    assert accepted(auto, "Just text.") and accepted(auto, f"Let me check.\n{CALL}") and not accepted(auto, wrong)
    assert accepted(required, CALL) and accepted(required, f"{CALL}\n{CALL}") and not accepted(required, "Text.")
    single = tool_call_constraint(tokenizer, schema, required=True, parallel=False)
    assert accepted(single, CALL) and not accepted(single, f"{CALL}\n{CALL}")
    assert not accepted(required, CALL.replace('", "', '","'))  # spaced as ftlab writes calls for training


def test_the_tool_calling_set_trains_every_reply_including_its_calls(tiny_model_dir: Path, tmp_path: Path) -> None:
    from ftlab.config import TrainConfig
    from ftlab.train.recipe import train

    subset = tmp_path / "tools.jsonl"
    subset.write_text("".join((DATA / "train.jsonl").read_text(encoding="utf-8").splitlines(True)[:8]))
    tokenizer = load_tokenizer(str(tiny_model_dir))
    items = [tokenize_example(tokenizer, example) for example in read_examples(subset)]
    assert all('"name": "find_stations"' in tokenizer.decode(item.input_ids) for item in items)  # the definitions
    config = TrainConfig(model=str(tiny_model_dir), n_epochs=1, batch_size=4, seed=7)
    result = train(config, subset, None, tmp_path / "run", progress=False)
    assert result.status == "succeeded"
    assert result.trained_tokens == sum(item.n_trained for item in items)  # the calls are trained, not only text


def test_eval_gives_the_model_the_tools_and_scores_its_calls(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    lines = (DATA / "test.jsonl").read_text(encoding="utf-8").splitlines(True)
    subset = tmp_path / "test.jsonl"
    subset.write_text("".join(lines[:6]), encoding="utf-8")
    out = tmp_path / "result.json"
    result = CliRunner().invoke(app, ["eval", str(subset), "--model", str(tiny_model_dir), "--max-new-tokens", "6",
                                      "--output", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tool name" in result.output and "tool args" in result.output
    written = json.loads(out.read_text())
    assert written["metrics"] == ["exact", "tool_calls", "length"] and written["headline"] == "tool_args"
    tokenizer = load_tokenizer(str(tiny_model_dir))
    for record, example in zip(written["models"][0]["examples"], read_examples(subset), strict=True):
        prompt = apply_template(tokenizer, message_dicts(example.prompt_messages()), example.tool_definitions(),
                                generation_prompt=True, tokenize=True)  # fmt: skip
        assert record["prompt_tokens"] == len(prompt)  # the tools and the history's calls are in the prompt
        calls_expected = bool(parse(record["reference"]).tool_calls)
        assert (record["scores"]["tool_args"] is not None) == calls_expected
        assert record["scores"]["tool_name"] in (0.0, 1.0)


def test_the_example_tool_set_is_what_its_script_writes_and_it_validates(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(EXAMPLE / "make_tools.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)  # fmt: skip
    called, japanese = {}, {}
    for split, size in (("train", 60), ("test", 20)):
        path = EXAMPLE / f"{split}.jsonl"
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), f"{path.name} differs from the script"
        report = validate_file(path, None)
        assert report.ok and report.n_examples == size, [f.message for f in report.findings]
        examples = read_examples(path)
        replies = [parse(example.reference()) for example in examples]
        called[split] = {c["function"]["name"] for r in replies for c in r.tool_calls} | {
            None for r in replies if not r.tool_calls}  # fmt: skip
        japanese[split] = sum(any("\u3040" <= ch <= "\u9fff" for ch in e.question()) for e in examples) / size
    assert called["train"] == called["test"] == {"get_weather", "search_orders", "create_ticket", None}
    assert 0.3 < japanese["train"] < 0.7 and 0.3 < japanese["test"] < 0.7  # Japanese and English customers
