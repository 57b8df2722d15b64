"""The dashboard `ftlab serve` shows at `/`: jobs and runs with live loss curves, checkpoints, datasets,
evaluations and a side-by-side view of runs.

Choice: server-rendered Jinja2 pages plus one small vanilla-JS file that draws the charts as inline SVG and
polls a JSON endpoint every 2 s while a run is active. Nothing to build, nothing fetched from a CDN (the
dashboard works offline, on the same port as the API), and every page is a plain URL that can be linked or
scraped. Pages read the records through `ftlab.records.query`; no page loads more than one page of rows.

When the server requires API keys, the dashboard does too: `/login` takes a key once and keeps it in an
HttpOnly cookie (or send `Authorization: Bearer …`).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ftlab.records.db import request_session as get_db
from ftlab.records.query import (
    ACTIVE,
    comparison,
    count_runs,
    differs,
    find_run,
    list_runs,
    run_datasets,
    run_metrics,
    run_row,
    run_rows,
)
from ftlab.records.tables import Dataset, Evaluation, EvaluationModel, Job, JobEvent, Run, RunMetric
from ftlab.serve import auth
from ftlab.serve.errors import APIError

PAGE_SIZE = 50
EXAMPLES_PER_PAGE = 25
COOKIE = "ftlab_key"
STATIC = Path(__file__).with_name("static")
templates = Jinja2Templates(directory=Path(__file__).with_name("templates") / "dashboard")


def _when(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "–"


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _short(value: Any) -> str:
    return value[:12] if isinstance(value, str) and len(value) == 64 else _num(value)


def _duration(start: int | None, end: int | None) -> str:
    if not start:
        return "–"
    seconds = (end or int(datetime.now(UTC).timestamp())) - start
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


templates.env.filters.update(when=_when, num=_num, short=_short)
templates.env.globals.update(duration=_duration, ACTIVE=ACTIVE)


def _script_json(value: Any) -> str:
    """JSON safe to place inside a <script> element (no `</script>` can end it early)."""
    return json.dumps(value).replace("</", "<\\/")


class LoginRequired(Exception):
    pass


def dashboard_access(request: Request, db: Session = Depends(get_db)) -> None:
    """With keys required, accept the key from the login cookie or an Authorization header."""
    if not request.app.state.settings.require_key:
        return
    header = request.headers.get("authorization")
    if not header and request.cookies.get(COOKIE):
        header = f"Bearer {request.cookies[COOKIE]}"
    try:
        auth.check_authorization(db, header)
    except APIError:
        if request.url.path.startswith("/dashboard/api/"):
            raise HTTPException(401, "an API key is required") from None
        raise LoginRequired from None
    db.commit()


class PageNotFound(Exception):
    pass


def install(app) -> None:
    """Add the dashboard to the service app: its routes, a redirect to /login for pages when a key is missing,
    and HTML (not the API's JSON) for a page that names an unknown run, dataset or evaluation."""
    app.include_router(router)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, _exc: LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.exception_handler(PageNotFound)
    async def _not_found(request: Request, exc: PageNotFound) -> Response:
        return templates.TemplateResponse(request, "notfound.html", {"message": exc.args[0], "nav": ""}, 404)


router = APIRouter(include_in_schema=False)
pages = APIRouter(include_in_schema=False, dependencies=[Depends(dashboard_access)])


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/", error: str = "") -> Response:
    return templates.TemplateResponse(request, "login.html", {"next": next, "error": error})


@router.post("/login")
def login(key: str = Form(...), next: str = Form("/"), db: Session = Depends(get_db)) -> Response:
    try:
        auth.check_authorization(db, f"Bearer {key}")
    except APIError:
        return RedirectResponse("/login?error=That+key+is+not+valid", status_code=303)
    db.commit()
    response = RedirectResponse(next if next.startswith("/") and not next.startswith("//") else "/", status_code=303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict")
    return response


@router.get("/dashboard/static/{name}")
def static(name: str) -> FileResponse:
    path = STATIC / name
    if path.parent != STATIC or not path.is_file():
        raise HTTPException(404)
    return FileResponse(path)


# Pages ------------------------------------------------------------------------------------------------------------
@pages.get("/", response_class=HTMLResponse)
def index(request: Request, page: int = Query(1, ge=1), status: str | None = None, db: Session = Depends(get_db)):
    rows = list_runs(db, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, status=status or None)
    total = count_runs(db, status or None)
    counts = dict(db.execute(select(Run.status, func.count()).group_by(Run.status)).all())
    return templates.TemplateResponse(request, "index.html", {
        "rows": rows, "page": page, "pages": max(1, math.ceil(total / PAGE_SIZE)), "total": total,
        "status": status, "counts": counts, "nav": "runs",
    })  # fmt: skip


def _run_or_404(db: Session, ref: str) -> Run:
    try:
        return find_run(db, ref)
    except LookupError as exc:
        raise PageNotFound(exc.args[0]) from None


@pages.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, db: Session = Depends(get_db)):
    run = _run_or_404(db, run_id)
    job = db.scalar(select(Job).where(Job.run_pk == run.pk))
    events = (
        list(db.scalars(select(JobEvent).where(JobEvent.job_pk == job.pk).order_by(JobEvent.pk.desc()).limit(30)))
        if job else []
    )  # fmt: skip
    evaluations = db.execute(
        select(Evaluation.id, Evaluation.created_at, EvaluationModel.name, EvaluationModel.summary, Evaluation.headline)
        .join(EvaluationModel, EvaluationModel.evaluation_pk == Evaluation.pk)
        .where(EvaluationModel.run_pk == run.pk)
        .order_by(Evaluation.pk.desc())
        .limit(20)
    ).all()
    return templates.TemplateResponse(request, "run.html", {
        "run": run, "row": run_row(db, run), "job": job, "events": events, "datasets": run_datasets(db, run),
        "evaluations": evaluations, "nav": "runs",
    })  # fmt: skip


@pages.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, run: list[str] = Query(default=[]), db: Session = Depends(get_db)):
    runs = [_run_or_404(db, ref) for ref in dict.fromkeys(run)]
    rows = [(section, name, values, differs(values)) for section, name, values in comparison(db, runs)] if runs else []
    return templates.TemplateResponse(request, "compare.html", {
        "runs": runs, "rows": rows, "run_ids": json.dumps([r.id for r in runs]), "nav": "compare",
    })  # fmt: skip


def _dataset_usage(db: Session) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Which runs used each dataset hash, and how many evaluations tested on it."""
    used: dict[str, list[str]] = {}
    for run_id, hashes in db.execute(select(Run.id, Run.dataset_sha256)):
        for sha in (hashes or {}).values():
            used.setdefault(sha, []).append(run_id)
    tested = dict(db.execute(select(Evaluation.test_sha256, func.count()).group_by(Evaluation.test_sha256)).all())
    return used, tested


@pages.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, page: int = Query(1, ge=1), db: Session = Depends(get_db)):
    datasets = list(
        db.scalars(
            select(Dataset).order_by(Dataset.last_seen_at.desc()).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
        )
    )
    total = db.scalar(select(func.count()).select_from(Dataset))
    used, tested = _dataset_usage(db)
    return templates.TemplateResponse(request, "datasets.html", {
        "datasets": datasets, "used": used, "tested": tested, "page": page,
        "pages": max(1, math.ceil(total / PAGE_SIZE)), "nav": "datasets",
    })  # fmt: skip


@pages.get("/datasets/{sha256}", response_class=HTMLResponse)
def dataset_page(request: Request, sha256: str, db: Session = Depends(get_db)):
    dataset = db.scalar(select(Dataset).where(Dataset.sha256.startswith(sha256)).limit(1)) if len(sha256) >= 8 else None
    if dataset is None:
        raise PageNotFound(f"no dataset {sha256}")
    used, _ = _dataset_usage(db)
    run_ids = used.get(dataset.sha256, [])[-PAGE_SIZE:]
    runs = list(db.scalars(select(Run).where(Run.id.in_(run_ids)).order_by(Run.pk.desc())))
    evaluations = list(
        db.scalars(select(Evaluation).where(Evaluation.test_sha256 == dataset.sha256).order_by(Evaluation.pk.desc()))
    )
    return templates.TemplateResponse(request, "dataset.html", {
        "dataset": dataset, "runs": runs, "n_runs": len(used.get(dataset.sha256, [])), "evaluations": evaluations,
        "summary": json.dumps(dataset.summary, indent=2), "nav": "datasets",
    })  # fmt: skip


@pages.get("/evals", response_class=HTMLResponse)
def evals_page(request: Request, page: int = Query(1, ge=1), db: Session = Depends(get_db)):
    evaluations = list(
        db.scalars(select(Evaluation).order_by(Evaluation.pk.desc()).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE))
    )
    models: dict[int, list[tuple[str, Any]]] = {}
    if evaluations:
        for eval_pk, name, summary in db.execute(
            select(EvaluationModel.evaluation_pk, EvaluationModel.name, EvaluationModel.summary)
            .where(EvaluationModel.evaluation_pk.in_([e.pk for e in evaluations]))
            .order_by(EvaluationModel.position)
        ):
            models.setdefault(eval_pk, []).append((name, summary))
    total = db.scalar(select(func.count()).select_from(Evaluation))
    return templates.TemplateResponse(request, "evals.html", {
        "evaluations": evaluations, "models": models, "page": page,
        "pages": max(1, math.ceil(total / PAGE_SIZE)), "nav": "evals",
    })  # fmt: skip


def _summary_columns(models: list[EvaluationModel]) -> list[str]:
    """The numeric aggregate metrics any model has, in a stable order."""
    keys = dict.fromkeys(k for m in models for k, v in m.summary.items() if isinstance(v, int | float) and k != "n")
    return list(keys)


@pages.get("/evals/{eval_id}", response_class=HTMLResponse)
def eval_page(request: Request, eval_id: str, page: int = Query(1, ge=1), db: Session = Depends(get_db)):
    evaluation = db.scalar(select(Evaluation).where(Evaluation.id == eval_id))
    if evaluation is None:
        raise PageNotFound(f"no evaluation {eval_id}")
    models = evaluation.models
    columns = _summary_columns(models)
    runs = {r.pk: r.id for r in db.scalars(select(Run).where(Run.pk.in_([m.run_pk for m in models if m.run_pk])))}
    headline = evaluation.headline if evaluation.headline in columns else (columns[0] if columns else None)
    bars = {"labels": [m.name for m in models], "values": [m.summary.get(headline) for m in models],
            "max": 1.0 if all(0 <= (m.summary.get(headline) or 0) <= 1 for m in models) else None}  # fmt: skip
    start = (page - 1) * EXAMPLES_PER_PAGE
    examples = []
    for index in range(start, min(evaluation.n_examples, start + EXAMPLES_PER_PAGE)):
        first = models[0].examples[index] if models else {}
        examples.append({
            "index": index, "line": first.get("line"), "prompt": first.get("prompt"),
            "reference": first.get("reference"),
            "outputs": [(m.examples[index]["output"], m.examples[index]["scores"].get(evaluation.headline))
                        for m in models if index < len(m.examples)],
        })  # fmt: skip
    intervals = [{k: c[k] for k in ("a", "b", "metric", "difference", "ci_low", "ci_high")}
                 for c in evaluation.comparisons]  # fmt: skip
    return templates.TemplateResponse(request, "eval.html", {
        "evaluation": evaluation, "models": models, "columns": columns, "runs": runs, "headline": headline,
        "bars": _script_json(bars), "intervals": _script_json(intervals), "examples": examples, "page": page,
        "pages": max(1, math.ceil(evaluation.n_examples / EXAMPLES_PER_PAGE)), "nav": "evals",
        "judgements": json.dumps(evaluation.judgements, indent=2) if evaluation.judgements else None,
    })  # fmt: skip


# JSON for the live parts -------------------------------------------------------------------------------------------
@pages.get("/dashboard/api/runs")
def api_runs(ids: str = "", db: Session = Depends(get_db)) -> dict:
    """Status and newest numbers of the given runs (comma-separated ids), or of the newest page of runs."""
    wanted = [i for i in ids.split(",") if i][:PAGE_SIZE]
    if wanted:
        rows = run_rows(db, list(db.scalars(select(Run).where(Run.id.in_(wanted)))))
    else:
        rows = list_runs(db, limit=PAGE_SIZE)
    return {"runs": [r.to_dict() for r in rows]}


@pages.get("/dashboard/api/runs/{run_id}/metrics")
def api_run_metrics(run_id: str, after: int = Query(0, ge=0), db: Session = Depends(get_db)) -> dict:
    """Metric rows after step `after` (the page sends the last step it has) and the run's status."""
    run = _run_or_404(db, run_id)
    status = db.scalar(select(Job.status).where(Job.run_pk == run.pk)) or run.status
    total = (run.artifacts or {}).get("total_steps") or db.scalar(
        select(func.max(RunMetric.total_steps)).where(RunMetric.run_pk == run.pk)
    )
    return {"id": run.id, "status": status, "total_steps": total, "metrics": run_metrics(db, run, after_step=after)}


router.include_router(pages)
