"""bench.llamacpp's generator is a `Generator` that decodes whole batches only and refuses what llama.cpp cannot do
(step-wise decoding, schema-constrained sampling) with a clear message. Checked without llama-cpp-python, which is
not installed here: the generator is built without loading a model, so only the parts that need none run."""

import pytest

from app.nl2sql.constrain import SchemaNames
from app.nl2sql.generator import Generator, Sampling
from bench.llamacpp import LlamaCppGenerator


@pytest.fixture
def generator() -> LlamaCppGenerator:
    gen = LlamaCppGenerator.__new__(LlamaCppGenerator)  # no GGUF to load: __init__ would open the model
    gen._fine_tuned, gen._model_id, gen.prefix_reuse = True, "llama.cpp:test.gguf", False
    return gen


def test_it_is_a_generator_of_whole_batches(generator: LlamaCppGenerator) -> None:
    assert isinstance(generator, Generator)
    assert generator.stepwise is False and generator.model_dir is None
    assert generator.model_id == "llama.cpp:test.gguf" and generator.fine_tuned
    with pytest.raises(NotImplementedError, match="no step-wise decoding"):
        generator.decode_batch()


def test_schema_constrained_sampling_is_refused_not_ignored(generator: LlamaCppGenerator) -> None:
    names = SchemaNames.of([("singer", ["name", "age"])])
    with pytest.raises(ValueError, match="needs a stepwise engine"):
        generator.generate(["SELECT"], 4, [Sampling(temperature=0.7, seed=1, names=names)])
