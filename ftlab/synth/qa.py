"""Question–answer pairs from documents.

For every document, `per_doc` questions are spread over its chunks by length. Each chunk is a lane of attempts;
round r makes attempt r of every lane that still needs questions, so lanes run concurrently while questions for
one document still see that document's earlier exchanges (a rolling window). A round:

1. asks the teacher for one question per lane, showing the chunk with its document title and heading path;
2. strips phrasing tics, drops questions that lean on an unseen document, echo the prompt's labels, copy the
   passage or ask nothing, and prefixes the document and section to a question that names neither (so "What port does it
   use?" cannot lose that it is about 伺か's SSTP);
3. drops near-duplicates of earlier questions (embedding cosine, calibrated thresholds, see `dedup`);
4. asks for an answer grounded in the chunk (the teacher may say NOT IN PASSAGE, which drops the pair, as do
   answers cut at the token limit and answers stuck in a loop);
5. optionally asks a judge for a 1–5 grade and keeps pairs at or above the bar;
6. journals every attempt and appends the kept pairs to the output and the provenance side file.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftlab.data.documents import Chunk, load_chunks
from ftlab.infer.backend import ChatBackend
from ftlab.synth.clean import (
    is_japanese,
    is_question,
    is_repetitive,
    pick_question,
    refers_to_document,
    strip_tics,
)
from ftlab.synth.dedup import Calibration, Deduper
from ftlab.synth.runner import Journal, Outputs, Progress, ask, side_path
from ftlab.synth.validated import ask_validated

DEFAULT_SYSTEM = "You are a helpful assistant that answers questions accurately and concisely."
UNANSWERABLE = "NOT IN PASSAGE"

QUESTION_SYSTEM = {
    "en": (
        "You write questions that people would ask about a topic, for a question-answering dataset. Write exactly "
        "one question that the passage answers. The question must make sense to someone who has never seen the "
        "passage: name its subject explicitly (use the document title or the section name where needed) and never "
        "refer to 'the document', 'the passage' or 'the text'. Do not repeat a question already written. Reply "
        "with the question only."
    ),
    "ja": (
        "あなたは質問応答データセットのために、ある話題について人が尋ねそうな質問を書きます。与えられた本文が答えている"
        "質問を一つだけ書いてください。本文を読んだことのない人にも意味が通じるように、主題（文書名や節の名前）を明示し、"
        "「文書」「本文」「テキスト」には言及しないでください。既に書かれた質問を繰り返さないでください。質問だけを返してください。"
    ),
}
ANSWER_SYSTEM = {
    "en": (
        "You answer questions using only the passage given. Answer directly and completely, as an expert would, "
        "without mentioning the passage, the document or the text. If the passage does not contain the answer, "
        f"reply exactly: {UNANSWERABLE}"
    ),
    "ja": (
        "本文だけを根拠に質問に答えてください。専門家のように直接、過不足なく答え、「本文」「文書」「テキスト」には"
        f"言及しないでください。本文に答えがない場合は、正確に {UNANSWERABLE} とだけ返してください。"
    ),
}
JUDGE_SYSTEM = (
    "You grade question-answer pairs for a training set. Give 5 when the question names its subject so it can be "
    "understood alone and the answer is correct, complete and supported by the passage; 1 when the question is "
    "unanswerable or the answer is wrong or unsupported; 2-4 in between. Reply with the grade only: one digit 1-5."
)
LABELS = {
    "en": {"document": "Document", "section": "Section", "passage": "Passage", "question": "Question",
           "previous": "Questions already written about this document (write a different one):",
           "ask": "Write one new question."},
    "ja": {"document": "文書", "section": "節", "passage": "本文", "question": "質問",
           "previous": "この文書について既に書かれた質問（別の質問を書くこと）:",
           "ask": "新しい質問を一つ書いてください。"},
}  # fmt: skip
# Statuses whose question passed the duplicate check: later questions are compared against these.
PASSED_DEDUP = {"kept", "unanswerable", "truncated", "repetitive", "low-score", "judge-invalid"}
# A reply that starts by repeating one of the prompt's labels ("Document: …", "文書: …") echoes the prompt.
_ECHO = re.compile(
    "^(?:" + "|".join(re.escape(LABELS[lang][k]) for lang in LABELS for k in ("document", "section", "passage"))
    + r")\s*[:：]"
)
MIN_COPIED_CHARS = 30  # a "question" that is this long a verbatim piece of the passage was copied, not asked


def question_problem(question: str, chunk: Chunk) -> str | None:
    """Why a (tic-stripped) question is unusable, as its journal status, or None when it may be asked."""
    if not question:
        return "empty-question"
    if refers_to_document(question):
        return "refers-to-document"
    if _ECHO.match(question):
        return "echoes-prompt"
    if len(question) >= MIN_COPIED_CHARS and question.rstrip("。.?？") in chunk.text:
        return "copies-passage"
    if not is_question(question):
        return "not-a-question"  # e.g. "The answer to this question is: 12 hours" (checked before anchoring)
    return None


def answer_problem(answer: str, finish_reason: str | None) -> str | None:
    """Why a (tic-stripped) answer is unusable, as its journal status, or None when it may be kept."""
    if not answer or UNANSWERABLE.casefold() in answer.casefold():
        return "unanswerable"
    if finish_reason == "length":
        return "truncated"  # cut at --max-answer-tokens mid-sentence: a bad target to train on
    if is_repetitive(answer) or _ECHO.match(answer):
        return "repetitive"
    return None


@dataclass
class QAOptions:
    per_doc: int = 10
    window: int = 8  # previous exchanges of the same document shown when writing a question
    system: str = DEFAULT_SYSTEM
    max_chars: int = 2000
    anchor: bool = True
    min_score: int = 4
    question_temperature: float = 0.7
    max_question_tokens: int = 96
    max_answer_tokens: int = 384
    attempts_factor: int = 2  # a lane gives up after this many attempts per question it owes
    metadata: bool = False  # also put document, heading path and chunk hash in each example's "metadata"


@dataclass
class QAResult:
    out: Path
    provenance: Path
    journal: Path
    report: Path
    kept: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calibration: Calibration | None = None


def language(chunk: Chunk) -> str:
    return "ja" if is_japanese(chunk.title + "\n" + chunk.text) else "en"


def context_block(chunk: Chunk, lang: str) -> str:
    words = LABELS[lang]
    return (
        f"{words['document']}: {chunk.title}\n{words['section']}: {chunk.section or chunk.title}\n\n"
        f'{words["passage"]}:\n"""\n{chunk.text}\n"""'
    )


def question_prompt(chunk: Chunk, previous: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The conversation that asks for one question about `chunk`, after the document's previous exchanges."""
    lang = language(chunk)
    words = LABELS[lang]
    text = context_block(chunk, lang)
    if previous:
        lines = []
        for record in previous:
            lines.append(f"- Q: {record['question']}")
            if record.get("answer"):
                answer = record["answer"] if len(record["answer"]) <= 200 else record["answer"][:200] + "…"
                lines.append(f"  A: {answer}")
        text += f"\n\n{words['previous']}\n" + "\n".join(lines)
    text += f"\n\n{words['ask']}"
    return [{"role": "system", "content": QUESTION_SYSTEM[lang]}, {"role": "user", "content": text}]


def answer_prompt(chunk: Chunk, question: str) -> list[dict[str, str]]:
    lang = language(chunk)
    text = f"{context_block(chunk, lang)}\n\n{LABELS[lang]['question']}: {question}"
    return [{"role": "system", "content": ANSWER_SYSTEM[lang]}, {"role": "user", "content": text}]


def judge_prompt(chunk: Chunk, question: str, answer: str) -> list[dict[str, str]]:
    text = f"{context_block(chunk, 'en')}\n\nQuestion: {question}\nAnswer: {answer}\n\nGrade (1-5):"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": text}]


def parse_grade(text: str) -> int | None:
    found = re.search(r"(?<!\d)([1-5])(?!\d)", text)
    return int(found.group(1)) if found else None


_GENERIC_JA = ("仕様書", "仕様", "ガイド", "入門", "概要", "説明書", "説明", "について", "マニュアル", "資料", "手引き")
_PARTICLES_JA = re.compile(r"[のとやはをにがで・、。\s「」『』（）()]+")
_STOPWORDS_EN = {
    "about", "guide", "introduction", "overview", "with", "from", "into", "your", "home", "notes", "manual",
    "specification", "spec", "document", "reference", "using", "what", "this", "that",
}  # fmt: skip


def title_keywords(title: str) -> list[str]:
    """Words of a title that identify the subject ("伺か仕様" → ["伺か"], "Baking Sourdough at Home" → ["baking",
    "sourdough"])."""
    title = unicodedata.normalize("NFKC", title).casefold()
    if is_japanese(title):
        words = []
        for piece in _PARTICLES_JA.split(title):
            for generic in _GENERIC_JA:
                piece = piece.removesuffix(generic)
            if len(piece) >= 2:
                words.append(piece)
        return words
    return [w for w in re.findall(r"[\w-]+", title) if len(w) >= 4 and w not in _STOPWORDS_EN]


def anchor_question(question: str, chunk: Chunk) -> str:
    """The question, prefixed with its document and section when it names neither the title (or a word of it)
    nor a heading above the chunk."""
    folded = unicodedata.normalize("NFKC", question).casefold()
    names = [chunk.title, *chunk.heading_path[:-1], *title_keywords(chunk.title)]
    if any(unicodedata.normalize("NFKC", n).casefold() in folded for n in names if n):
        return question
    section = chunk.heading_path[-1] if chunk.heading_path and chunk.heading_path[-1] != chunk.title else ""
    if language(chunk) == "ja":
        where = f"{chunk.title}の「{section}」" if section else chunk.title
        return f"{where}について：{question}"
    where = f"{chunk.title} ({section})" if section else chunk.title
    return f"Regarding {where}: {question}"


def allocate(chunks: list[Chunk], per_doc: int) -> dict[tuple[str, int], int]:
    """Questions owed by each chunk: `per_doc` per document, shared by chunk length (largest remainder)."""
    quotas: dict[tuple[str, int], int] = {}
    by_doc: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        by_doc.setdefault(chunk.document, []).append(chunk)
    for doc_chunks in by_doc.values():
        total = sum(len(c.text) for c in doc_chunks)
        shares = [per_doc * len(c.text) / total for c in doc_chunks]
        counts = [int(s) for s in shares]
        order = sorted(range(len(doc_chunks)), key=lambda i: (-(shares[i] - counts[i]), i))
        for i in order[: per_doc - sum(counts)]:
            counts[i] += 1
        for chunk, count in zip(doc_chunks, counts, strict=True):
            quotas[(chunk.document, chunk.index)] = count
    return quotas


def lane_key(chunk: Chunk, attempt: int) -> str:
    return f"{chunk.document}#{chunk.index}#{attempt}"


def job_description(chunks: list[Chunk], teacher: ChatBackend, judge: ChatBackend | None, options: QAOptions,
                    calibration: Calibration) -> dict[str, Any]:  # fmt: skip
    digest = hashlib.sha256("\n".join(f"{c.document}:{c.hash}" for c in chunks).encode()).hexdigest()[:16]
    return {
        "command": "qa",
        "documents": digest,
        "teacher": teacher.name,
        "judge": judge.name if judge else None,
        "embedder": calibration.embedder,
        "dedup_threshold": calibration.override,
        **{k: v for k, v in vars(options).items()},
    }


def synth_qa(
    docs: str | Path,
    out: str | Path,
    teacher: ChatBackend,
    calibration: Calibration,
    options: QAOptions | None = None,
    judge: ChatBackend | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> QAResult:
    """Write a chat JSONL of QA pairs from the documents under `docs`, resuming a previous run into `out`."""
    options = options or QAOptions()
    out = Path(out)
    chunks = load_chunks(docs, options.max_chars)
    by_lane = {(c.document, c.index): c for c in chunks}
    quotas = allocate(chunks, options.per_doc)
    journal = Journal(
        side_path(out, "journal"), job_description(chunks, teacher, judge, options, calibration), overwrite
    )
    provenance = side_path(out, "provenance")

    def render_example(record: dict[str, Any], line: int) -> dict[str, Any]:
        example: dict[str, Any] = {
            "messages": [
                {"role": "system", "content": options.system},
                {"role": "user", "content": record["question"]},
                {"role": "assistant", "content": record["answer"]},
            ]
        }
        if options.metadata:
            chunk = by_lane[(record["document"], record["chunk"])]
            example["metadata"] = {
                "document": chunk.document,
                "heading_path": list(chunk.heading_path),
                "chunk_hash": chunk.hash,
            }
        return example

    def render_provenance(record: dict[str, Any], line: int) -> dict[str, Any]:
        chunk = by_lane[(record["document"], record["chunk"])]
        return {
            "line": line,
            "document": chunk.document,
            "title": chunk.title,
            "heading_path": list(chunk.heading_path),
            "chunk_hash": chunk.hash,
            "chunk_index": chunk.index,
            "key": record["key"],
            "grade": record.get("grade"),
        }

    outputs = Outputs({out: ({"kept"}, render_example), provenance: ({"kept"}, render_provenance)})
    outputs.rebuild(journal.records)
    deduper = Deduper(calibration)
    passed = [r for r in journal.records if r["status"] in PASSED_DEDUP]
    deduper.add([r["key"] for r in passed], [r["question"] for r in passed])

    calls = 2 + (judge is not None)
    kept = {lane: 0 for lane in quotas}
    for record in journal.records:
        if record["status"] == "kept":
            kept[(record["document"], record["chunk"])] += 1
    owed = sum(max(0, quotas[lane] - kept[lane]) for lane in quotas)
    bar = Progress(f"qa {Path(docs).name}", owed * calls, journal.spend(), enabled=progress)
    try:
        attempt = 0
        while True:
            kept_before = {lane: 0 for lane in quotas}
            for record in journal.records:
                if record["status"] == "kept" and record["attempt"] < attempt:
                    kept_before[(record["document"], record["chunk"])] += 1
            active = [
                by_lane[lane]
                for lane in quotas
                if kept_before[lane] < quotas[lane] and attempt < options.attempts_factor * quotas[lane]
            ]
            if not active:
                break
            pending = [c for c in active if lane_key(c, attempt) not in journal.done]
            if pending:
                bar.grow(len(pending) * calls)
                records = run_round(pending, attempt, journal, deduper, teacher, judge, options, bar)
                journal.append(records)
                outputs.append(records)
            attempt += 1
    finally:
        bar.close()
    return summarise(journal, out, provenance, calibration)


def run_round(
    chunks: list[Chunk],
    attempt: int,
    journal: Journal,
    deduper: Deduper,
    teacher: ChatBackend,
    judge: ChatBackend | None,
    options: QAOptions,
    bar: Progress,
) -> list[dict[str, Any]]:
    """Attempt `attempt` of every lane in `chunks`: one journal record per lane, in lane order."""
    records: list[dict[str, Any]] = [
        {"key": lane_key(chunk, attempt), "document": chunk.document, "chunk": chunk.index, "attempt": attempt,
         "status": None, "question": None, "answer": None, "tokens": [0, 0]}
        for chunk in chunks
    ]  # fmt: skip

    # 1. questions, each written after the document's earlier exchanges
    conversations = []
    for chunk in chunks:
        earlier = [
            r
            for r in journal.records
            if r["document"] == chunk.document and r["attempt"] < attempt and r.get("question")
        ]
        conversations.append(question_prompt(chunk, earlier[-options.window :] if options.window else []))
    replies = ask(teacher, conversations, bar, max_new_tokens=options.max_question_tokens,
                  temperature=options.question_temperature)  # fmt: skip

    # 2. tics, unseen-document references, anchoring
    candidates = []
    for record, chunk, reply in zip(records, chunks, replies, strict=True):
        record["tokens"] = [reply.prompt_tokens, reply.completion_tokens]
        question = pick_question(reply.text)
        record["raw_question"] = reply.text
        record["question"] = question
        record["status"] = question_problem(question, chunk)
        if record["status"] is None:
            if options.anchor:
                record["question"] = anchor_question(question, chunk)
            candidates.append((record, chunk))

    # 3. near-duplicates, decided in lane order
    verdicts = deduper.filter([r["key"] for r, _ in candidates], [r["question"] for r, _ in candidates])
    survivors = []
    for (record, chunk), verdict in zip(candidates, verdicts, strict=True):
        if verdict.duplicate_of is not None:
            record.update(status="duplicate", duplicate_of=verdict.duplicate_of, cosine=round(verdict.cosine, 4))
        else:
            survivors.append((record, chunk))

    # 4. grounded answers
    replies = ask(
        teacher,
        [answer_prompt(chunk, record["question"]) for record, chunk in survivors],
        bar,
        max_new_tokens=options.max_answer_tokens,
        temperature=0.0,
    )
    graded = []
    for (record, chunk), reply in zip(survivors, replies, strict=True):
        record["tokens"][0] += reply.prompt_tokens
        record["tokens"][1] += reply.completion_tokens
        answer = strip_tics(reply.text)
        record["answer"] = answer
        record["status"] = answer_problem(answer, reply.finish_reason)
        if record["status"] is None:
            graded.append((record, chunk))

    # 5. optional judge
    if judge is not None:
        results = ask_validated(
            judge,
            [judge_prompt(chunk, r["question"], r["answer"]) for r, chunk in graded],
            bar,
            parse=parse_grade,
            correction=lambda reply: "Reply with one digit from 1 to 5 only.",
            max_new_tokens=8,
            temperature=0.0,
        )
        for (record, _), result in zip(graded, results, strict=True):
            record["tokens"][0] += result.tokens[0]
            record["tokens"][1] += result.tokens[1]
            record["grade"] = result.value
            if result.value is None:
                record["status"] = "judge-invalid"
            elif result.value < options.min_score:
                record["status"] = "low-score"
            else:
                record["status"] = "kept"
    else:
        for record, _ in graded:
            record["status"] = "kept"
    return records


def summarise(journal: Journal, out: Path, provenance: Path, calibration: Calibration) -> QAResult:
    statuses: dict[str, int] = {}
    for record in journal.records:
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    prompt_tokens, completion_tokens = journal.spend()
    report = out.with_name(f"{out.stem}.report.json")
    result = QAResult(
        out=out,
        provenance=provenance,
        journal=journal.path,
        report=report,
        kept=statuses.get("kept", 0),
        statuses=statuses,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        calibration=calibration,
    )
    report.write_text(
        json.dumps(
            {
                "kept": result.kept,
                "attempts": statuses,
                "tokens": {"prompt": prompt_tokens, "completion": completion_tokens},
                "dedup_calibration": calibration.to_dict(),
            },
            ensure_ascii=False,
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return result
