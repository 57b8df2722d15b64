"""`ftlab synth qa` against a real HTTP server: a deterministic fake OpenAI-compatible one on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from ftlab.data.schema import read_examples
from ftlab.infer.remote import RemoteChatModel
from ftlab.synth.dedup import calibrate
from ftlab.synth.qa import ANSWER_SYSTEM, JUDGE_SYSTEM, QUESTION_SYSTEM, QAOptions, synth_qa

REPO = Path(__file__).resolve().parents[1]
SSTP_PAGE = """# 伺か仕様

## SSTP

外部のプログラムは9801番ポートにリクエストを送ります。
一行目は SEND SSTP/1.4 で始まり、Charset ヘッダに文字コードを書きます。
"""
ROUTER_PAGE = """# Acme Router Manual

## Ports

The admin interface listens on port 8080. SSH is available on port 22 once it is enabled.

## Passwords

The default password is printed on the label under the router. Change it on first login.
"""


@pytest.fixture(scope="module")
def calibration():
    return calibrate()


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "sstp.md").write_text(SSTP_PAGE, encoding="utf-8")
    (folder / "router.md").write_text(ROUTER_PAGE, encoding="utf-8")
    return folder


def task(messages: list[dict]) -> str:
    system = messages[0]["content"]
    if system in QUESTION_SYSTEM.values():
        return "question"
    if system in ANSWER_SYSTEM.values():
        return "answer"
    return "judge" if system == JUDGE_SYSTEM else "other"


def field(user: str, *names: str) -> str:
    return re.search(rf"^(?:{'|'.join(names)}): (.*)$", user, re.M).group(1)


def previous_questions(user: str) -> int:
    return user.count("- Q:")


def grounded_answer(messages: list[dict]) -> str:
    """What a good teacher does: answer from the passage (its first sentence), with a tic to clean up."""
    passage = messages[-1]["content"].split('"""')[1].strip()
    return "According to the document, " + re.split(r"(?<=[.。])", passage)[0]


def run(docs: Path, out: Path, fake: FakeOpenAI, calibration, per_doc: int = 2, **kw) -> list[dict]:
    teacher = RemoteChatModel("fake", fake.base_url, concurrency=4, max_retries=4)
    synth_qa(docs, out, teacher, calibration, QAOptions(per_doc=per_doc, **kw), progress=False)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_heading_context_reaches_the_teacher_and_every_question(docs: Path, tmp_path: Path, calibration) -> None:
    """A teacher that writes context-free questions ("Which port?") still yields questions that name the
    document and section; one that names its subject is left as it wrote it."""

    def responder(messages: list[dict]) -> str:
        if task(messages) == "question":
            user = messages[-1]["content"]
            if "Acme" in user and previous_questions(user) == 0:
                return "Which port does the Acme Router admin interface listen on?"
            return "何番ポートですか？" if "伺か" in user else "Which port is used?"
        return grounded_answer(messages)

    with FakeOpenAI(responder) as fake:
        rows = run(docs, tmp_path / "qa.jsonl", fake, calibration, per_doc=1)
        question_requests = [r["messages"] for r in fake.requests if task(r["messages"]) == "question"]
    for messages in question_requests:
        user = messages[-1]["content"]
        assert ("伺か仕様" in user and "SSTP" in user) or ("Acme Router Manual" in user and "Ports" in user)
    questions = sorted(row["messages"][1]["content"] for row in rows)
    assert questions == [
        "Which port does the Acme Router admin interface listen on?",
        "伺か仕様の「SSTP」について：何番ポートですか？",
    ]
    answers = [row["messages"][2]["content"] for row in rows]
    assert not any("document" in a for a in answers)  # the tic was removed
    assert all(row["messages"][0]["role"] == "system" for row in rows)
    read_examples(tmp_path / "qa.jsonl")  # valid chat JSONL
    provenance = [json.loads(line) for line in (tmp_path / "qa.provenance.jsonl").read_text().splitlines()]
    assert [p["line"] for p in provenance] == [1, 2]
    by_doc = {p["document"]: p for p in provenance}
    assert by_doc["sstp.md"]["heading_path"] == ["伺か仕様", "SSTP"] and len(by_doc["sstp.md"]["chunk_hash"]) == 16
    assert "metadata" not in rows[0]


def test_metadata_inline_for_grouped_splits(docs: Path, tmp_path: Path, calibration) -> None:
    with FakeOpenAI(deterministic) as fake:
        rows = run(docs, tmp_path / "qa.jsonl", fake, calibration, per_doc=1, metadata=True)
    provenance = [json.loads(line) for line in (tmp_path / "qa.provenance.jsonl").read_text().splitlines()]
    assert [row["metadata"]["document"] for row in rows] == [p["document"] for p in provenance]
    assert [row["metadata"]["chunk_hash"] for row in rows] == [p["chunk_hash"] for p in provenance]
    read_examples(tmp_path / "qa.jsonl")


PLANTED = {
    "en": [
        "What port does the Acme Router admin interface listen on?",
        "Which port number does the Acme Router admin interface use?",  # paraphrase: a duplicate
        "What is the default password of the Acme Router?",
    ],
    "ja": [
        "伺かのSSTPは何番ポートで待ち受けますか？",
        "伺かのSSTPは通常何番ポートで待ち受けますか？",  # near-verbatim repeat: a duplicate
        "伺かのSSTPのCharsetヘッダには何を書きますか？",
    ],
}


def test_planted_duplicates_are_removed_in_english_and_japanese(tmp_path: Path, calibration) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "sstp.md").write_text(SSTP_PAGE, encoding="utf-8")
    (folder / "router.md").write_text(ROUTER_PAGE.split("## Passwords")[0], encoding="utf-8")

    def responder(messages: list[dict]) -> str:
        if task(messages) == "question":
            user = messages[-1]["content"]
            return PLANTED["ja" if "伺か" in user else "en"][previous_questions(user)]
        return grounded_answer(messages)

    with FakeOpenAI(responder) as fake:
        rows = run(folder, tmp_path / "qa.jsonl", fake, calibration, per_doc=2)
    questions = [row["messages"][1]["content"] for row in rows]
    assert sorted(questions) == sorted([PLANTED["en"][0], PLANTED["en"][2], PLANTED["ja"][0], PLANTED["ja"][2]])
    journal = [json.loads(line) for line in (tmp_path / "qa.journal.jsonl").read_text().splitlines()[1:]]
    duplicates = {r["question"]: r for r in journal if r["status"] == "duplicate"}
    assert set(duplicates) == {PLANTED["en"][1], PLANTED["ja"][1]}
    assert all(r["cosine"] >= calibration.threshold("en" if r["document"] == "router.md" else "ja")
               for r in duplicates.values())  # fmt: skip


def test_what_a_weak_teacher_writes_is_dropped_with_its_reason(tmp_path: Path, calibration) -> None:
    """Modelled on what the bundled 135M teacher wrote in the README example: a question that echoes the prompt's
    labels, one copied from the passage, an answer cut at the token limit, one stuck in a loop."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "router.md").write_text(ROUTER_PAGE.split("## Passwords")[0], encoding="utf-8")
    questions = [
        "Document: Acme Router Manual",
        "The admin interface listens on port 8080",
        "The answer to this question is: port 8080.",
        "How do you enable SSH on the Acme Router?",
        "Which port does the Acme Router admin interface listen on?",
        "What port does SSH use on the Acme Router?",
        "Is the Acme Router admin interface reachable over HTTPS?",
        "Does the Acme Router need SSH switched on before port 22 answers?",
    ]

    def responder(messages: list[dict]) -> str:
        user = messages[-1]["content"]
        if task(messages) == "question":
            return questions[previous_questions(user)]
        question = field(user, "Question")
        if "enable SSH" in question:
            return "1. Open the menu. " + " ".join(f"{n}." for n in range(2, 2000))  # counts on to the limit
        if "admin interface listen" in question:
            return "The admin interface listens on port 8080. " * 8
        return grounded_answer(messages)

    with FakeOpenAI(responder) as fake:
        rows = run(folder, tmp_path / "qa.jsonl", fake, calibration, per_doc=4)
    journal = [json.loads(line) for line in (tmp_path / "qa.journal.jsonl").read_text().splitlines()[1:]]
    assert [r["status"] for r in journal] == [
        "echoes-prompt", "copies-passage", "not-a-question", "truncated", "repetitive", "kept", "kept", "kept"
    ]  # fmt: skip
    assert [row["messages"][1]["content"] for row in rows] == questions[5:]
    report = json.loads((tmp_path / "qa.report.json").read_text())
    assert report["kept"] == 3 and report["attempts"]["truncated"] == 1


def test_retries_429_and_5xx_and_the_judge_bar(docs: Path, tmp_path: Path, calibration) -> None:
    def responder(messages: list[dict]) -> str:
        kind = task(messages)
        if kind == "question":
            user = messages[-1]["content"]
            topic = ["the first fact", "its history", "its colour", "the weather"][previous_questions(user)]
            return f"What does {field(user, 'Document', '文書')} say about {topic} in {field(user, 'Section', '節')}?"
        if kind == "answer":
            return grounded_answer(messages)
        user = messages[1]["content"]
        if len(messages) == 2 and "Passwords" in user:
            return "excellent"  # not a grade: asked again, then graded
        return "2" if "the first fact" in user else "5"

    with FakeOpenAI(responder, faults={0: 429, 2: 503, 5: 500}) as fake:
        rows = run(docs, tmp_path / "qa.jsonl", fake, calibration, per_doc=2, min_score=4)
        statuses = fake.statuses
        assert 1 <= fake.max_in_flight <= 4  # run() allows 4 requests at once
    assert {429, 503, 500} <= set(statuses)
    judge_free = [row["messages"][1]["content"] for row in rows]
    assert judge_free  # no judge: all answered pairs kept
    with FakeOpenAI(responder) as fake:
        teacher = RemoteChatModel("fake", fake.base_url, concurrency=2)
        synth_qa(docs, tmp_path / "judged.jsonl", teacher, calibration, QAOptions(per_doc=2), judge=teacher,
                 progress=False)  # fmt: skip
    judged = [json.loads(line) for line in (tmp_path / "judged.jsonl").read_text().splitlines()]
    assert judged and not any("the first fact" in row["messages"][1]["content"] for row in judged)
    journal = [json.loads(line) for line in (tmp_path / "judged.journal.jsonl").read_text().splitlines()[1:]]
    assert {"low-score"} <= {r["status"] for r in journal}
    assert any(len(r["messages"]) == 4 for r in fake.requests)  # the non-grade was answered with a correction
    assert all(r["grade"] >= 4 for r in journal if r["status"] == "kept")


def deterministic(messages: list[dict]) -> str:
    """Questions that depend on the rolling window (and repeat themselves now and then, so dedup state matters)."""
    if task(messages) == "question":
        user = messages[-1]["content"]
        n = previous_questions(user)
        return f"In {field(user, 'Document', '文書')}, what does {field(user, 'Section', '節')} say about item {n % 3}?"
    return grounded_answer(messages)


def test_resume_after_kill_writes_what_an_uninterrupted_run_writes(tmp_path: Path, calibration) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "sstp.md").write_text(SSTP_PAGE, encoding="utf-8")
    (folder / "router.md").write_text(ROUTER_PAGE, encoding="utf-8")
    (folder / "sourdough.md").write_text((REPO / "examples" / "docs" / "sourdough.md").read_text())
    per_doc = 4

    with FakeOpenAI(deterministic) as fake:
        expected = run(folder, tmp_path / "whole" / "qa.jsonl", fake, calibration, per_doc=per_doc)

    out = tmp_path / "resumed" / "qa.jsonl"
    with FakeOpenAI(deterministic, hold_after=13) as fake:
        command = [sys.executable, "-m", "ftlab.cli.main", "synth", "qa", str(folder), "--per-doc", str(per_doc),
                   "--teacher", "fake", "--base-url", fake.base_url, "--out", str(out), "--concurrency", "4",
                   "--no-progress"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert fake.holding.wait(timeout=120), process.stderr.read() if process.poll() is not None else ""
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    journal_lines = (out.with_name("qa.journal.jsonl")).read_text().splitlines()
    partial = len(journal_lines) - 1
    assert partial > 0 and len(out.read_text().splitlines()) < len(expected)  # killed mid-job

    with FakeOpenAI(deterministic) as fake:
        resumed = run(folder, out, fake, calibration, per_doc=per_doc)
        # only the unfinished work was asked for again
        assert len(fake.requests) < 2 * per_doc * 3
    assert out.read_bytes() == (tmp_path / "whole" / "qa.jsonl").read_bytes()
    assert resumed == expected
    assert (out.with_name("qa.provenance.jsonl")).read_bytes() == (
        tmp_path / "whole" / "qa.provenance.jsonl"
    ).read_bytes()
    keys = [json.loads(line)["key"] for line in out.with_name("qa.journal.jsonl").read_text().splitlines()[1:]]
    assert len(keys) == len(set(keys))


def test_a_changed_job_does_not_resume_into_the_old_output(docs: Path, tmp_path: Path, calibration) -> None:
    from ftlab.synth.runner import JobMismatch

    with FakeOpenAI(deterministic) as fake:
        run(docs, tmp_path / "qa.jsonl", fake, calibration, per_doc=1)
        with pytest.raises(JobMismatch, match="per_doc"):
            run(docs, tmp_path / "qa.jsonl", fake, calibration, per_doc=2)


def test_calibration_separates_english_paraphrases_and_is_cached(calibration) -> None:
    """MiniLM's English threshold sits between paraphrases and different questions on the same topic; the
    Japanese one is reported for what it is (an English model separates Japanese paraphrases poorly)."""
    english = calibration.languages["en"]
    assert 0.7 < english.threshold < 0.95 and english.accuracy >= 0.85
    assert set(calibration.languages) == {"en", "ja"} and "ja: threshold" in calibration.describe()
    again = calibrate()
    assert again.languages["en"].threshold == english.threshold and again.threshold("ja") == calibration.threshold("ja")
    assert calibrate(override=0.5).threshold("ja") == 0.5
