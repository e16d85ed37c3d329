"""The ONNX Runtime session-settings benchmark builds the options it names and measures the real model."""

import onnxruntime as ort
import pytest

from app.core.config import get_settings
from app.nl2sql.engine import served_session_options
from bench.experiments import ort_session
from models.bases import get_base


def test_each_variant_sets_the_session_options_it_names() -> None:
    opts = {v.name: ort_session.session_options(v) for v in ort_session.VARIANTS}
    assert opts["served"].graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts["served"].execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts["served"].intra_op_num_threads == get_settings().ort_threads  # 0 (ORT's default) unless set
    engine = served_session_options()
    for setting in ("graph_optimization_level", "execution_mode", "intra_op_num_threads", "inter_op_num_threads"):
        assert getattr(opts["served"], setting) == getattr(engine, setting), setting
    assert opts["threads-1"].intra_op_num_threads == 1
    assert opts["no-spin"].get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts["opt-off"].graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert opts["parallel"].execution_mode == ort.ExecutionMode.ORT_PARALLEL


@pytest.mark.slow
def test_a_variant_is_measured_on_the_real_model_and_compared_with_served() -> None:
    model_dir = get_base().onnx_dir / "fp32"
    x = ort_session.measure(ort_session.BY_NAME["threads-1"], model_dir, n_prompts=2, steps=2, new_tokens=4)
    assert x["prefill_ms"] > 0 and x["step_b1_ms"] > 0 and x["step_b8_ms"] > 0 and x["prompt_tokens"] > 20
    assert len(x["answers"]) == 2 and all(a.strip() for a in x["answers"])
    served = ort_session.measure(ort_session.BY_NAME["served"], model_dir, n_prompts=2, steps=2, new_tokens=4)
    assert x["answers"] == served["answers"]  # one thread or two: the same fp32 answers
