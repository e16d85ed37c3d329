"""A cancellation token shared between a request's task and the worker thread doing its blocking work.

Cancelling an asyncio task does not stop a thread: a database query started for a client that has gone away would
run on until its deadline, holding a connection and a worker. The request sets the token when it is cancelled; the
executor checks it (SQLite's progress handler) or registers a callback that interrupts the work (PostgreSQL's
cancel request), so the query stops within milliseconds.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        """Mark cancelled and run the registered callbacks (once; safe from any thread)."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            with contextlib.suppress(Exception):  # the work may have finished meanwhile
                callback()

    @contextlib.contextmanager
    def on_cancel(self, callback: Callable[[], None]) -> Iterator[None]:
        """Run `callback` if the token is cancelled while the block runs (at once if it already is)."""
        with self._lock:
            already = self._event.is_set()
            if not already:
                self._callbacks.append(callback)
        if already:
            with contextlib.suppress(Exception):
                callback()
        try:
            yield
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)
