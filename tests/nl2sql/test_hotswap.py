"""Hot swap inside the decoding loop (continuous batching): a row decoding when the model is swapped finishes on the
model it started with, a row joining after the swap decodes on the new one, both step side by side, and each answer
is exactly what its model writes for that prompt alone. Two real exports (the served one and its other quantization;
the second is given its own id so the answers say which model wrote them)."""

import pytest
from tests_support import MODEL_DIR

from app.nl2sql.continuous import GenerationStepper
from app.nl2sql.engine import OnnxGenerator
from app.nl2sql.generator import GenerationRequest
from app.nl2sql.prompt import build_prompt

pytestmark = pytest.mark.slow
SCHEMA = "customers(customer_id int PK, name, country)\norders(order_id int PK, customer_id int -> customers.customer_id, total num)"
OTHER = MODEL_DIR.parent / ("int8" if MODEL_DIR.name != "int8" else "fp32")


def test_rows_finish_on_the_model_they_started_with(generator):
    other = OnnxGenerator(OTHER)
    other.manifest = other.manifest | {"model_id": "the-other-export"}
    first, second = build_prompt(SCHEMA, "How many customers are there?"), build_prompt(SCHEMA, "Total of all orders?")
    alone_first = generator.generate([first], 48)[0]
    alone_second = other.generate([second], 48)[0]
    for g in (generator, other):  # prefill in full again, as alone (int8 kernels differ with the split)
        g.prefix_cache.clear()

    stepper = GenerationStepper(generator, 48)
    assert stepper.add("first", GenerationRequest(first)) is None
    out = stepper.step()
    stepper.swap(other)
    assert len(stepper) == 1 and stepper.generator is other
    done = stepper.add("second", GenerationRequest(second))
    out |= {"second": done} if done is not None else {}
    assert len(stepper) == 2  # two batches, one per model
    while len(stepper):
        out |= stepper.step()
    assert out["first"].text == alone_first.text and out["first"].model_id == generator.model_id
    assert out["second"].text == alone_second.text and out["second"].model_id == "the-other-export"
    assert stepper.draining == []  # the old model's batch is gone once its last row finished
