"""The browser UI: HTMX pages (ask, dashboards, schema). htmx is vendored under /static; no CDN.

Every page and post needs a login (`/login`, a session cookie) or an API key header; a key with a table allow-list
sees only its tables, on every page and in what the model is shown.
"""

from pathlib import Path

from anyio import to_thread
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from app.api.deps import MetricsDep, ServiceDep, UiLimitedPrincipalDep, UiPrincipalDep
from app.auth.principal import Principal
from app.nl2sql.batcher import QueueFull
from app.nl2sql.examples import example_questions
from app.nl2sql.prompt import format_schema
from app.nl2sql.service import InvalidQuestion, Outcome
from app.querylog.store import QueryLogUnavailable
from app.ui.charts import bar_chart, line_chart

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parents[2] / "templates")


async def _examples(service, principal: Principal) -> list[str]:
    try:
        return example_questions(await to_thread.run_sync(service.schema_for, principal.tables))
    except Exception:
        return []


def _page(request: Request, name: str, principal: Principal, context: dict) -> HTMLResponse:
    """A full page; `principal` lets the nav show who is logged in and a logout button."""
    return templates.TemplateResponse(request, name, {"principal": principal, **context})


def _result(request: Request, out: Outcome | None, error: str | None = None) -> HTMLResponse:
    chart = bar_chart(out.columns, out.rows) if out and out.rows else None
    return templates.TemplateResponse(request, "_result.html", {"out": out, "error": error, "chart": chart})


def error_fragment(request: Request, message: str, status_code: int = 200, headers: dict | None = None) -> Response:
    """The result fragment with an error notice (base.html tells htmx to swap 429s in too)."""
    return templates.TemplateResponse(
        request,
        "_result.html",
        {"out": None, "error": message, "chart": None},
        status_code=status_code,
        headers=headers,
    )


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, service: ServiceDep, principal: UiPrincipalDep) -> HTMLResponse:
    return _page(
        request,
        "index.html",
        principal,
        {
            "examples": await _examples(service, principal),
            "model_id": service.model_id,
            "dialect": service.executor.dialect,
            "page": "ask",
        },
    )


@router.post("/ui/ask", response_class=HTMLResponse)
async def ask(
    request: Request,
    service: ServiceDep,
    metrics: MetricsDep,
    principal: UiLimitedPrincipalDep,
    question: str = Form(""),
) -> HTMLResponse:
    try:
        return _result(request, await service.ask(question, principal.tables))
    except InvalidQuestion as exc:
        return _result(request, None, str(exc))
    except QueueFull:
        metrics.shed.inc()
        return _result(request, None, "The model is busy right now. Try again in a few seconds.")


@router.post("/ui/sql", response_class=HTMLResponse)
async def run_sql(
    request: Request, service: ServiceDep, principal: UiLimitedPrincipalDep, sql: str = Form("")
) -> HTMLResponse:
    if not sql.strip():
        return _result(request, None, "The SQL is empty.")
    return _result(request, await service.run_sql(sql, principal.tables))


@router.get("/dashboards", response_class=HTMLResponse)
async def dashboards(request: Request, service: ServiceDep, principal: UiPrincipalDep, hours: int = 24) -> HTMLResponse:
    hours = max(1, min(hours, 24 * 30))
    try:
        data = await to_thread.run_sync(lambda: service.querylog.dashboard(hours=hours))
        # Other keys' questions and SQL would name tables a restricted key may not see: it gets the aggregates only.
        restricted = principal.tables is not None
        recent = [] if restricted else await to_thread.run_sync(lambda: service.querylog.recent(15))
    except QueryLogUnavailable as exc:  # answers still flow; only their history is out of reach for now
        ctx = {"unavailable": str(exc), "hours": hours, "page": "dashboards", "model_id": service.model_id}
        response = _page(request, "dashboards.html", principal, ctx)
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return response
    series = data["series"]
    lat_top = max([s["p95_ms"] for s in series if s["p95_ms"] is not None] or [1.0])
    charts = {
        "success": line_chart([s["success_rate"] for s in series], top=1.0),
        "p50": line_chart([s["p50_ms"] for s in series], top=lat_top),
        "p95": line_chart([s["p95_ms"] for s in series], top=lat_top),
    }
    return _page(
        request,
        "dashboards.html",
        principal,
        {
            "d": data,
            "charts": charts,
            "recent": recent,
            "batching": service.batcher.stats.as_dict(),
            "hours": hours,
            "recent_hidden": principal.tables is not None,
            "page": "dashboards",
            "model_id": service.model_id,
        },
    )


@router.get("/schema", response_class=HTMLResponse)
async def schema(request: Request, service: ServiceDep, principal: UiPrincipalDep) -> HTMLResponse:
    try:
        s = await to_thread.run_sync(service.schema_for, principal.tables)
        error = None
    except Exception:
        s, error = None, "The database is unavailable: its schema cannot be read."
    prompt_text = "" if s is None else service.catalog.text if principal.tables is None else format_schema(s)
    return _page(
        request,
        "schema.html",
        principal,
        {
            "schema": s,
            "error": error,
            "prompt_text": prompt_text,
            "page": "schema",
            "model_id": service.model_id,
        },
    )
