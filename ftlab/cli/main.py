"""The `ftlab` command line. Thin: parse flags, call one domain function, render the result."""

from __future__ import annotations

import warnings

import typer

from ftlab.cli.compare import compare_command
from ftlab.cli.data import app as data_app
from ftlab.cli.demo import demo_command
from ftlab.cli.eval import eval_command
from ftlab.cli.export import export_command
from ftlab.cli.runs import runs_app
from ftlab.cli.serve import serve_app
from ftlab.cli.synth import app as synth_app
from ftlab.cli.train import generate_command, train_command

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
    # Our own progress bars say what matters; the libraries' per-load bars and deprecation notes are noise here.
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


app.command("train")(train_command)
app.command("generate")(generate_command)
app.command("demo")(demo_command)
app.add_typer(data_app, name="data")
app.command("eval")(eval_command)
app.command("compare")(compare_command)
app.command("export")(export_command)
app.add_typer(serve_app)  # serve, worker, keys
app.add_typer(synth_app, name="synth")
app.add_typer(runs_app, name="runs")


if __name__ == "__main__":
    app()
