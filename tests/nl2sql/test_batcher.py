"""The batching queue on its own: batches form under concurrency, order is kept, errors reach every waiter,
and a full queue refuses at once."""

import asyncio
import threading

import pytest

from app.nl2sql.batcher import Batcher, QueueClosed, QueueFull, QueueTimeout


def _slow_upper(items):
    threading.Event().wait(0.05)  # a model that takes a while per batch
    return [s.upper() for s in items]


async def test_concurrent_requests_share_batches_and_get_their_own_answers():
    b = Batcher(_slow_upper, max_batch_size=8, max_wait_ms=20, max_queue=64)
    b.start()
    words = [f"req-{i}" for i in range(24)]
    results = await asyncio.gather(*(b.submit(w) for w in words))
    await b.stop()
    assert results == [w.upper() for w in words]
    assert b.stats.requests == 24
    assert b.stats.batches < 24
    assert max(int(k) for k in b.stats.as_dict()["sizes"]) > 1


async def test_full_queue_refuses_immediately():
    gate = threading.Event()
    b = Batcher(lambda items: (gate.wait(5), items)[1], max_batch_size=1, max_wait_ms=0, max_queue=2)
    b.start()
    first = asyncio.ensure_future(b.submit("a"))
    await asyncio.sleep(0.05)  # the worker holds "a"; the queue now has room for two
    waiting = [asyncio.ensure_future(b.submit(x)) for x in "bc"]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await b.submit("d")
    gate.set()
    assert await first == "a"
    assert [await w for w in waiting] == ["b", "c"]
    await b.stop()


async def test_failing_batch_reaches_every_waiter_and_worker_survives():
    calls = []

    def flaky(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return items

    b = Batcher(flaky, max_batch_size=4, max_wait_ms=20)
    b.start()
    res = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in res)
    assert await b.submit(3) == 3
    await b.stop()


async def test_request_not_started_within_the_deadline_leaves_the_queue():
    gate = threading.Event()
    b = Batcher(
        lambda items: (gate.wait(5), items)[1], max_batch_size=1, max_wait_ms=0, max_queue=8, max_queue_wait_s=0.2
    )
    b.start()
    first = asyncio.ensure_future(b.submit("a"))  # decoding: past the deadline it is still worth waiting for
    await asyncio.sleep(0.05)
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(QueueTimeout):
        await b.submit("b")
    assert 0.15 < asyncio.get_running_loop().time() - t0 < 1.0
    assert b.stats.timed_out == 1
    gate.set()
    assert await first == "a"
    assert await b.submit("c") == "c"  # the timed-out item was skipped, not decoded
    assert b.stats.requests == 2
    await b.stop()


async def test_drain_answers_queued_requests_at_once_and_the_running_batch_finishes():
    gate = threading.Event()
    b = Batcher(lambda items: (gate.wait(5), items)[1], max_batch_size=1, max_wait_ms=0, max_queue=8)
    b.start()
    running = asyncio.ensure_future(b.submit("a"))
    await asyncio.sleep(0.05)
    queued = [asyncio.ensure_future(b.submit(x)) for x in "bcd"]
    await asyncio.sleep(0)
    b.drain()
    for q in queued:
        with pytest.raises(QueueClosed):
            await q
    assert b.full
    with pytest.raises(QueueClosed):
        await b.submit("e")
    gate.set()
    assert await running == "a"
    await b.stop()


async def test_retry_after_follows_the_time_a_batch_takes():
    b = Batcher(lambda items: (threading.Event().wait(0.3), items)[1], max_batch_size=2, max_wait_ms=0)
    assert b.retry_after_s() == 2  # nothing measured yet
    b.start()
    await b.submit(1)
    assert b.stats.mean_batch_s >= 0.3 and b.retry_after_s() == 1
    await b.stop()
