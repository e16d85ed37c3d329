"""The browser UI: HTMX pages (ask, history, dashboards, schema). htmx is vendored under /static; no CDN.

Every page and post needs a login (`/login`, a session cookie) or an API key header; a key with a table allow-list
sees only its tables, on every page and in what the model is shown. Every answer has a link that reproduces it
(`/?q=…&sql=…`: the SQL runs again through the guard), can be saved under a name (`/history` lists them), paged
past the row cap and downloaded as CSV (`/api/export.csv`).
"""

import contextlib
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from anyio import to_thread
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.api.deps import (
    BatcherDep,
    ExecutorDep,
    MetricsDep,
    PrompterDep,
    QueryLogDep,
    ServiceDep,
    SettingsDep,
    UiLimitedPrincipalDep,
    UiPrincipalDep,
)
from app.auth.principal import Principal
from app.nl2sql.batcher import QueueFull
from app.nl2sql.examples import example_questions
from app.nl2sql.outcome import Outcome
from app.nl2sql.prompter import Prompter
from app.nl2sql.service import InvalidQuestion
from app.querylog.store import QueryLogUnavailable
from app.sql.executor import ExecutionError, Executor
from app.ui.charts import bucket_chart, result_chart
from app.ui.present import cell, columns_of, plain_message, pretty_sql
from app.ui.rows import RowsError, count_sql, page_sql, run_guarded

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parents[2] / "templates")


async def _examples(prompter: Prompter, principal: Principal) -> list[str]:
    try:
        return example_questions(await to_thread.run_sync(prompter.schema, principal.tables))
    except Exception:
        return []


def _page(request: Request, name: str, principal: Principal, context: dict) -> HTMLResponse:
    """A full page; `principal` lets the nav show who is logged in and a logout button."""
    return templates.TemplateResponse(request, name, {"principal": principal, **context})


def answer_link(question: str | None, sql: str | None) -> str:
    """The URL that reproduces an answer: the question (shown) and its SQL (run again through the guard)."""
    return "/?" + urlencode({k: v for k, v in (("q", question), ("sql", sql)) if v})


def _total(executor: Executor, out: Outcome, tables) -> int | None:
    """The row count without the cap, for an answer the cap cut; None when it cannot be counted."""
    try:
        sql, offset = count_sql(out.sql or "", executor.dialect)
        res = run_guarded(sql, executor, 1, tables)
        return max(int(res.rows[0][0]) - offset, 0)
    except (RowsError, ExecutionError, IndexError, TypeError, ValueError):
        return None


def _view(executor: Executor, out: Outcome, tables, question: str | None) -> dict:
    """What the result partial shows beyond the outcome itself (run in a worker thread: it parses and may count)."""
    columns = columns_of(out.columns, out.rows)
    message, detail = plain_message(out.category, out.message)
    ran = out.ran
    total = _total(executor, out, tables) if out.truncated else None
    question = out.question or question
    return {
        "columns": columns,
        "cells": [[cell(v, c) for v, c in zip(r, columns, strict=True)] for r in out.rows],
        "chart": result_chart(out.columns, out.rows) if out.rows else None,
        "message": message,
        "detail": detail,
        "sql": pretty_sql(out.sql, executor.dialect) if ran else out.sql,
        "ran": ran,
        "question": question,
        "link": answer_link(question, out.sql) if ran else None,
        "total": total,
        "more": bool(out.truncated and (total is None or total > len(out.rows))),
    }


async def _result(
    request: Request,
    executor: Executor,
    principal: Principal,
    out: Outcome | None,
    error: str | None = None,
    question: str | None = None,
) -> HTMLResponse:
    view = await to_thread.run_sync(_view, executor, out, principal.tables, question) if out else None
    return templates.TemplateResponse(request, "_result.html", {"out": out, "error": error, "v": view})


def error_fragment(request: Request, message: str, status_code: int = 200, headers: dict | None = None) -> Response:
    """The result fragment with an error notice (base.html tells htmx to swap 429s in too)."""
    return templates.TemplateResponse(
        request,
        "_result.html",
        {"out": None, "error": message, "v": None},
        status_code=status_code,
        headers=headers,
    )


def wants_html(request: Request) -> bool:
    """A browser navigating (Accept names text/html), not an API client or a script's fetch."""
    return "text/html" in request.headers.get("accept", "")


def not_found(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "404.html", {"principal": None, "page": None}, status_code=404)


CANCELLED = "Cancelled: the question was stopped before it was answered."
Text = Annotated[str, Query(max_length=20_000)]


@router.get("/", response_class=HTMLResponse)
async def index(
    request: Request,
    service: ServiceDep,
    executor: ExecutorDep,
    prompter: PrompterDep,
    principal: UiPrincipalDep,
    q: Text = "",
    sql: Text = "",
) -> HTMLResponse:
    """The ask page; `q` fills the question box and `sql` runs at once (an answer's link, a saved question)."""
    return _page(
        request,
        "index.html",
        principal,
        {
            "examples": await _examples(prompter, principal),
            "model_id": service.model_id,
            "dialect": executor.dialect,
            "page": "ask",
            "q": q,
            "rerun_sql": sql.strip(),
        },
    )


@router.post("/ui/ask", response_class=HTMLResponse)
async def ask(
    request: Request,
    service: ServiceDep,
    executor: ExecutorDep,
    metrics: MetricsDep,
    principal: UiLimitedPrincipalDep,
    question: str = Form(""),
    rid: str = Form(""),
) -> HTMLResponse:
    out = None
    try:
        with request.app.state.progress.track(principal.rate_key, rid) as progress:
            out = await service.ask(question, principal.tables)
    except InvalidQuestion as exc:
        return await _result(request, executor, principal, None, str(exc))
    except QueueFull:
        metrics.shed.inc()
        return await _result(
            request, service, principal, None, "The model is busy right now. Try again in a few seconds."
        )
    if progress.cancelled or out is None:
        return await _result(request, executor, principal, None, CANCELLED)
    return await _result(request, executor, principal, out)


@router.post("/ui/sql", response_class=HTMLResponse)
async def run_sql(
    request: Request,
    service: ServiceDep,
    executor: ExecutorDep,
    principal: UiLimitedPrincipalDep,
    sql: str = Form(""),
    question: str = Form(""),
    rid: str = Form(""),
) -> HTMLResponse:
    """Run SQL the user edited (or an answer's link re-runs); `question` is only shown with it, never asked."""
    if not sql.strip():
        return await _result(request, executor, principal, None, "The SQL is empty.")
    out = None
    with request.app.state.progress.track(principal.rate_key, rid) as progress:
        progress.stage = "running"
        out = await service.run_sql(sql, principal.tables)
    if progress.cancelled or out is None:
        return await _result(request, executor, principal, None, CANCELLED)
    return await _result(request, executor, principal, out, question=question.strip()[:2000] or None)


@router.get("/ui/rows", response_class=HTMLResponse)
async def more_rows(
    request: Request,
    executor: ExecutorDep,
    settings: SettingsDep,
    principal: UiLimitedPrincipalDep,
    sql: Annotated[str, Query(min_length=1, max_length=20_000)],
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    """The next `row_limit` rows of an answer (`page` 1 = the second page), as table rows to append."""
    cap, dialect = settings.row_limit, executor.dialect
    try:
        paged = page_sql(sql, dialect, page, cap)
        res = await to_thread.run_sync(run_guarded, paged, executor, cap, principal.tables)
    except (RowsError, ExecutionError) as exc:
        return error_fragment(request, str(exc) if isinstance(exc, RowsError) else exc.message)
    columns = columns_of(res.columns, res.rows)
    ctx = {
        "columns": columns,
        "cells": [[cell(v, c) for v, c in zip(r, columns, strict=True)] for r in res.rows],
        "next": page + 1 if len(res.rows) == cap else None,
        "sql": sql,
    }
    return templates.TemplateResponse(request, "_rows.html", ctx)


@router.get("/history", response_class=HTMLResponse)
async def history(
    request: Request, service: ServiceDep, querylog: QueryLogDep, principal: UiPrincipalDep
) -> HTMLResponse:
    """This key's recent questions (from the query log; never another key's) and its saved questions."""
    ctx = {"page": "history", "model_id": service.model_id, "link": answer_link}
    try:
        ctx["rows"] = await to_thread.run_sync(querylog.history, principal.name, 50)
        ctx["saved"] = await to_thread.run_sync(querylog.saved, principal.name)
    except QueryLogUnavailable as exc:
        response = _page(request, "history.html", principal, ctx | {"unavailable": str(exc)})
        response.status_code = 503
        return response
    return _page(request, "history.html", principal, ctx)


@router.post("/ui/saved", response_class=HTMLResponse)
async def save_question(
    request: Request,
    querylog: QueryLogDep,
    principal: UiPrincipalDep,
    name: str = Form(""),
    question: str = Form(""),
    sql: str = Form(""),
) -> HTMLResponse:
    name, sql = name.strip(), sql.strip()
    if not name or len(name) > 120:
        message = "Give the question a name (at most 120 characters)."
    elif not sql or len(sql) > 20_000:
        message = "Only an answer with SQL can be saved."
    else:
        try:
            await to_thread.run_sync(querylog.save, principal.name, name, question.strip()[:2000] or None, sql)
            message = f"Saved as “{name}”: it is listed under History."
        except QueryLogUnavailable as exc:
            message = str(exc)
    return templates.TemplateResponse(request, "_saved.html", {"message": message})


@router.post("/ui/saved/{saved_id}/delete")
async def delete_saved(saved_id: int, querylog: QueryLogDep, principal: UiPrincipalDep) -> Response:
    with contextlib.suppress(QueryLogUnavailable):  # the list it goes back to shows whether it is gone
        await to_thread.run_sync(querylog.delete_saved, principal.name, saved_id)
    return RedirectResponse("/history", status_code=303)


@router.get("/dashboards", response_class=HTMLResponse)
async def dashboards(
    request: Request,
    service: ServiceDep,
    querylog: QueryLogDep,
    batcher: BatcherDep,
    principal: UiPrincipalDep,
    hours: int = 24,
) -> HTMLResponse:
    hours = max(1, min(hours, 24 * 30))
    try:
        data = await to_thread.run_sync(lambda: querylog.dashboard(hours=hours))
        # Other keys' questions and SQL would name tables a restricted key may not see: it gets the aggregates only.
        restricted = principal.tables is not None
        recent = [] if restricted else await to_thread.run_sync(lambda: querylog.recent(15))
    except QueryLogUnavailable as exc:  # answers still flow; only their history is out of reach for now
        ctx = {"unavailable": str(exc), "hours": hours, "page": "dashboards", "model_id": service.model_id}
        response = _page(request, "dashboards.html", principal, ctx)
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return response
    series = data["series"]
    lat_top = max([s["p95_ms"] for s in series if s["p95_ms"] is not None] or [1.0])
    charts = {
        "success": bucket_chart(series, "success_rate", top=1.0),
        "p50": bucket_chart(series, "p50_ms", top=lat_top),
        "p95": bucket_chart(series, "p95_ms", top=lat_top),
    }
    return _page(
        request,
        "dashboards.html",
        principal,
        {
            "d": data,
            "charts": charts,
            "bucket_label": _duration(hours * 60 / len(series)),
            "recent": recent,
            "batching": batcher.stats.as_dict(),
            "hours": hours,
            "recent_hidden": principal.tables is not None,
            "page": "dashboards",
            "model_id": service.model_id,
        },
    )


def _duration(minutes: float) -> str:
    return f"{minutes / 60:g} h" if minutes >= 60 else f"{minutes:g} min"


@router.get("/schema", response_class=HTMLResponse)
async def schema(
    request: Request, service: ServiceDep, prompter: PrompterDep, principal: UiPrincipalDep
) -> HTMLResponse:
    try:
        s = await to_thread.run_sync(prompter.schema, principal.tables)
        error = None
    except Exception:
        s, error = None, "The database is unavailable: its schema cannot be read."
    prompt_text = "" if s is None else prompter.schema_text(principal.tables)
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
