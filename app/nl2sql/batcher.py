"""An asyncio batching queue in front of the generator: concurrent requests decode together.

Requests wait at most `max_wait_ms` for company, up to `max_batch_size` per batch. The queue is bounded twice, so a
saturated service sheds load fast instead of queueing without bound: when `max_queue` requests wait, `submit` raises
`QueueFull` at once; a request not started within `max_queue_wait_s` leaves the queue with `QueueTimeout`. Both
are answered 503 with a Retry-After of about one batch's time (`retry_after_s`). Generation runs in one worker
thread, so the event loop keeps serving while the model decodes. `drain()` (on SIGTERM) and `stop()` answer whoever
still waits with `QueueClosed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The batching queue is at capacity; retry later."""


class QueueTimeout(QueueFull):
    """The request waited `max_queue_wait_s` without reaching the model; retry later."""


class QueueClosed(QueueFull):
    """The service is shutting down."""


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    sizes: Counter = field(default_factory=Counter)
    last_size: int = 0
    timed_out: int = 0
    cancelled: int = 0  # waiters that went away before their answer (client gone, candidate no longer needed)
    dropped: int = 0  # of those, rows that left the decoding batch unfinished (continuous batching)
    mean_batch_s: float | None = None  # moving average of one batch's generation time

    def as_dict(self) -> dict:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "last_size": self.last_size,
            "sizes": {str(k): v for k, v in sorted(self.sizes.items())},
            "timed_out": self.timed_out,
            "cancelled": self.cancelled,
            "dropped": self.dropped,
            "mean_batch_s": round(self.mean_batch_s, 3) if self.mean_batch_s is not None else None,
        }


@dataclass
class _Item:
    payload: Any
    future: asyncio.Future
    started: bool = False  # taken into a batch: from then on the answer is worth waiting for


class Batcher:
    def __init__(
        self,
        run_batch: Callable[[Sequence[Any]], list[Any]],
        max_batch_size: int = 8,
        max_wait_ms: float = 10.0,
        max_queue: int = 64,
        on_batch: Callable[[int], None] | None = None,
        max_queue_wait_s: float | None = None,
    ):
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue_wait_s = max_queue_wait_s
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_queue)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._task: asyncio.Task | None = None
        self._on_batch = on_batch
        self._closed = False
        self.stats = BatchStats()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def full(self) -> bool:
        return self._closed or self._queue.full()

    def start(self) -> None:
        if self._task is None:
            self._closed = False
            self._task = asyncio.get_running_loop().create_task(self._worker(), name="batcher")

    def drain(self) -> None:
        """Take no more work and answer everything still queued with QueueClosed (503); a batch that is decoding
        finishes. Called when the server is told to stop, so a graceful shutdown does not wait on the queue."""
        self._closed = True
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(QueueClosed())

    async def stop(self) -> None:
        """Drain, then stop the worker; the waiters of a batch cut short get QueueClosed too."""
        self.drain()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, payload: Any) -> Any:
        if self._closed:
            raise QueueClosed
        item = _Item(payload, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            raise QueueFull from None
        try:
            if self.max_queue_wait_s is None:
                return await item.future
            # Wait for the answer, but give up on the queue (not on a batch already decoding) at the deadline.
            done, _ = await asyncio.wait({item.future}, timeout=self.max_queue_wait_s)
            if not done and not item.started:
                item.future.cancel()  # the worker skips cancelled items
                self.stats.timed_out += 1
                raise QueueTimeout
            return await item.future
        except asyncio.CancelledError:
            item.future.cancel()  # the waiter went away: the worker skips it (continuous batching drops its row)
            self.stats.cancelled += 1
            raise

    async def _next_live(self, timeout: float | None) -> _Item | None:  # None only when timeout is given
        """The next queued item whose waiter still waits (timed-out ones are dropped here), or None at `timeout`."""
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        while True:
            if end is None:
                item = await self._queue.get()
            else:
                left = end - loop.time()
                try:
                    item = self._queue.get_nowait() if left <= 0 else await asyncio.wait_for(self._queue.get(), left)
                except (asyncio.QueueEmpty, TimeoutError):
                    return None
            if not item.future.done():
                item.started = True
                return item

    async def _collect(self) -> list[_Item]:
        items = [await self._next_live(None)]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(items) < self.max_batch_size:
            item = await self._next_live(max(0.0, deadline - asyncio.get_running_loop().time()))
            if item is None:
                break
            items.append(item)
        return items

    def retry_after_s(self) -> int:
        """What to tell a shed client: about one batch's generation time (when a slot frees), 1 to 30 s."""
        return max(1, min(30, math.ceil(self.stats.mean_batch_s or 2.0)))

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            self.stats.batches += 1
            self.stats.requests += len(items)
            self.stats.sizes[len(items)] += 1
            self.stats.last_size = len(items)
            if self._on_batch:
                self._on_batch(len(items))
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._pool, self._run_batch, [i.payload for i in items])
            except asyncio.CancelledError:  # stop() during a batch: its waiters must not hang
                for i in items:
                    if not i.future.done():
                        i.future.set_exception(QueueClosed())
                raise
            except Exception as exc:  # the batch failed: every waiter gets the error, the worker goes on
                for i in items:
                    if not i.future.done():
                        i.future.set_exception(exc)
                continue
            took = time.perf_counter() - t0
            prev = self.stats.mean_batch_s
            self.stats.mean_batch_s = took if prev is None else 0.7 * prev + 0.3 * took
            for i, r in zip(items, results, strict=True):
                if not i.future.done():
                    i.future.set_result(r)
