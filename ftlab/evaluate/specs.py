"""What `--model` can name in an evaluation, turned into a list of concrete models to run.

- a base model: the bundled alias, a local Hugging Face folder or a hub id
- `NAME+ADAPTER_DIR`: a base with a LoRA adapter
- `run:DIR`: every checkpoint of a training run folder (`checkpoint-epoch-N/` in epoch order, then `final/`
  unless its weights are byte-identical to the last epoch's), each with its epoch and step for metric curves
- `run:DIR@best`, `run:DIR@final`, `run:DIR@epoch-N`: one of them (best = lowest validation loss, as the
  recipe chose it)
- `openai:MODEL@BASE_URL`: any OpenAI-compatible endpoint (key from `OPENAI_API_KEY`)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

_EPOCH_DIR = re.compile(r"checkpoint-epoch-(\d+)$")


@dataclass
class ModelSpec:
    """One model to evaluate. `kind` is "local" (base + optional adapter) or "openai" (an endpoint)."""

    name: str
    kind: str = "local"
    model: str = ""
    adapter: Path | None = None
    base_url: str | None = None
    run_dir: Path | None = None
    epoch: int | None = None
    step: int | None = None

    def describe(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "model": self.model,
            "adapter": str(self.adapter) if self.adapter else None, "base_url": self.base_url,
            "run_dir": str(self.run_dir) if self.run_dir else None, "epoch": self.epoch, "step": self.step,
        }


def parse_model_specs(specs: list[str], adapter: str | Path | None = None) -> list[ModelSpec]:
    """Expand every `--model` value; `adapter` (the `--adapter` flag) applies to a single plain model."""
    if adapter is not None and len(specs) != 1:
        raise ValueError("--adapter goes with exactly one --model; for several, write --model NAME+ADAPTER_DIR")
    models: list[ModelSpec] = []
    for spec in specs:
        models.extend(parse_model_spec(spec))
    if adapter is not None:
        if models[0].kind != "local" or models[0].adapter is not None or len(models) != 1:
            raise ValueError("--adapter goes with a plain base model name")
        models[0].adapter = _adapter_dir(adapter)
        models[0].name = f"{models[0].model}+{adapter}"
    names = [m.name for m in models]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"the same model is named twice: {', '.join(sorted(duplicates))}")
    return models


def parse_model_spec(spec: str) -> list[ModelSpec]:
    spec = spec.strip()
    if spec.startswith("openai:"):
        model, sep, base_url = spec.removeprefix("openai:").partition("@")
        if not model or not sep or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"'{spec}': write openai:MODEL@BASE_URL, e.g. openai:gpt-4o-mini@https://api.openai.com/v1")
        return [ModelSpec(name=spec, kind="openai", model=model, base_url=base_url.rstrip("/"))]
    if spec.startswith("run:"):
        folder, _, which = spec.removeprefix("run:").rpartition("@")
        if folder and (which in ("best", "final") or _EPOCH_DIR.match(f"checkpoint-{which}")):
            return [run_checkpoint(Path(folder).expanduser(), which)]
        return run_checkpoints(Path(spec.removeprefix("run:")).expanduser())
    if "+" in spec:
        base, _, adapter = spec.partition("+")
        return [ModelSpec(name=spec, model=base, adapter=_adapter_dir(adapter))]
    return [ModelSpec(name=spec, model=spec)]


def _adapter_dir(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not (folder / "adapter_config.json").exists():
        raise ValueError(f"'{path}' is not an adapter folder (no adapter_config.json)")
    return folder


def read_run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.exists():
        raise ValueError(f"'{run_dir}' is not a run folder: config.json is missing")
    return json.loads(path.read_text())


def run_base_model(record: dict) -> str:
    """The base model a run trained ("model" at the top level or inside "config")."""
    model = record.get("model") or record.get("config", {}).get("model")
    if not model:
        raise ValueError("the run's config.json names no base model ('model')")
    return model


def _weights_digest(folder: Path) -> str | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()


def run_checkpoints(run_dir: Path) -> list[ModelSpec]:
    """Every checkpoint of a run, in training order, as models to evaluate."""
    record = read_run_config(run_dir)
    base = run_base_model(record)
    steps = {Path(c["path"]).name: c.get("step") for c in record.get("checkpoints", []) if "path" in c}
    epochs = sorted(
        (int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _EPOCH_DIR.search(p.name))
    )
    found: list[ModelSpec] = []
    for epoch, folder in epochs:
        found.append(_checkpoint_spec(run_dir, base, folder, f"{run_dir.name}:epoch-{epoch}", epoch, steps))
    final = run_dir / "final"
    if final.is_dir():
        last = epochs[-1][1] if epochs else None
        if last is None or _weights_digest(final) != _weights_digest(last):
            found.append(_checkpoint_spec(run_dir, base, final, f"{run_dir.name}:final", None, steps))
    if not found:
        raise ValueError(f"run folder '{run_dir}' has no checkpoint-epoch-N/ or final/ folders")
    return found


def run_checkpoint(run_dir: Path, which: str) -> ModelSpec:
    """One checkpoint of a run: `best` (lowest validation loss), `final`, or `epoch-N`."""
    record = read_run_config(run_dir)
    steps = {Path(c["path"]).name: c.get("step") for c in record.get("checkpoints", []) if "path" in c}
    if which == "best":
        best = record.get("best_checkpoint")
        if not best:
            raise ValueError(f"run '{run_dir}' has no best checkpoint (it ran without validation data, or has not "
                             "finished): use run:DIR@final")  # fmt: skip
        folder = run_dir / Path(best["path"] if isinstance(best, dict) else best).name
    else:
        folder = run_dir / ("final" if which == "final" else f"checkpoint-{which}")
    if not folder.is_dir():
        raise ValueError(f"run '{run_dir}' has no {folder.name}/ folder")
    match = _EPOCH_DIR.search(folder.name)
    epoch = int(match.group(1)) if match else None
    return _checkpoint_spec(run_dir, run_base_model(record), folder, f"{run_dir.name}:{which}", epoch, steps)


def _checkpoint_spec(run_dir: Path, base: str, folder: Path, name: str, epoch: int | None, steps: dict) -> ModelSpec:
    if (folder / "adapter_config.json").exists():
        return ModelSpec(name, model=base, adapter=folder, run_dir=run_dir, epoch=epoch, step=steps.get(folder.name))
    # A full fine-tune saves whole models: the checkpoint folder is the model.
    return ModelSpec(name, model=str(folder), run_dir=run_dir, epoch=epoch, step=steps.get(folder.name))
