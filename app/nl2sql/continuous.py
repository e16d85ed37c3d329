"""Continuous batching: requests join the decoding batch at step boundaries and leave as soon as they finish.

With static batches (`app.nl2sql.batcher.WholeBatches`) a request that arrives while a batch decodes waits for the
whole batch (up to `max_new_tokens` steps), and a short answer waits for the longest one. Here the worker advances one
decode step at a time and, before each step, lets queued requests in (prefilled alone, then merged), up to
`max_batch_size` rows. It needs a generator that decodes step by step (`Generator.stepwise`). The queue, its bounds,
deadlines and shedding are the `RequestQueue`'s; only the worker differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from app.nl2sql.batcher import Generated, QueueClosed, QueuedRequest, RequestQueue, count_joined, fail_all
from app.nl2sql.generator import Generation, GenerationRequest, Generator, StepDecoder


class GenerationStepper:
    """Drives a generator's StepDecoder: `add` a request by key, `step` once, get finished results by key."""

    def __init__(self, generator: Generator, max_new_tokens: int):
        if not generator.stepwise:
            raise ValueError(f"continuous batching needs a generator that decodes step by step ({generator.model_id})")
        self.generator, self.max_new_tokens = generator, max_new_tokens
        self.mean_s: float | None = None  # moving average of one request's decode time (for Retry-After)
        self.reset()

    def swap(self, generator: Generator) -> None:
        """Hot swap (in the generation thread, so between steps): new rows join a batch on `generator`; rows already
        decoding go on in their own batch, on the model they started with, until they finish. Nobody waits for a
        drain, and no answer mixes two models."""
        if len(self.batch):
            self.draining.append(self.batch)
        self.generator, self.batch = generator, generator.decode_batch()

    def reset(self) -> None:
        self.batch: StepDecoder = self.generator.decode_batch()
        self.draining: list[StepDecoder] = []  # batches of models swapped out, until their last row finishes
        # key -> (start time, batch size when it joined, background work)
        self._joined: dict[object, tuple[float, int, bool]] = {}

    def __len__(self) -> int:
        return len(self.batch) + sum(len(b) for b in self.draining)

    def add(self, key: object, request: GenerationRequest) -> Generated | None:
        t0 = time.perf_counter()
        limit = self.max_new_tokens if request.max_new_tokens is None else request.max_new_tokens
        done = self.batch.add(key, request.prompt, limit, request.sampling)
        self._joined[key] = (t0, len(self.batch) + (done is not None), request.background)
        return None if done is None else self._result(key, done)

    def drop(self, keys: set[object]) -> None:
        for batch in (self.batch, *self.draining):
            batch.drop(keys)
        self.draining = [b for b in self.draining if len(b)]
        for key in keys:
            self._joined.pop(key, None)

    def step(self) -> dict[object, Generated]:
        done = {}
        for batch in (*self.draining, self.batch):  # one step each: two models decode side by side while draining
            if len(batch):
                done |= batch.step()
        self.draining = [b for b in self.draining if len(b)]
        return {k: self._result(k, g) for k, g in done.items()}

    def _result(self, key: object, g: Generation) -> Generated:
        t0, size, background = self._joined.pop(key)
        took = time.perf_counter() - t0
        if not background:  # Retry-After is about users' answers
            self.mean_s = took if self.mean_s is None else 0.7 * self.mean_s + 0.3 * took
        return Generated(g.text, took * 1000, size, g.model_id)


class ContinuousBatches:
    """The worker strategy: one decode step at a time; requests join before a step and leave when finished."""

    def __init__(
        self,
        generator: Generator,
        max_new_tokens: int,
        max_batch_size: int = 8,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.stepper = GenerationStepper(generator, max_new_tokens)
        self.max_batch_size, self.on_batch = max_batch_size, on_batch
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")

    def _advance(self, new: list[tuple[int, GenerationRequest]], gone: set[object]) -> dict[object, Generated]:
        """In the generation thread: rows nobody waits for leave, `new` requests join, one decode step for all."""
        if gone:
            self.stepper.drop(gone)
        finished = {}
        for key, request in new:
            done = self.stepper.add(key, request)
            if done is not None:
                finished[key] = done
        if len(self.stepper):
            finished.update(self.stepper.step())
        return finished

    async def swap(self, generator: Generator) -> None:
        """Hot swap at a step boundary (the generation thread runs it between two steps): rows already decoding
        finish on the old model, new ones join on the new one at once, so no request fails or waits for a drain."""
        await asyncio.get_running_loop().run_in_executor(self.pool, self.stepper.swap, generator)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _admit(self, queue: RequestQueue, active: dict[int, QueuedRequest]) -> list[QueuedRequest]:
        """Queued requests that join before the next step (waits for one when nothing decodes)."""
        new = [] if active else [await queue.next_live(None)]
        while len(active) + len(new) < self.max_batch_size:
            item = await queue.next_live(0)
            if item is None:
                break
            new.append(item)
        if new:
            active |= {id(i): i for i in new}
            count_joined(queue.stats, new, len(active), self.on_batch)
        return new

    async def run(self, queue: RequestQueue) -> None:
        loop = asyncio.get_running_loop()
        active: dict[int, QueuedRequest] = {}
        while True:
            new = await self._admit(queue, active)
            # a waiter that went away (its client disconnected, or a cancelled execution-guided candidate) stops
            # costing decode steps
            gone = {key for key, item in active.items() if item.future.done()}
            for key in gone:
                del active[key]
            queue.stats.dropped += len(gone)
            try:
                requests = [(id(i), i.request) for i in new]
                finished = await loop.run_in_executor(self.pool, self._advance, requests, gone)
            except asyncio.CancelledError:  # stop(): nobody may hang on a decode that will not finish
                fail_all(active.values(), QueueClosed())
                self.stepper.reset()
                raise
            except Exception as exc:  # the decode failed: every active request gets the error, the worker goes on
                fail_all(active.values(), exc)
                self.stepper.reset()
                active = {}
                continue
            queue.stats.mean_batch_s = self.stepper.mean_s
            for key, result in finished.items():
                item = active.pop(key)
                if not item.future.done():
                    item.future.set_result(result)
