"""`ftlab synth variants`: paraphrased user messages, the rest of each seed kept, repeats dropped."""

from __future__ import annotations

import json
from pathlib import Path

from fake_openai import FakeOpenAI

from ftlab.data.schema import read_examples
from ftlab.infer.remote import RemoteChatModel
from ftlab.synth.variants import synth_variants

SEEDS = [
    ("Write a short memo about a rainy Monday.", "Rain all day; stayed in and read."),
    ("雨の月曜日について短いメモを書いて。", "一日中雨。家で本を読んだ。"),
]
REWRITES = {
    SEEDS[0][0]: [
        "Jot down a brief memo about a Monday when it rained.",
        "write a short memo about a rainy monday",  # the seed again: dropped
        "Jot down a brief memo about a Monday when it rained!",  # an earlier variant again: dropped
        "Could you note a few lines on a wet Monday?",
    ],
    SEEDS[1][0]: ["雨が降った月曜日のことを短くメモして。", "雨の日の月曜について、ちょっとしたメモをお願い。"],
}


def responder(messages: list[dict]) -> str:
    user = messages[-1]["content"]
    seed = user.split('"""')[1].strip()
    previous = user.count("\n- ")
    return "Sure! " + REWRITES[seed][previous]


def test_variants_keep_the_reply_and_drop_repeats(tmp_path: Path) -> None:
    seed_path = tmp_path / "seed.jsonl"
    seed_path.write_text(
        "".join(
            json.dumps({"messages": [{"role": "system", "content": "You write memos."},
                                     {"role": "user", "content": user}, {"role": "assistant", "content": reply}]},
                       ensure_ascii=False) + "\n"
            for user, reply in SEEDS
        ),
        encoding="utf-8",
    )  # fmt: skip
    with FakeOpenAI(responder) as fake:
        result = synth_variants(seed_path, 2, tmp_path / "out.jsonl", RemoteChatModel("fake", fake.base_url),
                                progress=False)  # fmt: skip
    rows = read_examples(tmp_path / "out.jsonl")
    pairs = [(row.messages[1].text, row.reference()) for row in rows]
    assert pairs == [
        SEEDS[0],
        SEEDS[1],
        (REWRITES[SEEDS[0][0]][0], SEEDS[0][1]),
        (REWRITES[SEEDS[1][0]][0], SEEDS[1][1]),
        (REWRITES[SEEDS[1][0]][1], SEEDS[1][1]),
        (REWRITES[SEEDS[0][0]][3], SEEDS[0][1]),
    ]
    assert all(row.messages[0].text == "You write memos." for row in rows)
    assert result.variants == 4 and result.statuses["duplicate"] == 2
    provenance = [json.loads(line) for line in (tmp_path / "out.provenance.jsonl").read_text().splitlines()]
    assert [(p["seed_line"], p["variant"]) for p in provenance] == [
        (1, None),
        (2, None),
        (1, 0),
        (2, 0),
        (2, 1),
        (1, 1),
    ]
