"""An asyncio batching queue in front of the generator: concurrent requests decode together.

Requests wait at most `max_wait_ms` for company, up to `max_batch_size` per batch. The queue is bounded: when it is
full `submit` raises `QueueFull` at once (the API answers 503 with Retry-After) instead of queueing without bound.
Generation runs in one worker thread, so the event loop keeps serving while the model decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The batching queue is at capacity; retry later."""


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    sizes: Counter = field(default_factory=Counter)
    last_size: int = 0

    def as_dict(self) -> dict:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "last_size": self.last_size,
            "sizes": {str(k): v for k, v in sorted(self.sizes.items())},
        }


@dataclass
class _Item:
    payload: Any
    future: asyncio.Future


class Batcher:
    def __init__(
        self,
        run_batch: Callable[[Sequence[Any]], list[Any]],
        max_batch_size: int = 8,
        max_wait_ms: float = 10.0,
        max_queue: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ):
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_queue)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._task: asyncio.Task | None = None
        self._on_batch = on_batch
        self.stats = BatchStats()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._worker(), name="batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, payload: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Item(payload, fut))
        except asyncio.QueueFull:
            raise QueueFull from None
        return await fut

    async def _collect(self) -> list[_Item]:
        items = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(items) < self.max_batch_size:
            timeout = deadline - asyncio.get_running_loop().time()
            try:
                items.append(
                    self._queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self._queue.get(), timeout)
                )
            except (asyncio.QueueEmpty, TimeoutError):
                break
        return [i for i in items if not i.future.cancelled()]

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            if not items:
                continue
            self.stats.batches += 1
            self.stats.requests += len(items)
            self.stats.sizes[len(items)] += 1
            self.stats.last_size = len(items)
            if self._on_batch:
                self._on_batch(len(items))
            try:
                results = await loop.run_in_executor(self._pool, self._run_batch, [i.payload for i in items])
            except Exception as exc:  # the batch failed: every waiter gets the error, the worker goes on
                for i in items:
                    if not i.future.done():
                        i.future.set_exception(exc)
                continue
            for i, r in zip(items, results, strict=True):
                if not i.future.done():
                    i.future.set_result(r)
