"""HTTP hardening as two small ASGI middlewares: a request body size limit and security headers on every response.

Pure ASGI (not BaseHTTPMiddleware) so they add no task per request and see every response, errors included.
"""

from __future__ import annotations

import json
import logging

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("querywise")

# The UI needs no inline script or style: htmx is served from /static, its inline indicator style and eval are off
# (meta htmx-config in base.html), charts are SVG attributes. `frame-ancestors` is the modern X-Frame-Options.
UI_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
# /docs and /redoc run Swagger UI / ReDoc from /static (app.api.routes.docs), started by FastAPI's inline script;
# ReDoc renders its spec in a blob worker. Nothing from another origin.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
# No referrer ever leaves for another site. Not `no-referrer`: with it browsers send `Origin: null` on same-origin
# POSTs (Fetch standard), which would defeat the Origin check that guards cookie-authenticated posts against CSRF.
REFERRER_POLICY = "same-origin"


class HttpMiddleware:
    """Pure ASGI middleware that acts on HTTP requests only (websocket and lifespan messages pass straight through):
    subclasses write `handle`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class BodySizeLimit(HttpMiddleware):
    """Refuse request bodies over `max_bytes` with 413: by Content-Length up front, and by counting what arrives
    (chunked uploads, or a Content-Length that lies). The body is buffered (at most `max_bytes`) before the app runs,
    so the app never sees a partial body and the 413 is always a clean response."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await _json(send, 400, "Invalid Content-Length header.")
                return
            if too_big:
                await self._refuse(send)
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would answer

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        await _json(send, 413, f"The request body is too large: at most {self.max_bytes} bytes.")


async def _json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders(HttpMiddleware):
    """nosniff, no framing, no cross-site referrer on everything; a CSP on HTML; `Cache-Control: no-store` on answers (JSON and
    pages carry query results) but not on /static, which browsers may cache."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", REFERRER_POLICY)
                ctype = headers.get("content-type", "")
                if ctype.startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", DOCS_CSP if path.startswith(DOCS_PATHS) else UI_CSP)
                if not path.startswith("/static/"):
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, with_headers)


class CatchAll(HttpMiddleware):
    """An unexpected error becomes a 500 with a short JSON message and one log line, inside the security-headers
    middleware (Starlette's own catch-all sits outside every middleware, so its 500 had no security headers, and it
    re-raised, so the server logged a whole traceback per request: a cheap way to flood the log)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:  # noqa: BLE001 - the point of this middleware
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            log.error("unhandled %s on %s: %s", type(exc).__name__, scope.get("path", ""), first)
            if not started:  # a response already under way cannot be replaced; the connection just ends
                await _json(send, 500, "Internal error; it has been logged.")
