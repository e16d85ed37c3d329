"""`POST /query` (a question) and `POST /sql` (a user-edited query): JSON in, guarded SQL and rows out."""

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from app.api.deps import BatcherDep, LimitedPrincipalDep, MetricsDep, ServiceDep
from app.api.errors import error_responses, queue_full, raise_for_unavailable
from app.nl2sql.batcher import QueueFull
from app.nl2sql.outcome import Category, Outcome, Status
from app.nl2sql.service import InvalidQuestion

# Both routes need an API key (401 otherwise) and count against its rate limit (429 + Retry-After).
AUTH_RESPONSES = {
    401: {"description": "No API key, or a wrong one"},
    413: {"description": "Body too large"},
    429: {"description": "Rate limit of this key exceeded (see Retry-After)"},
}
router = APIRouter(tags=["query"], responses=AUTH_RESPONSES)


# Lengths are checked on the text as sent (no stripping first), so the limits the schema states are the limits the
# server applies; blank text is refused by the handler with its own message.
class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: StrictStr = Field(
        min_length=1,
        max_length=10_000,
        description="A business question in plain English",
        examples=["Top 5 customers by revenue in 2025"],
    )


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sql: StrictStr = Field(
        min_length=1, max_length=20_000, description="A read-only SQL query (goes through the guard)"
    )


class QueryResponse(BaseModel):
    """An Outcome's public fields (`Outcome.public`; a test keeps the two the same)."""

    status: Status = Field(description="ok: rows with something in them; empty: nothing matched (not a success)")
    category: Category = Field(description="Why the answer has its status (an error's kind, or ok)")
    question: str | None = None
    sql: str | None = Field(None, description="The SQL that ran (after the guard), or the refused SQL")
    message: str | None = None
    columns: list[str]
    rows: list[list]
    row_count: int
    truncated: bool = Field(description="True when more rows existed than the row cap")
    generate_ms: float | None = None
    execute_ms: float | None = None
    total_ms: float
    model_id: str | None = None
    batch_size: int | None = None
    candidates: int | None = Field(
        None, description="Sampled candidates drawn because the greedy SQL failed (execution-guided decoding)"
    )
    answer_id: str | None = Field(None, description="Names this answer in `POST /feedback` (questions only)")
    verified_examples: int = Field(0, description="Verified question/SQL pairs the model was shown as earlier turns")
    glossary_terms: list[str] = Field(default_factory=list, description="Glossary entries the model was shown")


def _response(out: Outcome) -> QueryResponse:
    raise_for_unavailable(out)
    return QueryResponse(**out.public())


@router.post(
    "/query",
    response_model=QueryResponse,
    responses=error_responses(400, 503),
)
async def query(
    body: QueryRequest, service: ServiceDep, batcher: BatcherDep, metrics: MetricsDep, principal: LimitedPrincipalDep
) -> QueryResponse:
    try:
        out = await service.ask(body.question, principal.tables)
    except InvalidQuestion as exc:
        raise HTTPException(422, str(exc)) from None
    except QueueFull as exc:
        metrics.shed.inc()
        raise queue_full(exc, batcher.retry_after_s()) from None
    return _response(out)


@router.post("/sql", response_model=QueryResponse, responses=error_responses(400, 503))
async def run_sql(body: SqlRequest, service: ServiceDep, principal: LimitedPrincipalDep) -> QueryResponse:
    if not body.sql.strip():
        raise HTTPException(422, "The SQL is empty: write a query first.")
    return _response(await service.run_sql(body.sql.strip(), principal.tables))
