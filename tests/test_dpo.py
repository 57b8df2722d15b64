"""DPO (`method: dpo`) on the tiny random Llama: the preferred reply gains on the non-preferred one, the loss
starts at log 2 against a reference computed once, resume equals an uninterrupted run, an SFT adapter as the
starting point, and the refusals that come before any compute."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from data_helpers import animal_pairs, write_jsonl
from fake_openai import FakeOpenAI
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.config import TrainConfig
from ftlab.data.schema import read_preferences
from ftlab.models import best_precision, load_model, load_tokenizer
from ftlab.train.dpo import METRIC_COLUMNS, PreferenceLoss, collate_pairs, tokenize_pairs, train_dpo

ANIMALS = ["cat", "dog", "cow", "duck", "frog", "bee", "owl", "fox", "pig", "hen", "goat", "bat", "ant", "eel", "yak",
           "elk"]  # fmt: skip


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return (write_jsonl(tmp_path / "train.jsonl", animal_pairs(ANIMALS[:12])),
            write_jsonl(tmp_path / "val.jsonl", animal_pairs(ANIMALS[12:])))  # fmt: skip


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


@torch.no_grad()
def preference_gaps(model_dir: Path, adapter: Path, data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(preferred) − log π(non-preferred) of every pair, for the base and for base + adapter (fp32)."""
    from peft import PeftModel

    tokenizer = load_tokenizer(str(model_dir))
    precision = best_precision(torch.device("cpu"), "fp32")
    model = PeftModel.from_pretrained(load_model(str(model_dir), precision=precision), adapter)
    scorer = PreferenceLoss(model, beta=1.0)
    batch = collate_pairs(tokenize_pairs(tokenizer, data, 2048), tokenizer.pad_token_id, torch.device("cpu"))
    tuned = scorer.logps(**batch).view(2, -1)
    with model.disable_adapter():
        base = scorer.logps(**batch).view(2, -1)
    return base[0] - base[1], tuned[0] - tuned[1]


def test_the_preferred_reply_gains_on_the_non_preferred(tmp_path: Path, tiny_model_dir: Path, data) -> None:
    train, val = data
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", str(train), "--validation", str(val), "--method", "dpo", "--model", str(tiny_model_dir),
        "--epochs", "3", "--batch-size", "4", "--learning-rate-multiplier", "20", "--beta", "0.5", "--seed", "7",
        "--output", str(run)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "beta=0.5" in result.output and "with DPO (beta 0.5) on 12 preference pairs" in result.output

    rows = read_rows(run / "metrics.csv")
    assert list(rows[0]) == METRIC_COLUMNS and len(rows) == 9
    # Step 1 scores the untouched adapter against the reference computed with it switched off: equal log-probs.
    assert float(rows[0]["train_loss"]) == pytest.approx(math.log(2), abs=1e-4)
    assert float(rows[0]["train_reward_margin"]) == pytest.approx(0, abs=1e-4)
    margins = [float(r["train_reward_margin"]) for r in rows]
    assert margins[-1] > margins[0] and float(rows[-1]["train_loss"]) < math.log(2)
    valid = [r for r in rows if r["valid_loss"]]
    assert len(valid) == 3 and float(valid[-1]["valid_reward_accuracy"]) == 1.0
    assert float(valid[-1]["valid_reward_margin"]) > 0

    # Measured again from the saved adapter, outside the trainer: every preferred reply gained on its rival,
    # on the training pairs and on the held-out ones.
    for path in (train, val):
        base, tuned = preference_gaps(tiny_model_dir, run / "final", path)
        assert (tuned > base).all(), (base, tuned)

    record = json.loads((run / "config.json").read_text())
    assert (record["config"]["method"], record["config"]["beta"], record["status"]) == ("dpo", 0.5, "succeeded")
    assert record["best_checkpoint"] in [str(run / f"checkpoint-epoch-{n}") for n in (1, 2, 3)]
    assert (run / "loss.png").stat().st_size > 0 and torch.load(run / "reference_logps.pt")["train"].shape == (12, 2)
    assert not (run / "final" / "reply_schema.json").exists()  # free-text replies: nothing to hold them to
    shown = CliRunner().invoke(app, ["runs", "show", str(run), "--json"])
    recorded = json.loads(shown.stdout)["metrics"]
    assert [m["step"] for m in recorded] == list(range(1, 10))
    assert recorded[-1]["valid_reward_accuracy"] == 1.0 and abs(recorded[0]["train_reward_margin"]) < 1e-4


def test_a_run_on_json_preferred_replies_keeps_their_schema(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = animal_pairs(ANIMALS[:10])
    for i, row in enumerate(rows):
        row["preferred_output"][0]["content"] = json.dumps({"animal": ANIMALS[i], "sounds": ["hi"] * (1 + i % 3)})
    config = TrainConfig(model=str(tiny_model_dir), method="dpo", n_epochs=1, batch_size=5)
    train_dpo(config, write_jsonl(tmp_path / "json.jsonl", rows), None, tmp_path / "run", progress=False)
    for folder in ("checkpoint-epoch-1", "final"):
        schema = json.loads((tmp_path / "run" / folder / "reply_schema.json").read_text())
        assert schema["required"] == ["animal", "sounds"] and schema["properties"]["sounds"]["maxItems"] == 4


def test_resume_equals_an_uninterrupted_run(tmp_path: Path, tiny_model_dir: Path, data) -> None:
    train, val = data
    config = TrainConfig(model=str(tiny_model_dir), method="dpo", n_epochs=2, batch_size=4,
                         learning_rate_multiplier=20.0, seed=3)  # fmt: skip
    whole = train_dpo(config, train, val, tmp_path / "whole", progress=False)
    calls = iter(range(100))
    cut = train_dpo(config, train, val, tmp_path / "cut", progress=False, should_stop=lambda: next(calls) == 4)
    assert cut.status == "cancelled" and [c.epoch for c in cut.checkpoints] == [1]
    resumed = train_dpo(config, train, val, tmp_path / "cut", progress=False, resume=True)
    assert resumed.status == "succeeded"
    assert read_rows(resumed.metrics_csv) == read_rows(whole.metrics_csv)
    assert torch.equal(torch.load(tmp_path / "cut" / "reference_logps.pt")["train"],
                       torch.load(tmp_path / "whole" / "reference_logps.pt")["train"])  # fmt: skip


def letters(text: str) -> int:
    return sum(c.isalpha() for c in text)


def wordier_answer_judge(messages: list[dict]) -> str:
    """A judge that prefers the answer with more letters (the random tiny models write runs of one token):
    deterministic, so the verdicts of both orders must agree and the win rates follow from the outputs alone."""
    prompt = messages[-1]["content"]
    a = prompt.split("Answer A:\n", 1)[1].split("\n\nAnswer B:\n", 1)[0]
    b = prompt.split("\n\nAnswer B:\n", 1)[1].split("\n\nJudge them on:", 1)[0]
    return "tie" if letters(a) == letters(b) else "A" if letters(a) > letters(b) else "B"


def test_dpo_from_an_sft_adapter_judged_against_it(tmp_path: Path, tiny_model_dir: Path, data) -> None:
    train, val = data
    sft_rows = [{"messages": [*p["input"]["messages"], *p["preferred_output"]]} for p in animal_pairs(ANIMALS[:12])]
    sft_data = write_jsonl(tmp_path / "sft.jsonl", sft_rows)
    runner = CliRunner()
    sft = runner.invoke(app, ["train", str(sft_data), "--model", str(tiny_model_dir), "--epochs", "1", "--lora-r",
                              "8", "--learning-rate-multiplier", "20", "--output", str(tmp_path / "sft")])  # fmt: skip
    assert sft.exit_code == 0, sft.output
    args = ["train", str(train), "--validation", str(val), "--method", "dpo", "--init-adapter",
            f"run:{tmp_path / 'sft'}@final", "--epochs", "1", "--batch-size", "4", "--precision", "fp32"]  # fmt: skip
    clash = runner.invoke(app, [*args, "--lora-r", "16", "--output", str(tmp_path / "clash")])
    assert clash.exit_code == 2 and "lora_r 16 (the adapter's is 8)" in " ".join(clash.output.split())
    dpo = runner.invoke(app, [*args, "--learning-rate-multiplier", "20", "--output", str(tmp_path / "dpo")])
    assert dpo.exit_code == 0, dpo.output

    record = json.loads((tmp_path / "dpo" / "config.json").read_text())["config"]
    assert record["init_adapter"] == str((tmp_path / "sft" / "final").resolve())
    assert (record["model"], record["lora_r"]) == (str(tiny_model_dir.resolve()), 8)  # the adapter's base and shape
    # The reference is the SFT model as loaded (not the base): the first step still starts at log 2.
    rows = read_rows(tmp_path / "dpo" / "metrics.csv")
    assert float(rows[0]["train_loss"]) == pytest.approx(math.log(2), abs=1e-4)
    reference = torch.load(tmp_path / "dpo" / "reference_logps.pt")["train"]
    base_gap, sft_gap = preference_gaps(tiny_model_dir, tmp_path / "sft" / "final", train)
    assert torch.allclose(reference[:, 0] - reference[:, 1], sft_gap, atol=1e-3)
    assert (sft_gap - base_gap).abs().min() > 0.1  # SFT on the preferred replies moved them: not the base
    adapter = json.loads((tmp_path / "dpo" / "final" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["base_model_name_or_path"] == str(tiny_model_dir.resolve())

    # The README's evaluation: held-out pairs as the test set, DPO and base each against SFT (the first --model),
    # judged pairwise in both orders; the judged examples convert back into pairs.
    with FakeOpenAI(wordier_answer_judge) as judge:
        judged = runner.invoke(app, [
            "eval", str(val), "--model", f"run:{tmp_path / 'sft'}@final", "--model", f"run:{tmp_path / 'dpo'}@final",
            "--model", str(tiny_model_dir), "--max-new-tokens", "6", "--judge", "pairwise", "--judge-model",
            f"openai:judge@{judge.base_url}", "--criteria", "helpful", "--output", str(tmp_path / "judged.json")])
        assert judged.exit_code == 0, judged.output
        assert len(judge.requests) == 2 * 2 * 4  # two comparisons, both orders, four held-out prompts
    result = json.loads((tmp_path / "judged.json").read_text())
    outputs = {m["name"]: [e["output"] for e in m["examples"]] for m in result["models"]}
    assert [e["reference"] for e in result["models"][0]["examples"]] == [
        p["preferred_output"][0]["content"] for p in animal_pairs(ANIMALS[12:])]
    runs = result["judgements"]
    assert [r["kind"] for r in runs] == ["pairwise", "pairwise"]
    for run in runs:
        a, b = outputs[run["summary"]["a"]], outputs[run["summary"]["b"]]
        decided = ["tie" if letters(x) == letters(y) else "A" if letters(x) > letters(y) else "B"
                   for x, y in zip(a, b, strict=True)]
        assert run["summary"]["b_wins"] == decided.count("B") / 4 and run["summary"]["flip_rate"] == {
            f"openai:judge@{judge.base_url}": 0.0}
    assert [(r["summary"]["a"], r["summary"]["b"]) for r in runs] == [("sft:final", "dpo:final"),
                                                                     ("sft:final", str(tiny_model_dir))]
    converted = runner.invoke(app, ["data", "convert", str(tmp_path / "judged.json"), "--to", "dpo", "--out",
                                    str(tmp_path / "judged-prefs.jsonl")])  # fmt: skip
    assert converted.exit_code == 0, converted.output
    pairs = read_preferences(tmp_path / "judged-prefs.jsonl")
    assert pairs and all(letters(p.preferred_output[0].text) > letters(p.non_preferred_output[0].text) for p in pairs)


def test_refusals_before_any_compute(tmp_path: Path, tiny_model_dir: Path, data) -> None:
    train, _ = data
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [*p["input"]["messages"], *p["preferred_output"]]}
                                                 for p in read_preferences_raw(train)])  # fmt: skip
    runner = CliRunner()
    cases = [
        (["train", str(train), "--method", "dpo", "--adapter", "full"], "method dpo trains an adapter (lora or dora)"),
        (["train", str(train), "--beta", "0.3"], "beta is a setting of method dpo"),
        (["train", str(train)], f"{train}, line 1, field 'messages': required key 'messages' is missing (this looks "
                                "like preference data: train it with method dpo"),
        (["train", str(chat), "--method", "dpo"], f"{chat}, line 1, field 'input': required key 'input' is missing "
                                                  "(this line is chat data"),
        (["train", str(train), "--method", "dpo", "--init-adapter", str(tmp_path)], "no config.json there"),
    ]  # fmt: skip
    for number, (args, message) in enumerate(cases):
        out = tmp_path / f"run-{number}"
        result = runner.invoke(app, [*args, "--model", str(tiny_model_dir), "--output", str(out)])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert not (out / "config.json").exists()


def read_preferences_raw(path: Path) -> list[dict]:
    return [p.to_openai() for p in read_preferences(path)]
