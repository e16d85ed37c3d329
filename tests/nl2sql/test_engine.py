"""The ONNX engine: prefix caching and batching never change an answer; seeded sampling is reproducible."""

import numpy as np
import pytest
import sqlalchemy as sa

from app.db.catalog import SchemaCatalog
from app.nl2sql.engine import GREEDY, PrefixCache, Sampling
from app.nl2sql.prompt import build_prompt, format_schema
from models.scenarios import load_suite

NEW_TOKENS = 48


@pytest.fixture(scope="module")
def prompts(demo_db):
    text = format_schema(SchemaCatalog(sa.create_engine(f"sqlite:///{demo_db}")).schema)
    cases = load_suite()[::8][:12]  # 12 questions across all six scenarios: a batch of 8 and one of 4
    return [build_prompt(text, c.question) for c in cases]


def _kv(n: int, fill: float) -> list[np.ndarray]:
    return [np.full((1, 3, n, 4), fill, dtype=np.float32)]


def test_prefix_cache_returns_the_longest_shared_prefix_and_evicts_oldest():
    cache = PrefixCache(max_entries=2, min_tokens=3)
    a, b = list(range(10)), [*range(6), 99, 98, 97]
    cache.store(a, _kv(10, 1.0))
    cache.store(b, _kv(9, 2.0))
    n, kv = cache.lookup([*range(8), 50])
    assert n == 8 and kv[0].shape[2] == 8 and float(kv[0][0, 0, 0, 0]) == 1.0  # from `a`, the longer match
    n, _ = cache.lookup(a)
    assert n == 9  # the same prompt again: its last token is still run to get logits
    assert cache.lookup([7, 7, 7, 7])[1] is None  # nothing shared
    assert cache.lookup([0, 1, 5])[1] is None  # shorter than min_tokens
    cache.store([42] * 5, _kv(5, 3.0))  # evicts the least recently used entry (`b`; `a` was just used)
    assert cache.lookup([*range(6), 99, 98, 0])[0] == 6  # served by `a` now, no longer by `b`


def test_an_entry_that_a_longer_one_extends_makes_room():
    cache = PrefixCache(max_entries=2, min_tokens=3)
    other = [9] * 6
    cache.store(other, _kv(6, 0.0))
    for n in (4, 8, 12):  # a prompt stored in growing pieces (the warm-up) takes one place, not three
        cache.store(list(range(n)), _kv(n, float(n)))
    assert len(cache) == 2
    assert cache.lookup([*other, 1])[0] == 6  # the other prompt kept its place
    n, kv = cache.lookup([*range(10), 77])
    assert n == 10 and float(kv[0][0, 0, 0, 0]) == 12.0
    cache.store([0, 1, 2, 3, 5], _kv(5, 5.0))  # shares a prefix but does not extend the longer entry: both stay
    assert cache.lookup([*range(12), 1])[0] == 12
    cache.store(list(range(6)), _kv(6, 6.0))  # all of it held already (a rollback's warm-up): no new entry
    assert len(cache) == 2 and cache.lookup([*range(12), 1])[1][0][0, 0, 0, 0] == 12.0


@pytest.mark.slow
def test_prefix_caching_and_batching_give_the_same_answers_as_a_fresh_prefill(generator, prompts):
    cache = generator.prefix_cache
    saved = cache.max_entries
    try:
        cache.clear()
        cache.max_entries = 0  # off: every prompt prefilled from scratch, one at a time
        fresh = [generator.generate([p], NEW_TOKENS)[0].text for p in prompts]
        cache.max_entries = saved
        hits = cache.hits
        cached = [generator.generate([p], NEW_TOKENS)[0].text for p in prompts]
        assert cache.hits - hits >= len(prompts) - 1  # the schema prefix is shared by every prompt
        batched = [
            g.text for i in range(0, len(prompts), 8) for g in generator.generate(prompts[i : i + 8], NEW_TOKENS)
        ]
    finally:
        cache.max_entries = saved
    assert cached == fresh
    assert batched == fresh


@pytest.mark.slow
def test_seeded_sampling_is_reproducible_and_varies_with_the_seed(generator, prompts):
    p = prompts[0]
    greedy = generator.generate([p], NEW_TOKENS)[0].text
    assert generator.generate([p], NEW_TOKENS, [Sampling(temperature=0)])[0].text == greedy
    rows = [Sampling(temperature=1.0, seed=s) for s in range(4)]
    first = [g.text for g in generator.generate([p] * 4, NEW_TOKENS, rows)]
    again = [g.text for g in generator.generate([p] * 4, NEW_TOKENS, rows)]
    assert first == again
    assert len(set(first)) > 1
    mixed = generator.generate([p, p], NEW_TOKENS, [GREEDY, rows[0]])
    assert mixed[0].text == greedy and mixed[1].text == first[0]
