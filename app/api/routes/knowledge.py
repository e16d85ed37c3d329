"""What Querywise knows about the business, as JSON: `GET/PUT /api/glossary` (YAML too), the verified examples
(`/api/verified-examples`), and `POST /feedback` (👍/👎 on an answer, optionally with corrected SQL).

Every route needs an API key (or a UI session). A key with a table allow-list sees and replaces only the glossary
entries about its tables, and sees, edits and stores only examples whose SQL reads its tables.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from app.api.deps import KnowledgePartsDep, LimitedPrincipalDep, PrincipalDep
from app.knowledge import glossary
from app.knowledge.examples import ExampleError, check
from app.knowledge.feedback import FeedbackError, give
from app.knowledge.parts import KnowledgeParts
from app.knowledge.store import KnowledgeUnavailable

AUTH = {
    400: {"description": "The body could not be read"},
    401: {"description": "No API key, or a wrong one"},
    413: {"description": "Body too large"},
    429: {"description": "Too many requests of this key (see Retry-After)"},
    503: {"description": "Application database unavailable"},
}
router = APIRouter(tags=["knowledge"], responses=AUTH)
# An example id as the path writes it: digits only (a lax int would take "+0.0" and answer 404 for malformed input)
ExampleId = Annotated[str, Path(pattern=r"^[0-9]{1,15}$", description="the example's id")]
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def unavailable(exc: KnowledgeUnavailable) -> HTTPException:
    return HTTPException(503, str(exc), headers={"Retry-After": "5"})


def table_names(kb: KnowledgeParts) -> list[str]:
    try:
        return [t.name for t in kb.catalog.schema.tables]
    except Exception:
        raise HTTPException(503, "The database is unavailable: its schema cannot be read.") from None


def read_glossary(kb: KnowledgeParts, allowed: Collection[str] | None) -> list[glossary.Entry]:
    names = table_names(kb) if allowed is not None else []
    entries = kb.knowledge.store.glossary(kb.knowledge.database)
    return glossary.visible(entries, allowed, names)


def write_glossary(kb: KnowledgeParts, entries: list[glossary.Entry], allowed: Collection[str] | None):
    """Replace what the key can see by `entries`; GlossaryError (-> 422) when an entry is not the key's to write."""
    schema = kb.catalog.schema
    names = [t.name for t in schema.tables]
    mine = None if allowed is None else {t.lower() for t in allowed}
    if mine is not None:  # first: a key learns nothing about the columns of tables it cannot read
        for e in entries:
            if not glossary.tables_of(e, names) <= mine:
                raise glossary.GlossaryError(f"`{e.name}` is about tables this key cannot read.")
    glossary.check_against(entries, {t.name.lower(): {c.name.lower() for c in t.columns} for t in schema.tables})
    final = kb.knowledge.store.replace_glossary(
        kb.knowledge.database,
        entries,
        keep=lambda e: mine is not None and not glossary.tables_of(e, names) <= mine,  # what the key cannot see
    )
    kb.knowledge.invalidate()
    return glossary.visible(final, allowed, names)


@router.get("/api/glossary", summary="The business glossary of the connected database")
async def get_glossary(kb: KnowledgePartsDep, principal: PrincipalDep, format: str = "json"):
    """`?format=yaml` exports it as YAML (the document `PUT` imports)."""
    if format not in ("json", "yaml"):
        raise HTTPException(422, "format: expected json or yaml.")
    try:
        entries = await to_thread.run_sync(read_glossary, kb, principal.tables)
    except KnowledgeUnavailable as exc:
        raise unavailable(exc) from None
    if format == "yaml":
        headers = {"Content-Disposition": 'attachment; filename="glossary.yaml"'}
        return PlainTextResponse(glossary.to_yaml(entries), media_type="application/yaml", headers=headers)
    return glossary.document(entries)


@router.put(
    "/api/glossary",
    summary="Replace the business glossary (JSON or YAML body)",
    responses={
        400: {"description": "The body is not UTF-8 text"},
        415: {"description": "Neither application/json nor application/yaml"},
        422: {"description": "Not a valid glossary document (the message says where)"},
    },
    openapi_extra={
        "requestBody": {
            "description": "The glossary document as JSON, or the same document as YAML (Content-Type "
            "application/yaml; `GET ?format=yaml` exports it).",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "terms": {"type": "array", "items": {"type": "object"}},
                            "columns": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                    "example": {"terms": [{"term": "revenue", "definition": "...", "sql": "SUM(x)"}]},
                }
            },
        }
    },
)
async def put_glossary(request: Request, kb: KnowledgePartsDep, principal: PrincipalDep) -> dict:
    """The body is a glossary document, `{"terms": [...], "columns": [...]}`, as JSON or (Content-Type
    `application/yaml`) YAML. A key with an allow-list replaces only the entries about its tables."""
    body = await request.body()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "The body is not UTF-8 text.") from None
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        # JSON is YAML: one parser for both keeps the two imports identical
        entries = (
            glossary.parse_yaml(text, allow_empty=False) if ctype in YAML_TYPES or ctype == "application/json" else None
        )
        if entries is None:
            raise HTTPException(415, "Send the glossary as application/json or application/yaml.")
        final = await to_thread.run_sync(write_glossary, kb, entries, principal.tables)
    except glossary.GlossaryError as exc:
        raise HTTPException(422, str(exc)) from None
    except KnowledgeUnavailable as exc:
        raise unavailable(exc) from None
    except HTTPException:
        raise
    except Exception:  # the schema could not be read to check column names
        raise HTTPException(503, "The database is unavailable: its schema cannot be read.") from None
    return glossary.document(final)


# Lengths are checked on the text as sent (stripping first let 20,000 carriage returns after one letter through the
# schema's max_length); the handlers strip and refuse blank text with their own messages.
class ExampleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: StrictStr = Field(min_length=1, max_length=10_000)
    sql: StrictStr = Field(min_length=1, max_length=20_000)


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer_id: StrictStr = Field(max_length=64, description="`answer_id` of a `POST /query` answer")
    verdict: StrictStr = Field(description="up (👍: the SQL is right) or down (👎)", examples=["down"])
    sql: StrictStr | None = Field(
        None,
        max_length=20_000,
        description="With 👎: the right SQL; it passes the guard and becomes a verified example",
    )


def visible_examples(kb: KnowledgeParts, allowed: Collection[str] | None) -> list[dict]:
    rows = kb.knowledge.store.examples(kb.knowledge.database)
    if allowed is None:
        return rows
    keep = {t.lower() for t in allowed}
    return [r for r in rows if set(r["tables"]) <= keep]


def public(row: dict) -> dict:
    keys = ("id", "question", "sql", "tables", "source", "created_at", "updated_at")
    return {k: row[k] for k in keys}


def edit_example(kb: KnowledgeParts, example_id: int, question: str, sql: str, allowed) -> dict | None:
    """The edited example, None when this key has no example with this id; ExampleError when it is refused."""
    store, db = kb.knowledge.store, kb.knowledge.database
    if example_id not in {r["id"] for r in visible_examples(kb, allowed)}:
        return None
    pair = check(
        question, sql, dialect=kb.dialect, row_limit=kb.row_limit, allowed=allowed, max_question=kb.question_max_chars
    )
    store.update_example(db, example_id, pair.question, pair.sql, pair.tables)
    kb.knowledge.invalidate()
    return store.example(db, example_id)


def delete_example(kb: KnowledgeParts, example_id: int, allowed) -> bool:
    if example_id not in {r["id"] for r in visible_examples(kb, allowed)}:
        return False
    gone = kb.knowledge.store.delete_example(kb.knowledge.database, example_id)
    kb.knowledge.invalidate()
    return gone


@router.get("/api/verified-examples", summary="Verified question/SQL pairs of the connected database")
async def list_examples(kb: KnowledgePartsDep, principal: PrincipalDep) -> dict:
    try:
        rows = await to_thread.run_sync(visible_examples, kb, principal.tables)
    except KnowledgeUnavailable as exc:
        raise unavailable(exc) from None
    return {"examples": [public(r) for r in rows]}


@router.put(
    "/api/verified-examples/{example_id}",
    summary="Edit a verified example (the SQL passes the guard)",
    responses={404: {"description": "No verified example has this id (or not one this key may see)"}},
)
async def put_example(example_id: ExampleId, body: ExampleBody, kb: KnowledgePartsDep, principal: PrincipalDep) -> dict:
    try:
        row = await to_thread.run_sync(edit_example, kb, int(example_id), body.question, body.sql, principal.tables)
    except ExampleError as exc:
        raise HTTPException(422, str(exc)) from None
    except KnowledgeUnavailable as exc:
        raise unavailable(exc) from None
    if row is None:
        raise HTTPException(404, "No verified example has this id.")
    return public(row)


@router.delete(
    "/api/verified-examples/{example_id}",
    summary="Delete a verified example",
    responses={404: {"description": "No verified example has this id (or not one this key may see)"}},
)
async def remove_example(example_id: ExampleId, kb: KnowledgePartsDep, principal: PrincipalDep) -> dict:
    try:
        gone = await to_thread.run_sync(delete_example, kb, int(example_id), principal.tables)
    except KnowledgeUnavailable as exc:
        raise unavailable(exc) from None
    if not gone:
        raise HTTPException(404, "No verified example has this id.")
    return {"deleted": int(example_id)}


@router.post(
    "/feedback",
    summary="👍/👎 on an answer; a 👎 may carry the right SQL",
    responses={404: {"description": "No answer has this id"}, 422: {"description": "Bad id, verdict or SQL"}},
)
async def feedback(body: FeedbackBody, kb: KnowledgePartsDep, principal: LimitedPrincipalDep) -> dict:
    """A 👍 stores the answer's question and SQL as a verified example; a 👎 marks the answer wrong (the dashboards
    stop counting it as a success) and, with `sql`, stores that SQL as the verified answer once it passes the guard."""
    try:
        res = await to_thread.run_sync(give, kb, body.answer_id, body.verdict, body.sql, principal.tables)
    except FeedbackError as exc:
        raise HTTPException(exc.status_code, exc.message) from None
    except KnowledgeUnavailable as exc:
        raise unavailable(exc) from None
    return {"answer_id": res.answer_id, "verdict": res.verdict, "example_id": res.example_id, "message": res.message}
