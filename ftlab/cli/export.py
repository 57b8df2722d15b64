"""`ftlab export`: a fine-tuned model as a merged Hugging Face folder, a portable peft adapter, or GGUF + Modelfile."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ftlab.cli.output import fail


def export_command(
    model: Annotated[str, typer.Argument(help="A run folder (RUN, run:DIR@best|final|epoch-N), an ft: name of "
                                              "`ftlab serve`, an adapter folder or NAME+ADAPTER_DIR.")],
    fmt: Annotated[str, typer.Option("--format", help="merged | peft | gguf")] = "merged",
    out: Annotated[Path | None, typer.Option(help="Folder to write (default: export-<format>/ here).")] = None,
) -> None:
    """Export a fine-tuned model for vLLM, TGI, llama.cpp or Ollama (DoRA adapters are merged: use merged or gguf)."""
    from ftlab.infer.export import ExportError, export_model
    from ftlab.infer.refs import resolve_ref
    from ftlab.models import ModelNotFound

    if Path(model).is_dir() and (Path(model) / "final").is_dir():  # a run folder named plainly
        model = f"run:{model}@final"
    out = out or Path(f"export-{fmt}")
    try:
        ref = resolve_ref(model)
        written = export_model(ref, fmt, out)
    except (ModelNotFound, ExportError, ValueError) as exc:
        fail(str(exc))
    for path in written:
        typer.echo(f"wrote {path}")
    if fmt == "gguf":
        typer.echo(f"run it with Ollama: cd {out} && ollama create NAME -f Modelfile")
