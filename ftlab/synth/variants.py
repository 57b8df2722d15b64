"""Paraphrase variants: widen a small hand-written chat set by rewording its user messages.

Each seed example gets `n` variants: its last user message rewritten by the teacher (shown the variants already
written for that seed, so it writes a different one), the rest of the conversation — the assistant's reply
included — kept as written. Round r makes attempt r for every seed that still needs variants.

Duplicates here are judged differently from QA: a paraphrase is *meant* to ask the same thing, so the calibrated
same-question threshold would drop every variant. A variant is dropped when its normalised text repeats the seed
or an earlier variant, or — with `dedup_threshold` — when its embedding cosine to one of them reaches it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftlab.data.schema import ChatExample, DataError, read_examples
from ftlab.embed import DEFAULT_EMBEDDER
from ftlab.infer.backend import ChatBackend
from ftlab.synth.clean import is_japanese, strip_tics
from ftlab.synth.dedup import Calibration, Deduper
from ftlab.synth.runner import Journal, Outputs, Progress, ask, side_path

PARAPHRASE_SYSTEM = {
    "en": (
        "You rewrite a user's message so that it asks for exactly the same thing in different words, as a different "
        "person might write it. Keep every fact, name, number and constraint; change the wording, the sentence "
        "structure and the tone. Reply with the rewritten message only."
    ),
    "ja": (
        "ユーザーのメッセージを、別の人が書いたように、同じ内容を別の言葉で書き直してください。事実・名前・数値・条件はすべて"
        "保ち、言い回し・文の構造・口調を変えてください。書き直したメッセージだけを返してください。"
    ),
}
PREVIOUS = {
    "en": "Rewrites already written (write a different one):",
    "ja": "既に書かれた書き換え（別のものを書くこと）:",
}


@dataclass
class VariantsResult:
    out: Path
    seeds: int = 0
    variants: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def last_user_index(example: ChatExample, path: Path) -> int:
    users = [i for i, m in enumerate(example.messages) if m.role == "user"]
    if not users:
        raise DataError("no user message to paraphrase", path=path, line=example.line, field="messages")
    return users[-1]


def paraphrase_prompt(message: str, previous: list[str]) -> list[dict[str, str]]:
    lang = "ja" if is_japanese(message) else "en"
    text = f'"""\n{message}\n"""'
    if previous:
        text += f"\n\n{PREVIOUS[lang]}\n" + "\n".join(f"- {p}" for p in previous)
    return [{"role": "system", "content": PARAPHRASE_SYSTEM[lang]}, {"role": "user", "content": text}]


def synth_variants(
    seed_path: str | Path,
    n: int,
    out: str | Path,
    teacher: ChatBackend,
    dedup_threshold: float | None = None,
    embedder: str = DEFAULT_EMBEDDER,
    keep_seeds: bool = True,
    temperature: float = 0.9,
    overwrite: bool = False,
    progress: bool = True,
) -> VariantsResult:
    """Write `out`: the seeds (unless `keep_seeds` is False), then their variants, with `OUT.provenance.jsonl`."""
    seed_path, out = Path(seed_path), Path(out)
    seeds = read_examples(seed_path)
    user_at = [last_user_index(example, seed_path) for example in seeds]
    originals = [seeds[i].messages[user_at[i]].text for i in range(len(seeds))]
    digest = hashlib.sha256(seed_path.read_bytes()).hexdigest()[:16]
    job = {"command": "variants", "seeds": digest, "n": n, "teacher": teacher.name, "keep_seeds": keep_seeds,
           "temperature": temperature, "dedup_threshold": dedup_threshold, "embedder": embedder}  # fmt: skip
    journal = Journal(side_path(out, "journal"), job, overwrite)

    def render_example(record: dict[str, Any], line: int) -> dict[str, Any]:
        example = seeds[record["seed"]].to_openai()
        if record["variant"] is not None:
            example["messages"][user_at[record["seed"]]]["content"] = record["text"]
        return example

    def render_provenance(record: dict[str, Any], line: int) -> dict[str, Any]:
        seed_line = seeds[record["seed"]].line
        return {"line": line, "seed_file": str(seed_path), "seed_line": seed_line, "variant": record["variant"]}

    outputs = Outputs(
        {out: ({"kept", "seed"}, render_example), side_path(out, "provenance"): ({"kept", "seed"}, render_provenance)}
    )
    outputs.rebuild(journal.records)
    if keep_seeds and not any(r["status"] == "seed" for r in journal.records):
        records = [
            {"key": f"seed-{i}", "seed": i, "variant": None, "attempt": -1, "status": "seed", "text": text}
            for i, text in enumerate(originals)
        ]
        journal.append(records)
        outputs.append(records)

    # Exact repeats are always duplicates; embedding similarity only with an explicit threshold (see above).
    deduper = Deduper(Calibration(embedder, override=dedup_threshold) if dedup_threshold is not None else None)
    memory = [(f"seed-{i}", text) for i, text in enumerate(originals)]
    memory += [(r["key"], r["text"]) for r in journal.records if r["status"] == "kept"]
    deduper.add([k for k, _ in memory], [t for _, t in memory])

    kept_total = sum(r["status"] == "kept" for r in journal.records)
    bar = Progress(f"variants {seed_path.name}", len(seeds) * n - kept_total, journal.spend(), enabled=progress)
    try:
        attempt = 0
        while True:
            kept = [0] * len(seeds)
            written: list[list[str]] = [[] for _ in seeds]
            for record in journal.records:
                if record["status"] != "seed" and record["attempt"] < attempt:
                    kept[record["seed"]] += record["status"] == "kept"
                    if record["text"]:
                        written[record["seed"]].append(record["text"])
            active = [i for i in range(len(seeds)) if kept[i] < n and attempt < 2 * n]
            if not active:
                break
            pending = [i for i in active if f"{i}#{attempt}" not in journal.done]
            if pending:
                bar.grow(len(pending))
                replies = ask(
                    teacher,
                    [paraphrase_prompt(originals[i], written[i]) for i in pending],
                    bar,
                    max_new_tokens=512,
                    temperature=temperature,
                )
                records = []
                for i, reply in zip(pending, replies, strict=True):
                    text = strip_tics(reply.text)
                    records.append({"key": f"{i}#{attempt}", "seed": i, "variant": kept[i], "attempt": attempt,
                                    "status": None, "text": text, "tokens": [reply.prompt_tokens,
                                    reply.completion_tokens]})  # fmt: skip
                candidates = [r for r in records if r["text"]]
                verdicts = deduper.filter([r["key"] for r in candidates], [r["text"] for r in candidates])
                for record, verdict in zip(candidates, verdicts, strict=True):
                    if verdict.duplicate_of is not None:
                        record.update(status="duplicate", duplicate_of=verdict.duplicate_of)
                    else:
                        record["status"] = "kept"
                for record in records:
                    if not record["text"]:
                        record["status"] = "empty"
                journal.append(records)
                outputs.append(records)
            attempt += 1
    finally:
        bar.close()
    statuses: dict[str, int] = {}
    for record in journal.records:
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    prompt_tokens, completion_tokens = journal.spend()
    return VariantsResult(out, len(seeds), statuses.get("kept", 0), statuses, prompt_tokens, completion_tokens)
