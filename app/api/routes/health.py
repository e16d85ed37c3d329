"""Liveness, readiness and Prometheus metrics."""

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from app.api.deps import BatcherDep, ExecutorDep, MetricsDep, QueryLogDep, ServiceDep

router = APIRouter(tags=["health"])
_probe_limiter: CapacityLimiter | None = None


def _probe_threads() -> CapacityLimiter:
    """Readiness checks get threads of their own: slow user queries holding anyio's shared worker threads must not
    make the probe time out (an orchestrator would then restart a healthy, busy server)."""
    global _probe_limiter
    if _probe_limiter is None:
        _probe_limiter = CapacityLimiter(2)
    return _probe_limiter


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "alive"}


class Readiness(BaseModel):
    ready: bool = Field(description="The model is loaded and the database answers")
    model: str
    model_loaded: bool
    database: bool = Field(description="The user's database answered `SELECT 1`")
    querylog_pending: int = Field(description="Query-log rows waiting in memory for the log database (not blocking)")
    prompt_warm_up: str = Field(
        description="Reading the prompt every question shares into the model's cache, at start and after a model "
        "swap (not blocking): `running`, `done` (as of then: a schema or glossary changed since is read by the next "
        "question), `skipped` (nothing shared, database unreachable, queue full or closing, a failed decode: the "
        "log says which; questions then read the prompt themselves) or `off`"
    )


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: the database does not answer"}},
)
async def readyz(service: ServiceDep, executor: ExecutorDep, querylog: QueryLogDep) -> JSONResponse:
    db_ok = await to_thread.run_sync(executor.ping, limiter=_probe_threads())
    # The query log is not part of readiness: questions are answered while it is down (rows wait in memory).
    body = Readiness(
        ready=db_ok,
        model=service.model_id,
        model_loaded=True,
        database=db_ok,
        querylog_pending=querylog.pending,
        prompt_warm_up=service.warm_up,
    )
    return JSONResponse(body.model_dump(), status_code=200 if db_ok else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(metrics: MetricsDep, batcher: BatcherDep, querylog: QueryLogDep) -> Response:
    metrics.queue_depth.set(batcher.depth)
    metrics.log_pending.set(querylog.pending)
    metrics.log_dropped.set(querylog.dropped)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
