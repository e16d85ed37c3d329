"""The FastAPI application: wiring of settings, model, database, query log and routes.

`create_app()` builds everything in the lifespan; `python -m app` checks the artifacts first and serves it.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.disconnect import CancelOnDisconnect
from app.api.errors import document_validation_errors
from app.api.middleware import BodySizeLimit, CatchAll, SecurityHeaders
from app.api.routes import answers, docs, health, info, knowledge, knowledge_ui, login, model, query, ui
from app.auth.principal import Authenticator, LoginRequired, RateLimited
from app.auth.ratelimit import retry_after_header
from app.core.config import Settings, get_settings
from app.core.metrics import Metrics
from app.db.catalog import SchemaCatalog
from app.knowledge.context import Knowledge, seed_for
from app.knowledge.parts import KnowledgeParts
from app.knowledge.store import KnowledgeStore, database_key
from app.nl2sql.answer_log import AnswerLog
from app.nl2sql.batcher import Batcher, RequestQueue, WholeBatches
from app.nl2sql.continuous import ContinuousBatches
from app.nl2sql.engine import OnnxGenerator
from app.nl2sql.generator import Generator
from app.nl2sql.hotswap import Swapper
from app.nl2sql.progress import ProgressBoard
from app.nl2sql.prompter import Prompter
from app.nl2sql.service import QueryService
from app.nl2sql.specialize import SpecializeRunner
from app.querylog.store import QueryLog
from app.sql.executor import Executor

log = logging.getLogger("querywise")
STATIC_DIR = Path(__file__).parent / "static"
# The routes that decode and query: their work stops when the client goes away.
CANCELLABLE_PATHS = frozenset({"/query", "/sql", "/ui/ask", "/ui/sql"})


def build_batcher(settings: Settings, generator: Generator, metrics: Metrics) -> Batcher:
    """The queue in front of the model, and how it batches: continuously when the generator decodes step by step."""
    queue = RequestQueue(settings.queue_max_size, settings.queue_max_wait_s)
    size, on_batch = settings.batch_max_size, metrics.batch_size.observe
    if settings.continuous_batching and generator.stepwise:
        worker = ContinuousBatches(generator, settings.max_new_tokens, size, on_batch)
    else:
        worker = WholeBatches(generator, settings.max_new_tokens, size, settings.batch_max_wait_ms, on_batch)
    return Batcher(queue, worker)


def build_service(settings: Settings, generator: Generator | None = None) -> QueryService:
    """The service and its parts: model, batching queue, executor, schema catalog, knowledge, query log, metrics."""
    generator = generator or OnnxGenerator(settings.model_dir, settings.ort_threads, settings.prefix_cache_entries)
    executor = Executor(settings.database_url, settings.statement_timeout_s, settings.row_limit)
    catalog = SchemaCatalog(executor.engine, settings.schema_sample_values, settings.schema_enum_values)
    querylog, metrics = QueryLog(settings.querylog_url), Metrics()
    # glossary and verified examples live in the application database, next to the query log
    knowledge = Knowledge(
        KnowledgeStore(querylog.engine),
        database_key(settings.database_url),
        settings.glossary_token_budget,
        settings.verified_examples_k,
        seed_for(settings.database_url, settings.glossary_file),
    )
    prompter = Prompter(catalog, knowledge, settings.schema_token_budget, settings.schema_constrained)
    batcher = build_batcher(settings, generator, metrics)
    return QueryService(settings, generator, batcher, prompter, executor, AnswerLog(querylog, metrics))


def _expose(app: FastAPI, settings: Settings, service: QueryService, auth: Authenticator) -> None:
    """What routes depend on (app.api.deps), each component on its own."""
    state = app.state
    state.settings, state.service, state.auth, state.metrics = settings, service, auth, service.metrics
    state.batcher, state.executor, state.prompter = service.batcher, service.executor, service.prompter
    state.catalog, state.querylog = service.prompter.catalog, service.answers.querylog
    state.knowledge_parts = KnowledgeParts(
        service.prompter.knowledge,
        state.catalog,
        state.querylog,
        service.executor.dialect,
        settings.row_limit,
        settings.question_max_chars,
    )
    state.progress = ProgressBoard()  # questions being answered that a page may follow or cancel
    # hot swap (one load at a time) and specialize runs, whose published model is swapped in when they end
    state.swapper = Swapper(service, settings.ort_threads, settings.prefix_cache_entries)
    state.specialize = SpecializeRunner(settings, state.swapper.load_path)


def _lifespan(settings: Settings, generator: Generator | None):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        auth = Authenticator(settings)
        auth.log_startup()  # a broken keys file stops the start here, before the model is loaded
        service = build_service(settings, generator)
        _expose(app, settings, service, auth)
        try:
            service.prompter.catalog.refresh()
        except Exception as exc:  # the database may come up later; /readyz says so meanwhile
            log.warning("database not reachable at start: %s", str(exc).splitlines()[0][:200])
        service.batcher.start()
        service.start_warming()
        log.info("Querywise ready: model %s, database %s", service.model_id, service.executor.dialect)
        yield
        await service.stop_warming()
        await app.state.specialize.stop()
        await service.batcher.stop()
        await to_thread.run_sync(app.state.querylog.close)  # write what the log database could not take yet

    return lifespan


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    # Outermost last: security headers see every response (413s, CORS answers and unexpected 500s too).
    # Innermost: a question or query whose client disconnected before its answer is cancelled (after the body is read).
    app.add_middleware(CancelOnDisconnect, paths=CANCELLABLE_PATHS)
    app.add_middleware(CatchAll)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:  # closed by default: without the middleware no response carries CORS headers
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            allow_credentials=False,  # API clients send keys in headers; the UI cookie stays same-site
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)


def create_app(settings: Settings | None = None, generator: Generator | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Querywise",
        version="0.1.0",
        lifespan=_lifespan(settings, generator),
        docs_url=None,  # served from app/static by app.api.routes.docs: no CDN
        redoc_url=None,
        description="Ask a business question in plain English; get guarded, read-only SQL and its rows.",
    )
    for routes in (query, health, info, ui, knowledge, knowledge_ui, login, docs, answers, model):
        app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    _add_middleware(app, settings)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.headers.get("hx-request"):  # htmx follows HX-Redirect even on a 401
            return Response("Log in first.", status_code=401, headers={"HX-Redirect": "/login"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # A browser that lands on a wrong address gets a page with a way back; API clients keep the JSON answer.
        if exc.status_code == 404 and ui.wants_html(request):
            return ui.not_found(request)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, exc: RateLimited) -> Response:
        p, retry = exc.principal, retry_after_header(exc.wait_s)
        message = exc.message or (
            f"Rate limit exceeded: at most {p.per_minute} requests per minute (bursts of {p.burst}) per "
            f"{'client' if p.via == 'open' else 'key'}. Retry in {retry} s."
        )
        headers = {"Retry-After": retry}
        if request.url.path.startswith("/ui/"):
            return ui.error_fragment(request, message, status_code=429, headers=headers)
        return JSONResponse({"detail": message}, status_code=429, headers=headers)

    document_validation_errors(app)  # the 422 schema says what `validation_error` below answers

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
