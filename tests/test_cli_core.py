"""The core CLI: train writes a run folder, --print-mask colours trained tokens, bad input gets a located error."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ftlab.cli.main import app

runner = CliRunner()


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_every_command_has_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "generate", "demo"):
        assert command in result.output
        assert runner.invoke(app, [command, "--help"]).exit_code == 0


def test_train_and_generate_from_the_command_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": f"say {i}"}, {"role": "assistant", "content": f"{i}"}]}
            for i in range(6)]
    data = write(tmp_path / "train.jsonl", rows)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(data), "--model", str(tiny_model_dir), "--epochs", "1",
                                 "--batch-size", "3", "--learning-rate-multiplier", "auto", "--output", str(out),
                                 "--print-mask", "1", "--method", "lora"])  # the old spelling of --adapter
    assert result.exit_code == 0, result.output
    assert "tokens trained" in result.output
    resolved = ("resolved: n_epochs=1 batch_size=3 learning_rate_multiplier=0.37 (lr 7.40e-05) adapter=lora r=64 "
                "alpha=128 dropout=0.08 loraplus_lr_ratio=4.0 seed=42")
    assert resolved in " ".join(result.output.split())  # auto's "wide" rule on a small set
    assert (out / "final" / "adapter_model.safetensors").exists()
    generated = runner.invoke(app, ["generate", "--model", str(tiny_model_dir), "--adapter", str(out / "final"),
                                    "--user", "say 1", "--max-new-tokens", "4"])
    assert generated.exit_code == 0, generated.output


def test_bad_file_gets_a_located_error_not_a_traceback(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}\n'
                    '{"messages": [{"role": "usr", "content": "x"}, {"role": "assistant", "content": "y"}]}\n')
    result = runner.invoke(app, ["train", str(data), "--model", str(tiny_model_dir), "--output",
                                 str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "line 2, messages[0], field 'role': unknown role 'usr'" in result.output
    assert "Traceback" not in result.output


def test_bad_hyperparameters_are_named(tmp_path: Path) -> None:
    data = write(tmp_path / "t.jsonl", [{"messages": [{"role": "user", "content": "x"},
                                                      {"role": "assistant", "content": "y"}]}])
    result = runner.invoke(app, ["train", str(data), "--epochs", "0"])
    assert result.exit_code == 2 and "--epochs: Input should be greater than or equal to 1 (got '0')" in result.output
    result = runner.invoke(app, ["train", str(data), "--epochs", "many"])
    assert result.exit_code == 2 and "--epochs: Input should be a valid integer" in result.output
    result = runner.invoke(app, ["train", str(data), "--method", "qlora-9"])
    assert result.exit_code == 2 and "--method: Input should be 'supervised' or 'dpo' (got 'qlora-9')" in result.output


def test_missing_model_says_how_to_fix(tmp_path: Path) -> None:
    data = write(tmp_path / "t.jsonl", [{"messages": [{"role": "user", "content": "x"},
                                                      {"role": "assistant", "content": "y"}]}])
    result = runner.invoke(app, ["train", str(data), "--model", "no-such-model"])
    assert result.exit_code == 2 and "unknown model 'no-such-model'" in result.output
