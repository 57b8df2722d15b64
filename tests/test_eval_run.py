"""`ftlab eval` end to end on the tiny random model: generation, scoring, checkpoints of a run, endpoints."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.data.schema import read_examples, template_messages
from ftlab.data.scoring import set_f1
from ftlab.evaluate.run import EvalOptions, evaluate
from ftlab.infer.refs import resolve_refs
from ftlab.models import ModelNotFound

RECIPES = [
    ("Pancakes: flour, milk, two eggs, a pinch of salt.", ["flour", "milk", "eggs", "salt"]),
    ("Tomato soup with basil and a splash of cream.", ["tomato", "basil", "cream"]),
    ("Garlic bread: a baguette, soft butter, three cloves of garlic.", ["bread", "butter", "garlic"]),
    ("Lemonade from lemons, sugar and cold water.", ["lemon", "sugar", "water"]),
]


@pytest.fixture(scope="module")
def test_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("eval-data") / "test.jsonl"
    lines = []
    for recipe, ingredients in RECIPES:
        lines.append(json.dumps({"messages": [
            {"role": "system", "content": "List the generic ingredients as a JSON list of strings."},
            {"role": "user", "content": recipe},
            {"role": "assistant", "content": json.dumps(ingredients)},
        ]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_eval_cli_writes_outputs_that_match_generation(tiny_model_dir: Path, test_file: Path, tmp_path: Path):
    from ftlab.infer.generate import ChatModel

    out = tmp_path / "result.json"
    result = CliRunner().invoke(app, ["eval", str(test_file), "--model", str(tiny_model_dir),
                                      "--metrics", "exact,json_valid,set_f1", "--output", str(out),
                                      "--max-new-tokens", "12"])
    assert result.exit_code == 0, result.output
    assert "set-F1" in result.output and "json valid" in result.output
    written = json.loads(out.read_text())
    tokens_out = sum(e["completion_tokens"] for e in written["models"][0]["examples"]) / len(read_examples(test_file))
    assert f" {tokens_out:.1f} " in result.output  # the table's tokens out, though "length" is not a chosen metric
    assert written["metrics"] == ["exact", "json_valid", "set_f1"]
    [model] = written["models"]
    examples = read_examples(test_file)
    # The outputs are exactly what greedy generation gives for each conversation minus its last answer.
    expected = ChatModel(str(tiny_model_dir)).generate(
        [template_messages(e.prompt_messages()) for e in examples], max_new_tokens=12)
    assert [e["output"] for e in model["examples"]] == [c.text for c in expected]
    for record, example in zip(model["examples"], examples, strict=True):
        assert record["reference"] == example.reference()
        assert record["scores"]["set_f1"] == set_f1(record["output"], example.reference())
    assert model["summary"]["set_f1"] == pytest.approx(
        sum(r["scores"]["set_f1"] for r in model["examples"]) / len(examples))


def test_eval_cli_reports_bad_input_without_a_traceback(tiny_model_dir: Path, tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "asistant", "content": "x"}]}\n')
    result = CliRunner().invoke(app, ["eval", str(bad), "--model", str(tiny_model_dir)])
    assert result.exit_code == 1
    assert "line 1" in result.output and "messages[1]" in result.output
    result = CliRunner().invoke(app, ["eval", str(bad), "--model", "a", "--model", "b", "--adapter", str(tmp_path)])
    assert result.exit_code == 1 and "--adapter goes with exactly one --model" in result.output


def _make_run(tiny_model_dir: Path, folder: Path) -> Path:
    """A run folder as `ftlab train` writes it: two epoch adapters and a final identical to the last."""
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    for epoch in (1, 2):
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.add_(0.5)
        model.save_pretrained(folder / f"checkpoint-epoch-{epoch}")
    shutil.copytree(folder / "checkpoint-epoch-2", folder / "final")
    (folder / "config.json").write_text(json.dumps({"config": {"model": str(tiny_model_dir)}, "checkpoints": [
        {"step": 3, "epoch": 1, "path": str(folder / "checkpoint-epoch-1")},
        {"step": 6, "epoch": 2, "path": str(folder / "checkpoint-epoch-2")}]}))
    return folder


def test_run_spec_evaluates_every_checkpoint_and_compares_them(tiny_model_dir: Path, test_file: Path,
                                                               tmp_path: Path):
    run = _make_run(tiny_model_dir, tmp_path / "run-1")
    specs = resolve_refs([str(tiny_model_dir), f"run:{run}"])
    assert [s.name for s in specs] == [str(tiny_model_dir), "run-1:epoch-1", "run-1:epoch-2"]  # final == epoch 2
    assert [(s.epoch, s.step) for s in specs[1:]] == [(1, 3), (2, 6)]
    result = evaluate(test_file, specs, EvalOptions(metrics=["exact", "set_f1", "chrf"], max_new_tokens=6,
                                                    n_resamples=200))
    assert len(result.models) == 3
    # the adapters change the model: their outputs differ from the base's
    base_outputs = [e["output"] for e in result.models[0].examples]
    assert [e["output"] for e in result.models[2].examples] != base_outputs
    compared = {(c["b"], c["metric"]) for c in result.comparisons}
    assert ("run-1:epoch-2", "chrf") in compared and all(c["a"] == str(tiny_model_dir) for c in result.comparisons)


def test_run_spec_picks_one_checkpoint(tiny_model_dir: Path, tmp_path: Path):
    run = _make_run(tiny_model_dir, tmp_path / "run-3")
    with pytest.raises(ModelNotFound, match="no best checkpoint"):
        resolve_refs([f"run:{run}@best"])
    record = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**record, "best_checkpoint": "elsewhere/run-3/checkpoint-epoch-1"}))
    best, final, second = (resolve_refs([f"run:{run}@{which}"])[0] for which in ("best", "final", "epoch-2"))
    assert (best.name, best.adapter, best.epoch, best.step) == ("run-3:best", run / "checkpoint-epoch-1", 1, 3)
    assert (final.adapter, final.epoch) == (run / "final", None)
    assert (second.adapter, second.step) == (run / "checkpoint-epoch-2", 6)
    with pytest.raises(ModelNotFound, match="no checkpoint-epoch-7/"):
        resolve_refs([f"run:{run}@epoch-7"])


def test_eval_cli_compares_a_checkpoint_with_judges_and_a_report(tiny_model_dir: Path, test_file: Path,
                                                                 tmp_path: Path):
    run = _make_run(tiny_model_dir, tmp_path / "run-2")
    out = tmp_path / "result.json"
    result = CliRunner().invoke(app, [
        "eval", str(test_file), "--model", str(tiny_model_dir), "--model", f"{tiny_model_dir}+{run / 'final'}",
        "--max-new-tokens", "4", "--output", str(out), "--report", str(tmp_path / "report"),
        "--judge", "pairwise", "--judge", "likert", "--judge-model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert "pairwise judge" in result.output and "flip rate" in result.output
    written = json.loads(out.read_text())
    assert [j["kind"] for j in written["judgements"]] == ["pairwise", "likert"]
    assert {c["metric"] for c in written["comparisons"]} >= {"set_f1", "judge_likert"}
    assert (tmp_path / "report" / "index.html").exists() and (tmp_path / "report" / "differences.png").exists()


def test_openai_endpoint_model(test_file: Path):
    """An OpenAI-compatible endpoint (the remote vendor is mocked at the HTTP layer)."""
    from ftlab.infer.remote import RemoteChatModel

    answers = {recipe: json.dumps(ingredients) for recipe, ingredients in RECIPES}
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        text = answers[body["messages"][-1]["content"]] if "Pancakes" not in body["messages"][-1]["content"] else "?"
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

    [spec] = resolve_refs(["openai:teacher-1@http://vendor.test/v1"])
    assert (spec.kind, spec.model, spec.base_url) == ("endpoint", "teacher-1", "http://vendor.test/v1")
    assert not spec.local
    model = RemoteChatModel(spec.model, spec.base_url, http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    from ftlab.evaluate.run import evaluate_model

    result = evaluate_model(spec, read_examples(test_file), ["exact", "json_valid", "set_f1"], EvalOptions(),
                            model=model)
    assert result.summary["set_f1"] == pytest.approx(0.75) and result.summary["json_valid"] == pytest.approx(0.75)
    assert all(b["temperature"] == 0.0 and b["model"] == "teacher-1" for b in seen)
    done: list[int] = []
    model.generate([[{"role": "user", "content": RECIPES[0][0]}]] * 3, on_done=done.append)
    assert done == [1, 1, 1]  # each reply tells the progress bar as it arrives
    seen.clear()
    evaluate_model(spec, read_examples(test_file), ["exact"], EvalOptions(decode="constrained", labels=["a", "b"]),
                   model=model)
    assert all(body["labels"] == ["a", "b"] for body in seen)  # ftlab serve's label-set extension
    with pytest.raises(ValueError, match="needs a local model"):
        evaluate_model(spec, read_examples(test_file), ["exact"], EvalOptions(decode="rank", labels=["a"]),
                       model=model)
