"""`ftlab synth`: synthetic training data from documents and from a teacher model."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import typer

from ftlab.cli.output import fail
from ftlab.config import BUNDLED_MODEL
from ftlab.data.schema import DataError
from ftlab.embed import DEFAULT_EMBEDDER
from ftlab.infer.backend import ChatBackend, open_backend
from ftlab.infer.refs import resolve_ref
from ftlab.infer.remote import EndpointError
from ftlab.models import ModelNotFound
from ftlab.synth.runner import JobMismatch

app = typer.Typer(help="Synthetic training data: QA pairs from documents, labels from a teacher, paraphrases.")

TEACHER = typer.Option(
    BUNDLED_MODEL, "--teacher", help="Model that writes the data: a local model (bundled alias, folder, adapter, "
    "run:DIR@best, ft: name: any `ftlab eval --model`), or the model name on --base-url."
)  # fmt: skip
BASE_URL = typer.Option(
    None, "--base-url", help="OpenAI-compatible server (OpenAI, vLLM, Ollama, `ftlab serve`), e.g. "
    "http://127.0.0.1:8000/v1. Without it the teacher runs locally."
)  # fmt: skip
API_KEY = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY", help="Key for --base-url [env: OPENAI_API_KEY].")
CONCURRENCY = typer.Option(8, "--concurrency", min=1, help="Requests in flight at once (remote teachers).")
RETRIES = typer.Option(6, "--retries", min=0, help="Retries of a request that got 429/5xx, with backoff.")
BATCH = typer.Option(8, "--batch-size", min=1, help="Conversations per generate call (local teachers).")
OVERWRITE = typer.Option(False, "--overwrite", help="Start again instead of resuming from OUT's journal.")
PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show a progress bar with ETA and token spend.")
EMBEDDER = typer.Option(
    DEFAULT_EMBEDDER, "--embedder", help="Embedding model for duplicate checks: 'minilm' (bundled) or a "
    "sentence-transformers folder (a multilingual one separates Japanese paraphrases far better)."
)  # fmt: skip
DEDUP_THRESHOLD = typer.Option(
    None, "--dedup-threshold", min=0.0, max=1.0, help="Cosine at or above which texts are duplicates; default: "
    "calibrated per language for --embedder (the calibration is printed)."
)  # fmt: skip


def _errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can fix into one line on stderr instead of a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (DataError, JobMismatch, EndpointError, ModelNotFound) as exc:
            fail(str(exc), 1)
        except LookupError as exc:  # a missing embedding model; KeyError and IndexError are bugs, not input
            if type(exc) is not LookupError:
                raise
            fail(str(exc), 1)

    return wrapper


def make_teacher(model: str, base_url: str | None, api_key: str | None, concurrency: int, retries: int,
                 batch_size: int) -> ChatBackend:
    """The teacher `--teacher` names: a model on `--base-url`, else a local one."""
    return open_backend(resolve_ref(model, base_url=base_url), api_key=api_key, concurrency=concurrency,
                        max_retries=retries, batch_size=batch_size)  # fmt: skip


def _calibrate(embedder: str, threshold: float | None):
    from ftlab.synth.dedup import calibrate

    calibration = calibrate(embedder, threshold)
    typer.echo(calibration.describe(), err=True)
    return calibration


def _spend(prompt_tokens: int, completion_tokens: int) -> str:
    return f"tokens spent: {prompt_tokens:,} prompt + {completion_tokens:,} completion"


@app.command("qa")
@_errors
def qa(
    docs_dir: Path = typer.Argument(..., help="Folder of Markdown, text or HTML documents (searched recursively)."),
    per_doc: int = typer.Option(10, "--per-doc", min=1, help="QA pairs to keep per document."),
    teacher: str = TEACHER,
    base_url: str | None = BASE_URL,
    api_key: str | None = API_KEY,
    out: Path = typer.Option(Path("qa.jsonl"), "--out", help="Chat JSONL to write; side files go next to it."),
    system: str | None = typer.Option(None, "--system", help="System prompt of every example."),
    window: int = typer.Option(8, "--window", min=0, help="Previous exchanges shown when writing a question."),
    judge: str | None = typer.Option(
        None,
        "--judge",
        help="Grade each pair with this model (same server "
        "unless --judge-base-url) and keep those at or above --min-score.",
    ),  # fmt: skip
    judge_base_url: str | None = typer.Option(None, "--judge-base-url", help="Server of --judge."),
    min_score: int = typer.Option(4, "--min-score", min=1, max=5, help="Lowest judge grade (1-5) kept."),
    anchor: bool = typer.Option(
        True, "--anchor/--no-anchor", help="Prefix document and section to a question that names neither."
    ),  # fmt: skip
    max_chars: int = typer.Option(2000, "--max-chars", min=200, help="Longest chunk, in characters."),
    metadata: bool = typer.Option(
        False,
        "--metadata/--no-metadata",
        help="Also put document, heading path and "
        "chunk hash in each example's 'metadata' (for `ftlab data split --group-by "
        "document`).",
    ),  # fmt: skip
    embedder: str = EMBEDDER,
    dedup_threshold: float | None = DEDUP_THRESHOLD,
    concurrency: int = CONCURRENCY,
    retries: int = RETRIES,
    batch_size: int = BATCH,
    overwrite: bool = OVERWRITE,
    progress: bool = PROGRESS,
) -> None:
    """QA pairs from documents, chunked along headings, with provenance in OUT.provenance.jsonl.

    Rerun the same command after a kill to continue where it stopped.
    """
    from ftlab.data.documents import load_chunks
    from ftlab.synth.qa import DEFAULT_SYSTEM, QAOptions, synth_qa

    load_chunks(docs_dir, max_chars)  # bad input fails before any model loads
    calibration = _calibrate(embedder, dedup_threshold)
    teacher_ = make_teacher(teacher, base_url, api_key, concurrency, retries, batch_size)
    judge_ = None
    if judge:
        judge_url = judge_base_url or base_url
        judge_ = teacher_ if judge == teacher and judge_url == base_url else make_teacher(
            judge, judge_url, api_key, concurrency, retries, batch_size
        )  # fmt: skip
    options = QAOptions(
        per_doc=per_doc,
        window=window,
        system=system or DEFAULT_SYSTEM,
        max_chars=max_chars,
        anchor=anchor,
        min_score=min_score,
        metadata=metadata,
    )
    result = synth_qa(docs_dir, out, teacher_, calibration, options, judge_, overwrite, progress)
    dropped = ", ".join(f"{n} {status}" for status, n in sorted(result.statuses.items()) if status != "kept")
    typer.echo(f"wrote {result.kept} QA pairs to {result.out} (provenance: {result.provenance})")
    typer.echo(f"dropped: {dropped or 'none'}; journal: {result.journal}; report: {result.report}")
    typer.echo(_spend(result.prompt_tokens, result.completion_tokens))


@app.command("label")
@_errors
def label(
    inputs: Path = typer.Argument(
        ..., help='JSONL of inputs: {"text": ...} (or "input"), or chat examples whose last user message is the input.'
    ),  # fmt: skip
    labels: Path = typer.Option(..., "--labels", help="Text file of allowed labels, one per line."),
    teacher: str = TEACHER,
    base_url: str | None = BASE_URL,
    api_key: str | None = API_KEY,
    out: Path | None = typer.Option(None, "--out", help="Chat JSONL to write [default: INPUTS.labeled.jsonl]."),
    instruction: str | None = typer.Option(
        None, "--instruction", help="What the label means, e.g. 'Who wrote this memo?'"
    ),  # fmt: skip
    system: str | None = typer.Option(
        None,
        "--system",
        help="System prompt of the written examples [default: the teacher's instruction with the label list].",
    ),  # fmt: skip
    invalid_retries: int = typer.Option(
        2,
        "--invalid-retries",
        min=0,
        help="Times a reply that is not a label is corrected and asked again before the input is rejected.",
    ),  # fmt: skip
    concurrency: int = CONCURRENCY,
    retries: int = RETRIES,
    batch_size: int = BATCH,
    overwrite: bool = OVERWRITE,
    progress: bool = PROGRESS,
) -> None:
    """Label inputs with a teacher held to a label set; invalid answers are retried, then reported in
    OUT.rejected.jsonl and never written as labels."""
    from ftlab.data.labels import read_labels
    from ftlab.synth.label import synth_label

    label_set = read_labels(labels)
    if len(label_set) < 2:
        fail(f"{labels}: a label set needs at least two labels, one per line", 1)
    out = out or inputs.with_name(f"{inputs.stem}.labeled.jsonl")
    teacher_ = make_teacher(teacher, base_url, api_key, concurrency, retries, batch_size)
    result = synth_label(inputs, label_set, out, teacher_, instruction, system, invalid_retries, overwrite=overwrite,
                         progress=progress)  # fmt: skip
    counts = ", ".join(f"{name} {n}" for name, n in sorted(result.counts.items(), key=lambda kv: -kv[1]))
    typer.echo(f"wrote {result.labelled} labelled examples to {result.out} ({counts or 'none'})")
    if result.rejected:
        typer.echo(f"rejected {result.rejected} inputs with no valid label after retries: see {result.rejected_path}")
    typer.echo(_spend(result.prompt_tokens, result.completion_tokens))


@app.command("variants")
@_errors
def variants(
    seed: Path = typer.Argument(..., help="Chat JSONL of hand-written examples."),
    n: int = typer.Option(3, "--n", min=1, help="Paraphrases to write per seed example."),
    teacher: str = TEACHER,
    base_url: str | None = BASE_URL,
    api_key: str | None = API_KEY,
    out: Path | None = typer.Option(None, "--out", help="Chat JSONL to write [default: SEED.variants.jsonl]."),
    keep_seeds: bool = typer.Option(True, "--keep-seeds/--no-keep-seeds", help="Write the seeds too."),
    temperature: float = typer.Option(0.9, "--temperature", min=0.0, help="Sampling temperature of the teacher."),
    embedder: str = EMBEDDER,
    dedup_threshold: float | None = typer.Option(
        None,
        "--dedup-threshold",
        min=0.0,
        max=1.0,
        help="Also drop a variant whose embedding cosine to the seed "
        "or an earlier variant reaches this (exact repeats are always dropped).",
    ),  # fmt: skip
    concurrency: int = CONCURRENCY,
    retries: int = RETRIES,
    batch_size: int = BATCH,
    overwrite: bool = OVERWRITE,
    progress: bool = PROGRESS,
) -> None:
    """Paraphrase the last user message of each seed example N times; the rest of the example is kept."""
    from ftlab.synth.variants import synth_variants

    out = out or seed.with_name(f"{seed.stem}.variants.jsonl")
    teacher_ = make_teacher(teacher, base_url, api_key, concurrency, retries, batch_size)
    result = synth_variants(seed, n, out, teacher_, dedup_threshold, embedder, keep_seeds, temperature, overwrite,
                            progress)  # fmt: skip
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(result.statuses.items()) if k not in ("kept", "seed"))
    typer.echo(
        f"wrote {result.variants} variants of {result.seeds} seeds to {result.out} (dropped: {dropped or 'none'})"
    )
    typer.echo(_spend(result.prompt_tokens, result.completion_tokens))
