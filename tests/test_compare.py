"""`ftlab compare`: arms spelled and checked before any compute, prompts that carry what each arm says, invented
claims, cost arithmetic against a hand computation, nested learning-curve subsets, the report in headless
Chromium, the records and the dashboard, and RAG beating the bundled model on facts it cannot know."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from test_eval_report import CHROMIUM, CHROMIUM_ARGS, HANG_GUARD_MS
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.data.estimate import openai_cost
from ftlab.data.prices import read_prices
from ftlab.data.schema import read_examples
from ftlab.data.tokens import token_counter
from ftlab.evaluate.arms import Arm, ArmError, FewShot, Prompter, Rag, parse_arm
from ftlab.evaluate.costs import Usage, break_even, request_cost
from ftlab.evaluate.grounded import claims, invented
from ftlab.evaluate.versus import CompareOptions, plan_comparison, run_comparison
from ftlab.retrieve.passages import document_passages

SYSTEM = "Answer with the activation code only."
# Made-up devices and codes: no model can know them; the documents say them once each.
DEVICES = [("ZX-41", "QV-7731", "Oslo"), ("KT-09", "LM-2208", "Lyon"), ("RB-77", "PX-5164", "Kyoto"),
           ("HN-12", "DW-9043", "Quito"), ("MC-58", "TS-3390", "Perth"), ("VL-23", "GA-6617", "Cairo")]


def _chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]}  # fmt: skip


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/ (one Markdown page per device), test.jsonl (its activation codes), train.jsonl (8 other units)."""
    folder = tmp_path_factory.mktemp("facts")
    (folder / "docs").mkdir()
    for device, code, city in DEVICES:
        (folder / "docs" / f"{device}.md").write_text(
            f"# Device {device}\n\n- Made in: {city}\n\n## Activation\n\nThe activation code of the {device} is "
            f"{code}. Type it on the keypad.\n\n## Care\n\nWipe the {device} with a dry cloth.\n")  # fmt: skip
    _write(folder / "test.jsonl", [_chat(f"What is the activation code of the {d}?", c) for d, c, _ in DEVICES[:5]])
    _write(folder / "train.jsonl", [_chat(f"What is the activation code of the test unit T-{i}?", f"AB-{1000 + i}")
                                    for i in range(8)])  # fmt: skip
    return folder


# --- arms -------------------------------------------------------------------------------------------------------

URL = "http://127.0.0.1:9/v1"


HOSTED_FT = "ft:gpt-4o-mini-2024-07-18:org::x1"


@pytest.mark.parametrize(("text", "model", "fine_tuned", "few_shot", "rag"), [
    ("base", None, False, None, None),
    ("few-shot:k=5", None, False, FewShot(5), None),
    ("few-shot:k=3,select=nearest,seed=2", None, False, FewShot(3, "nearest", 2), None),
    ("rag:k=3", None, False, None, Rag(3)),
    ("rag:source=train", None, False, None, Rag(3, "train")),
    ("ft:run:/r@best", "run:/r@best", True, None, None),
    ("rag+ft:run:/r@best", "run:/r@best", True, None, Rag()),
    ("ft:smollm2-135m-instruct:personal::abcd1234", "ft:smollm2-135m-instruct:personal::abcd1234", True, None, None),
    ("ft:base+/tmp/adapter", "base+/tmp/adapter", True, None, None),
    (f"openai:gpt-4o-mini@{URL}+few-shot:k=5", f"openai:gpt-4o-mini@{URL}", False, FewShot(5), None),
    (f"ft:openai:{HOSTED_FT}@{URL}", f"openai:{HOSTED_FT}@{URL}", True, None, None),
    (f"openai:{HOSTED_FT}@{URL}", f"openai:{HOSTED_FT}@{URL}", True, None, None),
])  # fmt: skip
def test_every_arm_spelling_of_the_issue_parses(text: str, model, fine_tuned: bool, few_shot, rag) -> None:
    assert parse_arm(text) == Arm(text, model, fine_tuned, few_shot, rag)


@pytest.mark.parametrize(("text", "message"), [
    ("fewshot", "unknown arm 'fewshot'"),
    ("run:/r@best", "unknown arm 'run:/r@best'"),
    ("few-shot:k=0", "k must be a whole number ≥ 1"),
    ("rag:k=x", "k must be a whole number ≥ 1, not 'x'"),
    ("few-shot:select=best", "select is random or nearest, not 'best'"),
    ("rag:top=3", "rag takes k=, source=, not 'top=3'"),
    ("rag+rag:k=2", "names rag twice"),
    ("ft:", "write ft:MODEL"),
])  # fmt: skip
def test_a_misspelt_arm_is_refused_with_what_an_arm_can_be(text: str, message: str) -> None:
    with pytest.raises(ArmError, match=message):
        parse_arm(text)


@pytest.mark.parametrize(("change", "message"), [
    ("no_answer", r"test\.jsonl, line 2, field 'messages': no assistant message: a test example ends with its "
                  "reference answer"),
    ("user_last", r"test\.jsonl, line 3, messages\[3\], field 'role': the last message is the user's"),
    ("rag_no_docs", r"arm 'rag:k=2' retrieves from documents: give --docs DOCS_DIR, or write rag:source=train"),
    ("unknown_arm", r"unknown arm 'retrieval'"),
    ("k_too_big", r"arm 'few-shot:k=20': k=20 examples, but the training set has 8"),
    ("few_shot_no_train", r"arm 'few-shot:k=2' shows training examples: give --train"),
    ("sizes_too_big", r"--sizes asks for 50 examples, but the training set has 8"),
    ("baseline", r"--baseline 'rag' is not one of the arms"),
])  # fmt: skip
def test_bad_input_is_refused_before_any_compute(change: str, message: str, facts: Path, tiny_model_dir: Path,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each refusal names the file and line, the arm or the flag, and nothing is embedded, loaded or written."""
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "home"))
    test = facts / "test.jsonl"
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    args = ["--arm", "base", "--arm", "few-shot:k=2", "--train", str(facts / "train.jsonl")]
    if change == "no_answer":
        rows[1]["messages"] = rows[1]["messages"][:2]
    elif change == "user_last":
        rows[2]["messages"].append({"role": "user", "content": "and the other one?"})
    elif change == "rag_no_docs":
        args = ["--arm", "base", "--arm", "rag:k=2"]
    elif change == "unknown_arm":
        args += ["--arm", "retrieval"]
    elif change == "k_too_big":
        args = ["--arm", "few-shot:k=20", "--train", str(facts / "train.jsonl")]
    elif change == "few_shot_no_train":
        args = ["--arm", "few-shot:k=2"]
    elif change == "sizes_too_big":
        args += ["--sizes", "4,50"]
    elif change == "baseline":
        args += ["--baseline", "rag"]
    test = _write(tmp_path / "test.jsonl", rows)
    result = CliRunner().invoke(app, ["compare", str(test), "--model", str(tiny_model_dir), *args])
    assert result.exit_code == 1, result.output
    assert re.search(message, " ".join(result.output.split())), result.output
    assert not (tmp_path / "home" / "indexes").exists() and not (tmp_path / "home" / "compare").exists()


# --- prompts, retrieval and groundedness ------------------------------------------------------------------------


def test_prompts_carry_the_shots_and_passages_each_arm_names(facts: Path) -> None:
    tests, train = read_examples(facts / "test.jsonl"), read_examples(facts / "train.jsonl")
    prompter = Prompter(train, document_passages(facts / "docs"))
    fixed = prompter.prompts(parse_arm("few-shot:k=3,seed=4"), tests)
    assert all(p.shots == random.Random(4).sample(range(8), 3) for p in fixed)  # one fixed prompt for every request
    first = fixed[0].messages
    assert [m["role"] for m in first] == ["system", *["user", "assistant"] * 3, "user"]
    assert first[2]["content"] == train[fixed[0].shots[0]].reference() and first[-1]["content"] == tests[0].question()
    rag = prompter.prompts(parse_arm("rag:k=2"), tests)
    for (device, code, _), test, prompt in zip(DEVICES, tests, rag, strict=False):
        assert prompt.context[0].passage.source == f"{device}.md › Activation"  # the page that has the answer
        question = prompt.messages[-1]["content"]
        assert code in question and question.endswith(test.question())
        assert [m["role"] for m in prompt.messages] == ["system", "user"]
    again = Prompter(train, document_passages(facts / "docs"))
    edited = Prompter(train, document_passages(facts / "docs")[1:])  # a page less: another index
    assert again.index("docs").reused and not edited.index("docs").reused


def test_invented_claims_are_the_ones_no_source_gives() -> None:
    answer = "KES-1131 was fixed in 2.4.2; ask Olympus. The default is 89478485 and storage.s3.config logs it."
    assert claims(answer) == ["KES-1131", "2.4.2", "Olympus", "89478485", "storage.s3.config"]
    sources = ["Which ticket is KES-1131?", "Fixed in: 2.4.1. Default 89,478,485 (storage.s3.config)."]
    assert invented(answer, sources) == ["2.4.2", "Olympus"]
    assert claims('["eggs", "Flour", "brown sugar"]') == [] and claims("Paris. It is big.\n- Lyon too") == []
    assert claims("I think it is in France, near Paris.") == ["France", "Paris"]


# --- cost ---------------------------------------------------------------------------------------------------------


def test_local_cost_and_break_even_arithmetic() -> None:
    prices = read_prices()
    cost = request_cost(Usage(10, 100.0, 20.0, 0.5), hosted_model=None, fine_tuned=False, prices=prices,
                        usd_per_hour=3.6)  # fmt: skip
    assert cost.per_1000() == pytest.approx({"machine_seconds": 500.0, "usd": 0.5})  # 0.5 s × $3.6/h = $0.0005
    assert break_even(10.0, 0.001, 0.003) == pytest.approx(5000) and break_even(10.0, 0.003, 0.003) is None
    hosted = request_cost(Usage(10, 1000.0, 100.0, 1.0), hosted_model="gpt-3.5-turbo", fine_tuned=True, prices=prices)
    assert hosted.per_request["usd"] == pytest.approx(1000 * 3.00e-6 + 100 * 6.00e-6)  # fine-tuned: 6× the base input


def test_hosted_arms_cost_what_a_hand_computation_says(facts: Path, tmp_path: Path) -> None:
    """Three arms on a real local HTTP fake of OpenAI (it counts 4 characters a token): the base model, the base
    with 2 fixed shots, and a fine-tuned model; their dollars per request, the break-even volume and the total for
    a volume, computed here by hand from the texts sent."""
    answer = "QV-7731"
    with FakeOpenAI(lambda messages: answer) as fake:
        base, shots, tuned = (f"openai:gpt-4o-mini@{fake.base_url}", f"openai:gpt-4o-mini@{fake.base_url}+few-shot:k=2",
                              f"ft:openai:ft:gpt-4o-mini-2024-07-18:personal::abcd1234@{fake.base_url}")  # fmt: skip
        options = CompareOptions(volume=1_000_000, n_resamples=200)
        plan = plan_comparison(facts / "test.jsonl", [base, shots, tuned], train_file=facts / "train.jsonl",
                               options=options)  # fmt: skip
        result = run_comparison(plan)
    tests, train = read_examples(facts / "test.jsonl"), read_examples(facts / "train.jsonl")
    picked = [train[i] for i in random.Random(0).sample(range(8), 2)]  # few-shot's default seed
    shown = "".join(e.question() + e.reference() for e in picked)
    prompt = [max(1, len(SYSTEM + t.question()) // 4) for t in tests]
    prompt_shots = [max(1, len(SYSTEM + shown + t.question()) // 4) for t in tests]
    out = len(answer) // 4
    per_request = {
        base: sum(prompt) / 5 * 0.15e-6 + out * 0.60e-6,
        shots: sum(prompt_shots) / 5 * 0.15e-6 + out * 0.60e-6,
        tuned: sum(prompt) / 5 * 0.30e-6 + out * 1.20e-6,  # the fine-tuned prices of gpt-4o-mini
    }
    arms = {a["name"]: a for a in result.to_dict()["arms"]}
    for name, usd in per_request.items():
        assert arms[name]["tokens_per_request"]["completion"] == out
        assert arms[name]["cost_per_1000_requests"] == {"usd": pytest.approx(1000 * usd)}
    tokens = [c.total for c in token_counter("gpt-4o-mini").count(train, detail=False)]
    training = openai_cost("gpt-4o-mini", tokens).usd  # billed tokens × $3.00/1M (tests/test_data_estimate.py)
    assert arms[tuned]["cost"]["training"] == {"usd": pytest.approx(training)}
    assert arms[tuned]["cost"]["total_for_volume"] == {"usd": pytest.approx(1_000_000 * per_request[tuned] + training)}
    [row] = result.break_even  # the fine-tuned arm against the only prompted one
    assert (row["arm"], row["against"]) == (tuned, shots)
    assert row["requests"] == pytest.approx(training / (per_request[shots] - per_request[tuned]))
    assert {body["model"] for body in fake.requests} == {
        "gpt-4o-mini", "ft:gpt-4o-mini-2024-07-18:personal::abcd1234"}  # fmt: skip


# --- end to end on the tiny model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir: Path, facts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ftlab.config import TrainConfig
    from ftlab.train.recipe import train

    config = TrainConfig(model=str(tiny_model_dir), n_epochs=1, batch_size=4, seed=3)
    return train(config, facts / "train.jsonl", None, tmp_path_factory.mktemp("run") / "run", progress=False).output_dir


@pytest.fixture(scope="module")
def compared(tiny_run: Path, facts: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    """`ftlab compare` with the six arms of the issue and a learning curve, on the tiny model."""
    out = tmp_path_factory.mktemp("compare")
    ft = f"run:{tiny_run}@final"
    arms = ["base", "few-shot:k=2", "few-shot:k=2,select=nearest", "rag", f"ft:{ft}", f"rag+ft:{ft}"]
    result = CliRunner().invoke(app, [
        "compare", str(facts / "test.jsonl"), "--train", str(facts / "train.jsonl"), "--docs", str(facts / "docs"),
        *[x for arm in arms for x in ("--arm", arm)], "--sizes", "2,4", "--volume", "1000", "--max-new-tokens", "6",
        "--output", str(out / "compare.json"), "--report", str(out / "report"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    recorded = " ".join(result.output.split()).split("Recorded as evaluation ")[1].split()[0]
    return json.loads((out / "compare.json").read_text()), out / "report", recorded


def test_every_arm_answers_every_example_with_its_tokens_and_cost(compared, tiny_run: Path) -> None:
    data, _, _ = compared
    arms = {a["name"]: a for a in data["arms"]}
    ft = f"run:{tiny_run}@final"
    assert list(arms) == ["base", "few-shot:k=2", "few-shot:k=2,select=nearest", "rag", f"ft:{ft}", f"rag+ft:{ft}"]
    for arm in arms.values():
        assert {"name", "metrics", "tokens_per_request", "cost_per_1000_requests"} <= set(arm)
        assert len(arm["examples"]) == 5 and arm["metrics"]["n"] == 5
        assert arm["cost_per_1000_requests"]["machine_seconds"] == pytest.approx(1000 * arm["seconds_per_request"])
        assert 0 <= arm["invented_rate"] <= 1 and {"grounded", "exact"} <= set(arm["examples"][0]["scores"])
    prompt = {name: arm["tokens_per_request"]["prompt"] for name, arm in arms.items()}
    assert prompt["few-shot:k=2"] > prompt["base"] and prompt["rag"] > prompt["base"]
    assert prompt[f"ft:{ft}"] == prompt["base"] and prompt[f"rag+ft:{ft}"] == prompt["rag"]  # same prompts
    assert [e["context"][0] for e in arms["rag"]["examples"]] == [f"{d}.md › Activation" for d, _, _ in DEVICES[:5]]
    assert arms["few-shot:k=2,select=nearest"]["examples"][0]["shots"] != arms["few-shot:k=2"]["examples"][0]["shots"]
    assert arms[f"ft:{ft}"]["cost"]["training"]["machine_seconds"] > 0
    prompted = ("few-shot:k=2", "few-shot:k=2,select=nearest", "rag")
    assert {(r["arm"], r["against"]) for r in data["break_even"]} == {
        (a, b) for a in (f"ft:{ft}", f"rag+ft:{ft}") for b in prompted}
    assert {c["b"] for c in data["comparisons"]} == set(list(arms)[1:]) and data["baseline"] == "base"
    assert all(arm["cost"]["total_for_volume"]["machine_seconds"] > 0 for arm in arms.values())


def test_the_learning_curve_trains_on_nested_subsets(compared, facts: Path) -> None:
    data, _, _ = compared
    curve = data["learning_curve"]
    assert [p["n"] for p in curve["points"]] == [0, 2, 4] and curve["metric"] == data["headline"]
    two, four = (set(p["lines"]) for p in curve["points"][1:])
    assert len(two) == 2 and len(four) == 4 and two < four
    folder = Path(curve["folder"])
    for n, lines in ((2, two), (4, four)):
        trained = [json.loads(line) for line in (folder / f"n{n}" / "train.jsonl").read_text().splitlines()]
        originals = [json.loads(line) for line in (facts / "train.jsonl").read_text().splitlines()]
        assert trained == [originals[line - 1] for line in sorted(lines)]
        assert (folder / f"n{n}" / "run" / "final" / "adapter_config.json").exists()
    for point in curve["points"]:
        assert point["ci_low"] <= point["mean"] <= point["ci_high"]


def test_the_comparison_is_recorded_and_on_the_dashboard(compared) -> None:
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from ftlab.records.db import session_scope
    from ftlab.records.tables import Evaluation
    from ftlab.serve.app import Settings, create_app

    data, _, eval_id = compared
    with session_scope() as db:
        recorded = db.scalar(select(Evaluation).where(Evaluation.id == eval_id))
        assert recorded.kind == "compare" and [m.name for m in recorded.models] == [a["name"] for a in data["arms"]]
        assert [a["name"] for a in recorded.details["arms"]] == [a["name"] for a in data["arms"]]
        assert recorded.details["learning_curve"]["points"][2]["n"] == 4
        assert "examples" not in recorded.details["arms"][0]
        assert recorded.models[4].run_pk is None or recorded.models[4].spec["run_dir"]
    with TestClient(create_app(Settings())) as client:
        listed = client.get("/evals?kind=compare").text
        assert eval_id in listed and ">compare<" in listed
        page = client.get(f"/evals/{eval_id}").text
        assert "Arms: quality and cost" in page and 'id="curve-data"' in page and "When fine-tuning pays" in page
        assert "rag+ft:run:" in page and client.get("/evals?kind=eval").status_code == 200


def test_the_report_has_its_pictures(compared) -> None:
    _, report, _ = compared
    text = (report / "index.html").read_text()
    for png in ("quality_cost.png", "learning_curve.png", "differences.png"):
        assert (report / png).stat().st_size > 5_000 and f'src="{png}"' in text
    assert "When does fine-tuning pay for itself?" in text and "few-shot:k=2,select=nearest" in text


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_the_report_renders_in_headless_chromium(compared) -> None:
    from playwright.sync_api import sync_playwright

    _, report, _ = compared
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(HANG_GUARD_MS)
        page.goto((report / "index.html").as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.id, e.complete, e.naturalWidth])")
        rows = page.eval_on_selector_all("#arms tr", "els => els.length")
        browser.close()
    assert {i[0] for i in images} == {"plot-scatter", "plot-curve", "plot-differences"}
    assert all(complete and width > 300 for _, complete, width in images), images
    assert rows == 1 + 6


# --- the fact lookup on the real bundled model ----------------------------------------------------------------------


@pytest.mark.bundled
def test_rag_beats_the_base_model_on_facts_it_cannot_know(facts: Path, bundled_model_dir: Path) -> None:
    """Five made-up activation codes: the bundled SmolLM2 cannot know them and invents some; with the two nearest
    passages of the device pages in its prompt it copies them."""
    options = CompareOptions(metrics=["contains"], base_model="smollm2-135m-instruct", max_new_tokens=20,
                             n_resamples=2000)  # fmt: skip
    plan = plan_comparison(facts / "test.jsonl", ["base", "rag:k=2"], docs_dir=facts / "docs", options=options)
    result = run_comparison(plan)
    base, rag = result.arms
    assert base.model.summary["contains"] == 0.0 and rag.model.summary["contains"] >= 0.6, [
        e["output"] for e in rag.model.examples]  # fmt: skip
    [difference] = [c for c in result.evaluation.comparisons if c["metric"] == "contains"]
    assert difference["ci_low"] > 0  # clearly better: the paired interval excludes no difference
    assert rag.model.summary["invented_rate"] <= base.model.summary["invented_rate"]


# --- PostgreSQL ---------------------------------------------------------------------------------------------------


POSTGRES = os.environ.get("FTLAB_TEST_POSTGRES_URL")  # a PostgreSQL with the pgvector extension available


@pytest.mark.skipif(not POSTGRES, reason="needs a PostgreSQL server with the pgvector extension "
                    "(FTLAB_TEST_POSTGRES_URL); pgvector has no Debian package on this machine")  # fmt: skip
def test_the_index_lives_in_postgresql_with_pgvector(facts: Path) -> None:
    from ftlab.retrieve.index import open_index

    passages = document_passages(facts / "docs")
    first = open_index(passages, database_url=POSTGRES)
    again = open_index(passages, database_url=POSTGRES)
    assert again.reused and type(first).__name__ == "PgVectorIndex"
    [hits] = again.search(["What is the activation code of the KT-09?"], 2)
    assert hits[0].passage.source == "KT-09.md › Activation"
