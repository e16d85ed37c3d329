"""Decode steps with IO binding (the KV OrtValues of one step bound as the next step's past) give exactly the
answers of the numpy feed path, through rows joining and leaving mid-decode, greedy and sampled."""

import numpy as np
import onnxruntime as ort
import pytest
import sqlalchemy as sa

from app.db.catalog import SchemaCatalog
from app.nl2sql.engine import DecodeBatch, Generation, Sampling
from app.nl2sql.prompt import build_prompt, format_schema
from models.scenarios import load_suite

JOINS = {0: [0, 1], 2: [2], 5: [3, 4], 9: [5]}  # decode step -> rows that join before it
LENGTHS = [24, 8, 30, 12, 20, 16]  # max new tokens: rows leave at different steps
SAMPLING = [Sampling(), Sampling(0.9, seed=3), Sampling(), Sampling(0.7, seed=11), Sampling(), Sampling()]


@pytest.fixture(scope="module")
def prompts(demo_db):
    text = format_schema(SchemaCatalog(sa.create_engine(f"sqlite:///{demo_db}")).schema)
    return [build_prompt(text, c.question) for c in load_suite()[2::9][: len(LENGTHS)]]


def _staggered(generator, prompts: list[str], io_binding: bool) -> tuple[list[Generation], list[type]]:
    """Continuous batching's pattern: rows join at different steps and finish at different lengths. Also returns
    the type of the KV the batch held after each step."""
    batch, done, kinds, step = DecodeBatch(generator, io_binding=io_binding), {}, [], 0
    while step <= max(JOINS) or len(batch):
        for i in JOINS.get(step, []):
            g = batch.add(i, prompts[i], LENGTHS[i], SAMPLING[i])
            if g is not None:
                done[i] = g
        if len(batch):
            done |= batch.step()
            kinds += [type(k) for k in batch.kv[:1]]
        step += 1
    return [done[i] for i in range(len(prompts))], kinds


@pytest.mark.slow
def test_io_binding_gives_the_answers_of_the_numpy_path_through_joins_and_leaves(generator, prompts):
    bound, kinds = _staggered(generator, prompts, io_binding=True)
    fed, fed_kinds = _staggered(generator, prompts, io_binding=False)
    assert bound == fed  # texts, prompt and new token counts
    assert {g.new_tokens for g in bound} != {1}  # rows really decoded (not all stopped at once)
    assert ort.OrtValue in kinds and set(fed_kinds) == {np.ndarray}  # the bound path kept ORT's own buffers


@pytest.mark.slow
def test_generate_with_io_binding_matches_the_numpy_path_in_a_batch(generator, prompts):
    saved = generator.io_binding
    try:
        generator.io_binding = True
        bound = [g.text for g in generator.generate(prompts[:4], 16)]
        generator.io_binding = False
        fed = [g.text for g in generator.generate(prompts[:4], 16)]
    finally:
        generator.io_binding = saved
    assert bound == fed
