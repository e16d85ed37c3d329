"""FastAPI dependencies as `Annotated` aliases: the app's long-lived components live on `app.state`.

Access control: `PrincipalDep` (API: 401 without a valid key), `UiPrincipalDep` (UI: redirect to /login), `AdminDep`
and `UiAdminDep` (403 unless the key is an admin key), and the rate-limited variants for the routes that run queries
(`LimitedPrincipalDep`, `UiLimitedPrincipalDep`: 429).
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from app.auth.principal import SAFE_METHODS, Authenticator, LoginRequired, Principal, RateLimited, same_origin
from app.core.config import Settings
from app.core.metrics import Metrics
from app.db.catalog import SchemaCatalog
from app.knowledge.parts import KnowledgeParts
from app.nl2sql.batcher import Batcher
from app.nl2sql.prompter import Prompter
from app.nl2sql.service import QueryService
from app.querylog.store import QueryLog, asked_by
from app.sql.executor import Executor

UNAUTHENTICATED = "Authentication required: send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`."
INVALID_KEY = "The API key is not valid (unknown or revoked)."


# `async def` although they only read app.state: FastAPI runs a plain `def` dependency on the shared worker threads,
# where it would queue behind slow database work (and the readiness probe with it).
async def get_service(request: Request) -> QueryService:
    return request.app.state.service


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_auth(request: Request) -> Authenticator:
    return request.app.state.auth


async def get_catalog(request: Request) -> SchemaCatalog:
    return request.app.state.catalog


async def get_prompter(request: Request) -> Prompter:
    return request.app.state.prompter


async def get_querylog(request: Request) -> QueryLog:
    return request.app.state.querylog


async def get_batcher(request: Request) -> Batcher:
    return request.app.state.batcher


async def get_executor(request: Request) -> Executor:
    return request.app.state.executor


async def get_knowledge_parts(request: Request) -> KnowledgeParts:
    return request.app.state.knowledge_parts


ServiceDep = Annotated[QueryService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
AuthDep = Annotated[Authenticator, Depends(get_auth)]
CatalogDep = Annotated[SchemaCatalog, Depends(get_catalog)]
PrompterDep = Annotated[Prompter, Depends(get_prompter)]  # the schema as the model sees it
QueryLogDep = Annotated[QueryLog, Depends(get_querylog)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]
KnowledgePartsDep = Annotated[KnowledgeParts, Depends(get_knowledge_parts)]  # glossary, examples, feedback
ExecutorDep = Annotated[Executor, Depends(get_executor)]


def _check_csrf(request: Request, principal: Principal) -> None:
    if principal.via == "session" and request.method not in SAFE_METHODS and not same_origin(request):
        raise HTTPException(403, "Cross-origin request refused.")


async def require_principal(request: Request, auth: AuthDep, metrics: MetricsDep) -> Principal:
    principal = auth.authenticate(request)
    if principal is None:
        metrics.auth_failures.inc()
        detail = UNAUTHENTICATED if auth.presented_key(request) is None else INVALID_KEY
        raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
    _check_csrf(request, principal)
    asked_by.set(principal.name)  # the query log files this request's row under the key (a key's /history)
    return principal


async def require_ui_principal(request: Request, auth: AuthDep, metrics: MetricsDep) -> Principal:
    principal = auth.authenticate(request)
    if principal is None:
        if auth.presented_key(request) is not None:
            metrics.auth_failures.inc()
        raise LoginRequired()
    _check_csrf(request, principal)
    asked_by.set(principal.name)
    return principal


PrincipalDep = Annotated[Principal, Depends(require_principal)]
UiPrincipalDep = Annotated[Principal, Depends(require_ui_principal)]
NOT_ADMIN = "This needs an admin key (one created with `python -m app.keys create --admin`)."


async def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.admin:
        raise HTTPException(403, NOT_ADMIN)
    return principal


async def require_ui_admin(principal: UiPrincipalDep) -> Principal:
    if not principal.admin:
        raise HTTPException(403, NOT_ADMIN)
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]  # starts training, changes the served model
UiAdminDep = Annotated[Principal, Depends(require_ui_admin)]


def _limited(request: Request, principal: Principal, auth: Authenticator, metrics: Metrics) -> Principal:
    wait = auth.rate_limit(principal)
    if wait > 0:
        route = getattr(request.scope.get("route"), "path", request.url.path)
        metrics.rate_limited.labels(route).inc()
        raise RateLimited(wait, principal)
    return principal


async def limited_principal(
    request: Request, principal: PrincipalDep, auth: AuthDep, metrics: MetricsDep
) -> AsyncIterator[Principal]:
    with auth.in_flight.hold(_limited(request, principal, auth, metrics)) as p:
        yield p


async def ui_limited_principal(
    request: Request, principal: UiPrincipalDep, auth: AuthDep, metrics: MetricsDep
) -> AsyncIterator[Principal]:
    with auth.in_flight.hold(_limited(request, principal, auth, metrics)) as p:
        yield p


LimitedPrincipalDep = Annotated[Principal, Depends(limited_principal)]
UiLimitedPrincipalDep = Annotated[Principal, Depends(ui_limited_principal)]
