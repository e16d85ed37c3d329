"""The batching queue on its own (whole batches): batches form under concurrency, order is kept, errors reach every
waiter, a full queue refuses at once, deadlines and draining answer waiters, and a hot swap reaches the next batch.
The generator is a small stand-in whose `generate` upper-cases prompts (optionally held at a gate): the queue, not
a model, is under test here."""

import asyncio
import threading

import pytest

from app.nl2sql.batcher import Batcher, QueueClosed, QueueFull, QueueTimeout, RequestQueue, WholeBatches
from app.nl2sql.generator import Generation, GenerationRequest


class Upper:
    """Answers each prompt upper-cased, after `hold` (an event to wait for, or seconds of work per batch)."""

    stepwise, fine_tuned, model_dir = False, True, None

    def __init__(self, hold: threading.Event | float = 0.0, model_id: str = "upper", fail_first: bool = False):
        self.hold, self.model_id, self.fail_first = hold, model_id, fail_first
        self.batches: list[list[str]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, prompts, max_new_tokens=160, sampling=None):
        self.batches.append(list(prompts))
        if isinstance(self.hold, threading.Event):
            assert self.hold.wait(5)
        elif self.hold:
            threading.Event().wait(self.hold)
        if self.fail_first and len(self.batches) == 1:
            raise RuntimeError("boom")
        return [Generation(p.upper(), 1, 1, self.model_id) for p in prompts]


def _batcher(gen, max_batch_size=8, max_wait_ms=0.0, max_queue=64, max_queue_wait_s=None) -> Batcher:
    return Batcher(RequestQueue(max_queue, max_queue_wait_s), WholeBatches(gen, 16, max_batch_size, max_wait_ms))


async def _text(b: Batcher, prompt: str) -> str:
    return (await b.submit(GenerationRequest(prompt))).text


async def _until_started(gen: Upper, n: int = 1) -> None:
    """Wait (event loop free) until the generator has taken `n` batches."""
    for _ in range(500):
        if len(gen.batches) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the worker never started a batch")


async def test_concurrent_requests_share_batches_and_get_their_own_answers():
    b = _batcher(Upper(0.05), max_wait_ms=20)
    b.start()
    words = [f"req-{i}" for i in range(24)]
    results = await asyncio.gather(*(b.submit(GenerationRequest(w)) for w in words))
    await b.stop()
    assert [r.text for r in results] == [w.upper() for w in words]
    assert all(1 <= r.batch_size <= 8 for r in results)
    assert b.stats.requests == 24
    assert b.stats.batches < 24
    assert max(int(k) for k in b.stats.as_dict()["sizes"]) > 1


async def test_full_queue_refuses_immediately():
    gate = threading.Event()
    gen = Upper(gate)
    b = _batcher(gen, max_batch_size=1, max_queue=2)
    b.start()
    first = asyncio.ensure_future(_text(b, "a"))
    await _until_started(gen)  # the worker holds "a"; the queue now has room for two
    waiting = [asyncio.ensure_future(_text(b, x)) for x in "bc"]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await b.submit(GenerationRequest("d"))
    gate.set()
    assert await first == "A"
    assert [await w for w in waiting] == ["B", "C"]
    await b.stop()


async def test_failing_batch_reaches_every_waiter_and_worker_survives():
    b = _batcher(Upper(fail_first=True), max_batch_size=4, max_wait_ms=20)
    b.start()
    res = await asyncio.gather(_text(b, "x"), _text(b, "y"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in res)
    assert await _text(b, "z") == "Z"
    await b.stop()


async def test_request_not_started_within_the_deadline_leaves_the_queue():
    gate = threading.Event()
    gen = Upper(gate)
    b = _batcher(gen, max_batch_size=1, max_queue=8, max_queue_wait_s=0.2)
    b.start()
    first = asyncio.ensure_future(_text(b, "a"))  # decoding: past the deadline it is still worth waiting for
    await _until_started(gen)
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(QueueTimeout):
        await b.submit(GenerationRequest("b"))
    assert 0.15 < asyncio.get_running_loop().time() - t0 < 1.0
    assert b.stats.timed_out == 1
    gate.set()
    assert await first == "A"
    assert await _text(b, "c") == "C"  # the timed-out item was skipped, not decoded
    assert b.stats.requests == 2 and gen.batches == [["a"], ["c"]]
    await b.stop()


async def test_drain_answers_queued_requests_at_once_and_the_running_batch_finishes():
    gate = threading.Event()
    gen = Upper(gate)
    b = _batcher(gen, max_batch_size=1, max_queue=8)
    b.start()
    running = asyncio.ensure_future(_text(b, "a"))
    await _until_started(gen)
    queued = [asyncio.ensure_future(_text(b, x)) for x in "bcd"]
    await asyncio.sleep(0)
    b.drain()
    for q in queued:
        with pytest.raises(QueueClosed):
            await q
    assert b.full
    with pytest.raises(QueueClosed):
        await b.submit(GenerationRequest("e"))
    gate.set()
    assert await running == "A"
    await b.stop()


async def test_retry_after_follows_the_time_a_batch_takes():
    b = _batcher(Upper(0.3), max_batch_size=2)
    assert b.retry_after_s() == 2  # nothing measured yet
    b.start()
    await b.submit(GenerationRequest("x"))
    assert b.stats.mean_batch_s >= 0.3 and b.retry_after_s() == 1
    await b.stop()


async def test_swap_serves_the_next_batch_from_the_new_generator():
    b = _batcher(Upper(model_id="old"))
    b.start()
    assert (await b.submit(GenerationRequest("a"))).model_id == "old"
    await b.swap(Upper(model_id="new"))
    assert (await b.submit(GenerationRequest("b"))).model_id == "new"
    await b.stop()
