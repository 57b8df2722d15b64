"""`ftlab synth qa` with the bundled SmolLM2 as the teacher (the README's end-to-end example, made small): its
pairs are valid training data, anchored to their document, free of loops and cut-off answers, traced to their
chunk, and a rerun resumes to the same bytes without asking the teacher again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftlab.config import BUNDLED_MODEL
from ftlab.data.schema import read_examples
from ftlab.data.validate import validate_file
from ftlab.infer.generate import ChatModel
from ftlab.synth.clean import is_repetitive, refers_to_document
from ftlab.synth.dedup import calibrate
from ftlab.synth.qa import QAOptions, synth_qa

pytestmark = pytest.mark.bundled

STARTER = """# Baking Sourdough Bread at Home

## The Starter

A starter is made by mixing equal weights of whole wheat flour and water and leaving the jar at room temperature.
Feed it once a day: discard all but 50 g, then add 50 g of flour and 50 g of water. After five to ten days it
reliably doubles in volume within six hours of a feed, and it is ready to bake with.
"""


def test_the_bundled_teacher_writes_a_usable_qa_set(bundled_model_dir: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "sourdough.md").write_text(STARTER)
    out = tmp_path / "qa" / "qa.jsonl"
    teacher = ChatModel(BUNDLED_MODEL)
    options = QAOptions(per_doc=2)
    result = synth_qa(docs, out, teacher, calibrate(), options, progress=False)

    examples = read_examples(out)
    assert 1 <= len(examples) == result.kept <= 2
    assert validate_file(out).ok  # for a local model; only a warning says that so few examples teach little
    for example in examples:
        system, question, answer = (m.content for m in example.messages)
        assert system == options.system
        # names its subject (a word of the title or the heading), or was anchored to it
        assert {"baking", "sourdough", "bread", "home", "starter"} & set(question.casefold().strip("?").split())
        assert not refers_to_document(question) and not is_repetitive(answer) and answer.strip()
    provenance = [json.loads(line) for line in result.provenance.read_text().splitlines()]
    assert [p["line"] for p in provenance] == list(range(1, len(examples) + 1))
    assert {p["heading_path"][-1] for p in provenance} == {"The Starter"}
    journal = [json.loads(line) for line in result.journal.read_text().splitlines()[1:]]
    assert sum(r["status"] == "kept" for r in journal) == result.kept
    assert result.prompt_tokens > 0 and result.completion_tokens > 0

    written = out.read_bytes()
    again = synth_qa(docs, out, teacher, calibrate(), options, progress=False)  # resumes: nothing left to ask
    assert out.read_bytes() == written and again.kept == result.kept
    assert again.prompt_tokens == result.prompt_tokens
