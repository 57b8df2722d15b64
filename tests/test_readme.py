"""The README's promises: its two commands exist in the Makefile and CI, and every command it names has --help."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from ftlab.cli.main import app

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_the_two_commands_come_first_and_exist() -> None:
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo: install", makefile, re.M) and re.search(r"^test: install", makefile, re.M)
    assert "install -q torch==2.13.0" in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_every_command_the_readme_names_has_help() -> None:
    named = set(re.findall(r"`ftlab ([a-z]+)(?: ([a-z]+))?", README))
    assert named, "the README should name ftlab commands"
    runner = CliRunner()
    for command, sub in named:
        args = [command, sub] if sub and command in {"data", "synth", "runs", "keys"} else [command]
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, f"ftlab {' '.join(args)} --help failed: {result.output}"
