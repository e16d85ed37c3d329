"""An answer's CSV download, and the progress (and cancel) of a question while it is being answered.

`GET /api/export.csv?sql=…` runs the answer's SQL again through the guard, with the key's allow-list and the row
cap, and sends it as CSV (formula-looking text neutralised). `GET /api/progress/{rid}` and
`POST /api/progress/{rid}/cancel` read and cancel a request the caller named `rid` (the UI names each request it
sends); a key sees only its own requests.
"""

from datetime import UTC, datetime
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response

from app.api.deps import ExecutorDep, LimitedPrincipalDep, PrincipalDep, SettingsDep
from app.nl2sql.progress import ProgressBoard
from app.sql.executor import ExecutionError
from app.ui.rows import RowsError, run_guarded, to_csv

router = APIRouter(prefix="/api", tags=["answers"], responses={401: {"description": "No API key, or a wrong one"}})
Rid = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{8,64}$", description="The id the client gave its request")]
NOT_RUNNING = "No request with this id is being answered for this key (it may have finished)."


def board(request: Request) -> ProgressBoard:
    return request.app.state.progress


@router.get(
    "/export.csv",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "The rows as CSV"},
        400: {"description": "Refused"},
        503: {"description": "Database unavailable"},
    },
)
async def export_csv(
    executor: ExecutorDep,
    settings: SettingsDep,
    principal: LimitedPrincipalDep,
    sql: Annotated[str, Query(min_length=1, max_length=20_000, description="The answer's SQL")],
) -> Response:
    """The rows of `sql` as CSV: the same guard, table allow-list and row cap as the answer itself."""
    cap = settings.row_limit
    try:
        res = await to_thread.run_sync(run_guarded, sql, executor, cap, principal.tables)
    except RowsError as exc:
        raise HTTPException(400, str(exc)) from None
    except ExecutionError as exc:
        raise HTTPException(503 if exc.category == "db_unavailable" else 400, exc.message) from None
    name = f"querywise-{datetime.now(UTC):%Y%m%d-%H%M%S}.csv"
    return Response(
        to_csv(res.columns, res.rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/progress/{rid}", responses={404: {"description": "Not running (finished, cancelled or another key's)"}})
async def progress(request: Request, rid: Rid, principal: PrincipalDep) -> dict:
    """What the request is doing: `stage` (queued, warming, writing, running, candidates), `candidate` k of `candidates`."""
    p = board(request).get(principal.rate_key, rid)
    if p is None:
        raise HTTPException(404, NOT_RUNNING)
    return p.as_dict()


@router.post(
    "/progress/{rid}/cancel", responses={404: {"description": "Not running (finished, cancelled or another key's)"}}
)
async def cancel(request: Request, rid: Rid, principal: PrincipalDep) -> dict:
    """Stop the request: its decoding rows leave the batch and it runs no SQL after this."""
    if not board(request).cancel(principal.rate_key, rid):
        raise HTTPException(404, NOT_RUNNING)
    return {"cancelled": True}
