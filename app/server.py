"""The uvicorn server behind `python -m app`: on SIGTERM/SIGINT it also drains the model queue at once.

Uvicorn's graceful shutdown waits for requests in flight (up to `timeout_graceful_shutdown`) and only then runs the
app's shutdown. Questions still queued for the model would make it wait a batch per 8 questions, past the timeout,
and then be cut off without an answer; draining answers them 503 + Retry-After right away (another replica can
take them), while the batch already decoding finishes and is answered.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

GRACEFUL_SHUTDOWN_S = 20
# Request line + headers beyond this are refused (h11 answers 431/400 and closes): a person's browser sends a few KB.
MAX_HEADER_BYTES = 32 * 1024
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
# A request head must arrive within HEAD_TIMEOUT_S of the connection (or of its first byte, on a kept-alive one), and
# its body within BODY_TIMEOUT_S of the head: a browser sends both in milliseconds, a 64 KB body on a slow mobile
# link in about a second. Slower clients only hold connections and buffers open.
HEAD_TIMEOUT_S = 5
BODY_TIMEOUT_S = 10
_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

log = logging.getLogger("querywise")


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with read deadlines: a connection whose request head (or body) is not complete in time
    is closed. Uvicorn has none: a never-finished head or chunked body held a connection open indefinitely."""

    _deadline: asyncio.TimerHandle | None = None
    _phase: tuple[str, int] | None = None  # ("head" | "body", id of the request cycle)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        self._disarm()  # idle until the next request: the keep-alive timeout applies
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Arm the deadline of the phase the connection is in now; a phase already armed keeps its deadline."""
        state = self.conn.their_state
        cycle = id(self.cycle)
        if state is h11.IDLE and (self.timeout_keep_alive_task is None or self.conn.trailing_data[0]):
            phase = ("head", cycle)  # a new connection, or bytes of the next request arrived
        elif state is h11.SEND_BODY:
            phase = ("body", cycle)
        else:
            phase = None
        if phase == self._phase:
            return
        self._disarm()
        if phase is not None and not self.transport.is_closing():
            limit = HEAD_TIMEOUT_S if phase[0] == "head" else BODY_TIMEOUT_S
            self._phase, self._deadline = phase, self.loop.call_later(limit, self._expire, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._phase = None, None

    def _expire(self, phase: tuple[str, int]) -> None:
        if phase != self._phase or self.transport.is_closing():
            return
        self._deadline = None
        log.info("slow client %s: request %s not complete in time, connection closed", self.client, phase[0])
        if phase[0] == "head":
            self.transport.write(_REQUEST_TIMEOUT)  # nothing was answered on it yet
        self.transport.close()  # a body phase: the app waiting for it sees the client disconnect


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        service = getattr(self._app.state, "service", None)
        if service is not None and self._loop is not None:
            # A signal handler runs between bytecodes of the loop's thread: hand the work to the loop.
            self._loop.call_soon_threadsafe(service.batcher.drain)
        super().handle_exit(sig, frame)


def server_config(
    app: FastAPI, host: str, port: int, trusted_proxies: list[str] | tuple[str, ...] = ()
) -> uvicorn.Config:
    """h11 (not httptools) because it bounds the size of an incomplete request head, with read deadlines for the head
    and the body (`DeadlineH11Protocol`); `X-Forwarded-For` is believed
    only from the configured proxies (uvicorn would otherwise trust 127.0.0.1, so anything on the host could claim
    any client address and dodge per-address throttles)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        http=DeadlineH11Protocol,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=",".join(trusted_proxies) if trusted_proxies else None,
    )


def serve(app: FastAPI, host: str, port: int, trusted_proxies: list[str] | tuple[str, ...] = ()) -> None:
    DrainingServer(server_config(app, host, port, trusted_proxies), app).run()
