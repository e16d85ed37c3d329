"""What the benchmarks ask of the ONNX engine, through its supported options rather than by replacing its parts:
decoding to a forced length, a batch's decode path, the session's options and a stand-in around the session."""

import numpy as np
import onnxruntime as ort
import pytest
from tests_support import MODEL_DIR

from app.nl2sql.engine import DecodeBatch, OnnxGenerator, served_session_options
from app.nl2sql.prompt import build_prompt
from bench.engines import decode_forced

pytestmark = pytest.mark.slow

PROMPT = build_prompt("CREATE TABLE singer (singer_id INTEGER, name TEXT, age INTEGER);", "How many singers are there?")


def test_forced_length_goes_past_the_stop_token(generator) -> None:
    [natural] = generator.generate([PROMPT], 48)
    assert natural.new_tokens < 48, "the model should end this short SQL itself"
    stamps: list[float] = []
    [forced] = decode_forced(generator, [PROMPT], 48, stamps)
    assert forced.new_tokens == 48 and len(stamps) == 48  # a time for every token: the prefill's, then each step's
    assert forced.text.startswith(natural.text)  # the same greedy tokens up to where the answer ended


def test_a_batch_takes_the_decode_path_it_names(generator) -> None:
    for io_binding, kv_type in ((True, ort.OrtValue), (False, np.ndarray)):
        batch = DecodeBatch(generator, ignore_stop=True, io_binding=io_binding)
        batch.add(0, PROMPT, 4)
        batch.step()
        assert all(isinstance(kv, kv_type) for kv in batch.kv), io_binding
    assert generator.io_binding  # the generator's own setting is untouched


class _CountingSession:
    def __init__(self, session: ort.InferenceSession):
        self._session, self.runs = session, 0

    def run(self, *args, **kwargs):
        self.runs += 1
        return self._session.run(*args, **kwargs)

    def run_with_iobinding(self, *args, **kwargs):
        self.runs += 1
        return self._session.run_with_iobinding(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


def test_session_options_and_a_stand_in_around_the_session(generator) -> None:
    opts = served_session_options(threads=1)
    gen = OnnxGenerator(MODEL_DIR, prefix_cache_entries=0, session_options=opts, wrap_session=_CountingSession)
    assert isinstance(gen.session, _CountingSession)
    assert gen.session.get_session_options().intra_op_num_threads == 1
    [g] = gen.generate([PROMPT], 6)
    assert g.new_tokens == 6 and gen.session.runs == 6  # the prefill, then one step per token after the first
    assert g == generator.generate([PROMPT], 6)[0]  # one thread or all: the same fp32 answer
