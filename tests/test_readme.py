"""The README's promises: its two commands exist in the Makefile and CI, every command it names has --help, and
the commands of its shell blocks run as written (those cheap and offline) and print what it says they print."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftlab.cli.main import app

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
GROUPS = {"data", "synth", "runs", "keys"}  # commands with subcommands


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
        args = [command, sub] if sub and command in GROUPS else [command]
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, f"ftlab {' '.join(args)} --help failed: {result.output}"


# --- running the README's commands ------------------------------------------------------------------------------

def readme_commands() -> list[list[str]]:
    """Every `ftlab …` command of the README's shell blocks as its arguments: continuation lines joined, comments
    dropped, and optional parts in [brackets] left out (the command as the README writes it, bare)."""
    commands = []
    for body in re.findall(r"```(?:bash|sh)\n(.*?)```", README, re.S):
        for line in body.replace("\\\n", " ").splitlines():
            if not line.strip().startswith("ftlab "):
                continue
            words, depth = [], 0
            for word in shlex.split(line, comments=True)[1:]:
                opening, closing = len(word) - len(word.lstrip("[")), len(word) - len(word.rstrip("]"))
                if depth == 0 and not opening:
                    words.append(word)
                depth += opening - closing
            commands.append(words)
    return commands


def command_name(args: list[str]) -> str:
    return " ".join(args[:2]) if args[0] in GROUPS else args[0]


@dataclass
class Run:
    """How a README command is checked here: its exit code, what it prints, and files it writes."""

    exit_code: int = 0
    prints: list[str] = field(default_factory=list)  # each a regular expression, searched in the output
    writes: dict[str, int] = field(default_factory=dict)  # output file → its number of lines
    extra: list[str] = field(default_factory=list)  # arguments added to the README's (with why in a comment)


# Every command of the README's shell blocks is either run here or skipped with the reason: a command the README
# gains fails this test until it is added to one of the two.
RUNS: dict[str, Run] = {
    "data validate": Run(prints=[r"OK: 0 errors"]),
    "data stats": Run(prints=[r"tokens per example:", "█"]),
    # --no-local: the local half times a short training run on first use (minutes; test_data_estimate covers it)
    "data estimate": Run(prints=[r"gpt-4o-mini\S* +3 epochs", r"\$\d+\.\d\d"], extra=["--no-local"]),
    "data split": Run(prints=[r"train +\d+ examples", r"test +\d+ examples"]),
    "data leakage": Run(prints=[r"0 pairs across"]),
    "data convert": Run(prints=[r"4 examples written to recipes\.jsonl"], writes={"recipes.jsonl": 4}),
    "data dedup": Run(prints=[r"kept 100, dropped 0"], writes={"kept.jsonl": 100}),
    "keys create": Run(prints=[r"ftl-\S{20,}"]),
}
SKIPS: dict[str, str] = {
    "train": "trains a model (minutes even for one epoch of the bundled one); tests/test_cli_core.py trains the "
             "tiny model through the same command",
    "generate": "needs the adapter of a trained run (RUN/final)",
    "eval": "needs trained runs and an OpenAI endpoint; tests/test_eval_run.py runs it on the tiny model",
    "compare": "needs a trained run and an OpenAI endpoint; tests/test_compare.py runs it on the tiny model",
    "synth qa": "the bundled model writes questions for minutes; tests/test_synth_qa.py runs it against a fake",
    "synth label": "generates with the bundled model; tests/test_synth_label.py covers it",
    "synth variants": "generates with the bundled model; tests/test_synth_variants.py covers it",
    "serve": "a server that runs until stopped; tests/test_serve_api.py drives it",
    "worker": "a worker that runs until stopped; tests/test_serve_worker.py drives it",
    "runs export": "needs a recorded training run; tests/test_records_export.py exports one",
    "export": "needs a trained run or ft: model; tests/test_export.py exports the tiny model's adapters",
}
# The README's own file names, stood in for by shipped files (`qa/qa.jsonl` is what `synth qa`, skipped, writes).
FILES = {
    "train.jsonl": REPO / "examples" / "recipes" / "train.jsonl",
    "data.jsonl": REPO / "examples" / "recipes" / "train.jsonl",
    "recipes.csv": REPO / "tests" / "data_files" / "recipes.csv",
    "qa/qa.jsonl": REPO / "examples" / "recipes" / "val.jsonl",
}


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_every_readme_command_is_run_or_skipped_with_a_reason() -> None:
    names = {command_name(args) for args in readme_commands()}
    assert {"data validate", "train", "serve"} <= names  # the parser finds the blocks
    unknown = names - set(RUNS) - set(SKIPS)
    assert not unknown, f"README commands neither run nor skipped here (add them to RUNS or SKIPS): {unknown}"
    assert not set(RUNS) & set(SKIPS)
    assert set(RUNS) | set(SKIPS) <= names, f"no longer in the README: {(set(RUNS) | set(SKIPS)) - names}"


def test_the_readme_commands_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "home"))
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    for name, source in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, tmp_path / name)
    runner = CliRunner()
    ran = set()
    for args in readme_commands():
        check = RUNS.get(command_name(args))
        if check is None:
            continue
        shown = "ftlab " + shlex.join(args)
        result = runner.invoke(app, [*args, *check.extra])
        assert result.exit_code == check.exit_code, f"{shown} exited {result.exit_code}:\n{result.output}"
        for pattern in check.prints:
            assert re.search(pattern, flat(result.output)), f"{shown} did not print /{pattern}/:\n{result.output}"
        for path, n_lines in check.writes.items():
            assert len((tmp_path / path).read_text().splitlines()) == n_lines, f"{shown}: {path}"
        ran.add(command_name(args))
    assert ran == set(RUNS)
    # what the commands wrote is what they said: the splits of both split commands, a converted recipe
    for folder, total in (("split", 100), ("qa/split", 20)):
        assert sum(len((tmp_path / folder / f"{part}.jsonl").read_text().splitlines())
                   for part in ("train", "val", "test")) == total  # fmt: skip
    converted = json.loads((tmp_path / "recipes.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in converted["messages"]] == ["system", "user", "assistant"]
    assert converted["messages"][1]["content"].startswith("Title: No-Bake Nut Cookies\n\nIngredients: ")
    # `ftlab runs list` (named in the README's prose) on this fresh home
    assert "`ftlab runs list" in README
    listed = runner.invoke(app, ["runs", "list"])
    assert listed.exit_code == 0 and "no runs recorded yet" in listed.output, listed.output


def test_a_malformed_line_is_refused_as_the_readme_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's example error, printed by `ftlab train` before any compute and by `ftlab data validate`."""
    shown = re.search(r"```\n(error: (\S+), line (\d+), messages\[0\], field 'role': unknown role '(\w+)'.*)\n```",
                      README)
    assert shown, "the README shows the error a malformed line gets"
    error, name, line, role = shown.group(1), shown.group(2), int(shown.group(3)), shown.group(4)
    good = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    bad = {"messages": [{"role": role, "content": "x"}, {"role": "assistant", "content": "y"}]}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "home"))
    Path(name).write_text("".join(json.dumps(row) + "\n" for row in [good] * (line - 1) + [bad]))
    runner = CliRunner()
    trained = runner.invoke(app, ["train", name, "--output", "run"])
    assert trained.exit_code == 2 and error in flat(trained.output), trained.output
    assert not Path("run").exists() or not any(Path("run").iterdir())  # refused before any compute
    validated = runner.invoke(app, ["data", "validate", name])  # "exit 1 on errors"
    assert validated.exit_code == 1, validated.output
    assert f"line {line}, messages[0], field 'role'" in flat(validated.output)
    assert f"unknown role '{role}'" in flat(validated.output)
