"""What a user can name as a model, resolved in one place into something `infer/` loads or calls.

- a base model: the bundled alias, a local Hugging Face folder, or a hub id
- an adapter folder (it records its base in `adapter_config.json`), or `NAME+ADAPTER_DIR` to name the base
- `run:DIR`: every checkpoint of a training run folder (`checkpoint-epoch-N/` in epoch order, then `final/`
  unless its weights are byte-identical to the last epoch's), each with its epoch and step for metric curves;
  `run:DIR@best|final|epoch-N` picks one (best = the one the recipe chose: by validation loss or `select_by`)
- `ft:BASE:OWNER:SUFFIX:ID` and `ft:…:ckpt-step-N`: a fine-tuning job's model or checkpoint, looked up in the
  records by its ID (the owner may be anything; a base or suffix, when written, must match the job's)
- `openai:MODEL@BASE_URL`: a model behind any OpenAI-compatible endpoint (key from `OPENAI_API_KEY`)

Nothing here imports torch: the service resolves names on its request path. Adapters record their base by a
portable name (the alias, or the hub id with its commit) so a run folder copied elsewhere still loads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ftlab.config import TrainConfig
from ftlab.data.reply_format import read_reply_schema
from ftlab.models import (
    BUNDLED_GGUF,
    ModelNotFound,
    base_problem,
    is_hub_id,
)
from ftlab.records.tables import Checkpoint, Job

DEFAULT_ORGANIZATION = "personal"  # like a personal OpenAI account: ft:BASE:personal:SUFFIX:ID
MIN_ID_CHARS = 8  # an ft: name ends with at least this much of its job's id

Kind = Literal["base", "adapter", "run", "ft", "endpoint"]
_EPOCH_DIR = re.compile(r"checkpoint-epoch-(\d+)$")
_LABEL = re.compile(r"[A-Za-z0-9._-]+")


@dataclass
class ModelRef:
    """One model to load or call: a local base with an optional adapter, or a model on an endpoint."""

    name: str  # how tables, reports and journals call it
    model: str  # local: the base (alias, folder or hub id); endpoint: the model's name there
    kind: Kind = "base"
    adapter: Path | None = None
    revision: str | None = None  # the hub commit of `model` that the adapter was trained on
    base_url: str | None = None  # set for an endpoint: the model is called there, not loaded
    run_dir: Path | None = None
    epoch: int | None = None
    step: int | None = None
    created: int | None = None  # ft: names: when the model was created (Unix seconds)

    @property
    def local(self) -> bool:
        """Whether the model runs in this process (only then are its tokens and logits at hand)."""
        return self.base_url is None

    @property
    def reply_schema(self) -> dict | None:
        """The JSON schema the model's training replies share, kept with its checkpoint (the adapter folder, or
        a fully fine-tuned model's own), which decoding holds its replies to; None for a base model, an endpoint,
        replies that were not JSON, or without the grammar engine that would hold them (xgrammar: the
        `structured` extra), whose absence leaves decoding free rather than failing."""
        folder = self.adapter or (Path(self.model) if self.local and self.kind != "base" else None)
        schema = read_reply_schema(folder)
        return schema if schema is not None and importlib.util.find_spec("xgrammar") is not None else None

    def describe(self) -> dict:
        return {
            "name": self.name, "kind": "local" if self.local else "openai", "model": self.model,
            "adapter": str(self.adapter) if self.adapter else None, "revision": self.revision,
            "base_url": self.base_url, "run_dir": str(self.run_dir) if self.run_dir else None,
            "epoch": self.epoch, "step": self.step,
        }  # fmt: skip


# --- adapters ---------------------------------------------------------------------------------------------------


def adapter_base(adapter: Path, fallback: str | None = None) -> tuple[str, str | None]:
    """The base model an adapter folder records, as a name `base_problem` accepts, and its revision.

    A relative path is read from the adapter folder; a missing folder named like the bundled alias (adapters
    written before bases were recorded by name) is the alias; any other missing path is a clear error.
    `fallback` is used when the adapter records no base (the base its run names).
    """
    file = adapter / "adapter_config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFound(f"{file}: cannot read the adapter's config ({exc})") from None
    name, revision = config.get("base_model_name_or_path") or fallback, config.get("revision")
    if not name:
        raise ModelNotFound(f"{file}: base_model_name_or_path is empty; name the base: BASE+{adapter}")
    if name in BUNDLED_GGUF or is_hub_id(name):
        return name, revision
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = (adapter / path).resolve()
    if path.exists():
        return str(path), revision
    if path.name in BUNDLED_GGUF:
        return path.name, revision
    raise ModelNotFound(
        f"{file}: base_model_name_or_path '{name}' does not exist ({path}); copy the base there or name it: "
        f"BASE+{adapter}"
    )


# --- fine-tuned model names -------------------------------------------------------------------------------------


def organization() -> str:
    """The owner written into `ft:` names: `$FTLAB_ORGANIZATION`, default `personal`."""
    owner = os.environ.get("FTLAB_ORGANIZATION") or DEFAULT_ORGANIZATION
    if not _LABEL.fullmatch(owner):
        raise ValueError(f"FTLAB_ORGANIZATION='{owner}': use letters, digits, '.', '_' or '-' only")
    return owner


def base_label(model: str) -> str:
    """The base model as it appears inside an `ft:` name: the alias, or the folder / repo name."""
    label = model.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "-", label) or "model"


def base_model_of(job: Job) -> str:
    """The base model a job tuned: its run's (a DPO job that continued a fine-tuned model has `model` ft:…)."""
    return job.run.base_model if job.run is not None and job.run.base_model else job.model


def fine_tuned_model_name(job: Job) -> str:
    base = base_label(base_model_of(job))
    return f"ft:{base}:{organization()}:{job.suffix or ''}:{job.id.removeprefix('ftjob-')[:8]}"


def checkpoint_model_name(job: Job, step: int) -> str:
    return f"{fine_tuned_model_name(job)}:ckpt-step-{step}"


def find_fine_tuned(db: Session, name: str) -> tuple[Job, Checkpoint | None]:
    """The job (and checkpoint, for `…:ckpt-step-N`) an `ft:` name stands for, found by the id at its end.

    The owner field is not compared: names users build themselves (`ft:BASE:personal::ID`) resolve like the
    ones ftlab prints. A base or suffix, when the name has one, must be the job's.
    """
    parts = name.removeprefix("ft:").split(":")
    step = None
    if parts and (match := re.fullmatch(r"ckpt-step-(\d+)", parts[-1])):
        step, parts = int(match.group(1)), parts[:-1]
    if not name.startswith("ft:") or len(parts) != 4:
        raise ModelNotFound(f"'{name}' is not an ft: name: ft:BASE:OWNER:SUFFIX:ID[:ckpt-step-N]")
    base, _owner, suffix, key = parts
    if len(key) < MIN_ID_CHARS or not key.isalnum():
        raise ModelNotFound(f"'{key}' is not a fine-tuned model id: an ft: name ends with at least {MIN_ID_CHARS} "
                            "characters of its job's id")  # fmt: skip
    prefix = "ftjob-" + key
    jobs = [j for j in db.scalars(select(Job).where(Job.id.startswith(prefix))) if j.id.startswith(prefix)]
    if not jobs:
        raise ModelNotFound(f"no fine-tuning job has the id '{key}'")
    if len(jobs) > 1:
        raise ModelNotFound(f"the id '{key}' matches {len(jobs)} fine-tuning jobs ({', '.join(j.id for j in jobs)}): "
                            "give more of it")  # fmt: skip
    [job] = jobs
    if base and base != base_label(base_model_of(job)):
        raise ModelNotFound(f"the model with id '{key}' was fine-tuned from '{base_label(base_model_of(job))}', not "
                            f"'{base}'")  # fmt: skip
    if suffix and suffix != (job.suffix or ""):
        raise ModelNotFound(f"the model with id '{key}' has the suffix '{job.suffix or ''}', not '{suffix}'")
    if job.model_deleted:
        raise ModelNotFound(f"the model with id '{key}' was deleted")
    if step is None:
        if job.status != "succeeded":
            raise ModelNotFound(f"job {job.id} is {job.status}: its model exists once it has succeeded")
        return job, None
    checkpoint = db.scalar(select(Checkpoint).where(Checkpoint.job_pk == job.pk, Checkpoint.step == step))
    if checkpoint is None:
        steps = db.scalars(select(Checkpoint.step).where(Checkpoint.job_pk == job.pk).order_by(Checkpoint.step))
        raise ModelNotFound(f"job {job.id} has no checkpoint at step {step} (steps: "
                            f"{', '.join(map(str, steps)) or 'none yet'})")  # fmt: skip
    return job, checkpoint


def _fine_tuned_ref(db: Session, name: str) -> ModelRef:
    job, checkpoint = find_fine_tuned(db, name)
    run_dir = Path(job.run.output_dir) if job.run.output_dir else None
    if checkpoint is not None:
        folder, created, epoch, step = Path(checkpoint.path), checkpoint.created_at, checkpoint.epoch, checkpoint.step
    else:
        final = (job.run.artifacts or {}).get("final_dir")
        if not final:
            raise ModelNotFound(f"job {job.id} recorded no final model folder")
        folder, created, epoch, step = Path(final), job.finished_at or job.created_at, None, None
    ref = _checkpoint_ref(name, folder, base_model_of(job), run_dir, epoch, step)
    ref.kind, ref.created = "ft", created
    return ref


# --- run folders ------------------------------------------------------------------------------------------------


def read_run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.exists():
        raise ModelNotFound(f"'{run_dir}' is not a run folder: config.json is missing")
    return json.loads(path.read_text())


def run_base_model(record: dict) -> str:
    """The base model a run trained ("model" at the top level or inside "config")."""
    model = record.get("model") or record.get("config", {}).get("model")
    if not model:
        raise ModelNotFound("the run's config.json names no base model ('model')")
    return model


def _weights_digest(folder: Path) -> str | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _checkpoint_ref(name: str, folder: Path, base: str, run_dir: Path | None, epoch: int | None,
                    step: int | None) -> ModelRef:
    """A checkpoint folder: an adapter on the base it records (`base` when it records none), or, for a full
    fine-tune, a whole model of its own."""
    if (folder / "adapter_config.json").exists():
        base, revision = adapter_base(folder, fallback=base)
        return ModelRef(name, base, "run", folder, revision, run_dir=run_dir, epoch=epoch, step=step)
    if not (folder / "config.json").exists():
        raise ModelNotFound(f"'{folder}' holds no model (no adapter_config.json or config.json)")
    return ModelRef(name, str(folder), "run", run_dir=run_dir, epoch=epoch, step=step)


def _run_steps(record: dict) -> dict[str, int | None]:
    return {Path(c["path"]).name: c.get("step") for c in record.get("checkpoints", []) if "path" in c}


def run_checkpoints(run_dir: Path) -> list[ModelRef]:
    """Every checkpoint of a run, in training order."""
    record = read_run_config(run_dir)
    base, steps = run_base_model(record), _run_steps(record)
    epochs = sorted(
        (int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _EPOCH_DIR.search(p.name))
    )
    found = [_checkpoint_ref(f"{run_dir.name}:epoch-{epoch}", folder, base, run_dir, epoch, steps.get(folder.name))
             for epoch, folder in epochs]  # fmt: skip
    final = run_dir / "final"
    if final.is_dir():
        last = epochs[-1][1] if epochs else None
        if last is None or _weights_digest(final) != _weights_digest(last):
            found.append(_checkpoint_ref(f"{run_dir.name}:final", final, base, run_dir, None, steps.get("final")))
    if not found:
        raise ModelNotFound(f"run folder '{run_dir}' has no checkpoint-epoch-N/ or final/ folders")
    return found


def run_checkpoint(run_dir: Path, which: str) -> ModelRef:
    """One checkpoint of a run: `best` (as the run selected it), `final`, or `epoch-N`."""
    record = read_run_config(run_dir)
    if which == "best":
        best = record.get("best_checkpoint")
        if not best:
            raise ModelNotFound(f"run '{run_dir}' has no best checkpoint (it ran without validation data, or has "
                                "not finished): use run:DIR@final")  # fmt: skip
        folder = run_dir / Path(best["path"] if isinstance(best, dict) else best).name
    else:
        folder = run_dir / ("final" if which == "final" else f"checkpoint-{which}")
    if not folder.is_dir():
        raise ModelNotFound(f"run '{run_dir}' has no {folder.name}/ folder")
    match = _EPOCH_DIR.search(folder.name)
    epoch = int(match.group(1)) if match else None
    return _checkpoint_ref(f"{run_dir.name}:{which}", folder, run_base_model(record), run_dir, epoch,
                           _run_steps(record).get(folder.name))  # fmt: skip


# --- the resolver -----------------------------------------------------------------------------------------------


def kind_of(text: str) -> Kind:
    """Which spelling `text` is (from its form alone; nothing is looked up)."""
    if text.startswith("openai:"):
        return "endpoint"
    if text.startswith("run:"):
        return "run"
    if text.startswith("ft:"):
        return "ft"
    path = Path(text).expanduser()
    if "+" in text and not path.exists():
        return "adapter"
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        return "adapter"
    return "base"


def expand_ref(text: str, *, db: Session | None = None, download: bool = True,
               allow: tuple[Kind, ...] | None = None) -> list[ModelRef]:
    """Every model `text` names (several for `run:DIR`), each base checked as loadable before any compute.

    `db`: the records session for `ft:` names (default: a session on the records database).
    `download`: whether a hub id may be fetched (the service only uses its local cache).
    `allow`: the kinds of spelling accepted (the service serves base models and `ft:` names only).
    """
    text = text.strip()
    kind = kind_of(text)
    if allow is not None and kind not in allow:
        raise ModelNotFound(f"'{text}' is a {kind} spelling; here a model is one of: {', '.join(allow)}")
    if kind == "endpoint":
        model, sep, base_url = text.removeprefix("openai:").partition("@")
        if not model or not sep or not base_url.startswith(("http://", "https://")):
            raise ModelNotFound(f"'{text}': write openai:MODEL@BASE_URL, e.g. "
                                "openai:gpt-4o-mini@https://api.openai.com/v1")  # fmt: skip
        return [ModelRef(text, model, "endpoint", base_url=base_url.rstrip("/"))]
    if kind == "ft":
        refs = [_fine_tuned_ref(db, text)] if db is not None else [_with_records(text)]
    elif kind == "run":
        folder, _, which = text.removeprefix("run:").rpartition("@")
        if folder and (which in ("best", "final") or _EPOCH_DIR.match(f"checkpoint-{which}")):
            refs = [run_checkpoint(Path(folder).expanduser(), which)]
        else:
            refs = run_checkpoints(Path(text.removeprefix("run:")).expanduser())
    elif kind == "adapter":
        base, _, adapter = text.partition("+") if "+" in text else ("", "", text)
        folder = Path(adapter).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise ModelNotFound(f"'{adapter}' is not an adapter folder (no adapter_config.json)")
        revision = None
        if not base:
            base, revision = adapter_base(folder)
        refs = [ModelRef(text, base, "adapter", folder, revision)]
    else:
        refs = [ModelRef(text, text)]
    for ref in refs:
        problem = base_problem(ref.model, download=download)
        if problem:
            raise ModelNotFound(f"{ref.name}: {problem}" if ref.name != ref.model else problem)
    return refs


def _with_records(text: str) -> ModelRef:
    from ftlab.records.db import init_db, session_scope

    init_db()
    with session_scope() as db:
        return _fine_tuned_ref(db, text)


def resolve_ref(text: str, *, adapter: str | Path | None = None, base_url: str | None = None,
                db: Session | None = None, download: bool = True, allow: tuple[Kind, ...] | None = None) -> ModelRef:
    """The one model `text` names. `adapter` (the `--adapter` flag) goes on a plain base model; with `base_url`,
    `text` is a model's name on that endpoint."""
    if base_url:
        return ModelRef(text, text, "endpoint", base_url=base_url.rstrip("/"))
    refs = expand_ref(_with_adapter(text, adapter), db=db, download=download, allow=allow)
    if len(refs) != 1:
        raise ModelNotFound(f"'{text}' names {len(refs)} checkpoints; pick one: {text}@best, @final or @epoch-N")
    return refs[0]


def resolve_refs(texts: list[str], adapter: str | Path | None = None) -> list[ModelRef]:
    """Every `--model` value expanded; `adapter` (the `--adapter` flag) goes on a single base model."""
    if adapter is not None and len(texts) != 1:
        raise ValueError("--adapter goes with exactly one --model; for several, write --model NAME+ADAPTER_DIR")
    refs = [ref for text in texts for ref in expand_ref(_with_adapter(text, adapter))]
    names = [r.name for r in refs]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"the same model is named twice: {', '.join(sorted(duplicates))}")
    return refs


def _with_adapter(text: str, adapter: str | Path | None) -> str:
    if adapter is None:
        return text
    if kind_of(text) != "base":
        raise ValueError("--adapter goes with a plain base model name")
    return f"{text}+{adapter}"


# --- the adapter a run starts from (TrainConfig.init_adapter) ----------------------------------------------------


def resolve_init_adapter(config: TrainConfig, *, db: Session | None = None, download: bool = True) -> TrainConfig:
    """The config with `init_adapter` as the adapter folder it names (any spelling here: a folder, run:DIR@best, an
    ft: name) and `model` as that adapter's base. The adapter keeps its own shape (LoRA or DoRA, r, alpha,
    target modules), which replaces the defaults (dropout is the new run's own); a base or shape set explicitly to
    something else is refused, like a name that resolves to nothing (`ModelNotFound`). Resolving again gives the
    same config."""
    if not config.init_adapter:
        return config
    start = resolve_ref(config.init_adapter, db=db, download=download)
    if start.adapter is None:
        raise ModelNotFound(f"init_adapter '{config.init_adapter}' is a whole model, not an adapter: name it as the "
                            "base model instead (--model)")  # fmt: skip
    saved = json.loads((start.adapter / "adapter_config.json").read_text(encoding="utf-8"))
    modules = saved["target_modules"]
    shape = {"model": start.model, "adapter": "dora" if saved.get("use_dora") else "lora", "lora_r": saved["r"],
             "lora_alpha": saved["lora_alpha"],
             "lora_target_modules": sorted(modules) if isinstance(modules, list) else modules}  # fmt: skip
    clashes = [f"{name} {getattr(config, name)!r} (the adapter's is {value!r})" for name, value in shape.items()
               if name in config.model_fields_set and not _same_setting(name, getattr(config, name), value)]
    if clashes:
        raise ModelNotFound(f"init_adapter {start.adapter} continues with its own base and shape, not: "
                            + "; ".join(clashes))  # fmt: skip
    return config.model_copy(update={**shape, "init_adapter": str(start.adapter.resolve())})


def _same_setting(name: str, given: object, saved: object) -> bool:
    if name == "model" and given != saved:
        return Path(str(given)).expanduser().resolve() == Path(str(saved)).expanduser().resolve()
    if name == "lora_target_modules" and isinstance(given, list) and isinstance(saved, list):
        return sorted(given) == sorted(saved)
    return given == saved
