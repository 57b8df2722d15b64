"""The HTTP API: OpenAI's files, fine-tuning jobs, models and chat completions under `/v1`.

Routes are thin: parse, call one function of `files`, `jobs`, `catalog` or `chat`, commit, render. Every
error leaves in OpenAI's shape (see `errors`). Each route acts for a caller (`auth.current_caller`: a key's
project, or everything when no key is required) and reads through a read-only session when it is a GET.

At start the server migrates the database, cleans what killed processes left behind (`.upload-*` temp files,
`.partial` checkpoint folders of runs that no longer train) and recovers jobs whose worker is gone; that
recovery then runs every `recover_every_s`, so a job is never `running` for ever behind a dead worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.types import Message

from ftlab.config import BUNDLED_MODEL
from ftlab.infer.refs import organization
from ftlab.records.db import init_db, session_scope
from ftlab.serve import catalog, dashboard, files, jobs
from ftlab.serve.auth import Caller, current_caller
from ftlab.serve.auth import request_db as get_db
from ftlab.serve.chat import ChatEngine, check_request
from ftlab.serve.errors import APIError, bad_request, install_handlers
from ftlab.serve.schemas import ChatCompletionCreate, JobCreate
from ftlab.serve.vllm import VLLMEngine, keep_in_sync
from ftlab.serve.worker import STALE_AFTER_S, recover_orphaned_jobs, remove_partial_checkpoints

log = logging.getLogger("ftlab.serve")

MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and the purpose field, on top of the file itself


@dataclass
class Settings:
    require_key: bool = False
    max_upload_bytes: int = files.DEFAULT_MAX_UPLOAD_BYTES
    max_loaded_models: int = 2  # base models kept loaded; their fine-tuned adapters load onto them
    max_adapters: int = 16  # adapters kept loaded per base model
    max_batch_size: int = 32  # rows (choices) per generation batch
    max_queued: int = 256  # rows waiting for generation before a request is answered 429
    generation_threads: int | None = None  # torch intra-op threads of the generation thread (None: torch's default)
    vllm_url: str | None = None  # chat completions go to this vLLM server (`--engine vllm`), files and jobs stay
    vllm_model: str = BUNDLED_MODEL  # the base model that vLLM serves
    recover_every_s: float = 10.0  # how often running jobs are checked for a dead or silent worker
    stale_after_s: float = STALE_AFTER_S  # a running job whose heartbeat is older than this is recovered


def settings_from_env() -> Settings:
    """Settings from `FTLAB_REQUIRE_KEY`, `FTLAB_MAX_UPLOAD_BYTES`, `FTLAB_MAX_LOADED_MODELS`, `FTLAB_MAX_ADAPTERS`,
    `FTLAB_MAX_BATCH_SIZE`, `FTLAB_MAX_QUEUED`, `FTLAB_GENERATION_THREADS`, `FTLAB_VLLM_URL` and `FTLAB_VLLM_MODEL`."""
    threads = os.environ.get("FTLAB_GENERATION_THREADS")
    return Settings(
        require_key=os.environ.get("FTLAB_REQUIRE_KEY", "0").lower() in ("1", "true", "yes"),
        max_upload_bytes=int(os.environ.get("FTLAB_MAX_UPLOAD_BYTES", files.DEFAULT_MAX_UPLOAD_BYTES)),
        max_loaded_models=int(os.environ.get("FTLAB_MAX_LOADED_MODELS", "2")),
        max_adapters=int(os.environ.get("FTLAB_MAX_ADAPTERS", "16")),
        max_batch_size=int(os.environ.get("FTLAB_MAX_BATCH_SIZE", "32")),
        max_queued=int(os.environ.get("FTLAB_MAX_QUEUED", "256")),
        generation_threads=int(threads) if threads else None,
        vllm_url=os.environ.get("FTLAB_VLLM_URL") or None,
        vllm_model=os.environ.get("FTLAB_VLLM_MODEL") or BUNDLED_MODEL,
    )


def page(items: list[dict[str, Any]], has_more: bool, *, cursor_ids: bool = False) -> dict:
    """A list in OpenAI's shape; `cursor_ids` adds `first_id` and `last_id` (null for an empty page)."""
    body = {"object": "list", "data": items, "has_more": has_more}
    if cursor_ids:
        body["first_id"] = items[0]["id"] if items else None
        body["last_id"] = items[-1]["id"] if items else None
    return body


router = APIRouter(prefix="/v1", dependencies=[Depends(current_caller)])


# Files ------------------------------------------------------------------------------------------------------------
class UploadTooLarge(APIError):
    """A request body that went past the upload limit while it was read."""


def limited_body(request: Request, max_bytes: int) -> Request:
    """The request, with a body that stops with `UploadTooLarge` as soon as more than `max_bytes` have arrived: a
    chunked upload (no Content-Length) is refused while it is read, never spooled whole first."""
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > max_bytes:
            raise UploadTooLarge(413, f"The upload is over this server's upload limit of {max_bytes} bytes.",
                                 param="file", code="file_too_large")  # fmt: skip
        return message

    return Request(request.scope, receive)


@router.post("/files", response_model=None)
async def create_file(
    request: Request, caller: Caller = Depends(current_caller), db: Session = Depends(get_db)
) -> dict | JSONResponse:
    limit = request.app.state.settings.max_upload_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + MULTIPART_OVERHEAD:
        raise APIError(
            413, f"The upload is {int(length)} bytes, over this server's upload limit of {limit} bytes.",
            param="file", code="file_too_large",
        )  # fmt: skip
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise bad_request("Uploads must be multipart/form-data with fields 'file' and 'purpose'.", param="file")
    try:
        async with limited_body(request, limit + MULTIPART_OVERHEAD).form(max_files=1, max_fields=8) as form:
            upload, purpose = form.get("file"), form.get("purpose")
            if not isinstance(upload, UploadFile):
                raise bad_request("Missing required parameter: 'file'.", param="file")
            if not isinstance(purpose, str) or not purpose:
                raise bad_request("Missing required parameter: 'purpose'.", param="purpose")
            record = await run_in_threadpool(
                files.save_upload, db, upload.file, filename=upload.filename, purpose=purpose, max_bytes=limit,
                project=caller.project,
            )  # fmt: skip
    except UploadTooLarge as exc:  # and close the connection: the rest of the body is not worth reading
        return JSONResponse(exc.body(), status_code=exc.status, headers={"connection": "close"})
    db.commit()
    return files.to_openai(record)


@router.get("/files")
def list_files(
    after: str | None = None,
    limit: int = Query(10000, ge=1, le=10000),
    order: str = Query("desc", pattern="^(asc|desc)$"),
    purpose: str | None = None,
    caller: Caller = Depends(current_caller),
    db: Session = Depends(get_db),
) -> dict:
    rows, has_more = files.list_files(db, caller, after=after, limit=limit, order=order, purpose=purpose)
    return page([files.to_openai(r) for r in rows], has_more, cursor_ids=True)


@router.get("/files/{file_id}")
def retrieve_file(file_id: str, caller: Caller = Depends(current_caller), db: Session = Depends(get_db)) -> dict:
    return files.to_openai(files.get_file(db, file_id, caller))


@router.delete("/files/{file_id}")
def delete_file(file_id: str, caller: Caller = Depends(current_caller), db: Session = Depends(get_db)) -> dict:
    files.delete_file(db, file_id, caller)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/files/{file_id}/content")
def file_content(file_id: str, caller: Caller = Depends(current_caller), db: Session = Depends(get_db)) -> FileResponse:
    record = files.get_file(db, file_id, caller)
    media = "text/csv" if record.filename.endswith(".csv") else "application/octet-stream"
    return FileResponse(files.stored_path(record), media_type=media, filename=record.filename)


# Fine-tuning jobs -------------------------------------------------------------------------------------------------
@router.post("/fine_tuning/jobs")
def create_job(body: JobCreate, caller: Caller = Depends(current_caller), db: Session = Depends(get_db)) -> dict:
    job = jobs.create_job(db, body, caller)
    db.commit()
    return jobs.to_openai(job)


@router.get("/fine_tuning/jobs")
def list_jobs(
    request: Request,
    after: str | None = None,
    limit: int = Query(20, ge=1, le=100),
    caller: Caller = Depends(current_caller),
    db: Session = Depends(get_db),
) -> dict:
    # openai-python sends the metadata filter as `metadata[key]=value`.
    metadata = {k[9:-1]: v for k, v in request.query_params.items() if k.startswith("metadata[") and k.endswith("]")}
    rows, has_more = jobs.list_jobs(db, caller, after=after, limit=limit, metadata=metadata)
    return page([jobs.to_openai(j) for j in rows], has_more)


@router.get("/fine_tuning/jobs/{job_id}")
def retrieve_job(job_id: str, caller: Caller = Depends(current_caller), db: Session = Depends(get_db)) -> dict:
    return jobs.to_openai(jobs.get_job(db, job_id, caller))


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(job_id: str, caller: Caller = Depends(current_caller), db: Session = Depends(get_db)) -> dict:
    job = jobs.cancel_job(db, job_id, caller)
    db.commit()
    return jobs.to_openai(job)


@router.get("/fine_tuning/jobs/{job_id}/events")
def list_events(
    job_id: str,
    after: str | None = None,
    limit: int = Query(20, ge=1, le=10000),
    caller: Caller = Depends(current_caller),
    db: Session = Depends(get_db),
) -> dict:
    rows, has_more = jobs.list_events(db, job_id, caller, after=after, limit=limit)
    return page([jobs.event_to_openai(e).model_dump(mode="json") for e in rows], has_more)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def list_checkpoints(
    job_id: str,
    after: str | None = None,
    limit: int = Query(10, ge=1, le=1000),
    caller: Caller = Depends(current_caller),
    db: Session = Depends(get_db),
) -> dict:
    job = jobs.get_job(db, job_id, caller)
    rows, has_more = jobs.list_checkpoints(db, job_id, caller, after=after, limit=limit)
    return page([jobs.checkpoint_to_openai(job, c).model_dump(mode="json") for c in rows], has_more, cursor_ids=True)


# Models -----------------------------------------------------------------------------------------------------------
@router.get("/models")
def list_models(caller: Caller = Depends(current_caller), db: Session = Depends(get_db)) -> dict:
    return {"object": "list", "data": [m.model_dump(mode="json") for m in catalog.list_models(db, caller)]}


@router.get("/models/{model:path}")
def retrieve_model(model: str, caller: Caller = Depends(current_caller), db: Session = Depends(get_db)) -> dict:
    return catalog.to_openai(catalog.resolve(db, model, caller)).model_dump(mode="json")


@router.delete("/models/{model:path}")
def delete_model(model: str, caller: Caller = Depends(current_caller), db: Session = Depends(get_db)) -> dict:
    catalog.delete_model(db, model, caller)
    db.commit()
    return {"id": model, "object": "model", "deleted": True}


# Chat completions -------------------------------------------------------------------------------------------------
_engine_lock = threading.Lock()


def fine_tuned_models() -> dict:
    with session_scope() as db:
        return catalog.fine_tuned_refs(db)


def chat_engine(app: FastAPI) -> ChatEngine:
    """The app's chat engine, made on the first completion (torch loads then, not at server start)."""
    with _engine_lock:
        if app.state.chat is None:
            settings: Settings = app.state.settings
            if settings.generation_threads:
                import torch

                torch.set_num_threads(settings.generation_threads)
            app.state.chat = ChatEngine(max_loaded=settings.max_loaded_models, max_adapters=settings.max_adapters,
                                        max_batch=settings.max_batch_size, max_queued=settings.max_queued)  # fmt: skip
        return app.state.chat


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionCreate,
    request: Request,
    caller: Caller = Depends(current_caller),
    db: Session = Depends(get_db),
) -> JSONResponse | StreamingResponse:
    check_request(body)
    served = await run_in_threadpool(catalog.resolve, db, body.model, caller)
    db.close()
    engine = request.app.state.chat or await run_in_threadpool(chat_engine, request.app)
    return await engine.respond(served, body, request)


def recover(settings: Settings) -> None:
    """Queue again (or fail) the running jobs whose worker is gone."""
    with session_scope() as db:
        for job_id in recover_orphaned_jobs(db, stale_after=settings.stale_after_s):
            log.warning("recovered orphaned job %s", job_id)


async def keep_recovering(settings: Settings) -> None:
    """Run `recover` every `recover_every_s` for as long as the server runs."""
    while True:
        await asyncio.sleep(settings.recover_every_s)
        try:
            await run_in_threadpool(recover, settings)
        except Exception:  # a database hiccup must not end the check for good
            log.exception("checking running jobs for lost workers failed; trying again later")


def clean_leftovers() -> None:
    """Remove what killed processes left: upload temp files and half-written checkpoints of idle runs."""
    for path in files.remove_leftovers():
        log.warning("removed the leftover upload %s", path.name)
    with session_scope(read_only=True) as db:
        for path in remove_partial_checkpoints(db):
            log.warning("removed the half-written checkpoint %s", path)


class RequestId:
    """ASGI middleware: every response carries `x-request-id` (clients log it), the client's own id echoed when it
    sent a sensible one, else a fresh `req_…`. The id is also in `request.state.request_id`, so the handler of
    unexpected errors, which answers outside the middleware, can set it too."""

    SENT = re.compile(r"[A-Za-z0-9._:-]{1,128}")

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if self.SENT.fullmatch(sent) else "req_" + secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app. At start the database is migrated, leftovers are cleaned and orphaned jobs recovered."""
    settings = settings or settings_from_env()
    organization()  # a bad FTLAB_ORGANIZATION stops the start, not a job when it names its model

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        init_db()
        recover(settings)
        clean_leftovers()
        checker = asyncio.create_task(keep_recovering(settings))
        if settings.vllm_url:
            app.state.chat = VLLMEngine(settings.vllm_url, settings.vllm_model)
            sync = asyncio.create_task(keep_in_sync(app.state.chat, fine_tuned_models))
        yield
        checker.cancel()
        if settings.vllm_url:
            sync.cancel()

    app = FastAPI(
        title="ftlab", description="OpenAI-compatible fine-tuning API", lifespan=lifespan, docs_url=None,
        redoc_url=None, openapi_url=None,
    )  # fmt: skip
    app.state.settings = settings
    app.state.chat = None  # created with the first completion, so a server that only trains never loads torch
    install_handlers(app)
    app.add_middleware(RequestId)

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        """Liveness, and what generation is doing (batches run, rows queued and running, models loaded)."""
        return {"status": "ok", "generation": app.state.chat.status() if app.state.chat else None}

    # The API's description and its pages take a key, like the API, when the server requires keys.
    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(current_caller)])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(current_caller)])
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="ftlab - API")

    @app.get("/redoc", include_in_schema=False, dependencies=[Depends(current_caller)])
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="ftlab - API")

    app.include_router(router)
    dashboard.install(app)  # the dashboard at / (records of jobs, runs, datasets and evaluations)
    return app
