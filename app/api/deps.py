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


def _from_state(name: str):
    """A dependency that returns the app's long-lived component `name` (set on app.state by app.main)."""

    # `async def` although it only reads app.state: FastAPI runs a plain `def` dependency on the shared worker
    # threads, where it would queue behind slow database work (and the readiness probe with it).
    async def component(request: Request):
        return getattr(request.app.state, name)

    component.__name__ = f"get_{name}"
    return component


ServiceDep = Annotated[QueryService, Depends(_from_state("service"))]
SettingsDep = Annotated[Settings, Depends(_from_state("settings"))]
MetricsDep = Annotated[Metrics, Depends(_from_state("metrics"))]
AuthDep = Annotated[Authenticator, Depends(_from_state("auth"))]
CatalogDep = Annotated[SchemaCatalog, Depends(_from_state("catalog"))]
PrompterDep = Annotated[Prompter, Depends(_from_state("prompter"))]  # the schema as the model sees it
QueryLogDep = Annotated[QueryLog, Depends(_from_state("querylog"))]
BatcherDep = Annotated[Batcher, Depends(_from_state("batcher"))]
KnowledgePartsDep = Annotated[KnowledgeParts, Depends(_from_state("knowledge_parts"))]  # glossary, examples, feedback
ExecutorDep = Annotated[Executor, Depends(_from_state("executor"))]


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
