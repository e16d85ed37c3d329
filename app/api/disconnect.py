"""Cancel a request's work when its client goes away before the answer starts.

Starlette does not stop a handler whose HTTP client disconnected: a question would still be decoded and its query
still run, holding a row of the decoding batch, a database connection and the key's in-flight slots for nobody.
This pure-ASGI middleware runs the app in a task of its own and watches the connection meanwhile; a disconnect
before the response has started cancels that task. Cancellation then reaches the waits inside: the batcher's row
leaves the decoding batch at the next step, the database query is interrupted (`app.core.cancel`), the in-flight
slots are released.

It sits inside `BodySizeLimit`, which has already read the whole body: the first `receive()` here returns it, and
the next one waits for `http.disconnect`, which the server sends when the client closes the connection (or once the
response is complete, when it no longer matters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("querywise")


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp, paths: frozenset[str] | set[str]):
        self.app = app
        self.paths = frozenset(paths)
        self.cancelled = 0  # requests cancelled because their client went away (for tests and the log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        body: list[Message] = []
        while True:  # the whole body, so the watcher below only ever sees what follows it
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.append(message)
            if not message.get("more_body", False):
                break
        gone = asyncio.Event()
        started = False

        async def app_receive() -> Message:
            if body:
                return body.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        work = asyncio.ensure_future(self.app(scope, app_receive, tracking_send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and not started:
                self.cancelled += 1
                log.info("client went away: %s %s cancelled", scope.get("method"), scope.get("path"))
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                return
            await work  # the answer is under way (or done): let it finish; its exception propagates
        finally:
            for task in (work, watcher):
                task.cancel()
