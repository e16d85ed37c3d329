"""The attention rewrite (K/V broadcast over query-head groups instead of copied to every head) leaves logits and
the KV cache bit-identical to the exported graph, for a prefill alone, a left-padded batch and decode steps."""

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tests_support import MODEL_DIR

from app.core.config import BUILD_DIR
from models.attention_graph import rewrite_dir
from models.bases import get_base


def _session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The optimum export as it is before the rewrite (the served model has it already), from the merged weights
    that `models.export --keep` leaves in build/merged (make test exports the test base so)."""
    from models.export import export_onnx, keep_last_logits

    d = tmp_path_factory.mktemp("exported")
    export_onnx(BUILD_DIR / "merged" / get_base().name, d, get_base().model_dir)
    keep_last_logits(d / "model.onnx")
    return d


@pytest.mark.slow
def test_rewritten_graph_is_bit_identical_and_drops_the_kv_expansion(generator, exported, tmp_path):
    assert rewrite_dir(exported, tmp_path) == 30
    ops = lambda path: collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)  # noqa: E731
    before, after = ops(exported / "model.onnx"), ops(tmp_path / "model.onnx")
    assert before["Expand"] - after["Expand"] == 60  # one K and one V expansion per layer
    assert ops(MODEL_DIR / "model.onnx") == after  # the served export carries the rewrite
    assert (tmp_path / "tokenizer.json").exists() and (tmp_path / "config.json").exists()

    orig, new = _session(exported / "model.onnx"), _session(tmp_path / "model.onnx")
    kv_names = generator.kv_names
    ids = [generator.tokenizer.encode(t, add_special_tokens=False).ids for t in ("SELECT 1", "How many rows? " * 9)]
    T = max(map(len, ids))
    mask = np.array([[0] * (T - len(x)) + [1] * len(x) for x in ids], np.int64)  # left-padded, as DecodeBatch pads
    feed = {
        "input_ids": np.array([[0] * (T - len(x)) + x for x in ids], np.int64),
        "attention_mask": mask,
        "position_ids": np.maximum(np.cumsum(mask, 1) - 1, 0),
    } | {k: np.zeros((len(ids), generator.kv_heads, 0, generator.head_dim), np.float32) for k in kv_names}
    for step in range(4):  # the prefill, then decode steps on the original graph's cache
        a, b = orig.run(None, feed), new.run(None, feed)
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y), f"step {step}: outputs differ by up to {np.abs(x - y).max()}"
        mask = np.concatenate([mask, np.ones((len(ids), 1), np.int64)], axis=1)
        feed = {
            "input_ids": a[0][:, -1].argmax(-1)[:, None].astype(np.int64),
            "attention_mask": mask,
            "position_ids": feed["position_ids"][:, -1:] + 1,
        } | dict(zip(kv_names, a[1:], strict=True))
