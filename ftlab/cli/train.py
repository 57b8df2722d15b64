"""`ftlab train` and `ftlab generate`: the command-line front door of the recipe and of generation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ftlab.cli.output import fail
from ftlab.cli.settings import build_config, takes_settings
from ftlab.config import BUNDLED_MODEL, TrainConfig
from ftlab.data.schema import DataError
from ftlab.models import ModelNotFound

console = Console()
err = Console(stderr=True)


def print_mask(config: TrainConfig, train_file: Path, n: int) -> None:
    """Show the trained tokens (green) of the first n examples (both replies of a DPO pair)."""
    from ftlab.data.schema import read_examples, read_preferences
    from ftlab.models import load_tokenizer
    from ftlab.train.tokenize import render_mask, tokenize_example

    tokenizer = load_tokenizer(config.model)
    if config.method == "dpo":
        shown = [(f" {which}", c) for p in read_preferences(train_file)[:n]
                 for which, c in zip(("preferred", "non-preferred"), p.conversations(), strict=True)]  # fmt: skip
    else:
        shown = [("", example) for example in read_examples(train_file)[:n]]
    for which, example in shown:
        item = tokenize_example(tokenizer, example, config.max_length)
        console.rule(f"line {example.line}{which}: {item.n_trained} of {len(item.input_ids)} tokens trained")
        console.print(render_mask(tokenizer, item), highlight=False)


def describe_memory(peak_mib: dict[str, list[float]]) -> str:
    """"1,234 MiB resident" (per process when several), and the GPU's peak where there was one."""
    parts = []
    for key, what in (("rss", "resident"), ("gpu", "GPU")):
        values = peak_mib.get(key) or []
        if values:
            each = " + ".join(f"{v:,.0f}" for v in values)
            parts.append(f"{each} MiB {what}" + (f" ({len(values)} processes)" if len(values) > 1 else ""))
    return ", ".join(parts) or "not measured"


@takes_settings
def train_command(
    train_file: Annotated[Path, typer.Argument(help="Chat JSONL training file (OpenAI fine-tuning format); "
                                               "preference pairs with --method dpo.")],
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="Settings from a YAML, TOML or JSON file (a run's config.json repeats that "
                     "run); flags given override it."),
    ] = None,  # fmt: skip
    validation: Annotated[Path | None, typer.Option("--validation", help="Validation file (of the same kind).")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Run folder (default FTLAB_HOME/runs/…).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last epoch checkpoint in --output.")] = False,
    print_mask_n: Annotated[
        int, typer.Option("--print-mask", help="Show the trained tokens of the first N examples, then train.")
    ] = 0,
    mlflow: Annotated[
        str | None,
        typer.Option(help="Also export the run to MLflow at this tracking URI (server URL, sqlite:///…, folder)."),
    ] = None,
    mlflow_experiment: Annotated[str, typer.Option(help="MLflow experiment for --mlflow.")] = "ftlab",
    **settings: str | None,
) -> None:
    """Fine-tune a chat model on a chat JSONL file (LoRA by default), or on preference pairs with --method dpo,
    and write a run folder."""
    from ftlab.evaluate.judges import validation_judge
    from ftlab.train.recipe import NonFiniteLoss, train

    try:
        config = build_config(settings, config_file)
        score_validation = validation_judge(config.select_by)  # a judge is an evaluation's: the recipe gets a function
    except (ValueError, ModelNotFound) as exc:
        fail(str(exc))
    if resume and output is None:
        fail("--resume needs --output (the run folder to continue)")
    if mlflow:
        from ftlab.records.export import ExportError, export_run, mlflow_client

        try:
            mlflow_client(mlflow)  # a missing MLflow client is reported before any compute is spent
        except ExportError as exc:
            fail(str(exc))
    from ftlab.records.store import RunRecorder
    from ftlab.train.recipe import is_main_process, new_run_dir

    output = output or new_run_dir()  # one folder for every process under `accelerate launch` or `torchrun`
    if not is_main_process():  # the others train their share; the first one reports, records and prints
        try:
            train(config, train_file, validation, output, resume=resume, progress=False)
        except (DataError, ModelNotFound, NonFiniteLoss):  # the first process reports it
            raise typer.Exit(2) from None
        return
    recorder = RunRecorder(output, warn=lambda message: err.print(f"[bold yellow]warning:[/] {message}"))
    try:
        if print_mask_n:
            print_mask(config, train_file, print_mask_n)

        def show(event) -> None:
            recorder.on_event(event)  # live in the records: `ftlab serve` draws the loss curve as it falls
            if event.type == "warning":
                err.print(f"[bold yellow]warning:[/] {event.message}")
            elif event.type in ("message", "checkpoint"):
                console.print(event.message)

        result = train(config, train_file, validation, output, on_event=show, resume=resume,
                       score_validation=score_validation)
    except (DataError, ModelNotFound) as exc:
        fail(str(exc))
    except NonFiniteLoss as exc:
        recorder.fail("failed", str(exc))
        fail(f"training diverged at {exc}")
    except KeyboardInterrupt:
        recorder.fail("cancelled", "interrupted (Ctrl-C); continue with --resume")
        err.print(f"interrupted: continue with `ftlab train … --output {output} --resume`")
        raise typer.Exit(130) from None
    except Exception as exc:
        recorder.fail("failed", f"{type(exc).__name__}: {exc}")
        raise
    run_id = recorder.finish(result)
    console.print(f"Recorded as run {run_id} (`ftlab runs show` it)")
    if mlflow:
        try:
            exported = export_run(run_id, mlflow, mlflow_experiment)
            console.print(f"Exported to MLflow: run {exported.mlflow_run_id} in experiment "
                          f"'{exported.experiment}' at {exported.tracking_uri}", soft_wrap=True)  # fmt: skip
        except ExportError as exc:  # the run itself is done and recorded; only the copy failed
            err.print(f"[bold yellow]warning:[/] {exc} (retry with `ftlab runs export {run_id} --mlflow {mlflow}`)")
    c = result.config
    beta = f" beta={c.beta}" if c.method == "dpo" else ""
    shape = "" if c.adapter == "full" else (f" r={c.lora_r} alpha={c.lora_alpha} dropout={c.lora_dropout}"
                                            f" loraplus_lr_ratio={c.loraplus_lr_ratio}")  # fmt: skip
    console.print(
        f"\n[bold]Run folder:[/] {result.output_dir}\n"
        f"  resolved: n_epochs={c.n_epochs} batch_size={c.batch_size} "
        f"learning_rate_multiplier={c.learning_rate_multiplier} (lr {c.learning_rate:.2e}){beta} adapter={c.adapter}"
        f"{shape} seed={c.seed}\n"
        f"  final adapter: {result.final_dir}\n  metrics: {result.metrics_csv}\n"
        f"  loss plot: {result.output_dir / 'loss.png'}\n  peak memory: {describe_memory(result.peak_memory_mib)}"
    )
    if result.best_checkpoint:
        value = result.best_checkpoint.metrics.get(c.selection_metric)
        console.print(f"  best checkpoint ({c.selection_metric} {value}): {result.best_checkpoint.path}")


def generate_command(
    user: Annotated[str, typer.Option(help="The user message.")],
    model: Annotated[str, typer.Option(help="Bundled name, local folder or hub id; also an adapter folder, "
                                       "NAME+ADAPTER_DIR, run:DIR@best|final|epoch-N, an ft: name of `ftlab "
                                       "serve`, or openai:MODEL@BASE_URL.")] = BUNDLED_MODEL,  # fmt: skip
    adapter: Annotated[Path | None, typer.Option(help="A LoRA adapter folder (e.g. RUN/final).")] = None,
    system: Annotated[str | None, typer.Option(help="An optional system message.")] = None,
    temperature: Annotated[float, typer.Option(help="0 means greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (with temperature > 0).")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 256,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling.")] = None,
    decode: Annotated[str, typer.Option(help="auto: a fine-tuned model trained on JSON replies is held to their "
                                        "shape (its checkpoint's reply_schema.json), as in `ftlab eval`; free: "
                                        "plain generation.")] = "auto",  # fmt: skip
) -> None:
    """Print a model's reply to one user message (greedy by default)."""
    from ftlab.infer.backend import open_backend
    from ftlab.infer.refs import resolve_ref
    from ftlab.infer.remote import EndpointError

    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
    if decode not in ("auto", "free"):
        fail(f"--decode must be auto or free, not '{decode}'")
    try:
        ref = resolve_ref(model, adapter=adapter)
        chat = open_backend(ref)
        if not chat.local:  # an endpoint answers whole
            console.print(chat.generate([messages], **options)[0].text, highlight=False, markup=False)
            return
        constraint = chat.constraint(None, ref.reply_schema if decode == "auto" else None)
    except (ModelNotFound, ValueError, EndpointError) as exc:
        fail(str(exc))
    for delta in chat.stream(messages, constraint=constraint, **options):
        console.print(delta, end="", highlight=False, markup=False)
    console.print()
