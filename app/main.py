"""The FastAPI application: wiring of settings, model, database, query log and routes.

`create_app()` builds everything in the lifespan; `python -m app` checks the artifacts first and serves it.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from app.api.routes import health, info, query, ui
from app.core.config import Settings, get_settings
from app.core.metrics import Metrics
from app.db.catalog import SchemaCatalog
from app.nl2sql.engine import OnnxGenerator
from app.nl2sql.service import QueryService
from app.querylog.store import QueryLog
from app.sql.executor import Executor

log = logging.getLogger("querywise")
STATIC_DIR = Path(__file__).parent / "static"


def build_service(settings: Settings, generator: OnnxGenerator | None = None) -> QueryService:
    generator = generator or OnnxGenerator(settings.model_dir, settings.ort_threads)
    executor = Executor(settings.database_url, settings.statement_timeout_s, settings.row_limit)
    catalog = SchemaCatalog(executor.engine, settings.schema_sample_values)
    return QueryService(settings, generator, executor, catalog, QueryLog(settings.querylog_url), Metrics())


def create_app(settings: Settings | None = None, generator: OnnxGenerator | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = build_service(settings, generator)
        app.state.settings, app.state.service, app.state.metrics = settings, service, service.metrics
        try:
            service.catalog.refresh()
        except Exception as exc:  # the database may come up later; /readyz says so meanwhile
            log.warning("database not reachable at start: %s", str(exc).splitlines()[0][:200])
        service.batcher.start()
        log.info("Querywise ready: model %s, database %s", service.model_id, service.executor.dialect)
        yield
        await service.batcher.stop()

    app = FastAPI(
        title="Querywise",
        version="0.1.0",
        lifespan=lifespan,
        description="Ask a business question in plain English; get guarded, read-only SQL and its rows.",
    )
    app.include_router(query.router)
    app.include_router(health.router)
    app.include_router(info.router)
    app.include_router(ui.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return JSONResponse({"detail": f"{where}: {first['msg']}", "errors": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": "Internal error; it has been logged."}, status_code=500)

    return app
