"""The connected database's schema, example questions, batching stats and dashboard data, as JSON.

Every route needs an API key (or a UI session); a key with a table allow-list sees only its tables.
"""

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from app.api.deps import BatcherDep, CatalogDep, PrincipalDep, PrompterDep, QueryLogDep, ServiceDep, require_principal
from app.db.catalog import SchemaCatalog
from app.nl2sql.examples import example_questions
from app.querylog.store import QueryLogUnavailable

router = APIRouter(
    prefix="/api",
    tags=["info"],
    dependencies=[Depends(require_principal)],
    responses={401: {"description": "No API key, or a wrong one"}},
)


async def _schema(catalog: SchemaCatalog, refresh: bool = False, tables: frozenset[str] | None = None):
    try:
        s = await to_thread.run_sync(catalog.refresh if refresh else lambda: catalog.schema)
    except Exception:
        raise HTTPException(503, "The database is unavailable: its schema cannot be read.") from None
    return s if tables is None else s.restricted(tables)


@router.get("/schema")
async def schema(catalog: CatalogDep, prompter: PrompterDep, principal: PrincipalDep) -> dict:
    s = await _schema(catalog, tables=principal.tables)
    return {
        "dialect": s.dialect,
        "prompt_text": prompter.schema_text(principal.tables),
        "tables": [
            {
                "name": t.name,
                "columns": [{"name": c.name, "type": c.type, "primary_key": c.primary_key} for c in t.columns],
                "foreign_keys": [
                    {"column": f.column, "ref_table": f.ref_table, "ref_column": f.ref_column} for f in t.foreign_keys
                ],
            }
            for t in s.tables
        ],
    }


@router.post("/schema/refresh")
async def refresh_schema(catalog: CatalogDep, principal: PrincipalDep) -> dict:
    s = await _schema(catalog, refresh=True, tables=principal.tables)
    return {"tables": len(s.tables)}


@router.get("/examples")
async def examples(catalog: CatalogDep, principal: PrincipalDep) -> dict:
    return {"examples": example_questions(await _schema(catalog, tables=principal.tables))}


@router.get("/stats")
async def stats(service: ServiceDep, batcher: BatcherDep) -> dict:
    return {
        "model_id": service.model_id,
        "batching": batcher.stats.as_dict(),
        "queue_depth": batcher.depth,
    }


@router.get("/dashboard", responses={422: {"description": "hours is not one whole number from 1 to 720"}})
async def dashboard(
    request: Request, querylog: QueryLogDep, hours: Annotated[int, Query(ge=1, le=24 * 30)] = 24
) -> dict:
    """Success rate, latency and recent queries over the last `hours` (1 to 720, i.e. 30 days)."""
    if len(request.query_params.getlist("hours")) > 1:  # FastAPI would silently take the last one
        raise HTTPException(422, "hours: give it once.")
    try:
        return await to_thread.run_sync(lambda: querylog.dashboard(hours=hours))
    except QueryLogUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
