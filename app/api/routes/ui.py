"""The browser UI: HTMX pages (ask, dashboards, schema). htmx is vendored under /static; no CDN."""

from pathlib import Path

from anyio import to_thread
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.api.deps import MetricsDep, ServiceDep, SettingsDep
from app.nl2sql.batcher import QueueFull
from app.nl2sql.examples import example_questions
from app.nl2sql.service import Outcome
from app.ui.charts import bar_chart, line_chart

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parents[2] / "templates")


async def _examples(service) -> list[str]:
    try:
        return example_questions(await to_thread.run_sync(lambda: service.catalog.schema))
    except Exception:
        return []


def _result(request: Request, out: Outcome | None, error: str | None = None) -> HTMLResponse:
    chart = bar_chart(out.columns, out.rows) if out and out.rows else None
    return templates.TemplateResponse(request, "_result.html", {"out": out, "error": error, "chart": chart})


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, service: ServiceDep) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "index.html",
        {
            "examples": await _examples(service),
            "model_id": service.model_id,
            "dialect": service.executor.dialect,
            "page": "ask",
        },
    )


@router.post("/ui/ask", response_class=HTMLResponse)
async def ask(
    request: Request, service: ServiceDep, settings: SettingsDep, metrics: MetricsDep, question: str = Form("")
) -> HTMLResponse:
    question = question.strip()
    if not question:
        return _result(request, None, "Type a question first.")
    if len(question) > settings.question_max_chars:
        return _result(request, None, f"The question is too long (at most {settings.question_max_chars} characters).")
    try:
        return _result(request, await service.ask(question))
    except QueueFull:
        metrics.shed.inc()
        return _result(request, None, "The model is busy right now. Try again in a few seconds.")


@router.post("/ui/sql", response_class=HTMLResponse)
async def run_sql(request: Request, service: ServiceDep, sql: str = Form("")) -> HTMLResponse:
    if not sql.strip():
        return _result(request, None, "The SQL is empty.")
    return _result(request, await service.run_sql(sql))


@router.get("/dashboards", response_class=HTMLResponse)
async def dashboards(request: Request, service: ServiceDep, hours: int = 24) -> HTMLResponse:
    hours = max(1, min(hours, 24 * 30))
    data = await to_thread.run_sync(lambda: service.querylog.dashboard(hours=hours))
    recent = await to_thread.run_sync(lambda: service.querylog.recent(15))
    series = data["series"]
    lat_top = max([s["p95_ms"] for s in series if s["p95_ms"] is not None] or [1.0])
    charts = {
        "success": line_chart([s["success_rate"] for s in series], top=1.0),
        "p50": line_chart([s["p50_ms"] for s in series], top=lat_top),
        "p95": line_chart([s["p95_ms"] for s in series], top=lat_top),
    }
    return templates.TemplateResponse(
        request,
        "dashboards.html",
        {
            "d": data,
            "charts": charts,
            "recent": recent,
            "batching": service.batcher.stats.as_dict(),
            "hours": hours,
            "page": "dashboards",
            "model_id": service.model_id,
        },
    )


@router.get("/schema", response_class=HTMLResponse)
async def schema(request: Request, service: ServiceDep) -> HTMLResponse:
    try:
        s = await to_thread.run_sync(lambda: service.catalog.schema)
        error = None
    except Exception:
        s, error = None, "The database is unavailable: its schema cannot be read."
    return templates.TemplateResponse(
        request,
        "schema.html",
        {
            "schema": s,
            "error": error,
            "prompt_text": service.catalog.text if s else "",
            "page": "schema",
            "model_id": service.model_id,
        },
    )
