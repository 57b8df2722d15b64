"""`ftlab synth label`: a teacher held to a label set; drift is corrected or rejected, never written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from ftlab.data.schema import DataError, read_examples
from ftlab.infer.generate import ChatModel
from ftlab.infer.remote import RemoteChatModel
from ftlab.synth.label import match_label, read_inputs, synth_label

LABELS = ["Alice", "Bob", "Carol"]
MEMOS = {
    "Bought milk and eggs on the way home.": ["alice"],  # case drift: normalised to the label
    "Finished the quarterly report draft.": ["🙂", "Bob"],  # drift, corrected on the second try
    "Walked the dog by the river.": ["😀", "😀", "😀"],  # drift every time: rejected
    "Called the plumber about the sink.": ["The author is Carol.", "Probably Carol", "Carol?!"],  # rejected
    "Booked train tickets for Friday.": ['"Carol"'],
}


def write_inputs(path: Path) -> None:
    lines = [json.dumps({"text": memo}) for memo in list(MEMOS)[:3]]
    lines.append(json.dumps({"messages": [{"role": "user", "content": list(MEMOS)[3]}]}))
    lines.append(json.dumps({"input": list(MEMOS)[4]}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def responder(messages: list[dict]) -> str:
    memo = messages[1]["content"]
    tries = (len(messages) - 2) // 2
    return MEMOS[memo][min(tries, len(MEMOS[memo]) - 1)]


def test_label_drift_is_rejected_and_never_written(tmp_path: Path) -> None:
    inputs = tmp_path / "memos.jsonl"
    write_inputs(inputs)
    with FakeOpenAI(responder) as fake:
        teacher = RemoteChatModel("fake", fake.base_url, concurrency=3)
        result = synth_label(inputs, LABELS, tmp_path / "labels.jsonl", teacher, "Who wrote this memo?", progress=False)
        corrections = [r["messages"][-1]["content"] for r in fake.requests if len(r["messages"]) > 2]
    rows = read_examples(tmp_path / "labels.jsonl")
    assert [(row.messages[1].text, row.reference()) for row in rows] == [
        ("Bought milk and eggs on the way home.", "Alice"),
        ("Finished the quarterly report draft.", "Bob"),
        ("Booked train tickets for Friday.", "Carol"),
    ]
    assert "Who wrote this memo?" in rows[0].messages[0].text and "- Carol" in rows[0].messages[0].text
    rejected = [json.loads(line) for line in (tmp_path / "labels.rejected.jsonl").read_text().splitlines()]
    assert [(r["input_line"], r["replies"]) for r in rejected] == [
        (3, ["😀", "😀", "😀"]),
        (4, ["The author is Carol.", "Probably Carol", "Carol?!"]),
    ]
    assert result.labelled == 3 and result.rejected == 2 and result.counts == {"Alice": 1, "Bob": 1, "Carol": 1}
    assert any("'🙂' is not one of the labels" in c for c in corrections)
    provenance = [json.loads(line) for line in (tmp_path / "labels.provenance.jsonl").read_text().splitlines()]
    assert [p["input_line"] for p in provenance] == [1, 2, 5]

    # a rerun resumes: nothing is asked again and the files stay the same
    before = (tmp_path / "labels.jsonl").read_bytes()
    with FakeOpenAI(responder) as fake:
        synth_label(inputs, LABELS, tmp_path / "labels.jsonl", RemoteChatModel("fake", fake.base_url),
                    "Who wrote this memo?", progress=False)  # fmt: skip
        assert fake.requests == []
    assert (tmp_path / "labels.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    ("reply", "label"),
    [("Bob", "Bob"), (" bob. ", "Bob"), ("「Carol」", "Carol"), ("**Alice**", "Alice"), ("🙂", None), ("Bobby", None)],
)
def test_match_label(reply: str, label: str | None) -> None:
    assert match_label(reply, LABELS) == label


def test_inputs_without_text_are_named(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "fine"}\n{"body": "no text key"}\n')
    with pytest.raises(DataError, match=r"in\.jsonl, line 2, field 'text'"):
        read_inputs(path)


def test_a_local_teacher_is_constrained_to_the_label_set(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A random tiny model writes garbage unconstrained; held to the label trie every reply is a label."""
    inputs = tmp_path / "memos.jsonl"
    write_inputs(inputs)
    labels = ["Alice", "Bob", "🙂 Carol", "伺か"]
    teacher = ChatModel(str(tiny_model_dir), batch_size=4)
    free = teacher.generate([[{"role": "user", "content": memo}] for memo in MEMOS], max_new_tokens=6)
    assert not all(match_label(reply.text, labels) for reply in free)
    result = synth_label(inputs, labels, tmp_path / "labels.jsonl", teacher, invalid_retries=0, progress=False)
    assert result.labelled == len(MEMOS) and result.rejected == 0
    assert {row.reference() for row in read_examples(tmp_path / "labels.jsonl")} <= set(labels)
