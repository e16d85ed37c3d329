"""The uvicorn server behind `python -m app`: on SIGTERM/SIGINT it also drains the model queue at once.

Uvicorn's graceful shutdown waits for requests in flight (up to `timeout_graceful_shutdown`) and only then runs the
app's shutdown. Questions still queued for the model would make it wait a batch per 8 questions, past the timeout,
and then be cut off without an answer; draining answers them 503 + Retry-After right away (another replica can
take them), while the batch already decoding finishes and is answered.
"""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from fastapi import FastAPI

GRACEFUL_SHUTDOWN_S = 20
# Request line + headers beyond this are refused (h11 answers 431/400 and closes): a person's browser sends a few KB.
MAX_HEADER_BYTES = 32 * 1024
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this


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
    """h11 (not httptools) because it bounds the size of an incomplete request head; `X-Forwarded-For` is believed
    only from the configured proxies (uvicorn would otherwise trust 127.0.0.1, so anything on the host could claim
    any client address and dodge per-address throttles)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        http="h11",
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=",".join(trusted_proxies) if trusted_proxies else None,
    )


def serve(app: FastAPI, host: str, port: int, trusted_proxies: list[str] | tuple[str, ...] = ()) -> None:
    DrainingServer(server_config(app, host, port, trusted_proxies), app).run()
