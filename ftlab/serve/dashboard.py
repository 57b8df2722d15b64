"""The dashboard `ftlab serve` shows at `/`: jobs and runs with live loss curves, checkpoints, datasets,
evaluations, sweeps and a side-by-side view of runs.

Choice: server-rendered Jinja2 pages plus one small vanilla-JS file that draws the charts as inline SVG and
polls a JSON endpoint every 2 s while a run is active. Nothing to build, nothing fetched from a CDN (the
dashboard works offline, on the same port as the API), and every page is a plain URL that can be linked or
scraped. Pages read the records through `ftlab.records.query`; no page loads more than one page of rows.

When the server requires API keys, the dashboard does too: `/login` takes a key once and keeps it in an
HttpOnly cookie (or send `Authorization: Bearer …`). It shows the records of every project, so it takes an admin
key (`ftlab keys create --admin`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from ftlab.config import VALIDATION_LOSS, selection_column
from ftlab.records import format as fmt
from ftlab.records import query
from ftlab.records.query import ACTIVE
from ftlab.records.tables import ApiKey, Dataset, EvaluationModel, Run
from ftlab.serve import auth
from ftlab.serve.auth import request_db as get_db
from ftlab.serve.errors import APIError

PAGE_SIZE = 50
EXAMPLES_PER_PAGE = 25
COOKIE = "ftlab_key"
T = TypeVar("T")
STATIC = Path(__file__).with_name("static")
templates = Jinja2Templates(directory=Path(__file__).with_name("templates") / "dashboard")
templates.env.filters.update(when=fmt.when, value=fmt.value)
templates.env.globals.update(duration=fmt.duration, ACTIVE=ACTIVE)


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
        key = _admin_key(db, header)
    except APIError:
        if request.url.path.startswith("/dashboard/api/"):
            raise HTTPException(401, "an admin API key is required") from None
        raise LoginRequired from None
    db.commit()
    auth.note_use(key)


def _admin_key(db: Session, header: str | None) -> ApiKey:
    key = auth.check_authorization(db, header)
    if not key.admin:
        raise APIError(403, "the dashboard shows every project's records: it takes an admin key")
    return key


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
        _admin_key(db, f"Bearer {key}")
    except APIError as exc:
        reason = "That key is not an admin key" if exc.status == 403 else "That key is not valid"
        return RedirectResponse(f"/login?error={reason.replace(' ', '+')}", status_code=303)
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
def _pages(total: int, size: int = PAGE_SIZE) -> int:
    return max(1, math.ceil(total / size))


@pages.get("/", response_class=HTMLResponse)
def index(request: Request, page: int = Query(1, ge=1), status: str | None = None, db: Session = Depends(get_db)):
    rows = query.list_runs(db, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, status=status or None)
    total = query.count_runs(db, status or None)
    return templates.TemplateResponse(request, "index.html", {
        "rows": rows, "page": page, "pages": _pages(total), "total": total, "status": status,
        "counts": query.status_counts(db), "nav": "runs",
    })  # fmt: skip


def _or_404(find: Callable[[Session, str], T], db: Session, key: str) -> T:
    """`find(db, key)` from `records.query`, its LookupError (which names what is missing) as a 404 page."""
    try:
        return find(db, key)
    except LookupError as exc:
        raise PageNotFound(exc.args[0]) from None


def _run_or_404(db: Session, ref: str) -> Run:
    return _or_404(query.find_run, db, ref)


@pages.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, db: Session = Depends(get_db)):
    run = _run_or_404(db, run_id)
    job = query.run_job(db, run)
    metric = selection_column(run.settings.get("select_by", VALIDATION_LOSS))
    return templates.TemplateResponse(request, "run.html", {
        "run": run, "row": query.run_row(db, run), "job": job, "events": query.job_events(db, job),
        "metric": None if metric == VALIDATION_LOSS else metric,
        "datasets": query.run_datasets(db, run), "evaluations": query.run_evaluations(db, run), "nav": "runs",
    })  # fmt: skip


@pages.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, run: list[str] = Query(default=[]), db: Session = Depends(get_db)):
    runs = [_run_or_404(db, ref) for ref in dict.fromkeys(run)]
    table = query.comparison(db, runs) if runs else []
    rows = [(section, name, values, query.differs(values)) for section, name, values in table]
    return templates.TemplateResponse(request, "compare.html", {
        "runs": runs, "rows": rows, "run_ids": json.dumps([r.id for r in runs]), "nav": "compare",
    })  # fmt: skip


@pages.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, page: int = Query(1, ge=1), db: Session = Depends(get_db)):
    used, tested = query.dataset_usage(db)
    return templates.TemplateResponse(request, "datasets.html", {
        "datasets": query.list_datasets(db, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE), "used": used,
        "tested": tested, "page": page, "pages": _pages(query.count(db, Dataset)), "nav": "datasets",
    })  # fmt: skip


@pages.get("/datasets/{sha256}", response_class=HTMLResponse)
def dataset_page(request: Request, sha256: str, db: Session = Depends(get_db)):
    dataset = _or_404(query.find_dataset, db, sha256)
    runs, n_runs = query.dataset_runs(db, dataset, limit=PAGE_SIZE)
    return templates.TemplateResponse(request, "dataset.html", {
        "dataset": dataset, "runs": runs, "n_runs": n_runs, "evaluations": query.dataset_evaluations(db, dataset),
        "summary": json.dumps(dataset.summary, indent=2), "nav": "datasets",
    })  # fmt: skip


@pages.get("/evals", response_class=HTMLResponse)
def evals_page(request: Request, page: int = Query(1, ge=1), kind: str | None = None, db: Session = Depends(get_db)):
    evaluations = query.list_evaluations(db, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, kind=kind or None)
    return templates.TemplateResponse(request, "evals.html", {
        "evaluations": evaluations, "models": query.evaluation_models(db, evaluations), "page": page,
        "pages": _pages(query.count_evaluations(db, kind or None)), "kind": kind, "nav": "evals",
    })  # fmt: skip


def _curve_chart(curve: dict[str, Any] | None) -> str | None:
    """The learning curve of a comparison as `lineChart` series: the mean and its 95% interval."""
    points = [p for p in (curve or {}).get("points", []) if p.get("mean") is not None]
    if not points:
        return None
    def line(key: str) -> list[list[float]]:
        return [[p["n"], p[key]] for p in points]

    series = [{"name": curve["metric"], "color": "#1f77b4", "dots": True, "points": line("mean")},
              {"name": "95% low", "color": "#9aa5b1", "dashed": True, "points": line("ci_low")},
              {"name": "95% high", "color": "#9aa5b1", "dashed": True, "points": line("ci_high")}]
    return _script_json({"series": series, "opts": {"xlabel": "training examples", "title": "learning curve"}})


def _summary_columns(models: list[EvaluationModel]) -> list[str]:
    """The numeric aggregate metrics any model has, in a stable order."""
    keys = dict.fromkeys(k for m in models for k, v in m.summary.items() if isinstance(v, int | float) and k != "n")
    return list(keys)


@pages.get("/evals/{eval_id}", response_class=HTMLResponse)
def eval_page(request: Request, eval_id: str, page: int = Query(1, ge=1), db: Session = Depends(get_db)):
    evaluation = _or_404(query.find_evaluation, db, eval_id)
    models = evaluation.models
    columns = _summary_columns(models)
    runs = query.run_ids(db, [m.run_pk for m in models if m.run_pk])
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
    details = evaluation.details if evaluation.kind == "compare" else None
    return templates.TemplateResponse(request, "eval.html", {
        "evaluation": evaluation, "details": details, "curve": _curve_chart((details or {}).get("learning_curve")),
        "models": models, "columns": columns, "runs": runs, "headline": headline,
        "bars": _script_json(bars), "intervals": _script_json(intervals), "examples": examples, "page": page,
        "pages": _pages(evaluation.n_examples, EXAMPLES_PER_PAGE), "nav": "evals",
        "judgements": json.dumps(evaluation.judgements, indent=2) if evaluation.judgements else None,
    })  # fmt: skip


STUDY_PICTURES = {"importance.png": "parameter importance", "parallel.png": "parallel coordinates"}


@pages.get("/studies", response_class=HTMLResponse)
def studies_page(request: Request, db: Session = Depends(get_db)):
    return templates.TemplateResponse(request, "studies.html", {"studies": query.list_studies(db), "nav": "studies"})


@pages.get("/studies/{name}", response_class=HTMLResponse)
def study_page(request: Request, name: str, db: Session = Depends(get_db)):
    """A sweep: its best trial, the metric by trial, the pictures of its report, and every trial with its run."""
    study = _or_404(query.find_study, db, name)
    trials = query.study_trials(db, name)
    best = next((t for t in trials if t["number"] == study.best_trial), None)
    done = [t for t in trials if t["state"] in ("complete", "pruned") and t["value"] is not None]
    chart = {"metric": study.metric, "direction": study.direction,
             "complete": [[t["number"], t["value"]] for t in done if t["state"] == "complete"],
             "pruned": [[t["number"], t["value"]] for t in done if t["state"] == "pruned"]}  # fmt: skip
    report = Path(study.attrs.get("report_dir", ""))
    pictures = [(file, title) for file, title in STUDY_PICTURES.items() if (report / file).is_file()]
    params = list(study.attrs.get("space") or dict.fromkeys(p for t in trials for p in t["params"]))
    return templates.TemplateResponse(request, "study.html", {
        "study": study, "trials": trials, "best": best, "params": params, "chart": _script_json(chart),
        "pictures": pictures, "nav": "studies",
    })  # fmt: skip


@pages.get("/studies/{name}/{picture}")
def study_picture(name: str, picture: str, db: Session = Depends(get_db)) -> FileResponse:
    """A picture of the study's report (drawn by `ftlab sweep` into its report folder)."""
    path = Path(_or_404(query.find_study, db, name).attrs.get("report_dir", "")) / picture
    if picture not in STUDY_PICTURES or not path.is_file():
        raise HTTPException(404)
    return FileResponse(path)


# JSON for the live parts -------------------------------------------------------------------------------------------
@pages.get("/dashboard/api/runs")
def api_runs(ids: str = "", db: Session = Depends(get_db)) -> dict:
    """Status and newest numbers of the given runs (comma-separated ids), or of the newest page of runs."""
    wanted = [i for i in ids.split(",") if i][:PAGE_SIZE]
    rows = query.list_runs(db, limit=PAGE_SIZE, ids=wanted or None)
    return {"runs": [r.to_dict() for r in rows]}


@pages.get("/dashboard/api/runs/{run_id}/metrics")
def api_run_metrics(run_id: str, after: int = Query(0, ge=0), db: Session = Depends(get_db)) -> dict:
    """Metric rows after step `after` (the page sends the last step it has) and the run's status."""
    return query.live_metrics(db, _run_or_404(db, run_id), after_step=after)


router.include_router(pages)
