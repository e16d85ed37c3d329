"""Int8 token embeddings (`models.embed_int8`): the rewritten lookup returns the fp32 rows within the block
quantization's error, the table shrinks ~4x, and a table something else also reads is left alone."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from models.embed_int8 import quantize_embeddings, quantize_rows


def lookup_graph(table: np.ndarray, shared: bool = False) -> onnx.ModelProto:
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "t"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "t", table.shape[1]])
    nodes = [helper.make_node("Gather", ["table", "ids"], ["out"], axis=0)]
    outputs = [out]
    if shared:  # an output head reading the same table (tied weights)
        nodes.append(helper.make_node("ReduceSum", ["table"], ["total"], keepdims=0))
        outputs.append(helper.make_tensor_value_info("total", TensorProto.FLOAT, []))
    graph = helper.make_graph(nodes, "g", [ids], outputs, [numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["out"], {"ids": ids})[0]


def test_the_int8_lookup_returns_the_rows_within_the_block_error():
    rng = np.random.default_rng(0)
    table = rng.normal(0, 0.05, (12_000, 64)).astype(np.float32)
    table[7, 3] = 4.0  # an outlier costs precision in its own block only
    ids = np.array([[0, 7, 11_999], [5, 5, 42]], np.int64)
    model = lookup_graph(table)
    want = run(model, ids)
    assert quantize_embeddings(model) == ["table"]
    got = run(model, ids)
    assert got.shape == want.shape == (2, 3, 64)
    _, scales = quantize_rows(table)
    err = np.abs(got - want)
    assert err.max() > 0  # it is quantized...
    assert np.all(err <= np.repeat(scales[ids], 32, axis=-1) / 2 + 1e-7)  # ...to half a step at most
    # the outlier's block is coarse, the row's other block is not
    assert err[0, 1, 32:].max() < 0.01 * 0.05
    sizes = {t.name: t.data_type for t in model.graph.initializer}
    assert "table" not in sizes and sizes["table_int8"] == TensorProto.INT8


def test_a_table_the_output_head_also_reads_is_left_in_fp32():
    table = np.ones((12_000, 32), np.float32)
    model = lookup_graph(table, shared=True)
    assert quantize_embeddings(model) == []
    assert [t.name for t in model.graph.initializer] == ["table"]


def test_small_tables_are_not_embeddings():
    model = lookup_graph(np.ones((100, 32), np.float32))
    assert quantize_embeddings(model) == []
