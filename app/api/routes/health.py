"""Liveness, readiness and Prometheus metrics."""

from anyio import to_thread
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import MetricsDep, ServiceDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "alive"}


@router.get("/readyz")
async def readyz(service: ServiceDep) -> JSONResponse:
    db_ok = await to_thread.run_sync(service.executor.ping)
    body = {"ready": db_ok, "model": service.model_id, "model_loaded": True, "database": db_ok}
    return JSONResponse(body, status_code=200 if db_ok else 503)


@router.get("/metrics")
async def metrics(metrics: MetricsDep, service: ServiceDep) -> Response:
    metrics.queue_depth.set(service.batcher.depth)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
