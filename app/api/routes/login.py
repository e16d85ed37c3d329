"""UI login and logout: paste an API key once, get a session cookie (HttpOnly, SameSite=Strict, signed; never the key).

CSRF: the cookie is SameSite=Strict, so other sites' pages cannot make the browser send it, and every state-changing
post that relies on it (here, /ui/*, /api/* posts) must come with an Origin (or Referer) naming this host, when
present. Login itself checks the origin too, so another site cannot log a browser in under the attacker's key.
"""

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api.deps import AuthDep, MetricsDep
from app.api.routes.ui import templates
from app.auth.principal import same_origin
from app.auth.ratelimit import retry_after_header
from app.auth.sessions import COOKIE_NAME

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: `//evil.example` or `https://…` would make the login an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_page(request: Request, next_: str, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "login.html", {"next": next_, "error": error, "page": "login"}, status_code=status_code
    )


def _too_many(request: Request, next_: str, wait_s: float) -> HTMLResponse:
    retry = retry_after_header(wait_s)
    page = _login_page(
        request, next_, f"That key is not valid, and it failed several times: try again in {retry} s.", 429
    )
    page.headers["Retry-After"] = retry
    return page


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, auth: AuthDep, next: str = "/") -> Response:
    if auth.disabled or auth.session_principal(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(request, _safe_next(next))


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request, auth: AuthDep, metrics: MetricsDep, key: str = Form(""), next: str = Form("/")
) -> Response:
    if auth.disabled:
        return RedirectResponse(_safe_next(next), status_code=303)
    if not same_origin(request):
        raise HTTPException(403, "Cross-origin login refused.")
    # Failed attempts back off per (address, key prefix): never per address alone, which would let one user behind a
    # shared proxy lock out all the others (app.auth.ratelimit.LoginThrottle).
    party = auth.login_throttle.party(request.client.host if request.client else "unknown", key)
    wait = auth.login_throttle.wait(party)
    if wait > 0:
        return _too_many(request, _safe_next(next), wait)
    opened = auth.login(key)
    if opened is None:
        metrics.auth_failures.inc()
        wait = auth.login_throttle.failed(party)
        if wait > 0:
            return _too_many(request, _safe_next(next), wait)
        return _login_page(request, _safe_next(next), "That key is not valid (unknown or revoked).", 401)
    auth.login_throttle.succeeded(party)
    _, token = opened
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=auth.settings.session_ttl_hours * 3600,
        path="/",
        httponly=True,  # not readable by scripts
        samesite="strict",  # not sent on requests other sites start
        secure=request.url.scheme == "https",  # plain http on 127.0.0.1 for local use must still work
    )
    return response


@router.post("/logout")
async def logout(request: Request, auth: AuthDep) -> Response:
    if not same_origin(request):
        raise HTTPException(403, "Cross-origin logout refused.")
    if auth.sessions is not None:
        auth.sessions.revoke(request.cookies.get(COOKIE_NAME))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response
