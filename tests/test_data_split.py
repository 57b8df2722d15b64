"""`ftlab data split`: reproducible, complete, and group-preserving."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from data_helpers import chat, write_jsonl
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.data.schema import DataError
from ftlab.data.split import split_file


def _rows(n: int) -> list[dict]:
    return [
        chat(f"Question {i}: 質問{i}", f"Answer {i}", metadata={"source": f"doc-{i // 4}", "page": i % 4})
        for i in range(n)
    ]


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_split_is_byte_identical_for_the_same_seed_and_complete(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "all.jsonl", _rows(100))
    a = split_file(source, tmp_path / "a", val=0.15, test=0.15, seed=42)
    b = split_file(source, tmp_path / "b", val=0.15, test=0.15, seed=42)
    split_file(source, tmp_path / "c", val=0.15, test=0.15, seed=7)
    for name in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
    assert (tmp_path / "a" / "test.jsonl").read_bytes() != (tmp_path / "c" / "test.jsonl").read_bytes()
    assert a.counts == b.counts == {"train": 70, "val": 15, "test": 15}
    written = Counter(line for name in ("train", "val", "test") for line in _lines(tmp_path / "a" / f"{name}.jsonl"))
    assert written == Counter(_lines(source))  # every line exactly once, bytes unchanged
    train = _lines(tmp_path / "a" / "train.jsonl")
    assert train == sorted(train, key=_lines(source).index)  # original order kept within a split


def test_group_by_keeps_each_source_in_one_split(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "all.jsonl", _rows(80))  # 20 documents of 4 examples
    for key in ("source", "metadata.source"):
        result = split_file(source, tmp_path / key, val=0.2, test=0.2, seed=1, group_by=key)
        owner: dict[str, str] = {}
        for name in ("train", "val", "test"):
            for line in _lines(tmp_path / key / f"{name}.jsonl"):
                doc = json.loads(line)["metadata"]["source"]
                assert owner.setdefault(doc, name) == name, f"{doc} is in {owner[doc]} and {name}"
        assert result.groups == {"train": 12, "val": 4, "test": 4}
        assert result.counts == {"train": 48, "val": 16, "test": 16}


def test_group_by_missing_key_names_the_line(tmp_path: Path) -> None:
    rows = _rows(5) + [chat("No metadata here", "None")]
    with pytest.raises(DataError) as info:
        split_file(write_jsonl(tmp_path / "x.jsonl", rows), tmp_path / "out", group_by="source")
    assert info.value.line == 6 and info.value.field == "source" and "missing" in str(info.value)


def test_bad_shares_are_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "x.jsonl", _rows(10))
    with pytest.raises(ValueError, match="leave some training data"):
        split_file(source, tmp_path / "out", val=0.5, test=0.5)


def test_cli_split(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "all.jsonl", _rows(40))
    out = tmp_path / "out"
    args = ["data", "split", str(source), "--val", "0.1", "--test", "0.1", "--seed", "3", "--group-by", "source"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["examples"] == {"train": 32, "val": 4, "test": 4}
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl", "train.jsonl", "val.jsonl"]
