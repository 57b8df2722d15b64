"""The demo dataset (examples/recipes): sizes, schema, answer shape, no leakage, and byte-exact regeneration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftlab.data.schema import iter_lines, parse_example

RECIPES = Path(__file__).resolve().parents[1] / "examples" / "recipes"
SPLITS = {"train": 100, "val": 20, "test": 30}


def _examples(split: str):
    path = RECIPES / f"{split}.jsonl"
    return [parse_example(text, path=path, line=number) for number, text in iter_lines(path)]


def _title(example) -> str:
    user = next(m for m in example.messages if m.role == "user").text
    first = user.splitlines()[0]
    assert first.startswith("Title: ")
    return first.removeprefix("Title: ")


@pytest.mark.parametrize("split", SPLITS)
def test_split_size_and_schema(split: str) -> None:
    examples = _examples(split)
    assert len(examples) == SPLITS[split]
    for example in examples:
        assert [m.role for m in example.messages] == ["system", "user", "assistant"]


@pytest.mark.parametrize("split", SPLITS)
def test_answers_are_json_lists_of_lowercase_strings(split: str) -> None:
    for example in _examples(split):
        answer = json.loads(example.reference())
        assert isinstance(answer, list) and answer, f"line {example.line}: {answer!r}"
        for name in answer:
            assert isinstance(name, str) and name and name == name.lower(), f"line {example.line}: {name!r}"
        assert len(set(answer)) == len(answer), f"line {example.line}: repeated ingredient in {answer}"


def test_one_system_prompt_and_no_title_shared_across_splits() -> None:
    titles = {split: [_title(e) for e in _examples(split)] for split in SPLITS}
    prompts = {e.messages[0].text for split in SPLITS for e in _examples(split)}
    assert len(prompts) == 1
    for split, names in titles.items():
        assert len(set(names)) == len(names), f"{split} repeats a title"
    assert not set(titles["test"]) & (set(titles["train"]) | set(titles["val"]))
    assert not set(titles["train"]) & set(titles["val"])


def test_script_reproduces_the_committed_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(RECIPES / "make_recipes.py"), "--out", str(tmp_path)], check=True, capture_output=True
    )
    for split in SPLITS:
        name = f"{split}.jsonl"
        assert (tmp_path / name).read_bytes() == (RECIPES / name).read_bytes(), f"{name} differs from the script"
