"""Continuous batching with the real model: late requests join a running decode, every answer equals the answer
decoded alone, and each response goes to its own request."""

import asyncio

import pytest
import sqlalchemy as sa

from app.db.catalog import SchemaCatalog
from app.nl2sql.batcher import Batcher, RequestQueue
from app.nl2sql.continuous import ContinuousBatches
from app.nl2sql.generator import GenerationRequest
from app.nl2sql.prompt import build_prompt, format_schema
from models.scenarios import load_suite

NEW_TOKENS = 40


@pytest.fixture(scope="module")
def prompts(demo_db):
    text = format_schema(SchemaCatalog(sa.create_engine(f"sqlite:///{demo_db}")).schema)
    return [build_prompt(text, c.question) for c in load_suite()[1::8][:12]]


@pytest.fixture(scope="module")
def alone(generator, prompts):
    return [generator.generate([p], NEW_TOKENS)[0].text for p in prompts]


def _batcher(generator, size=8, queue=32):
    return Batcher(RequestQueue(queue), ContinuousBatches(generator, NEW_TOKENS, size))


async def _ask(b: Batcher, prompt: str) -> tuple[str, int]:
    g = await b.submit(GenerationRequest(prompt))
    return g.text, g.batch_size


@pytest.mark.slow
async def test_staggered_requests_join_the_running_batch_and_match_single_decoding(generator, prompts, alone):
    b = _batcher(generator)
    b.start()
    try:

        async def late(i: int):
            await asyncio.sleep(0.05 * i)  # arrivals spread over the first decode steps of earlier requests
            return await _ask(b, prompts[i])

        results = await asyncio.gather(*(late(i) for i in range(len(prompts))))
    finally:
        await b.stop()
    assert [text for text, _ in results] == alone  # same answers, each to its own request, in request order
    assert max(joined for _, joined in results) > 1  # some joined a batch that was already decoding
    assert b.stats.requests == len(prompts)


@pytest.mark.slow
async def test_batch_never_exceeds_its_size_and_the_queue_holds_the_rest(generator, prompts, alone):
    b = _batcher(generator, size=2)
    b.start()
    try:
        results = await asyncio.gather(*(_ask(b, p) for p in prompts[:5]))
    finally:
        await b.stop()
    assert [text for text, _ in results] == alone[:5]
    assert max(joined for _, joined in results) == 2
    assert max(int(k) for k in b.stats.as_dict()["sizes"]) <= 2


@pytest.mark.slow
async def test_a_cancelled_request_leaves_the_decoding_batch_and_the_others_answer_as_alone(generator, prompts, alone):
    long_ = sorted(range(len(prompts)), key=lambda i: -len(alone[i]))[:2]  # two answers that take many steps
    b = _batcher(generator)
    steps = []
    stepper = b.worker.stepper
    step = stepper.step
    stepper.step = lambda: steps.append(len(stepper)) or step()
    b.start()
    try:
        kept = asyncio.ensure_future(_ask(b, prompts[long_[0]]))
        gone = asyncio.ensure_future(_ask(b, prompts[long_[1]]))
        while len(stepper) < 2:
            await asyncio.sleep(0.005)
        at_cancel = len(steps)
        gone.cancel()
        text, _ = await kept
    finally:
        await b.stop()
    assert text == alone[long_[0]]  # the neighbour's leaving changed nothing
    assert gone.cancelled()
    assert 2 not in steps[at_cancel + 2 :]  # it left within a step, not after decoding its whole answer
    assert len(steps) - at_cancel > 10  # (the kept answer went on for many steps after that)
