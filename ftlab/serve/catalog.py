"""Which models the service can name — base models (the bundled alias, a local Hugging Face folder, a cached hub
id) and fine-tuned models `ft:<base>:<owner>:<suffix>:<id>` with their checkpoints `…:ckpt-step-N` — as OpenAI
model objects. What a name resolves to is decided by `ftlab.infer.refs`. A fine-tuned model belongs to its
job's project: other projects' keys get a 404 for it, exactly as for a name that does not exist."""

from __future__ import annotations

from openai.types import Model
from sqlalchemy import select
from sqlalchemy.orm import Session

from ftlab.config import BUNDLED_MODEL
from ftlab.infer.refs import ModelRef, find_fine_tuned, organization, resolve_ref
from ftlab.models import ModelNotFound
from ftlab.records.tables import Job
from ftlab.serve.auth import SERVER, Caller
from ftlab.serve.errors import APIError

SERVED_KINDS = ("base", "ft")  # a client cannot name adapter folders, run folders or other endpoints


def model_not_found(name: str, detail: str | None = None) -> APIError:
    return APIError(
        404,
        f"The model `{name}` does not exist or you do not have access to it" + (f": {detail}" if detail else "."),
        param="model",
        code="model_not_found",
    )


def _check_project(db: Session, name: str, caller: Caller) -> None:
    """A 404 for an `ft:` name whose job the caller may not see (names that match no job fail in resolve_ref)."""
    if not name.startswith("ft:") or caller.admin:
        return
    try:
        job, _ = find_fine_tuned(db, name)
    except ModelNotFound:
        return
    if not caller.sees(job.project):
        raise model_not_found(name)


def resolve(db: Session, name: str, caller: Caller) -> ModelRef:
    """The model a request names (a base model only from the local cache), or a 404 in OpenAI's words."""
    _check_project(db, name, caller)
    try:
        return resolve_ref(name, db=db, download=False, allow=SERVED_KINDS)
    except ModelNotFound as exc:
        raise model_not_found(name, str(exc)) from None


def to_openai(ref: ModelRef) -> Model:
    return Model(id=ref.name, created=ref.created or 0, object="model", owned_by=organization())


def list_models(db: Session, caller: Caller) -> list[Model]:
    """The bundled base model and every fine-tuned model of the caller's project that exists (newest first)."""
    models = [Model(id=BUNDLED_MODEL, created=0, object="model", owned_by=organization())]
    query = select(Job).where(
        Job.status == "succeeded", Job.fine_tuned_model.is_not(None), Job.model_deleted.is_(False)
    )
    if not caller.admin:
        query = query.where(Job.project == caller.project)
    jobs = db.scalars(query.order_by(Job.pk.desc()))
    models += [Model(id=j.fine_tuned_model, created=j.finished_at or 0, object="model", owned_by=organization())
               for j in jobs]  # fmt: skip
    return models


def fine_tuned_refs(db: Session) -> dict[str, ModelRef]:
    """Every fine-tuned model that exists, of every project, resolved (for an engine that registers them, e.g.
    vLLM; requests still reach only their own project's models, checked by `resolve`)."""
    refs = {}
    for model in list_models(db, SERVER):
        if model.id.startswith("ft:"):
            try:
                refs[model.id] = resolve(db, model.id, SERVER)
            except APIError:  # its files are gone: nothing to register
                continue
    return refs


def delete_model(db: Session, name: str, caller: Caller) -> None:
    """Delete a fine-tuned model (its files stay in the run folder; the name stops resolving)."""
    if not name.startswith("ft:"):
        raise APIError(403, f"You do not have permission to delete the base model '{name}'.", param="model")
    _check_project(db, name, caller)
    try:
        job, checkpoint = find_fine_tuned(db, name)
    except ModelNotFound as exc:
        raise model_not_found(name, str(exc)) from None
    if checkpoint is not None:
        raise model_not_found(name, "a checkpoint is not deleted on its own; delete its fine-tuned model")
    job.model_deleted = True
