"""Continuous batching: requests join the decoding batch at step boundaries and leave as soon as they finish.

With static batches a request that arrives while a batch decodes waits for the whole batch (up to `max_new_tokens`
steps), and a short answer waits for the longest one. Here the worker advances one decode step at a time and, before
each step, lets queued requests in (prefilled alone, then merged), up to `max_batch_size` rows. The queue, its bounds,
deadlines and shedding are the static `Batcher`'s; only the worker differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from app.nl2sql.batcher import Batcher, QueueClosed, _Item
from app.nl2sql.engine import DecodeBatch, OnnxGenerator
from app.nl2sql.generator import Generation, GenerationRequest


class GenerationStepper:
    """Drives a DecodeBatch for the worker: `add` a request by key, `step` once, get finished results by key."""

    def __init__(
        self,
        generator: OnnxGenerator,
        max_new_tokens: int,
        finish: Callable[[Generation, float, int], Any] = lambda g, ms, size: g,
    ):
        self.generator, self.max_new_tokens, self.finish = generator, max_new_tokens, finish
        self.mean_s: float | None = None  # moving average of one request's decode time (for Retry-After)
        self.reset()

    def swap(self, generator: OnnxGenerator) -> None:
        """Hot swap (in the generation thread, so between steps): new rows join a batch on `generator`; rows already
        decoding go on in their own batch, on the model they started with, until they finish. Nobody waits for a
        drain, and no answer mixes two models."""
        if len(self.batch):
            self.draining.append(self.batch)
        self.generator, self.batch = generator, DecodeBatch(generator)

    def reset(self) -> None:
        self.batch = DecodeBatch(self.generator)
        self.draining: list[DecodeBatch] = []  # batches of models swapped out, until their last row finishes
        self._joined: dict[object, tuple[float, int]] = {}  # key -> (start time, batch size when it joined)

    def __len__(self) -> int:
        return len(self.batch) + sum(len(b) for b in self.draining)

    def add(self, key: object, request: GenerationRequest) -> Any | None:
        t0 = time.perf_counter()
        done = self.batch.add(key, request.prompt, self.max_new_tokens, request.sampling)
        self._joined[key] = (t0, len(self.batch) + (done is not None))
        return None if done is None else self._result(key, done)

    def drop(self, keys: set[object]) -> None:
        for batch in (self.batch, *self.draining):
            batch.drop(keys)
        self.draining = [b for b in self.draining if len(b)]
        for key in keys:
            self._joined.pop(key, None)

    def step(self) -> dict[object, Any]:
        done = {}
        for batch in (*self.draining, self.batch):  # one step each: two models decode side by side while draining
            if len(batch):
                done |= batch.step()
        self.draining = [b for b in self.draining if len(b)]
        return {k: self._result(k, g) for k, g in done.items()}

    def _result(self, key: object, g: Generation) -> Any:
        t0, size = self._joined.pop(key)
        took = time.perf_counter() - t0
        self.mean_s = took if self.mean_s is None else 0.7 * self.mean_s + 0.3 * took
        return self.finish(g, took * 1000, size)


class ContinuousBatcher(Batcher):
    def __init__(self, stepper: GenerationStepper, **kw):
        super().__init__(run_batch=lambda payloads: [], **kw)
        self.stepper = stepper

    def _advance(self, new: list[tuple[int, Any]], gone: set[object] = frozenset()) -> dict[object, Any]:
        """In the generation thread: rows nobody waits for leave, `new` requests join, one decode step for all."""
        if gone:
            self.stepper.drop(gone)
        finished = {}
        for key, payload in new:
            done = self.stepper.add(key, payload)
            if done is not None:
                finished[key] = done
        if len(self.stepper):
            finished.update(self.stepper.step())
        return finished

    async def swap(self, generator: OnnxGenerator) -> None:
        """Hot swap at a step boundary (the generation thread runs it between two steps): rows already decoding
        finish on the old model, new ones join on the new one at once, so no request fails or waits for a drain."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self.stepper.swap, generator)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        active: dict[int, _Item] = {}
        while True:
            new = [] if active else [await self._next_live(None)]
            while len(active) + len(new) < self.max_batch_size:
                item = await self._next_live(0)
                if item is None:
                    break
                new.append(item)
            if new:
                active |= {id(i): i for i in new}
                self.stats.batches += 1
                self.stats.requests += len(new)
                self.stats.sizes[len(active)] += 1
                self.stats.last_size = len(active)
                if self._on_batch:
                    self._on_batch(len(active))
            # a waiter that went away (its client disconnected, or a cancelled execution-guided candidate) stops
            # costing decode steps
            gone = {key for key, item in active.items() if item.future.done()}
            for key in gone:
                del active[key]
            self.stats.dropped += len(gone)
            try:
                payloads = [(id(i), i.payload) for i in new]
                finished = await loop.run_in_executor(self._pool, self._advance, payloads, gone)
            except asyncio.CancelledError:  # stop(): nobody may hang on a decode that will not finish
                self._fail(active, QueueClosed())
                raise
            except Exception as exc:  # the decode failed: every active request gets the error, the worker goes on
                self._fail(active, exc)
                active = {}
                continue
            self.stats.mean_batch_s = self.stepper.mean_s
            for key, result in finished.items():
                item = active.pop(key)
                if not item.future.done():
                    item.future.set_result(result)

    def _fail(self, active: dict[int, _Item], exc: BaseException) -> None:
        for item in active.values():
            if not item.future.done():
                item.future.set_exception(exc)
        self.stepper.reset()
