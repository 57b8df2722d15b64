"""The `ftlab` command line. Thin: parse flags, call one domain function, render the result."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="ftlab",
    help="A self-hosted fine-tuning lab for chat LLMs: data checks, LoRA training, evaluation, an "
    "OpenAI-compatible service and records.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """ftlab: fine-tune and evaluate chat models you own. State lives under FTLAB_HOME (default ~/.ftlab)."""


if __name__ == "__main__":
    app()
