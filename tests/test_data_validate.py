"""`ftlab data validate`: one crafted bad file per check, in English and Japanese."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_helpers import GOOD, SYSTEM, chat, good_rows, write_jsonl
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.data import validate as validate_module
from ftlab.data.labels import read_labels
from ftlab.data.schema import DataError
from ftlab.data.validate import CHECKS, example_count_finding, server_min_examples, validate_file

REPO = Path(__file__).resolve().parents[1]

OPENAI = "gpt-4o-mini"  # tiktoken counts: no model to load


def checks(report, severity: str | None = None) -> dict[str, list]:
    out: dict[str, list] = {}
    for finding in report.findings:
        if severity is None or finding.severity == severity:
            out.setdefault(finding.check, []).append(finding)
    return out


def test_clean_file_passes(tmp_path: Path) -> None:
    report = validate_file(write_jsonl(tmp_path / "ok.jsonl", good_rows()), OPENAI)
    assert report.ok and report.n_examples == len(GOOD)
    assert [f.check for f in report.findings if f.severity != "info"] == []
    assert report.tokens["max"] < report.max_length == 65_536


def test_structural_errors_name_line_message_and_field(tmp_path: Path) -> None:
    rows = good_rows() + [
        "this is not json",  # line 13
        {"prompt": "Hi", "completion": "Hello"},  # 14: prompt-completion
        {"messages": [{"role": "user", "content": "やあ"}, {"role": "assistant", "content": "はい", "lang": "ja"}]},
        {"messages": [{"role": "human", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},  # 16
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "はい"}]},  # 17: missing content
        {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "質問です"}]},  # 18
        {"messages": [], "extra": 1},  # 19
        '["a", "list"]',  # 20
    ]
    report = validate_file(write_jsonl(tmp_path / "bad.jsonl", rows), OPENAI)
    by_line = {f.lines[0]: f for f in report.findings if f.check in ("json", "schema")}
    assert by_line[13].check == "json" and "not valid JSON" in by_line[13].message
    assert "prompt-completion" in by_line[14].message and "ftlab data convert" in by_line[14].fix
    assert (by_line[15].message_index, by_line[15].field) == (1, "lang") and "unknown key 'lang'" in by_line[15].message
    assert (by_line[16].message_index, by_line[16].field) == (0, "role") and "'human'" in by_line[16].message
    assert by_line[17].message_index == 0 and "'content' is missing" in by_line[17].message
    assert "no assistant message" in by_line[18].message
    assert 19 in by_line and "expected a JSON object" in by_line[20].message
    assert all(f.severity == "error" for f in by_line.values())
    assert report.n_errors == 8 and report.n_examples == len(GOOD)


def test_tool_calls_tool_messages_and_weight_are_valid(tmp_path: Path) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "大阪"}'}}
    rows = good_rows(10) + [
        {
            "messages": [
                {"role": "user", "content": "大阪の天気は？"},
                {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "晴れ"},
                {"role": "assistant", "content": "大阪は晴れです。"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        },
        {
            "messages": [
                {"role": "user", "content": "Say hi"},
                {"role": "assistant", "content": "Hi there, friend!", "weight": 0},
                {"role": "user", "content": "Shorter"},
                {"role": "assistant", "content": "Hi.", "weight": 1},
            ]
        },
    ]
    report = validate_file(write_jsonl(tmp_path / "tools.jsonl", rows), OPENAI)
    assert report.ok and report.n_examples == 12
    found = checks(report, "info")
    assert "1 assistant messages have weight 0" in found["weight"][0].message
    assert "1 examples use tool calls" in found["tools"][0].message


def test_tool_calls_that_do_not_fit_their_tools_are_found(tmp_path: Path) -> None:
    def call(name: str, arguments: str, call_id: str = "c1") -> dict:
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}

    weather = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}

    def row(calls: list[dict], tools: list | None = None, answers: str = "c1") -> dict:
        messages = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": calls},
                    {"role": "tool", "tool_call_id": answers, "content": "sunny"},
                    {"role": "assistant", "content": "Sunny."}]  # fmt: skip
        return {"messages": messages, **({"tools": tools} if tools is not None else {})}

    rows = good_rows(10) + [
        row([call("weather", '{"city": "Oslo"')], [weather]),  # line 11: arguments not JSON
        row([call("forecast", "{}")], [weather]),  # 12: not a defined tool
        row([call("weather", "{}")]),  # 13: no tools at all
        row([call("weather", "{}")], [{"type": "custom", "custom": {"name": "x"}}]),  # 14: not a function tool
        row([call("weather", "{}")], [weather], answers="c9"),  # 15: answers no call
    ]
    report = validate_file(write_jsonl(tmp_path / "calls.jsonl", rows), OPENAI)
    found = {(f.lines[0], f.severity, f.field): f.message for f in report.findings if f.check == "tool_calls"}
    assert "not a JSON object" in found[(11, "error", "tool_calls[0].function.arguments")]
    assert "'forecast', which is not among the example's tools (weather)" in found[(12, "error",
                                                                                  "tool_calls[0].function.name")]
    assert "defines no tools" in found[(13, "warning", "tool_calls[0].function.name")]
    assert "tools[0] is not an OpenAI function tool" in found[(14, "error", "tools[0]")]
    assert "'c9'" in found[(15, "warning", "tool_call_id")]
    assert len(found) == 5 and not report.ok


def test_empty_reply_and_conversation_not_ending_with_assistant(tmp_path: Path) -> None:
    rows = good_rows(10) + [
        chat("空白だけの返事", "\u3000 \n"),  # line 11: ideographic space only
        chat("Empty?", ""),  # 12
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": " ", "weight": 0},
                {"role": "user", "content": "Again"},
                {"role": "assistant", "content": "Hello."},
            ]
        },  # 13
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "ありがとう"},
            ]
        },  # 14
    ]
    report = validate_file(write_jsonl(tmp_path / "empty.jsonl", rows), OPENAI)
    empty = checks(report)["empty_assistant"]
    assert [(f.lines, f.severity, f.message_index) for f in empty] == [
        ([11], "error", 2),
        ([12], "error", 2),
        ([13], "warning", 1),
    ]
    assert "empty_user" not in checks(report)
    tail = checks(report)["not_ending_with_assistant"]
    assert [(f.lines, f.message_index, f.severity) for f in tail] == [([14], 2, "warning")]
    assert "'user'" in tail[0].message


def test_fewer_than_ten_examples_is_an_error_for_openai_and_a_warning_for_a_local_model(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "few.jsonl", good_rows(9))
    report = validate_file(path, OPENAI)
    assert not report.ok
    assert checks(report, "error")["too_few_examples"][0].message == "only 9 examples; at least 10 are required"
    local = validate_file(path, None)  # ftlab trains on any number of examples
    assert local.ok and "OpenAI would refuse" in checks(local, "warning")["too_few_examples"][0].fix
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n")
    assert checks(validate_file(blank, None), "error")["too_few_examples"][0].message == "the file has no examples"


def test_the_minimum_example_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FTLAB_MIN_TRAINING_EXAMPLES", raising=False)
    assert server_min_examples() == 10
    monkeypatch.setenv("FTLAB_MIN_TRAINING_EXAMPLES", "2")
    assert server_min_examples() == 2
    assert example_count_finding(10, 10) is None and example_count_finding(3, 2) is None
    assert example_count_finding(1, 10).message == "only 1 example; at least 10 are required"
    assert example_count_finding(0, None).severity == "error"
    assert example_count_finding(9, None).severity == "warning" and example_count_finding(10, None) is None


def test_encoding_problems(tmp_path: Path) -> None:
    path = tmp_path / "enc.jsonl"
    write_jsonl(path, good_rows(10) + [b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    report = validate_file(path, OPENAI)
    enc = sorted(checks(report)["encoding"], key=lambda f: f.lines)
    assert [(f.severity, f.lines) for f in enc] == [("warning", [1]), ("error", [11])]
    assert "byte order mark" in enc[0].message and "0xe9" in enc[1].message
    assert report.n_examples == 10  # the BOM line itself still parses


def test_duplicates_near_duplicates_conflicts_and_system_prompts(tmp_path: Path) -> None:
    tokyo = "東京は日本の首都で、人口は約1400万人です。毎年多くの観光客が訪れます。"
    tokyo_near = "東京は日本の首都であり、人口は約1400万人です。毎年多くの観光客が訪れます。"
    rows = good_rows() + [
        chat(*GOOD[0]),  # 13: exact duplicate of line 1
        chat(tokyo, "要約：日本の首都。"),  # 14
        chat(tokyo_near, "要約：日本の首都。"),  # 15: Japanese near duplicate of 14
        chat("What is the capital of France?", "Lyon."),  # 16: same prompt as line 1, other answer
        chat("Name a primary colour.", "Red.", system=None),  # 17: no system prompt, conflicting? no: same answer
        chat("Who wrote Hamlet?", "Shakespeare.", system="You are a pirate."),  # 18
    ]
    report = validate_file(write_jsonl(tmp_path / "dups.jsonl", rows), OPENAI)
    found = checks(report, "warning")
    assert [f.lines for f in found["exact_duplicate"]] == [[1, 13]]
    assert [14, 15] in [f.lines for f in found["near_duplicate"]]
    assert [f.lines for f in found["conflicting_answers"]] == [[1, 16]]
    mixed = found["mixed_system_prompts"][0]
    assert "3 different system prompts" in mixed.message and "(none)" in mixed.message and 17 in mixed.lines
    assert report.ok  # warnings only


def test_unrelated_japanese_is_not_a_near_duplicate(tmp_path: Path) -> None:
    rows = good_rows() + [
        chat("京都には多くの寺があり、秋の紅葉が美しいです。", "はい。"),
        chat("大阪は食べ物が美味しいことで有名な都市です。", "はい。"),
    ]
    report = validate_file(write_jsonl(tmp_path / "ja.jsonl", rows), OPENAI)
    assert "near_duplicate" not in checks(report)


def test_length_checks_with_the_model_tokenizer(tmp_path: Path, bundled_model_dir: Path) -> None:
    long_answer = "これは長い答えです。" * 40
    long_prompt = "Please read this carefully. " * 60
    rows = good_rows(10) + [chat("長い答えをください", long_answer), chat(long_prompt, "OK.")]
    report = validate_file(write_jsonl(tmp_path / "long.jsonl", rows), str(bundled_model_dir), max_length=200)
    too_long = checks(report)["too_long"]
    assert [f.lines for f in too_long] == [[11]] and too_long[0].severity == "warning"
    total = int(too_long[0].message.split()[0])
    assert f"the last {total - 200} tokens would be cut" in too_long[0].message
    nothing = checks(report)["nothing_trained"]
    assert [f.lines for f in nothing] == [[12]] and nothing[0].severity == "error"
    assert report.tokens["over_max_length"] == 2 and report.tokens["tokens_cut"] > total - 200
    assert "chat template" in report.tokens["counted_with"]


def test_labels_outside_the_set_are_grouped_by_shape(tmp_path: Path) -> None:
    labels = ["positive", "negative", "neutral"]
    outputs = (
        ["positive"] * 6
        + ["negative"] * 5
        + ["neutral"]
        + ["😀", "😡👎", ":smile:", "Positive.", "怒り", "I think this one is quite positive overall"]
    )
    rows = [chat(f"Review {i}: レビュー{i}", out) for i, out in enumerate(outputs)]
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(labels) + "\n")
    report = validate_file(write_jsonl(tmp_path / "cls.jsonl", rows), OPENAI, labels=labels)
    lab = report.labels
    assert lab.n_outputs == 18 and lab.share_inside == pytest.approx(12 / 18)
    assert dict(lab.distribution) == {"positive": 6, "negative": 5, "neutral": 1}
    assert lab.rare_labels() == ["neutral"]
    assert {shape: [o for _, o in rows] for shape, rows in lab.outside.items()} == {
        "emoji": ["😀", "😡👎"],
        "shortcode": [":smile:"],
        "variant": ["Positive."],
        "unknown_label": ["怒り"],
        "text": ["I think this one is quite positive overall"],
    }
    emoji = next(f for f in report.findings if f.check == "labels" and "emoji instead" in f.message)
    assert emoji.lines == [13, 14] and emoji.severity == "warning"


def test_inferred_labels(tmp_path: Path) -> None:
    outputs = ["ポジティブ"] * 5 + ["ネガティブ"] * 5 + ["🙂", "🙂", "ネガティブ。"]
    rows = [chat(f"レビュー{i}", out) for i, out in enumerate(outputs)]
    report = validate_file(write_jsonl(tmp_path / "ja.jsonl", rows), OPENAI, infer_labels=True)
    assert report.labels.inferred and report.labels.labels == ["ネガティブ", "ポジティブ"]
    assert report.labels.outside_counts == {"emoji": 2, "variant": 1}


def test_findings_are_capped_per_check_but_all_counted(tmp_path: Path) -> None:
    cap = validate_module.MAX_FINDINGS_PER_CHECK
    rows = good_rows() + ["{broken"] * (cap + 30)
    report = validate_file(write_jsonl(tmp_path / "many.jsonl", rows), None)
    assert len([f for f in report.findings if f.check == "json"]) == cap
    assert report.n_errors == cap + 30 and report.suppressed[("json", "error")] == 30


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = write_jsonl(tmp_path / "ok.jsonl", good_rows() + [chat(*GOOD[0])])  # a duplicate: warning only
    result = runner.invoke(app, ["data", "validate", str(ok), "--model", OPENAI])
    assert result.exit_code == 0, result.output
    assert "exact_duplicate" in result.output and "OK" in result.output

    bad = write_jsonl(tmp_path / "bad.jsonl", good_rows() + ['{"messages": [{"role": "robot", "content": "x"}]}'])
    result = runner.invoke(app, ["data", "validate", str(bad), "--model", OPENAI, "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["errors"] == 1 and data["examples"] == len(GOOD)
    finding = next(f for f in data["findings"] if f["severity"] == "error")
    assert (finding["lines"], finding["message_index"], finding["field"]) == ([13], 0, "role")

    missing = runner.invoke(app, ["data", "validate", str(tmp_path / "nope.jsonl"), "--no-tokens"])
    assert missing.exit_code == 2 and "file not found" in missing.output


def test_empty_user_messages_are_errors(tmp_path: Path) -> None:
    image = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    rows = good_rows(10) + [
        chat(" \n", "Hello."),  # 11: whitespace only
        {"messages": [{"role": "user", "content": image}, {"role": "assistant", "content": "A cat."}]},  # 12: fine
        {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]},
                      {"role": "assistant", "content": "?"}]},  # 13: empty text part
    ]  # fmt: skip
    report = validate_file(write_jsonl(tmp_path / "empty_user.jsonl", rows), OPENAI)
    empty = checks(report)["empty_user"]
    assert [(f.lines, f.severity, f.message_index, f.field) for f in empty] == [
        ([11], "error", 1, "content"),
        ([13], "error", 0, "content"),
    ]


def test_first_error_reports_only_the_first_error(tmp_path: Path) -> None:
    rows = [chat(*GOOD[0])] * 3 + [chat("Hi", "", system="Other.")] + ["{broken"] * 5  # duplicates: warnings
    report = validate_file(write_jsonl(tmp_path / "bad.jsonl", rows), None, first_error=True)
    assert [(f.check, f.lines) for f in report.findings] == [("empty_assistant", [4])]
    assert report.n_lines == 4 and report.n_examples == 4
    ok = validate_file(write_jsonl(tmp_path / "ok.jsonl", [chat(*GOOD[0])] * 3), None, first_error=True)
    assert ok.ok and ok.findings == [] and ok.n_examples == 3


def test_a_line_nested_too_deeply_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    deep = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = write_jsonl(tmp_path / "deep.jsonl", good_rows() + [deep])
    result = CliRunner().invoke(app, ["data", "validate", str(path), "--no-tokens", "--json"])
    assert result.exit_code == 1, result.output
    error = next(f for f in json.loads(result.stdout)["findings"] if f["severity"] == "error")
    assert error["check"] == "json" and error["lines"] == [13] and "nested too deeply" in error["message"]


def test_the_docs_table_is_the_list_of_checks() -> None:
    docs = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
    table = [line for line in docs.splitlines() if line.startswith("| `")]
    assert table == [f"| `{c.id}` | {c.finds} | {c.severity} |" for c in CHECKS.values()]
    assert all(c.fix for c in CHECKS.values() if "error" in c.severity)  # an upload's 400 always says what to do


def test_label_files(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffpositive\r\n\n  negative  \n😍\n".encode())
    assert read_labels(path) == ["positive", "negative", "😍"]
    path.write_text("positive\nnegative\n\npositive\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_labels(path)
    assert (caught.value.path, caught.value.line) == (str(path), 4) and "already on line 1" in str(caught.value)
    path.write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(DataError, match="line 2: not valid UTF-8"):
        read_labels(path)
    path.write_text("\n \n")
    with pytest.raises(DataError, match="no labels"):
        read_labels(path)
    with pytest.raises(DataError, match="file not found"):
        read_labels(tmp_path / "missing.txt")
    result = CliRunner().invoke(app, ["data", "validate", str(write_jsonl(tmp_path / "ok.jsonl", good_rows())),
                                      "--no-tokens", "--labels", str(path)])  # fmt: skip
    assert result.exit_code == 2 and "no labels" in result.output
