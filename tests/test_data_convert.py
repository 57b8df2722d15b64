"""`ftlab data convert`: the cookbook recipe CSV, TSV, prompt-completion JSONL and the DPO shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_helpers import write_jsonl
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.data.convert import Mapping, convert_file, unescape
from ftlab.data.schema import DataError, read_examples

RECIPES = Path(__file__).parent / "data_files" / "recipes.csv"
SYSTEM = (
    "You are a helpful recipe assistant. You are to extract the generic ingredients from each of the recipes provided."
)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cookbook_recipe_csv_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "recipes.jsonl"
    result = CliRunner().invoke(app, [
        "data", "convert", str(RECIPES), "--out", str(out), "--system", SYSTEM,
        "--user-template", r"Title: {title}\n\nIngredients: {ingredients}\n\nGeneric ingredients: ",
        "--assistant-column", "NER",
    ])
    assert result.exit_code == 0, result.output
    examples = read_examples(out)  # the trainer's parser accepts it
    assert len(examples) == 4
    first = examples[0].to_openai()["messages"]
    assert first[0] == {"role": "system", "content": SYSTEM}
    assert first[1]["content"] == (
        'Title: No-Bake Nut Cookies\n\nIngredients: ["1 c. firmly packed brown sugar", "1/2 c. evaporated milk", '
        '"1/2 tsp. vanilla", "2 Tbsp. butter or margarine"]\n\nGeneric ingredients: '
    )
    assert first[2] == {"role": "assistant", "content": '["brown sugar", "milk", "vanilla", "butter"]'}
    japanese = examples[3].to_openai()["messages"]
    assert japanese[1]["content"].startswith("Title: 親子丼\n\nIngredients: [\"鶏もも肉 200g\"")
    assert json.loads(japanese[2]["content"]) == ["鶏もも肉", "卵", "玉ねぎ", "だし汁", "醤油"]


def test_tsv_with_columns_and_a_missing_template_column(tmp_path: Path) -> None:
    tsv = tmp_path / "qa.tsv"
    tsv.write_text("question\tanswer\n日本の首都は？\t東京\nCapital of Italy?\tRome\nEmpty?\t\n", encoding="utf-8")
    result = convert_file(tsv, tmp_path / "qa.jsonl", Mapping(user_column="question", assistant_column="answer"))
    assert result.written == 2 and result.skipped == [(4, "empty assistant reply")]
    assert _records(tmp_path / "qa.jsonl")[0] == {
        "messages": [{"role": "user", "content": "日本の首都は？"}, {"role": "assistant", "content": "東京"}]
    }
    with pytest.raises(DataError) as info:
        convert_file(tsv, tmp_path / "x.jsonl", Mapping(user_template="Q: {quesion}", assistant_column="answer"))
    assert info.value.line == 2 and info.value.field == "quesion" and "question" in str(info.value)


def test_prompt_completion_jsonl_becomes_chat(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "legacy.jsonl", [
        {"prompt": "Translate to French: cheese\n\n###\n\n", "completion": " fromage END"},
        {"prompt": "猫を英語で\n\n###\n\n", "completion": " cat END"},
    ])
    result = convert_file(source, tmp_path / "chat.jsonl", Mapping(system="Translate."))
    assert result.written == 2
    assert _records(tmp_path / "chat.jsonl")[1] == {"messages": [
        {"role": "system", "content": "Translate."},
        {"role": "user", "content": "猫を英語で\n\n###"},
        {"role": "assistant", "content": "cat END"},
    ]}


def test_dpo_shape(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "prefs.jsonl", [
        {"input": "Summarise: the cat sat on the mat.", "chosen": "A cat sat on a mat.", "rejected": "Dogs bark."},
        {"input": "要約：今日は晴れです。", "chosen": "晴れ。", "rejected": "雨が降っています。"},
    ])
    convert_file(source, tmp_path / "dpo.jsonl", Mapping(system="Be brief."), to="dpo")
    record = _records(tmp_path / "dpo.jsonl")[1]
    assert record == {
        "input": {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "要約：今日は晴れです。"},
            ]
        },
        "preferred_output": [{"role": "assistant", "content": "晴れ。"}],
        "non_preferred_output": [{"role": "assistant", "content": "雨が降っています。"}],
    }
    csv = tmp_path / "prefs.csv"
    csv.write_text("q,good,bad\nHi,Hello!,Go away.\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["data", "convert", str(csv), "--out", str(tmp_path / "d2.jsonl"), "--to", "dpo",
                                      "--user-column", "q", "--preferred-column", "good",
                                      "--non-preferred-column", "bad"])
    assert result.exit_code == 0, result.output
    assert _records(tmp_path / "d2.jsonl")[0]["non_preferred_output"][0]["content"] == "Go away."


def test_unescape_and_csv_errors(tmp_path: Path) -> None:
    assert unescape(r"a\nb\tc\\n") == "a\nb\tc\\n"
    assert unescape("日本\\n語") == "日本\n語"
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2,3\n", encoding="utf-8")
    with pytest.raises(DataError, match="more fields than the header") as info:
        convert_file(bad, tmp_path / "o.jsonl", Mapping(user_column="a", assistant_column="b"))
    assert info.value.line == 2
    text_file = bad.rename(tmp_path / "bad.txt")
    with pytest.raises(ValueError, match="--format"):
        convert_file(text_file, tmp_path / "o.jsonl")
