"""The UI of what Querywise learns: 👍/👎 under every answer (`/ui/feedback`), the glossary page (`/glossary`,
edited as YAML, downloadable), and the verified examples page (`/examples`: list, edit, delete).

The same functions as the JSON API (`app.api.routes.knowledge`) do the work, so the allow-list, the guard and the
size limits apply alike; every value reaches the page through Jinja's autoescaping.
"""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.api.deps import KnowledgePartsDep, ServiceDep, UiLimitedPrincipalDep, UiPrincipalDep
from app.api.routes.knowledge import delete_example, edit_example, read_glossary, visible_examples, write_glossary
from app.api.routes.ui import _page, templates
from app.knowledge import glossary
from app.knowledge.examples import ExampleError
from app.knowledge.feedback import FeedbackError, give
from app.knowledge.store import KnowledgeUnavailable

router = APIRouter(include_in_schema=False)
MAX_YAML = 200_000


def _fragment(request: Request, name: str, context: dict, status_code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


@router.post("/ui/feedback", response_class=HTMLResponse)
async def feedback(
    request: Request,
    kb: KnowledgePartsDep,
    principal: UiLimitedPrincipalDep,
    answer_id: str = Form(""),
    verdict: str = Form(""),
    sql: str = Form(""),
) -> HTMLResponse:
    try:
        res = await to_thread.run_sync(give, kb, answer_id, verdict, sql or None, principal.tables)
        ctx = {"ok": True, "message": res.message, "example_id": res.example_id, "verdict": res.verdict}
    except FeedbackError as exc:
        ctx = {"ok": False, "message": exc.message}
    except KnowledgeUnavailable as exc:
        ctx = {"ok": False, "message": str(exc)}
    return _fragment(request, "_feedback_status.html", ctx)


async def _glossary_context(kb, principal, message: str | None = None, error: str | None = None, text=None):
    try:
        entries = await to_thread.run_sync(read_glossary, kb, principal.tables)
    except Exception:  # KnowledgeUnavailable, or the schema (for a restricted key)
        return {"entries": [], "yaml": text or "", "error": error or "The glossary cannot be read right now."}
    return {"entries": entries, "yaml": glossary.to_yaml(entries) if text is None else text, "message": message}


@router.get("/glossary", response_class=HTMLResponse)
async def glossary_page(
    request: Request, kb: KnowledgePartsDep, service: ServiceDep, principal: UiPrincipalDep
) -> HTMLResponse:
    ctx = await _glossary_context(kb, principal)
    return _page(request, "glossary.html", principal, ctx | {"page": "glossary", "model_id": service.model_id})


@router.post("/ui/glossary", response_class=HTMLResponse)
async def save_glossary(
    request: Request, kb: KnowledgePartsDep, principal: UiPrincipalDep, yaml_text: str = Form("", alias="yaml")
) -> HTMLResponse:
    if len(yaml_text) > MAX_YAML:
        return _fragment(request, "_glossary.html", await _glossary_context(kb, principal, error="Too long."))
    try:
        entries = glossary.parse_yaml(yaml_text)
        saved = await to_thread.run_sync(write_glossary, kb, entries, principal.tables)
    except glossary.GlossaryError as exc:  # the text stays in the editor, to be fixed
        ctx = await _glossary_context(kb, principal, text=yaml_text)
        return _fragment(request, "_glossary.html", ctx | {"error": str(exc), "message": None})
    except Exception:
        ctx = await _glossary_context(kb, principal, text=yaml_text)
        return _fragment(request, "_glossary.html", ctx | {"error": "The glossary could not be saved right now."})
    ctx = await _glossary_context(kb, principal, message=f"Saved: {len(saved)} entries.")
    return _fragment(request, "_glossary.html", ctx)


@router.get("/examples", response_class=HTMLResponse)
async def examples_page(
    request: Request, kb: KnowledgePartsDep, service: ServiceDep, principal: UiPrincipalDep
) -> HTMLResponse:
    try:
        rows, error = await to_thread.run_sync(visible_examples, kb, principal.tables), None
    except KnowledgeUnavailable as exc:
        rows, error = [], str(exc)
    ctx = {"examples": rows, "error": error, "page": "examples", "model_id": service.model_id}
    return _page(request, "examples.html", principal, ctx)


@router.post("/ui/examples/{example_id}", response_class=HTMLResponse)
async def save_example(
    request: Request,
    example_id: int,
    kb: KnowledgePartsDep,
    principal: UiPrincipalDep,
    question: str = Form(""),
    sql: str = Form(""),
) -> HTMLResponse:
    ctx = {"e": {"id": example_id, "question": question, "sql": sql, "tables": [], "source": "edited"}}
    try:
        row = await to_thread.run_sync(edit_example, kb, example_id, question, sql, principal.tables)
    except ExampleError as exc:
        return _fragment(request, "_example.html", ctx | {"error": str(exc)})
    except KnowledgeUnavailable as exc:
        return _fragment(request, "_example.html", ctx | {"error": str(exc)})
    if row is None:
        return _fragment(request, "_example.html", ctx | {"error": "This example no longer exists."})
    return _fragment(request, "_example.html", {"e": row, "message": "Saved."})


@router.post("/ui/examples/{example_id}/delete")
async def remove_example(example_id: int, kb: KnowledgePartsDep, principal: UiPrincipalDep) -> Response:
    try:
        await to_thread.run_sync(delete_example, kb, example_id, principal.tables)
    except KnowledgeUnavailable as exc:
        return Response(str(exc), status_code=503)
    return HTMLResponse("")  # htmx swaps the example's card out
