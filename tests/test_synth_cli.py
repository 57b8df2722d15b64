"""`ftlab synth` on the command line: bad input is one clear line, not a traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ftlab.cli.main import app

runner = CliRunner()


def test_help_lists_the_three_commands() -> None:
    result = runner.invoke(app, ["synth", "--help"])
    assert result.exit_code == 0
    assert all(name in result.output for name in ("qa", "label", "variants"))


def test_bad_input_is_reported_with_its_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", "qa", str(tmp_path / "missing"), "--base-url", "http://127.0.0.1:9/v1"])
    assert result.exit_code == 1 and "missing: not a folder of documents" in result.output
    (tmp_path / "labels.txt").write_text("only-one\n")
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    result = runner.invoke(app, ["synth", "label", str(tmp_path / "in.jsonl"), "--labels", str(tmp_path / "labels.txt"),
                                 "--base-url", "http://127.0.0.1:9/v1"])  # fmt: skip
    assert result.exit_code == 1 and "needs at least two labels" in result.output
    (tmp_path / "seed.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    result = runner.invoke(
        app, ["synth", "variants", str(tmp_path / "seed.jsonl"), "--base-url", "http://127.0.0.1:9/v1"]
    )
    assert result.exit_code == 1 and "seed.jsonl, line 1" in result.output and "no assistant message" in result.output
