"""Preference (DPO) data in the data workbench: OpenAI's format parsed and validated like chat data (line, field,
fix), counted and priced, and converted from A/B choices and from an evaluation's pairwise judgements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_helpers import SYSTEM, judged_evaluation, write_jsonl
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.data.convert import Mapping, convert_file
from ftlab.data.estimate import estimate_file, openai_cost
from ftlab.data.schema import DataError, data_kind, parse_preference, read_preferences
from ftlab.data.stats import stats_file
from ftlab.data.tokens import count_pairs, token_counter
from ftlab.data.validate import validate_file

OPENAI = "gpt-4.1-mini"  # tiktoken counts: no model to load
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}

QUESTIONS = [
    ("Why is the sky blue?", "Sunlight scatters off air; blue scatters most.",
     "The sky is blue because of a very long story about light, air, physics and many other things."),
    ("What do bees make?", "Honey.", "Bees are insects that fly around and make many different things, like honey."),
    ("How many legs does a cat have?", "Four.", "Cats usually have four legs, although it depends on the cat."),
    ("What is ice?", "Frozen water.", "Ice is what you get when water gets very, very, very cold for a long time."),
    ("空はなぜ青いの？", "青い光がいちばん散らばるからです。", "それはとても長いお話で、光と空気と物理のお話です。"),
    ("猫の足は何本？", "四本です。", "猫の足は普通は四本ですが、いろいろな猫がいます。"),
    ("Where do fish live?", "In water.", "Fish live in many places, mostly in water, rivers, lakes, seas and oceans."),
    ("What colour is grass?", "Green.", "Grass is generally green, but it can be yellow or brown in summer."),
    ("Why do we sleep?", "To rest the body and brain.", "We sleep for many reasons that scientists still study."),
    ("What is a rainbow?", "Sunlight split into colours by raindrops.", "A rainbow is a thing in the sky."),
]  # fmt: skip


def pair(user: str, good: str, bad: str, **extra) -> dict:
    return {"input": {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]},
            "preferred_output": [{"role": "assistant", "content": good}],
            "non_preferred_output": [{"role": "assistant", "content": bad}], **extra}  # fmt: skip


def good_pairs() -> list[dict]:
    return [pair(*q) for q in QUESTIONS]


MULTI_TURN_WITH_TOOLS = {
    "input": {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Is it cold in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 3}'},
            {"role": "assistant", "content": "Yes: 3 °C."},
            {"role": "user", "content": "And should I take a coat?"},
        ],
        "tools": [WEATHER_TOOL],
        "parallel_tool_calls": False,
    },
    "preferred_output": [{"role": "assistant", "content": "Yes, a warm one."}],
    "non_preferred_output": [{"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}],
}


def test_tool_calls_and_multi_turn_inputs_are_valid(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "prefs.jsonl", [*good_pairs(), MULTI_TURN_WITH_TOOLS])
    assert data_kind(path) == "preference"
    report = validate_file(path, OPENAI)
    assert report.ok and report.kind == "preference" and report.n_examples == 11, report.findings
    assert [f.check for f in report.findings if f.severity != "info"] == []
    assert any(f.check == "tools" for f in report.findings)
    example = read_preferences(path)[-1]
    preferred, non_preferred = example.conversations()
    # the prompt's assistant turns are context (weight 0); only the output is trained
    assert [m.trained for m in preferred.messages] == [False] * 6 + [True]
    assert non_preferred.messages[-1].tool_calls[0].function.name == "get_weather"
    assert preferred.tools == [WEATHER_TOOL] and preferred.line == 11


BAD_ROWS = [
    # (row, field, words in the message, words in the fix)
    ({**pair(*QUESTIONS[0]), "input": {"messages": [{"role": "usr", "content": "hi"}]}},
     "input.messages[0].role", "unknown role 'usr'", "roles"),
    ({**pair(*QUESTIONS[0]), "preferred_output": [{"role": "assistant"}]},
     "preferred_output[0]", "'content' is missing", "add a 'content'"),
    ({**pair(*QUESTIONS[0]), "non_preferred_output": [{"role": "user", "content": "x"}]},
     "non_preferred_output[0].role", "an output is an assistant message", "preference"),
    ({**pair(*QUESTIONS[0]), "preferred_output": [{"role": "assistant", "content": "a"}] * 2},
     "preferred_output", "exactly one assistant message", "preference"),
    ({**pair(*QUESTIONS[0]), "input": {"messages": [{"role": "user", "content": "hi"}], "tool": []}},
     "input.tool", "unknown key 'tool'", "allowed in input"),
    ({"input": {"messages": [{"role": "user", "content": "hi"}]}, "preferred_output": []},
     "non_preferred_output", "required key 'non_preferred_output' is missing", "preference"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     "input", "this line is chat data", "one kind of data"),
    (pair("  ", "a", "b"), "input.messages[1].content", "the user message is empty", "write the user's"),
    (pair("hi", "a", " \n"), "non_preferred_output[0].content", "the non preferred output is empty", "write the"),
]  # fmt: skip


@pytest.mark.parametrize(("row", "field", "words", "fix"), BAD_ROWS, ids=[r[1] + ":" + r[2][:12] for r in BAD_ROWS])
def test_bad_rows_are_named_by_line_and_field(tmp_path: Path, row: dict, field: str, words: str, fix: str) -> None:
    path = write_jsonl(tmp_path / "prefs.jsonl", [*good_pairs()[:2], row, *good_pairs()[2:]])
    report = validate_file(path, None, first_error=True)  # what an upload runs
    (error,) = report.findings
    assert (error.severity, error.lines, error.field) == ("error", [3], field), error
    assert words in error.message and fix in error.fix, error
    result = CliRunner().invoke(app, ["data", "validate", str(path), "--no-tokens", "--json"])
    assert result.exit_code == 1
    [same] = [f for f in json.loads(result.stdout)["findings"] if f["severity"] == "error"]
    assert (same["lines"], same["field"], same["message"]) == ([3], field, error.message)


def test_cli_prints_the_line_and_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "prefs.jsonl", [*good_pairs(), BAD_ROWS[0][0]])
    result = CliRunner().invoke(app, ["data", "validate", str(path), "--no-tokens"])
    assert result.exit_code == 1
    assert "line 11, field 'input.messages[0].role'" in " ".join(result.output.split())


def test_pair_warnings_identical_outputs_and_a_pair_preferred_both_ways(tmp_path: Path) -> None:
    flipped = pair(QUESTIONS[1][0], QUESTIONS[1][2], QUESTIONS[1][1])
    rows = [*good_pairs(), pair("Same?", "Yes.", "yes"), flipped]
    report = validate_file(write_jsonl(tmp_path / "prefs.jsonl", rows), OPENAI)
    found = {f.check: f for f in report.findings}
    assert report.ok and found["identical_outputs"].lines == [11]
    assert found["conflicting_answers"].lines == [2, 12] and "the other way" in found["conflicting_answers"].message


def test_too_long_names_the_output_and_the_prompt_alone_is_an_error(tmp_path: Path) -> None:
    long = " ".join(["word"] * 100)
    rows = [*good_pairs(), pair("hi", "short", long), pair(long, "a", "b")]
    report = validate_file(write_jsonl(tmp_path / "prefs.jsonl", rows), OPENAI, max_length=64)
    found = {f.check: f for f in report.findings}
    assert found["too_long"].lines == [11] and found["too_long"].field == "non_preferred_output"
    assert found["nothing_trained"].lines == [12] and not report.ok
    assert sum(f.check == "nothing_trained" for f in report.findings) == 1  # one error for the shared prompt


def test_pair_tokens_count_the_prompt_once_and_both_outputs(tmp_path: Path) -> None:
    counter = token_counter(OPENAI)
    example = parse_preference(pair(*QUESTIONS[1]))
    (counts,) = count_pairs(counter, [example])
    preferred, non_preferred = (counter.count([c])[0] for c in example.conversations())
    prompt = counter.count_prompt(example.conversations()[0])
    assert (counts.preferred, counts.non_preferred, counts.prompt) == (preferred.total, non_preferred.total, prompt)
    assert counts.total == prompt + (preferred.total - prompt) + (non_preferred.total - prompt)
    outputs = [len(counter.encoding.encode(text)) for text in QUESTIONS[1][1:]]
    assert counts.by_role["preferred_output"] == outputs[0] and counts.by_role["non_preferred_output"] == outputs[1]
    assert counts.trained == sum(outputs) and "assistant" not in counts.by_role


def test_stats_and_estimate_on_preference_data(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "prefs.jsonl", good_pairs())
    stats = stats_file(path, OPENAI)
    totals = [c.total for c in count_pairs(token_counter(OPENAI), read_preferences(path))]
    assert stats.kind == "preference" and stats.total.tolist() == totals
    assert {"system", "user", "preferred_output", "non_preferred_output"} == set(stats.by_role)
    assert stats.messages.tolist() == [4] * 10
    estimate = estimate_file(path, [OPENAI], n_epochs=2, local_model=None)
    (cost,) = estimate.openai
    assert estimate.kind == "preference" and cost.billed_tokens == 2 * sum(totals)
    assert cost.usd == pytest.approx(openai_cost(OPENAI, totals, 2).usd)
    result = CliRunner().invoke(app, ["data", "estimate", str(path), "-m", OPENAI, "--no-local"])
    assert result.exit_code == 0 and "preference pairs (DPO)" in result.output
    result = CliRunner().invoke(app, ["data", "stats", str(path), "-m", OPENAI])
    assert result.exit_code == 0 and "outputs (both)" in result.output and "preferred_output" in result.output


def test_local_estimate_times_both_sequences(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = write_jsonl(tmp_path / "prefs.jsonl", good_pairs())
    estimate = estimate_file(path, [OPENAI], local_model=str(tiny_model_dir))
    pairs = count_pairs(token_counter(str(tiny_model_dir)), read_preferences(path), detail=False)
    assert estimate.local_tokens == [p.preferred + p.non_preferred for p in pairs]
    assert len(estimate.sample) == 20 and estimate.sample[1].messages[-1].text == QUESTIONS[0][2]


def test_a_b_choices_become_pairs(tmp_path: Path) -> None:
    source = tmp_path / "ab.csv"
    source.write_text("prompt,a,b,choice\n"
                      "Why is the sky blue?,Scattering.,Because.,a\n"
                      "What do bees make?,Noise.,Honey.,B\n"
                      "Is it a tie?,Yes.,Also yes.,tie\n", encoding="utf-8")  # fmt: skip
    result = convert_file(source, tmp_path / "prefs.jsonl", Mapping(system=SYSTEM), to="dpo")
    assert result.written == 2 and result.skipped == [(4, "choice is 'tie' (a tie): no preference to learn")]
    first, second = read_preferences(tmp_path / "prefs.jsonl")
    assert [m.role for m in first.input.messages] == ["system", "user"]
    assert (first.outputs()[0].text, first.outputs()[1].text) == ("Scattering.", "Because.")
    assert (second.outputs()[0].text, second.outputs()[1].text) == ("Honey.", "Noise.")

    # JSONL with a whole conversation as the prompt, and a choice that is neither side
    rows = [{"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                        {"role": "user", "content": "Bye"}], "a": "Goodbye!", "b": "k", "choice": "a"},
            {"prompt": "Hi", "a": "x", "b": "y", "choice": "c"}]  # fmt: skip
    source = write_jsonl(tmp_path / "ab.jsonl", rows)
    with pytest.raises(DataError) as caught:
        convert_file(source, tmp_path / "prefs2.jsonl", to="dpo")
    assert (caught.value.line, caught.value.field) == (2, "choice") and "write a or b" in str(caught.value)
    convert_file(write_jsonl(tmp_path / "ab1.jsonl", rows[:1]), tmp_path / "prefs2.jsonl", to="dpo")
    (conversation,) = read_preferences(tmp_path / "prefs2.jsonl")
    assert [m.role for m in conversation.input.messages] == ["user", "assistant", "user"]
    cli = CliRunner().invoke(app, ["data", "convert", str(tmp_path / "ab.csv"), "--out", str(tmp_path / "c.jsonl"),
                                   "--to", "dpo", "--choice-column", "choice"])  # fmt: skip
    assert cli.exit_code == 0 and "2 examples written" in cli.output, cli.output


def test_pairwise_judgements_become_pairs(tmp_path: Path) -> None:
    path = judged_evaluation(tmp_path, QUESTIONS[:5], ["tuned", "base", "tie", None, "tuned"], [WEATHER_TOOL])
    result = CliRunner().invoke(app, ["data", "convert", str(path), "--to", "dpo", "--out",
                                      str(tmp_path / "prefs.jsonl"), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["written"] == 2 and [s["line"] for s in summary["skipped"]] == [3, 4, 5]
    assert [s["reason"] for s in summary["skipped"]] == ["base vs tuned: a tie", "base vs tuned: no verdict",
                                                         "base vs tuned: the same reply"]  # fmt: skip
    first, second = read_preferences(tmp_path / "prefs.jsonl")
    assert first.outputs()[0].text == QUESTIONS[0][1] and first.outputs()[1].text == QUESTIONS[0][2]
    assert second.outputs()[0].text == QUESTIONS[1][2]  # the judge preferred base's reply there
    assert [m.text for m in first.input.messages] == [SYSTEM, QUESTIONS[0][0]] and first.input.tools == [WEATHER_TOOL]
    assert validate_file(tmp_path / "prefs.jsonl", None).ok  # (2 pairs: too few for OpenAI, fine locally)

    with pytest.raises(ValueError, match="--to dpo"):
        convert_file(path, tmp_path / "chat.jsonl")
    (tmp_path / "test.jsonl").rename(tmp_path / "moved.jsonl")
    with pytest.raises(DataError, match="pass --test-file"):
        convert_file(path, tmp_path / "p.jsonl", to="dpo")
    assert convert_file(path, tmp_path / "p.jsonl", to="dpo", test_file=tmp_path / "moved.jsonl").written == 2
    write_jsonl(tmp_path / "changed.jsonl", [{"messages": [{"role": "user", "content": "Something else"},
                                                           {"role": "assistant", "content": "x"}]}] * 5)
    with pytest.raises(DataError, match="file changed since"):
        convert_file(path, tmp_path / "p.jsonl", to="dpo", test_file=tmp_path / "changed.jsonl")
