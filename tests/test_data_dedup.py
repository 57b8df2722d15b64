"""`ftlab data dedup` and `ftlab data leakage`: MinHash catches the Japanese near-duplicate, embeddings the
English paraphrase, and unrelated examples stay."""

from __future__ import annotations

import json
from pathlib import Path

from data_helpers import chat, good_rows, write_jsonl
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.data.dedup import dedup_file, leakage
from ftlab.data.near_dup import example_key, normalise
from ftlab.data.schema import parse_example

TOKYO = "東京は日本の首都で、人口は約1400万人です。毎年多くの観光客が訪れます。"
TOKYO_NEAR = "東京は日本の首都であり、人口は約1400万人です。毎年多くの観光客が訪れます。"
RESET = ("How do I reset my password?", "Go to Settings and choose Reset password.")
RESET_PARAPHRASE = ("How can I reset my password?", "Open Settings, then pick Reset password.")


def _rows() -> list[dict]:
    return good_rows() + [
        chat(TOKYO, "東京の紹介です。"),  # 13
        chat(TOKYO_NEAR, "東京の紹介です。"),  # 14: Japanese near duplicate of 13
        chat(*RESET),  # 15
        chat(*RESET_PARAPHRASE),  # 16: English paraphrase of 15
        chat("What is the capital of France?", "Paris."),  # 17: exact duplicate of line 1
    ]


def test_minhash_catches_the_japanese_near_duplicate(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", _rows())
    result = dedup_file(source, tmp_path / "kept.jsonl", method="minhash")
    assert [(m.line, m.of_line, m.method) for m in result.dropped] == [(14, 13, "minhash"), (17, 1, "exact")]
    kept_lines = (tmp_path / "kept.jsonl").read_text(encoding="utf-8").splitlines()
    source_lines = source.read_text(encoding="utf-8").splitlines()
    assert kept_lines == [line for n, line in enumerate(source_lines, start=1) if n not in (14, 17)]
    dropped = [json.loads(line) for line in (tmp_path / "kept.dropped.jsonl").read_text(encoding="utf-8").splitlines()]
    assert dropped[0]["line"] == 14 and dropped[0]["of_line"] == 13 and dropped[0]["similarity"] >= 0.8
    assert dropped[0]["example"]["messages"][1]["content"] == TOKYO_NEAR


def test_embeddings_catch_the_paraphrase_and_leave_unrelated_japanese(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", _rows())
    result = dedup_file(source, tmp_path / "kept.jsonl", dropped_path=tmp_path / "gone.jsonl")
    assert {(m.line, m.of_line) for m in result.dropped} == {(14, 13), (16, 15), (17, 1)}
    assert next(m for m in result.dropped if m.line == 16).method == "embedding"
    assert result.kept == 14 and (tmp_path / "gone.jsonl").exists()


def test_leakage_across_files(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", good_rows(8) + [chat(TOKYO, "東京の紹介です。")])
    test = write_jsonl(tmp_path / "test.jsonl", [
        chat("What is the capital of France?", "Paris."),  # 1: identical to train line 1
        chat("Name a primary colour.", "Blue."),  # 2: same prompt as train line 2
        chat(TOKYO_NEAR, "東京の紹介です。"),  # 3: near duplicate of train line 9
        chat("京都には多くの寺があり、秋の紅葉が美しいです。", "はい。"),  # 4: new
        chat("Who painted the Mona Lisa?", "Leonardo da Vinci."),  # 5: new
    ])
    report = leakage(train, test, method="minhash")
    assert [(m.of_line, m.line, m.method) for m in report.matches] == [
        (1, 1, "exact"), (2, 2, "same_prompt"), (9, 3, "minhash")
    ]
    result = CliRunner().invoke(app, ["data", "leakage", str(train), str(test), "--method", "minhash", "--json"])
    assert result.exit_code == 1 and len(json.loads(result.stdout)["pairs"]) == 3
    clean = CliRunner().invoke(app, ["data", "leakage", str(train), str(tmp_path / "train.jsonl"), "--method",
                                     "minhash"])
    assert clean.exit_code == 1  # a file leaks into itself
    unrelated = write_jsonl(tmp_path / "other.jsonl", [chat("Who painted the Mona Lisa?", "Leonardo da Vinci.")])
    assert CliRunner().invoke(app, ["data", "leakage", str(train), str(unrelated)]).exit_code == 0


def test_cli_dedup(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "d.jsonl", _rows())
    out = tmp_path / "kept.jsonl"
    result = CliRunner().invoke(app, ["data", "dedup", str(source), "--out", str(out), "--method", "minhash",
                                      "--threshold", "0.8"])
    assert result.exit_code == 0, result.output
    assert "kept 15, dropped 2" in result.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == 15


def test_one_normalisation_and_one_exact_duplicate() -> None:
    assert normalise("What port, SSTP?") == normalise("what  port sstp") == "what port sstp"
    assert normalise("ＳＳＴＰ。") == "sstp" and normalise("「東京」です、はい。") == "東京ですはい"
    assert normalise("Straße") == normalise("STRASSE")  # case-folded, not just lower-cased
    assert normalise("😍") != normalise("😡") and normalise("1+1=2") != normalise("11=2")  # symbols carry meaning

    def key(*messages: tuple[str, str], prompt_only: bool = False) -> int:
        example = parse_example({"messages": [{"role": r, "content": c} for r, c in messages]})
        return example_key(example, prompt_only=prompt_only)

    assert key(("user", "Capital of France?"), ("assistant", "Paris.")) == key(
        ("user", "capital of  FRANCE"), ("assistant", "paris")
    )
    assert key(("user", "Hi"), ("assistant", "😍")) != key(("user", "Hi"), ("assistant", "😡"))
    assert key(("system", "A"), ("user", "Hi"), ("assistant", "Yo")) != key(("user", "Hi"), ("assistant", "Yo"))
    assert key(("user", "Hi"), ("assistant", "Yo")) != key(("assistant", "Hi"), ("assistant", "Yo"))
    assert key(("user", "Hi"), ("assistant", "Yo"), prompt_only=True) == key(
        ("user", "hi!"), ("assistant", "Bye"), prompt_only=True
    )
