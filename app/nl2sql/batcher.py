"""An asyncio batching queue in front of the generator: concurrent requests decode together.

A `Batcher` is a `RequestQueue` (its bounds, deadlines, shedding and statistics) plus a worker strategy that takes
requests off it and decodes them: `WholeBatches` here (requests wait at most `max_wait_ms` for company, up to
`max_batch_size` per batch, and the batch decodes to its end), or `app.nl2sql.continuous.ContinuousBatches` (requests
join and leave a running decode at step boundaries). The queue is bounded twice, so a saturated service sheds load
fast instead of queueing without bound: when `max_queue` requests wait, `submit` raises `QueueFull` at once; a request
not started within `max_queue_wait_s` leaves the queue with `QueueTimeout`. Both are answered 503 with a Retry-After of
about one batch's time (`retry_after_s`). Generation runs in one worker thread, so the event loop keeps serving while
the model decodes. `drain()` (on SIGTERM) and `stop()` answer whoever still waits with `QueueClosed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from app.nl2sql.generator import Generation, GenerationRequest, Generator


class QueueFull(Exception):
    """The batching queue is at capacity; retry later."""


class QueueTimeout(QueueFull):
    """The request waited `max_queue_wait_s` without reaching the model; retry later."""


class QueueClosed(QueueFull):
    """The service is shutting down."""


@dataclass(frozen=True)
class Generated:
    """One request's answer as the queue returns it."""

    text: str
    generate_ms: float  # from joining the decode to its end (static batches: the whole batch's time)
    batch_size: int  # rows decoding together when it joined
    model_id: str = ""  # the model that wrote it (an answer decoded across a hot swap names the old one)


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

    def count_batch(self, new: int, size: int) -> None:
        """`new` requests started; `size` rows now decode together."""
        self.batches += 1
        self.requests += new
        self.sizes[size] += 1
        self.last_size = size

    def time_batch(self, seconds: float) -> None:
        prev = self.mean_batch_s
        self.mean_batch_s = seconds if prev is None else 0.7 * prev + 0.3 * seconds


@dataclass
class QueuedRequest:
    request: GenerationRequest
    future: asyncio.Future
    started: bool = False  # taken into a batch: from then on the answer is worth waiting for


class RequestQueue:
    """The bounded queue: limits, deadlines, shedding and statistics; no decoding."""

    def __init__(self, max_queue: int = 64, max_queue_wait_s: float | None = None):
        self.max_queue_wait_s = max_queue_wait_s
        self._queue: asyncio.Queue[QueuedRequest] = asyncio.Queue(maxsize=max_queue)
        self.closed = False
        self.stats = BatchStats()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def full(self) -> bool:
        return self.closed or self._queue.full()

    def drain(self) -> None:
        """Take no more work and answer everything still queued with QueueClosed."""
        self.closed = True
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(QueueClosed())

    async def submit(self, request: GenerationRequest) -> Generated:
        if self.closed:
            raise QueueClosed
        item = QueuedRequest(request, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            raise QueueFull from None
        try:
            if self.max_queue_wait_s is None or request.background:
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
            if not request.background:
                self.stats.cancelled += 1
            raise

    async def next_live(self, timeout: float | None) -> QueuedRequest | None:  # None only when timeout is given
        """The next queued request whose waiter still waits (timed-out ones are dropped here), or None at `timeout`."""
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


def count_joined(
    stats: BatchStats, items: list[QueuedRequest], size: int, on_batch: Callable[[int], None] | None
) -> bool:
    """Count the batch `items` joined (`size` rows decode now) in `stats` and `on_batch`, users' requests only: warm-up
    work alone is nobody's batch (`GenerationRequest.background`). Whether any user's request was among them."""
    users = sum(not i.request.background for i in items)
    if users:
        stats.count_batch(users, size)
        if on_batch:
            on_batch(size)
    return bool(users)


def fail_all(items, exc: BaseException) -> None:
    """Every waiter of `items` still waiting gets `exc`: nobody hangs on a decode that will not finish."""
    for item in items:
        if not item.future.done():
            item.future.set_exception(exc)


class Worker(Protocol):
    """A batching strategy: takes requests off the queue and answers them, in its own generation thread."""

    async def run(self, queue: RequestQueue) -> None: ...

    async def swap(self, generator: Generator) -> None: ...  # serve `generator` from the next batch/step on

    def close(self) -> None: ...


class WholeBatches:
    """Static batches: up to `max_batch_size` requests that arrive within `max_wait_ms` decode together, to the end."""

    def __init__(
        self,
        generator: Generator,
        max_new_tokens: int,
        max_batch_size: int = 8,
        max_wait_ms: float = 10.0,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.generator, self.max_new_tokens = generator, max_new_tokens
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.on_batch = on_batch
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")

    def decode(self, generator: Generator, requests: list[GenerationRequest]) -> list[Generated]:
        t0 = time.perf_counter()
        gens: dict[int, Generation] = {}
        limits = [self.max_new_tokens if r.max_new_tokens is None else r.max_new_tokens for r in requests]
        for limit in dict.fromkeys(limits):  # one generate call per token limit (a warm-up's 0 apart)
            idx = [i for i, n in enumerate(limits) if n == limit]
            out = generator.generate([requests[i].prompt for i in idx], limit, [requests[i].sampling for i in idx])
            gens |= dict(zip(idx, out, strict=True))
        ms = (time.perf_counter() - t0) * 1000
        return [Generated(gens[i].text, ms, len(requests), gens[i].model_id) for i in range(len(requests))]

    async def swap(self, generator: Generator) -> None:
        self.generator = generator  # the batch decoding keeps the generator it started with

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _collect(self, queue: RequestQueue) -> list[QueuedRequest]:
        items = [await queue.next_live(None)]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(items) < self.max_batch_size:
            item = await queue.next_live(max(0.0, deadline - asyncio.get_running_loop().time()))
            if item is None:
                break
            items.append(item)
        return items

    async def run(self, queue: RequestQueue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect(queue)
            users = count_joined(queue.stats, items, len(items), self.on_batch)
            t0 = time.perf_counter()
            try:
                requests = [i.request for i in items]
                results = await loop.run_in_executor(self.pool, self.decode, self.generator, requests)
            except asyncio.CancelledError:  # stop() during a batch: its waiters must not hang
                fail_all(items, QueueClosed())
                raise
            except Exception as exc:  # the batch failed: every waiter gets the error, the worker goes on
                fail_all(items, exc)
                continue
            if users:
                queue.stats.time_batch(time.perf_counter() - t0)
            for i, r in zip(items, results, strict=True):
                if not i.future.done():
                    i.future.set_result(r)


class Batcher:
    """The queue and its worker, started and stopped together; what the service submits requests to."""

    def __init__(self, queue: RequestQueue, worker: Worker):
        self.queue, self.worker = queue, worker
        self._task: asyncio.Task | None = None

    @property
    def stats(self) -> BatchStats:
        return self.queue.stats

    @property
    def depth(self) -> int:
        return self.queue.depth

    @property
    def full(self) -> bool:
        return self.queue.full

    async def submit(self, request: GenerationRequest) -> Generated:
        return await self.queue.submit(request)

    def start(self) -> None:
        if self._task is None:
            self.queue.closed = False
            self._task = asyncio.get_running_loop().create_task(self.worker.run(self.queue), name="batcher")

    def drain(self) -> None:
        """Take no more work and answer everything still queued with QueueClosed (503); a batch that is decoding
        finishes. Called when the server is told to stop, so a graceful shutdown does not wait on the queue."""
        self.queue.drain()

    async def stop(self) -> None:
        """Drain, then stop the worker; the waiters of a batch cut short get QueueClosed too."""
        self.drain()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.worker.close()

    async def swap(self, generator: Generator) -> None:
        """Hot swap: new requests decode on `generator`; those decoding finish on the model they started with."""
        await self.worker.swap(generator)

    def retry_after_s(self) -> int:
        """What to tell a shed client: about one batch's generation time (when a slot frees), 1 to 30 s."""
        return max(1, min(30, math.ceil(self.stats.mean_batch_s or 2.0)))
